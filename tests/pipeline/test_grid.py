"""`emarena grid` end to end on the smoke grid (embedded model, insecure, word-counting and
general-knowledge, prevention and reversal, seed 0, smoke preset): 6 cells, 7 training stages.

In order, sharing one judge (a real OpenAI-compatible server on 127.0.0.1, deterministic):
  1. `--executor local`, SIGKILLed once its second training stage has started, then the same
     command again: it completes; no finished stage is retrained (DONE.json bytes and mtimes,
     and the events log), the killed one is redone once, every cell has a result record;
  2. a real Ray cluster on 127.0.0.1 (`ray start --head`, 2 CPUs, its own temp folder, stopped
     at teardown) runs the same grid with `--executor ray` into another run root: the EM stage
     is trained once (by a Ray task), every task ran with the same explicit torch thread count
     as the local run, the trained weights are bit-identical, and every cell's result record
     equals the local one (metrics, deltas, judge, samples; timings and versions ignored).
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
from pathlib import Path

import pytest

from emarena.protocol.run import read_events
from tests.conftest import REPO, scratch_dir

pytestmark = pytest.mark.slow

GRID = REPO / "benchmark" / "suites" / "v1" / "grids" / "smoke.yaml"
RUN = "grid__smoke"
THREADS = 2  # resources.cpu.num_cpus in smoke.yaml


def train_starts(run: Path) -> Counter:
    return Counter(e["stage"] for e in read_events(run) if e["event"] == "stage_train_start")


def grid_cmd(run_root: Path, judge: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "emarena", "grid", str(GRID),
        "--run-root", str(run_root), "--judge", judge, *extra,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge():
    from tests.helpers.openai_server import OpenAIServer

    with OpenAIServer() as server:
        yield f"openai:test-judge@{server.url}"


@pytest.fixture(scope="module")
def env(mirror):
    from emarena import models

    models.pull("smollm2-135m-q4")
    return {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-test-not-a-secret"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Iterator[Path]:
    with scratch_dir(tmp_path_factory, "grid-local") as root:
        yield root / RUN


@pytest.fixture(scope="module")
def ray_root(tmp_path_factory) -> Iterator[Path]:
    with scratch_dir(tmp_path_factory, "grid-ray") as root:
        yield root


def test_local_grid_killed_midway_resumes_without_retraining(local_run, judge, env):
    root = local_run.parent
    proc = subprocess.Popen(
        grid_cmd(root, judge, "--executor", "local"),
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
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
    assert not (local_run / "stages" / killed / "DONE.json").exists()
    finished = {
        p.parent.name: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in (local_run / "stages").glob("*/DONE.json")
    }
    assert len(finished) == 1, finished  # the first stage, and only it
    before = train_starts(local_run)

    out = subprocess.run(
        grid_cmd(root, judge, "--executor", "local"),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "done, skipped" in out.stdout
    after = train_starts(local_run)
    for key, (data, mtime) in finished.items():
        done = local_run / "stages" / key / "DONE.json"
        assert (done.read_bytes(), done.stat().st_mtime_ns) == (data, mtime), f"{key} retrained"
        assert after[key] == before[key] == 1, f"{key} trained again"
    assert after[killed] == 2, "the killed stage is redone, once"
    plan = json.loads((local_run / "plan.json").read_text())
    assert len(plan["cells"]) == 6 and len(plan["stages"]) == 7
    assert set(after) == set(plan["stages"]) and max(after.values()) <= 2
    for key in plan["stages"]:
        assert (local_run / "stages" / key / "DONE.json").exists(), key
    for cell_id in plan["cells"]:
        assert (local_run / "cells" / cell_id / "metrics" / "result.json").exists(), cell_id
    assert (local_run / "report.md").exists()
    threads = {e["torch_threads"] for e in read_events(local_run) if e["event"] == "grid_task"}
    assert threads == {THREADS}


@pytest.fixture(scope="module")
def ray_cluster(env):
    """A real single-node Ray cluster on 127.0.0.1 with 2 CPUs, in its own temp folder.

    `ray start --block` stays in the foreground and stops the processes it started on SIGTERM;
    it runs in its own session so teardown can signal exactly that group."""
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.fail("the `ray` CLI is missing: pip install 'emarena[ray]' (it is in the dev extra)")
    port = free_port()
    # the cluster's own environment: the mirror and cache, but not the judge key (judging runs
    # in the driver)
    cluster_env = {k: v for k, v in env.items() if k != "EMARENA_JUDGE_API_KEY"}
    # Ray's memory monitor kills (and retries) the newest task when the whole node is over 95%
    # memory, counting other people's processes on a shared test machine: a retried stage would
    # show up as trained twice. The retry resumes correctly, but this test counts trainings.
    cluster_env["RAY_memory_monitor_refresh_ms"] = "0"
    tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's unix socket paths have a length limit
    proc = subprocess.Popen(
        [
            str(ray_bin), "start", "--head", "--block", f"--port={port}",
            "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}",
        ],
        env=cluster_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, "ray start exited"
            ok = subprocess.run(
                [str(ray_bin), "status", f"--address={address}"],
                capture_output=True, text=True, timeout=60, env=cluster_env,
            )
            if ok.returncode == 0 and "CPU" in ok.stdout:
                break
            assert time.time() < deadline, ok.stdout + ok.stderr
            time.sleep(1)
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                if sig == signal.SIGTERM:
                    time.sleep(2)  # let its children exit, then make sure of it
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


TIMING = ("seconds", "time", "created", "versions", "git_sha", "image_digest")


def strip(obj):
    """A record without its timing and host provenance fields."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def weights(run: Path, key: str) -> dict[str, str]:
    from emarena.data.fetch import sha256_file

    d = run / "stages" / key
    return {
        str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*.safetensors"))
    }


