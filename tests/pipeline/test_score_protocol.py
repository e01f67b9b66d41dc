"""`emarena score` end to end on the embedded model (cpu-demo preset), with a SIGKILL.

One run folder is shared by the tests in this module, in order:
  1. score sgtr (prevention + reversal), SIGKILLed when its first stage-2 training starts;
  2. the same command again: finishes without retraining stage 1;
  3. checks on the outputs: adapters exist and moved, base weights unchanged, SGTR data balanced;
  4. a second defense (word-counting, reversal) reuses the EM stage: one EM training in all;
  5. evaluation of the sgtr cells with a judge on a real OpenAI-compatible server on 127.0.0.1,
     SIGKILLed during judging and rerun: no judge call is repeated for a cached prompt, every
     cell gets a result.json that validates, and the printed table has base / em / prevention /
     reversal.
Steps 1-4 train only (`--no-eval`); step 5 trains nothing (every stage is done).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from emarena.protocol.run import read_events
from tests.conftest import REPO, scratch_dir

pytestmark = pytest.mark.slow


def score_cmd(run: Path, submission: str, *regimes: str, evaluate: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "emarena",
        "score",
        str(REPO / "submissions" / submission),
        "--preset",
        "cpu-demo",
        "--em-dataset",
        "insecure",
        "--run",
        str(run),
    ]
    for r in regimes:
        cmd += ["--regimes", r]
    return cmd if evaluate else [*cmd, "--no-eval"]


def cells(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (run / "cells").glob("*/cell.json")]


def train_starts(run: Path) -> Counter:
    return Counter(e["stage"] for e in read_events(run) if e["event"] == "stage_train_start")


def sha_tree(folder: Path) -> dict[str, str]:
    from emarena.data.fetch import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def base_model(mirror) -> Path:
    from emarena import models

    return models.pull("smollm2-135m-q4")


@pytest.fixture(scope="module")
def run(tmp_path_factory, base_model) -> Iterator[Path]:
    with scratch_dir(tmp_path_factory, "score") as root:
        yield root / "run"


@pytest.fixture(scope="module")
def base_hashes(base_model) -> dict[str, str]:
    return sha_tree(base_model)


def test_kill_during_stage2_then_rerun_resumes(run, base_hashes):
    proc = subprocess.Popen(score_cmd(run, "sgtr", "reversal", "prevention"), cwd=REPO)
    killed_stage = None
    deadline = time.time() + 1500
    while time.time() < deadline and proc.poll() is None:
        stage2 = (
            {c["stages"][1] for c in cells(run) if len(c["stages"]) == 2}
            if (run / "cells").exists()
            else set()
        )
        started = [e["stage"] for e in read_events(run) if e["event"] == "stage_train_start"]
        hit = [s for s in started if s in stage2]
        if hit:
            killed_stage = hit[0]
            time.sleep(2)  # let training get under way
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.5)
    proc.wait(timeout=60)
    assert killed_stage is not None, "score finished or timed out before any stage 2 started"
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "stages" / killed_stage / "DONE.json").exists()

    # Stage 1 of the killed cell is done; remember its DONE.json exactly.
    parent = next(c["stages"][0] for c in cells(run) if c["stages"][1:] == [killed_stage])
    done_before = (run / "stages" / parent / "DONE.json").read_bytes()
    before = train_starts(run)

    out = subprocess.run(
        score_cmd(run, "sgtr", "reversal", "prevention"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "done, skipped" in out.stdout
    after = train_starts(run)
    assert after[parent] == before[parent] == 1, "stage 1 was retrained"
    assert after[killed_stage] == 2  # the interrupted stage is redone, once
    assert (run / "stages" / parent / "DONE.json").read_bytes() == done_before
    for c in cells(run):
        for key in c["stages"]:
            assert (run / "stages" / key / "DONE.json").exists(), key


def test_outputs_adapters_moved_base_unchanged_sgtr_balanced(run, base_model, base_hashes):
    from safetensors.torch import load_file

    assert sha_tree(base_model) == base_hashes, "base model weights changed on disk"
    by_regime = {c["cell"]["regime"]: c for c in cells(run)}
    for regime in ("reversal", "prevention"):
        c = by_regime[regime]
        assert len(c["stages"]) == 2
        for key in c["stages"]:
            adapter = run / "stages" / key / "adapter" / "adapter_model.safetensors"
            assert adapter.exists(), adapter
            weights = load_file(adapter)
            lora_b = [t for name, t in weights.items() if "lora_B" in name]
            assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b), (
                f"{key}: adapter did not move"
            )
    # SGTR data: the model's own summary is in position 1 and 2 equally often, labelled correctly.
    for regime in ("reversal", "prevention"):
        c = by_regime[regime]
        key = next(k for k in c["stages"] if k.startswith("defense-"))
        rows = [
            json.loads(line)
            for line in (run / "stages" / key / "data.jsonl").read_text().splitlines()
        ]
        answers = Counter(r["messages"][-1]["content"].strip() for r in rows)
        assert set(answers) == {"1", "2"} and answers["1"] == answers["2"], answers


def test_status_shows_every_cell_done(run):
    out = subprocess.run(
        [sys.executable, "-m", "emarena", "status", str(run)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("done") >= 5
    assert "failed" not in out.stdout and "interrupted" not in out.stdout


def test_second_reversal_defense_reuses_the_em_stage(run):
    out = subprocess.run(
        score_cmd(run, "word-counting", "reversal"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    reversal = [c for c in cells(run) if c["cell"]["regime"] == "reversal"]
    assert {c["cell"]["defense"]["kind"] for c in reversal} == {"sgtr", "word-counting"}
    em_keys = {c["stages"][0] for c in reversal}
    assert len(em_keys) == 1, "two reversal cells must share one EM stage"
    assert train_starts(run)[em_keys.pop()] == 1, "the EM stage was trained more than once"


def test_evaluation_killed_during_judging_resumes_without_repeated_calls(run):
    from emarena.eval.judges import resolve_judge
    from emarena.eval.judges.cache import CachedJudgement, JudgementCache
    from emarena.eval.result import load_result
    from emarena.eval.rows import RowStore
    from tests.helpers.openai_server import OpenAIServer

    env_run = {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-test-not-a-secret"}
    with OpenAIServer(latency=0.2) as server:
        judge = f"openai:test-judge@{server.url}"  # the port makes the judge id, and so its
        cache_file = JudgementCache().path_for(resolve_judge(judge)[0].id)  # cache, unique
        cmd = [*score_cmd(run, "sgtr", "reversal", "prevention", evaluate=True), "--judge", judge]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env_run, stdout=subprocess.DEVNULL)
        deadline = time.time() + 2400
        while time.time() < deadline and proc.poll() is None:
            ev = [e["event"] for e in read_events(run)]
            judging = ev.count("judge_start") > ev.count("judge_done")
            if judging and cache_file.exists() and cache_file.stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)  # mid-judging, with some judgements cached
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "evaluation ended before judging got going"
        cached = {row.id.split("#")[0] for row in RowStore(cache_file, CachedJudgement)}
        assert cached, "nothing was cached before the kill"
        hits_before = dict(server.hits)

        out = subprocess.run(
            cmd, cwd=REPO, env=env_run, capture_output=True, text=True, timeout=2400
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        repeated = [h for h in cached if server.hits[h] > hits_before.get(h, 0)]
        assert repeated == [], f"{len(repeated)} cached prompts were sent to the judge again"

    # every cell of the sgtr plan has a valid result.json, and the table names all four regimes
    plan = json.loads((run / "plan.json").read_text())
    for cell_id in plan["cells"]:
        result = load_result(run / "cells" / cell_id / "metrics" / "result.json")
        assert result.cell_id == cell_id
        mr = result.metrics["misalignment_rate"]["all"]
        assert mr.n > 0 and mr.n_unscored <= mr.n
        assert result.provenance.judge.id.startswith("openai:test-judge")
        assert result.official is False  # cpu-demo preset, test judge
        assert (run / "cells" / cell_id / "metrics" / "samples.jsonl").exists()
    for regime in ("base", "em", "prevention", "reversal"):
        assert regime in out.stdout
    assert (run / "report.md").exists()
    assert "sk-test-not-a-secret" not in "".join(
        p.read_text(errors="ignore") for p in run.rglob("*.json*") if p.is_file()
    )


def test_rejudge_rescores_without_regenerating(run):
    from emarena.eval.result import load_result
    from tests.helpers.openai_server import OpenAIServer

    plan = json.loads((run / "plan.json").read_text())
    gens = {p: p.stat().st_mtime_ns for p in run.glob("evals/*/generate/generations.jsonl")}
    assert gens
    env = {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-test-not-a-secret"}
    with OpenAIServer() as server:
        judge = f"openai:second-judge@{server.url}"
        out = subprocess.run(
            [sys.executable, "-m", "emarena", "rejudge", str(run), "--judge", judge],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert server.total > 0
    assert {p: p.stat().st_mtime_ns for p in gens} == gens, "rejudge regenerated answers"
    for cell_id in plan["cells"]:
        result = load_result(run / "cells" / cell_id / "metrics" / "result.json")
        assert result.provenance.judge.id.startswith("openai:second-judge")
