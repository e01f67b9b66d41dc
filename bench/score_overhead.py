"""The whole cpu-demo protocol: seconds per training step, and the share of wall time outside steps.

Runs `emarena score submissions/sgtr --preset cpu-demo --no-eval` (prevention + reversal, plus
the base and em controls) into a fresh run folder, as a user would, and splits its wall time into
optimizer steps (from each stage's train_report.json) and everything else: process start and
imports, loading and converting the model, building data (SGTR generates its own summaries),
tokenizing, merging and saving. Target: outside-step share under 25%.

    python bench/score_overhead.py [--keep RUN_DIR]

Needs the data (EMARENA_MIRROR or network). The embedded model's one-time conversion is not
counted if it is already in the cache; pass --cold-model to include it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.25


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="run folder to use and keep (default: a temp dir)")
    ap.add_argument("--cold-model", action="store_true", help="convert the model inside the timing")
    args = ap.parse_args()

    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if args.cold_model:
        env["EMARENA_CACHE"] = tempfile.mkdtemp(prefix="emarena-cold-")
    else:
        subprocess.run(
            [sys.executable, "-m", "emarena", "models", "pull", "smollm2-135m-q4"],
            check=True,
            env=env,
            capture_output=True,
        )
    run = args.keep or Path(tempfile.mkdtemp(prefix="emarena-bench-")) / "run"
    if run.exists():
        shutil.rmtree(run)
    cmd = [
        sys.executable,
        "-m",
        "emarena",
        "score",
        str(REPO / "submissions" / "sgtr"),
        "--preset",
        "cpu-demo",
        "--regimes",
        "prevention",
        "--regimes",
        "reversal",
        "--run",
        str(run),
        "--no-eval",  # this measures training; generation has its own bench
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0

    steps: list[float] = []
    setup = save = build = total_stage = 0.0
    for done in sorted(run.glob("stages/*/DONE.json")):
        d = json.loads(done.read_text())
        rep = json.loads((done.parent / "adapter" / "train_report.json").read_text())
        steps += rep["step_seconds"]
        setup += rep["setup_seconds"]
        save += rep["save_seconds"]
        build += d["timings"]["build_seconds"]
        total_stage += d["timings"]["total_seconds"]
    step_total = sum(steps)
    outside = wall - step_total
    share = outside / wall
    n_stages = len(list(run.glob("stages/*/DONE.json")))
    print(f"cpu-demo protocol: {n_stages} training stages, {len(steps)} optimizer steps")
    print(
        f"seconds per training step: {step_total / max(len(steps), 1):.2f} s "
        f"(min {min(steps):.2f}, max {max(steps):.2f})"
    )
    print(f"wall time: {wall:.1f} s = steps {step_total:.1f} s + outside steps {outside:.1f} s")
    print(
        f"  of which data building {build:.1f} s, trainer setup {setup:.1f} s, saving {save:.1f} s,"
        f" merging/other stage work {total_stage - build - sum(steps) - setup - save:.1f} s,"
        f" process start/imports/planning {wall - total_stage:.1f} s"
    )
    verdict = "OK" if share < TARGET else "OVER TARGET"
    print(f"outside-step share: {share:.1%} (target < {TARGET:.0%})  {verdict}")
    if not args.keep:
        shutil.rmtree(run.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