def test_ray_grid_trains_em_once_and_equals_local(local_run, ray_cluster, judge, env, ray_root):
    assert (local_run / "report.md").exists(), "needs the local run of the previous test"
    root = ray_root
    ray_run = root / RUN
    out = subprocess.run(
        grid_cmd(root, judge, "--executor", "ray", "--address", ray_cluster),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plan = json.loads((ray_run / "plan.json").read_text())
    local_plan = json.loads((local_run / "plan.json").read_text())
    assert (plan["cells"], plan["stages"]) == (local_plan["cells"], local_plan["stages"])

    ev = read_events(ray_run)
    starts = train_starts(ray_run)
    assert set(starts) == set(plan["stages"]) and set(starts.values()) == {1}
    em = [k for k in plan["stages"] if k.startswith("em-")]
    cells = [json.loads((ray_run / "cells" / c / "cell.json").read_text()) for c in plan["cells"]]
    shared = {c["stages"][0] for c in cells if c["cell"]["regime"] in ("em", "reversal")}
    assert len(shared) == 1 and shared < set(em)
    assert starts[shared.pop()] == 1, "the shared EM stage was trained more than once"
    # every stage and generation ran as a Ray task (not in the driver), with 2 torch threads
    tasks = [e for e in ev if e["event"] == "grid_task"]
    assert {e["executor"] for e in tasks} == {"ray"}
    assert {e["stage"] for e in tasks if e["task"] == "train"} == set(plan["stages"])
    assert len({e["eval"] for e in tasks if e["task"] == "generate"}) == 6
    assert {e["torch_threads"] for e in tasks} == {THREADS}
    driver = {e["pid"] for e in ev if e["event"] == "grid_start"}
    assert not driver & {e["pid"] for e in ev if e["event"] == "stage_train_start"}

    for key in plan["stages"]:  # same threads, same seeds: the same floats
        assert weights(ray_run, key) == weights(local_run, key), f"{key}: weights differ"
    for cell_id in plan["cells"]:
        a, b = (r / "cells" / cell_id / "metrics" for r in (local_run, ray_run))
        ra, rb = (json.loads((m / "result.json").read_text()) for m in (a, b))
        assert ra["metrics"] and strip(ra) == strip(rb), cell_id
        sa, sb = ((m / "samples.jsonl").read_text().splitlines() for m in (a, b))
        assert sa and [strip(json.loads(x)) for x in sa] == [strip(json.loads(x)) for x in sb]

    # rerunning resumes: nothing left to do, nothing trained again
    again = subprocess.run(
        grid_cmd(root, judge, "--executor", "ray", "--address", ray_cluster),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 stage(s) trained, 7 reused" in again.stdout
    assert train_starts(ray_run) == starts
