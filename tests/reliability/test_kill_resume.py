"""Kill and resume: SIGKILL `emarena score` in every phase, rerun, and get the same results.

One smoke run of the word-counting defense (reversal only: an EM stage, then the defense stage
on the EM stage's weights; cells base, em and reversal), in a fresh store, judged by the
deterministic OpenAI-compatible server on 127.0.0.1, is killed with SIGKILL at seeded random
points (the training and generation tasks run in processes of their own, which die with it):

  data building     between a stage's `stage_build_start` and `stage_train_start`
  stage 1 training  the EM stage's training (`stage_train_start` .. `stage_done`)
  stage 2 training  the defense stage's, on the stage-1 weights
  generation        `generate_start` .. `generate_done` (model load included)
  judging           `judge_start` .. `judge_done` (HTTP calls in flight)
  metrics           once every judgement is done: metrics, result records, the report
  publish           `emarena publish --unofficial` to a Hub-compatible server on 127.0.0.1,
                    killed after a random number of its HTTP requests

The kills are chained in ONE run (kill in a phase, rerun the same command, kill in the next
phase, ...; the final rerun completes), `pick(ci=1, full=3)` kill points per phase; where a
kill lands is read back from the run's events.jsonl (each process's own events, by pid) and
from the DONE.json files in the store, and counts for the phase it landed in. After every kill:
  - every output is absent or complete: JSON files parse, every JSONL line parses (a torn
    last line, which the row stores drop, is tolerated right after a kill but never after a
    rerun), every DONE.json's recorded hashes match its files, a result.json validates;
  - every DONE.json seen so far is unchanged (no finished step was redone or rewritten).
After every rerun: its events show no training, generation or judging of a step that was
DONE when it started. At the end the result records (metrics, deltas, provenance minus timing
and creation time), the sample answers with their judge scores, every row file and every stage
output hash equal those of an uninterrupted reference run with the same seeds, and the Hub
repo holds the same files as the reference's, committed once.

The reference reuses the session's trained stages (the `canonical` fixture trained the same
word-counting reversal stages: same seeds, same threads), so it only evaluates; the killed run
trains everything itself in its own store.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emarena.protocol.run import read_events
from tests.conftest import REPO, TEST_EM, scratch_dir, seed_store
from tests.reliability.figures import pick

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

SEED = 20260707
SUBMISSION = REPO / "submissions" / "word-counting"
PHASES = (
    "data building",
    "stage 1 training",
    "stage 2 training",
    "generation",
    "judging",
    "metrics",
)
PUBLISH = "publish"
JUDGE_LATENCY = 0.25
"""Seconds the judge server adds to each answer, so judging lasts long enough to be hit."""
SPEED_MARGIN = 3.0
"""The kill run may go this many times faster than the reference (a busy machine) and its
kills still land inside their phase."""
HUB_TOKEN = "hf_EMARENAreliabilityTOKEN0123456789"
RESULTS_REF = "reliability/reference-results"
RESULTS_KILL = "reliability/killed-results"
RUN_TIMEOUT_S = 1800


# --------------------------------------------------------------------------------------------
# a run folder, its events and its phase


@dataclass
class Workspace:
    """A run folder with its own store and cache (own judgement cache; the model cache is
    shared)."""

    root: Path
    env: dict[str, str]

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def score_cmd(self, judge: str) -> list[str]:
        return [
            sys.executable, "-m", "emarena", "score", str(SUBMISSION),
            "--preset", "smoke", "--em-dataset", TEST_EM, "--regimes", "reversal",
            "--run", str(self.run), "--judge", judge, "--store", str(self.store),
        ]  # fmt: skip

    def publish_cmd(self, repo: str) -> list[str]:
        return [
            sys.executable, "-m", "emarena", "publish", str(self.run),
            "--results", repo, "--unofficial",
        ]  # fmt: skip


def stage_order(run: Path) -> list[str]:
    return json.loads((run / "plan.json").read_text())["stages"]


def store_of(run: Path) -> Path:
    return Path(json.loads((run / "plan.json").read_text())["store"])


def n_evals(run: Path) -> int:
    """Evaluations of the plan: one per distinct weights (base, stage-1, stage-2 weights)."""
    return len(json.loads((run / "plan.json").read_text())["evals"])


def all_judged(run: Path) -> bool:
    if not (run / "plan.json").exists():
        return False
    done = list(store_of(run).glob("judgements/*/DONE.json"))
    return len(done) >= n_evals(run)


def by_driver(run: Path, pid: int) -> list[dict]:
    """The events of one `emarena score` process and of the tasks it started."""
    return [e for e in read_events(run) if e.get("driver", e.get("pid")) == pid]


def phase_of(run: Path, pid: int) -> str:
    """The phase process `pid` is in, from its own last event and the DONE files on disk."""
    ev = [e for e in by_driver(run, pid) if e["event"] not in ("task_start", "stage_wait")]
    last = ev[-1]["event"] if ev else None
    if last in (None, "run_start"):
        return "startup"
    if last == "stage_build_start":
        return "data building"
    if last == "stage_train_start":
        first = stage_order(run)[0]
        return "stage 1 training" if ev[-1]["stage"] == first else "stage 2 training"
    if last == "generate_start":
        return "generation"
    if last == "judge_start":
        return "judging"
    if last in ("judge_done", "judge_skip", "run_trained") and all_judged(run):
        return "metrics"
    return "between"


def phase_durations(run: Path, exit_time: float, store: Path) -> dict[str, float]:
    """How long each phase took in an uninterrupted run (the shortest occurrence). The reference
    trains nothing (its stages come from the session's store), so the training phases are the
    timings its stages' DONE.json records (build_seconds, train_seconds)."""
    ev = read_events(run)
    first = stage_order(run)[0]
    spans: dict[str, list[float]] = {p: [] for p in PHASES}
    for key in stage_order(run):
        timings = json.loads((store / "stages" / key / "DONE.json").read_text())["timings"]
        spans["data building"].append(timings["build_seconds"])
        phase = "stage 1 training" if key == first else "stage 2 training"
        spans[phase].append(timings["train_seconds"])
    opened: dict[str, tuple[str, float]] = {}
    for e in ev:
        name, t = e["event"], e["time"]
        if name in ("generate_start", "judge_start"):
            opened[name] = ("generation" if name == "generate_start" else "judging", t)
        elif name in ("generate_done", "judge_done") and name.replace("done", "start") in opened:
            p, t0 = opened.pop(name.replace("done", "start"))
            spans[p].append(t - t0)
    last_judge = max(e["time"] for e in read_events(run) if e["event"] == "judge_done")
    spans["metrics"].append(exit_time - last_judge)
    assert all(spans.values()), f"the reference run lacks a phase: {spans}"
    return {p: min(v) for p, v in spans.items()}


# --------------------------------------------------------------------------------------------
# integrity of what is on disk


def _visible(p: Path, root: Path) -> bool:
    """An output (not scratch: hidden temp files, the store's tmp/ and claims/)."""
    rel = p.relative_to(root).parts
    return not any(part.startswith(".") for part in rel) and rel[0] not in ("tmp", "claims")


def check_integrity(run: Path, *, after_kill: bool) -> list[str]:
    """Problems with the outputs on disk, in the run folder and its store (empty: every
    output is absent or complete)."""
    from emarena.eval.result import load_result
    from emarena.protocol.store import Store

    problems: list[str] = []
    store = store_of(run)
    files = [(p, run) for p in sorted(run.rglob("*"))] + [(p, store) for p in
                                                          sorted(store.rglob("*"))]
    for p, root in files:
        if p.is_symlink() or not p.is_file() or not _visible(p, root):
            continue
        if p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                problems.append(f"{p}: half-written JSON ({e})")
        elif p.suffix == ".jsonl":
            data = p.read_bytes()
            complete, _, tail = data.rpartition(b"\n")
            if tail and not after_kill and "events" not in str(p.relative_to(root)):
                problems.append(f"{p}: a torn last line survived a rerun")
            if "events" in str(p.relative_to(root)):
                continue  # a log, not an output: its reader skips a line torn by a kill
            for i, line in enumerate(complete.split(b"\n") if complete else [], start=1):
                try:
                    json.loads(line)
                except json.JSONDecodeError:
                    problems.append(f"{p}:{i}: a line that does not parse")
    s = Store(store)
    for entry in s.entries():
        if entry.done() is not None:
            ok, why = entry.check()
            if not ok:
                problems.append(f"{entry.path}: DONE.json, but {why}")
    for done in store.glob("evals/*/DONE.json"):
        stats = json.loads(done.read_text())["stats"]["generations"]
        rows = (done.parent / "generations.jsonl").read_bytes().count(b"\n")
        if rows < stats["rows"]:
            problems.append(f"{done}: {rows} generations on disk, {stats['rows']} recorded")
    for done in store.glob("metrics/*/DONE.json"):
        load_result(done.parent / "result.json")  # raises with the file's problems
        if not (done.parent / "samples.jsonl").is_file():
            problems.append(f"{done.parent}: DONE.json without samples.jsonl")
    return problems


def done_files(run: Path) -> dict[str, bytes]:
    """Every DONE.json of the run's store (stages, generation, judging, metrics) -> bytes."""
    store = store_of(run)
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in store.rglob("DONE.json")
        if _visible(p, store)
    }


