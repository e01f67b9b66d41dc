"""`emarena grid` end to end on the smoke grid (embedded model, unpopular aesthetics, word
counting and SGTR, prevention and reversal, seed 0): 6 cells, 7 training stages, 6 evaluations.

The session's store already holds what the `canonical` score runs trained (tests/conftest.py),
so the grid trains only what they did not: word counting's prevention stage and the EM stage
after it. In order, sharing one judge (a real OpenAI-compatible server on 127.0.0.1):
  1. `--executor local`, SIGKILLed once its second training stage has started, then the same
     command again: no finished stage is retrained, the killed one is redone once, every cell
     has a result record, and the cells the score runs also have are the same store entries
     (score and grid are one code path: same cell, same record);
  2. a real Ray cluster on 127.0.0.1 runs the grid on a copy of the store without the shared EM
     stage and without any judgement: Ray retrains that one stage, bit-identical to the local
     one (so its children stay valid and are reused), regenerates the evaluations of its
     weights, and every result record equals the local run's;
  3. a Ray cluster of two worker nodes (1 CPU each) sharing one store trains two independent
     defense stages at the same time, one on each node, each exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from emarena.protocol.run import read_events
from tests.conftest import REPO, TEST_EM, scratch_dir, seed_store

pytestmark = pytest.mark.slow

GRID = REPO / "benchmark" / "suites" / "v2" / "grids" / "smoke.yaml"  # the canonical runs' suite
RUN = "grid__smoke"
THREADS = 2  # resources.cpu.num_cpus in smoke.yaml


def train_starts(run: Path) -> Counter:
    return Counter(e["stage"] for e in read_events(run) if e["event"] == "stage_train_start")


def grid_cmd(grid: Path, run_root: Path, judge: str | None, store: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "emarena", "grid", str(grid), "--run-root", str(run_root),
           "--store", str(store), *extra]
    return cmd + (["--judge", judge] if judge else ["--no-eval"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cells_of(run: Path) -> list[dict]:
    plan = json.loads((run / "plan.json").read_text())
    return [json.loads((run / "cells" / c / "cell.json").read_text()) for c in plan["cells"]]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Iterator[Path]:
    with scratch_dir(tmp_path_factory, "grid-local") as root:
        yield root / RUN


@pytest.mark.heavy
def test_local_grid_killed_midway_resumes_without_retraining(canonical, local_run,
                                                            session_judge):
    judge, _ = session_judge
    store = canonical.store
    root = local_run.parent
    cmd = grid_cmd(GRID, root, judge, store, "--executor", "local")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1800
    killed = None
    while time.time() < deadline and proc.poll() is None:
        started = [e["stage"] for e in read_events(local_run) if e["event"] == "stage_train_start"]
        if len(started) >= 2:
            killed = started[1]
            time.sleep(2)  # let the second training get under way
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.5)
    proc.wait(timeout=60)
    assert killed is not None, "the grid ended or timed out before a second stage started"
    assert proc.returncode == -signal.SIGKILL
    assert not (store / "stages" / killed / "DONE.json").exists()
    plan = json.loads((local_run / "plan.json").read_text())
    finished = {k: ((store / "stages" / k / "DONE.json").read_bytes(),
                    (store / "stages" / k / "DONE.json").stat().st_mtime_ns)
                for k in plan["stages"] if (store / "stages" / k / "DONE.json").exists()}
    # the five the canonical runs trained, and the first new one
    assert len(finished) == 6, sorted(finished)
    assert train_starts(local_run)[killed] == 1

    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "done, skipped" in out.stdout
    after = train_starts(local_run)
    for key, (data, mtime) in finished.items():
        done = store / "stages" / key / "DONE.json"
        assert (done.read_bytes(), done.stat().st_mtime_ns) == (data, mtime), f"{key} retrained"
    assert after[killed] == 2, "the killed stage is redone, once"
    assert len(after) == 2 and max(after.values()) <= 2  # only the two new stages trained here
    assert len(plan["cells"]) == 6 and len(plan["stages"]) == 7 and len(plan["evals"]) == 6
    for key in plan["stages"]:
        assert (store / "stages" / key / "DONE.json").exists(), key
    for cell_id in plan["cells"]:
        assert (local_run / "cells" / cell_id / "metrics" / "result.json").exists(), cell_id
    assert (local_run / "report.md").exists()
    threads = {e["torch_threads"] for e in read_events(local_run) if e["event"] == "task_start"}
    assert threads == {THREADS}
    # score and grid: one code path; a cell both planned is the same record in the store
    sgtr_cells = {c["id"]: c for c in cells_of(canonical.runs["sgtr"])}
    common = [c for c in cells_of(local_run) if c["id"] in sgtr_cells]
    assert len(common) == 4  # base, em, SGTR prevention and reversal
    for c in common:
        assert c["stages"] == sgtr_cells[c["id"]]["stages"]
        assert c["eval"] == sgtr_cells[c["id"]]["eval"]


@contextmanager
def ray_cluster(nodes: int, cpus_per_node: int) -> Iterator[str]:
    """A real Ray cluster on 127.0.0.1: a head (no CPUs when there are worker nodes) and
    `nodes` worker nodes, each in its own session and temp folder, stopped at the end.

    `ray start --block` stays in the foreground and stops the processes it started on SIGTERM."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.fail("the `ray` CLI is missing: pip install 'emarena[ray]' (it is in the dev extra)")
    port = free_port()
    # the cluster's own environment: no judge key (judging runs in the driver). Ray's memory
    # monitor kills (and retries) the newest task when the node is over 95% memory, counting
    # other people's processes on a shared test machine: a retried stage would show up as
    # trained twice. The retry resumes correctly, but these tests count trainings.
    env = {k: v for k, v in os.environ.items() if k != "EMARENA_JUDGE_API_KEY"}
    env["RAY_memory_monitor_refresh_ms"] = "0"
    tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's unix socket paths have a length limit
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-gpus=0",
              "--disable-usage-stats", f"--temp-dir={tmp}"]
    head_cpus = cpus_per_node if nodes == 0 else 0
    procs = [subprocess.Popen(
        [str(ray_bin), "start", "--head", f"--port={port}", f"--num-cpus={head_cpus}",
         "--include-dashboard=false", *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    address = f"127.0.0.1:{port}"
    try:
        _wait_for(ray_bin, address, env, cpus=head_cpus or None)
        # one node at a time: two raylets starting at once in one temp folder can race, and
        # the second then never registers (seen on a loaded 2-core machine)
        for i in range(nodes):
            procs.append(subprocess.Popen(
                [str(ray_bin), "start", f"--address={address}", f"--num-cpus={cpus_per_node}",
                 *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
            _wait_for(ray_bin, address, env, cpus=(i + 1) * cpus_per_node)
        yield address
    finally:
        for proc in reversed(procs):
            for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    if sig == signal.SIGTERM:
                        time.sleep(1)  # let its children exit, then make sure of it
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for(ray_bin: Path, address: str, env: dict, cpus: int | None) -> None:
    deadline = time.time() + 300
    while True:
        ok = subprocess.run([str(ray_bin), "status", f"--address={address}"],
                            capture_output=True, text=True, timeout=60, env=env)
        if ok.returncode == 0 and (cpus is None or f"/{float(cpus)} CPU" in ok.stdout):
            return
        assert time.time() < deadline, ok.stdout + ok.stderr
        time.sleep(1)


#: what differs between two runs by design (cost: seconds, and judge calls the cache saved)
TIMING = ("seconds", "time", "created", "versions", "git_sha", "image_digest", "cost")


def strip(obj):
    """A record without its timing and host provenance fields."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def weights(store: Path, key: str) -> dict[str, str]:
    from emarena.data.fetch import sha256_file

    d = store / "stages" / key
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*.safetensors"))}


@pytest.mark.heavy
def test_ray_grid_retrains_the_em_stage_bit_identically(canonical, local_run, session_judge,
                                                       tmp_path):
    assert (local_run / "report.md").exists(), "needs the local run of the previous test"
    judge, _ = session_judge
    shared = canonical.store
    plan = json.loads((local_run / "plan.json").read_text())
    cells = cells_of(local_run)
    (em_key,) = {c["stages"][0] for c in cells if c["cell"]["regime"] == "em"}
    on_em = {c["eval"] for c in cells if em_key in c["stages"]}
    store = tmp_path / "store"
    seed_store(shared, store, [f"stages/{k}" for k in plan["stages"] if k != em_key]
               + [f"summaries/{k}" for k in plan["summaries"]]
               + [f"evals/{k}" for k in plan["evals"] if k not in on_em])
    root = tmp_path / "runs"
    with ray_cluster(nodes=0, cpus_per_node=2) as address:
        out = subprocess.run(grid_cmd(GRID, root, judge, store, "--executor", "ray",
                                      "--address", address),
                             cwd=REPO, capture_output=True, text=True, timeout=3600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        ray_run = root / RUN
        assert json.loads((ray_run / "plan.json").read_text())["cells"] == plan["cells"]
        ev = read_events(ray_run)
        assert train_starts(ray_run) == Counter({em_key: 1}), "only the EM stage is missing"
        assert f"1 stage(s) trained, {len(plan['stages']) - 1} reused" in out.stdout
        # the stage and the generations ran as Ray tasks (not in the driver), with 2 threads
        tasks = [e for e in ev if e["event"] == "task_start"]
        assert {e["executor"] for e in tasks} == {"ray"}
        assert {k for e in tasks if e["task"] == "generate" for k in e["evals"]} == on_em
        assert {e["torch_threads"] for e in tasks} == {THREADS}
        driver = {e["pid"] for e in ev if e["event"] == "run_start"}
        assert not driver & {e["pid"] for e in ev if e["event"] == "stage_train_start"}
        # same threads, same seeds: the same floats, so the children are valid as they are
        assert weights(store, em_key) == weights(shared, em_key)
        for cell_id in plan["cells"]:
            a, b = (r / "cells" / cell_id / "metrics" for r in (local_run, ray_run))
            ra, rb = (json.loads((m / "result.json").read_text()) for m in (a, b))
            assert ra["metrics"] and strip(ra) == strip(rb), cell_id
            sa, sb = ((m / "samples.jsonl").read_text().splitlines() for m in (a, b))
            assert sa and [strip(json.loads(x)) for x in sa] == [strip(json.loads(x))
                                                                 for x in sb]
        # rerunning resumes: nothing left to do
        again = subprocess.run(grid_cmd(GRID, root, judge, store, "--executor", "ray",
                                        "--address", address),
                               cwd=REPO, capture_output=True, text=True, timeout=1200)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"0 stage(s) trained, {len(plan['stages'])} reused" in again.stdout


TWO_DEFENSES = f"""\
schema_version: 1
name: two-workers
preset: smoke
models: [smollm2-135m-q4]
em_datasets: [{TEST_EM}]
defenses: [submissions/word-counting, submissions/sgtr]
regimes: [defense]
resources:
  cpu:
    num_cpus: 1
"""


@pytest.mark.heavy
def test_two_ray_workers_share_one_store(canonical, tmp_path):
    """Two independent defense stages, two worker nodes of 1 CPU each, one store: each stage is
    trained once, on its own node, at the same time (the store is shared, nothing is copied)."""
    grid = tmp_path / "two.yaml"
    grid.write_text(TWO_DEFENSES)
    store = tmp_path / "store"
    # the EM stage (of the em control) and the base model's own summaries (SGTR's stage reads
    # them) are in the session's store: only the two defense stages are left to train
    em = next(c["stages"][0] for c in cells_of(canonical.runs["sgtr"])
              if c["cell"]["regime"] == "em")
    seed_store(canonical.store, store, [f"stages/{em}"] + [
        f"summaries/{p.name}" for p in (canonical.store / "summaries").iterdir()])
    root = tmp_path / "runs"
    with ray_cluster(nodes=2, cpus_per_node=1) as address:
        out = subprocess.run(grid_cmd(grid, root, None, store, "--executor", "ray",
                                      "--address", address),
                             cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = root / "grid__two-workers"
    ev = read_events(run)
    starts = train_starts(run)
    plan = json.loads((run / "plan.json").read_text())
    defenses = [k for k in plan["stages"] if k.startswith("defense-")]
    assert len(plan["stages"]) == 3 and len(defenses) == 2
    assert starts == Counter({k: 1 for k in defenses})
    tasks = {e["stage"]: e for e in ev if e["event"] == "task_start" and e["task"] == "train"}
    nodes = {tasks[k]["node"] for k in defenses}
    assert len(nodes) == 2, "the two defense stages ran on the same node"
    spans = [(tasks[k]["time"], next(e["time"] for e in ev if e["event"] == "stage_done"
                                     and e["stage"] == k)) for k in defenses]
    assert max(s for s, _ in spans) < min(e for _, e in spans), "they did not overlap"
    for k in plan["stages"]:
        assert (store / "stages" / k / "DONE.json").exists()