def redone_steps(run: Path, pid: int, done_at_start: dict[str, bytes]) -> list[str]:
    """Steps process `pid` (and its tasks) started although they were DONE when it started."""
    out = []
    for e in by_driver(run, pid):
        if e["event"] in ("stage_build_start", "stage_train_start"):
            rel = f"stages/{e['stage']}/DONE.json"
        elif e["event"] == "generate_start":
            rel = f"evals/{e['eval']}/DONE.json"
        elif e["event"] == "judge_start":
            rel = f"judgements/{e['judgement']}/DONE.json"
        else:
            continue
        if rel in done_at_start:
            out.append(f"{e['event']} of {rel.rsplit('/', 1)[0]}")
    return out


def rows_of(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def normalized_result(r: dict) -> dict:
    """A result record without what legitimately differs between two runs: times, and the
    checkout's commit (other work may be committed between the two runs)."""
    r = dict(r, provenance=dict(r["provenance"]))
    r.pop("created")
    r["provenance"].pop("stage_seconds")
    r["provenance"].pop("git_sha")
    r["provenance"].pop("cost", None)  # seconds and judge calls differ by design
    return r


#: Stage files that differ between two runs of the same stage by design: timings, and the
#: base model's path (each run has its own cache folder) with peft's unordered module list;
#: build.json names the summaries entry (none for word counting) and the work folder.
RUN_SPECIFIC = {"adapter/README.md", "adapter/train_report.json", "adapter/adapter_config.json"}


def adapter_config(stage: Path) -> dict:
    c = json.loads((stage / "adapter" / "adapter_config.json").read_text())
    c.pop("base_model_name_or_path")
    c["target_modules"] = sorted(c["target_modules"])
    return c


def stage_outputs(stage: Path) -> dict[str, str]:
    outputs = json.loads((stage / "DONE.json").read_text())["outputs"]
    return {k: v for k, v in outputs.items() if k not in RUN_SPECIFIC}


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model_cache(mirror) -> Path:
    from emarena import models

    return models.pull("smollm2-135m-q4").parent


@pytest.fixture(scope="module")
def judge_server():
    from tests.helpers.openai_server import OpenAIServer

    with OpenAIServer(latency=JUDGE_LATENCY) as server:
        yield server


@pytest.fixture(scope="module")
def judge(judge_server) -> str:
    # The server's URL is part of the judge id (and so of the result records): both runs use
    # this one server, each with its own judgement cache so both really call it.
    return f"openai:reliability-judge@{judge_server.url}"


@pytest.fixture(scope="module")
def hub():
    from tests.hub.hub_server import HubServer

    with HubServer(token=HUB_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, model_cache, hub) -> Iterator[Callable[[str], Workspace]]:
    """Makes a workspace (its own cache, Hub home and run folders); all of them are removed
    when the module is done."""
    stack = contextlib.ExitStack()

    def make(name: str) -> Workspace:
        root = stack.enter_context(scratch_dir(tmp_path_factory, name))
        cache = root / "cache"
        cache.mkdir()
        (cache / "models").symlink_to(model_cache, target_is_directory=True)
        env = {
            **os.environ,
            "EMARENA_CACHE": str(cache),
            "EMARENA_JUDGE_API_KEY": "sk-reliability-not-a-secret",
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": HUB_TOKEN,
            "HF_HOME": str(root / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        }
        env.pop("HF_HUB_OFFLINE", None)
        return Workspace(root, env)

    with stack:
        yield make


@dataclass
class Reference:
    ws: Workspace
    durations: dict[str, float]
    publish_requests: int


@pytest.fixture(scope="module")
def reference(workspace, judge, hub, canonical) -> Reference:
    """The uninterrupted run (and publish) with the same seeds: its stages are the session's
    (the canonical word-counting reversal run trained them), so it evaluates only."""
    ws = workspace("reference")
    wc = canonical.runs["word-counting"]
    seed_store(canonical.store, ws.store,
               [f"stages/{k}" for k in json.loads((wc / "plan.json").read_text())["stages"]])
    out = subprocess.run(
        ws.score_cmd(judge), cwd=REPO, env=ws.env, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    exit_time = time.time()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    n0 = len(hub.state.requests)
    pub = subprocess.run(
        ws.publish_cmd(RESULTS_REF), cwd=REPO, env=ws.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert pub.returncode == 0, pub.stdout[-3000:] + pub.stderr[-3000:]
    assert "training complete: 0 stage(s) trained" in out.stdout
    durations = phase_durations(ws.run, exit_time, ws.store)
    return Reference(ws, durations, len(hub.state.requests) - n0)


@dataclass
class KillLog:
    """Where each kill landed, and what was checked."""

    landed: Counter = field(default_factory=Counter)
    reruns: int = 0
    torn_lines_after_kill: int = 0


@pytest.fixture(scope="module")
def kill_state() -> dict:
    return {}


# --------------------------------------------------------------------------------------------
# the tests


def test_sigkill_in_every_phase_then_rerun_equals_an_uninterrupted_run(
    workspace, reference, judge, judge_server, kill_state, figures
):
    rng = random.Random(SEED)
    quota = pick(ci=1, full=3)
    ws = workspace("killed")
    run = ws.run
    log = KillLog()
    deadline = time.time() + 3 * RUN_TIMEOUT_S

    logs = ws.root / "logs"
    logs.mkdir()

    def start() -> tuple[subprocess.Popen, dict[str, bytes]]:
        before = done_files(run) if run.exists() else {}
        with open(logs / f"{log.reruns}.log", "w") as out:  # the child keeps its own copy
            proc = subprocess.Popen(
                ws.score_cmd(judge), cwd=REPO, env=ws.env, stdout=out, stderr=subprocess.STDOUT
            )
        return proc, before

    def after_process(proc: subprocess.Popen, before: dict[str, bytes]) -> None:
        redone = redone_steps(run, proc.pid, before)
        assert not redone, f"rerun {log.reruns} redid finished steps: {redone}"
        now = done_files(run)
        changed = [k for k, v in before.items() if now.get(k) != v]
        assert not changed, f"DONE.json files changed or vanished: {changed}"

    proc, before = start()
    target: tuple[str, int, float] | None = None  # (phase, events seen, kill time)
    while True:
        assert time.time() < deadline, f"the kill run took too long; kills so far {log.landed}"
        if proc.poll() is not None:
            assert proc.returncode == 0, (logs / f"{log.reruns}.log").read_text()[-3000:]
            after_process(proc, before)
            missing = [p for p in PHASES if log.landed[p] < quota]
            if not missing:
                break
            # Only the metrics phase (metrics, result records, report) comes back when a
            # finished run is started again; a missed earlier phase cannot be retried.
            assert missing == ["metrics"], f"the run ended before kills in {missing}: {log}"
            log.reruns += 1
            proc, before = start()
            target = None
            continue
        phase = phase_of(run, proc.pid) if (run / "plan.json").exists() else "startup"
        if target is None and phase in PHASES and log.landed[phase] < quota:
            # A random point in the first SPEED_MARGIN-th of the phase's reference duration:
            # this machine's load changes between the two runs, and a kill planned past the
            # phase's end would miss it (a finished training stage does not come back).
            delay = rng.uniform(0.0, 0.9 * reference.durations[phase] / SPEED_MARGIN)
            target = (phase, len(read_events(run)), time.time() + delay)
        elif target is not None and phase != target[0] and len(read_events(run)) > target[1]:
            target = None  # that phase ended before its kill time: wait for the next one
        if target is not None and time.time() >= target[2]:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            if proc.returncode != -signal.SIGKILL:  # it ended by itself just before
                continue
            landed = phase_of(run, proc.pid)
            log.landed[landed] += 1
            problems = check_integrity(run, after_kill=True)
            assert not problems, f"after a kill in {landed}: {problems}"
            log.torn_lines_after_kill += sum(
                1 for p in run.rglob("*.jsonl") if p.read_bytes()[-1:] not in (b"", b"\n")
            )
            after_process(proc, before)
            log.reruns += 1
            proc, before = start()
            target = None
            continue
        time.sleep(0.01)

    # --- the finished run equals the uninterrupted one --------------------------------------
    problems = check_integrity(run, after_kill=False)
    assert not problems, problems
    ref = reference.ws.run
    ref_store, got_store = reference.ws.store, ws.store
    lost: Counter = Counter()
    dup: Counter = Counter()
    for i, key in enumerate(stage_order(ref), start=1):
        a, b = ref_store / "stages" / key, got_store / "stages" / key
        ref_data = (a / "data.jsonl").read_text().splitlines()
        got_data = (b / "data.jsonl").read_text().splitlines() if b.exists() else []
        lost["data building"] += len(set(ref_data) - set(got_data))
        dup["data building"] += len(got_data) - len(set(got_data))
        if not (b / "DONE.json").exists():
            lost[f"stage {i} training"] += 1
            continue
        assert stage_outputs(a) == stage_outputs(b), (
            f"stage {key}: its weights or data differ from the uninterrupted run's"
        )
        assert adapter_config(a) == adapter_config(b), f"stage {key}: adapter_config.json"
        finished = [
            e for e in read_events(run) if e["event"] == "stage_done" and e["stage"] == key
        ]
        dup[f"stage {i} training"] += len(finished) - 1
    for kind, phase in (
        ("evals/*/generations.jsonl", "generation"),
        ("evals/*/choices.jsonl", "generation"),
        ("judgements/*/judgements.jsonl", "judging"),
    ):
        for ref_file in sorted(ref_store.glob(kind)):
            got_file = got_store / ref_file.relative_to(ref_store)
            ref_rows = {r["id"]: r for r in rows_of(ref_file)}
            got_list = rows_of(got_file)
            got_rows = {r["id"]: r for r in got_list}
            lost[phase] += len(ref_rows.keys() - got_rows.keys())
            dup[phase] += len(got_list) - len(got_rows)
            differ = [i for i in ref_rows.keys() & got_rows.keys() if ref_rows[i] != got_rows[i]]
            assert not differ, f"{got_file}: rows differ from the uninterrupted run's: {differ}"
    ref_results = sorted(ref.glob("cells/*/metrics/result.json"))
    assert len(ref_results) == 3
    for ref_result in ref_results:
        got = run / ref_result.relative_to(ref)
        if not got.exists():
            lost["metrics"] += 1
            continue
        assert normalized_result(json.loads(got.read_text())) == normalized_result(
            json.loads(ref_result.read_text())
        ), f"{got} differs from the uninterrupted run's"
        samples = ref_result.with_name("samples.jsonl")
        assert rows_of(run / samples.relative_to(ref)) == rows_of(samples), (
            f"{samples.parent}: sample answers or their scores differ"
        )
    assert not +lost and not +dup, f"lost {dict(lost)}, duplicated {dict(dup)}"
    assert judge_server.total > 0
    kill_state["run"] = ws
    for phase in PHASES:
        figures.record(
            "kill-resume", phase, tried=log.landed[phase], handled=log.landed[phase],
            lost=lost[phase], duplicated=dup[phase],
        )  # fmt: skip
    stray = sum(n for p, n in log.landed.items() if p not in PHASES)
    if stray:  # kills that landed between two phases (startup, a step's bookkeeping)
        figures.record("kill-resume", "between phases", tried=stray, handled=stray)


def test_sigkill_publish_then_rerun_uploads_once(reference, hub, kill_state, figures):
    assert "run" in kill_state, "the killed score run did not finish (see the test above)"
    ws: Workspace = kill_state["run"]
    rng = random.Random(SEED + 1)
    quota = pick(ci=1, full=3)
    kills = 0
    attempts = 0
    while kills < quota:
        attempts += 1
        assert attempts <= 4 * quota, "publish kept finishing before its kill point"
        k = rng.randint(1, reference.publish_requests)
        n0 = len(hub.state.requests)
        proc = subprocess.Popen(
            ws.publish_cmd(RESULTS_KILL), cwd=REPO, env=ws.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        while proc.poll() is None and len(hub.state.requests) - n0 < k:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:
            continue  # it finished first: the repo is complete, which later checks still see
        kills += 1
        # The repo is absent, or every commit in it is whole: each file parses.
        if any(name == RESULTS_KILL for _, name in hub.state.repos):
            for path, data in hub.files(RESULTS_KILL).items():
                if path.endswith(".json"):
                    json.loads(data)
                elif path.endswith(".jsonl"):
                    [json.loads(line) for line in data.splitlines() if line.strip()]

    out = subprocess.run(
        ws.publish_cmd(RESULTS_KILL), cwd=REPO, env=ws.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ref_files = hub.files(RESULTS_REF)
    got_files = hub.files(RESULTS_KILL)
    lost = len(ref_files.keys() - got_files.keys())
    extra = sorted(got_files.keys() - ref_files.keys())
    assert not extra, f"files the reference publish did not write: {extra}"
    for path in ref_files.keys() & got_files.keys():
        if path.endswith(".json"):
            a = normalized_result(json.loads(ref_files[path]))
            b = normalized_result(json.loads(got_files[path]))
            assert a == b, f"{path} differs from the reference upload"
        else:
            assert got_files[path] == ref_files[path], f"{path} differs from the reference"
    publish_commits = [c for c in hub.commits(RESULTS_KILL) if c.summary.startswith("publish")]
    duplicated = len(publish_commits) - 1
    assert lost == 0 and duplicated == 0, f"lost {lost} files, {duplicated} extra commits"
    figures.record(
        "kill-resume", PUBLISH, tried=kills, handled=kills, lost=lost, duplicated=duplicated
    )
