"""`make demo`'s protocol, timed: wall time and the share of each phase.

Runs the demo's command (`emarena score submissions/sgtr --preset cpu-demo --em-dataset
aesthetic-unpopular --regimes prevention --regimes reversal`) into a fresh store, after the
set-up `make demo-setup` does (data and the embedded model, not timed), and prints the wall time
(target: under 10 minutes on 2 cores) and how it splits: training, own summaries, generation
(answers, forced choices and the log-likelihood contrast), judging, and the rest (process
starts, planning, metrics, the report), then `make demo`'s last step, the local board folder
(`emarena published import sgtr-em`). Phases are read from the run's events, so the split is
what the engine did, not an estimate. The judgement cache starts empty, as on a fresh machine.

    EMARENA_MIRROR=... .venv/bin/python bench/demo_time.py [--judge hf|test-server]

`--judge test-server` judges with the local OpenAI-compatible test server instead of the
embedded model (the demo's default judge without a key): judging then costs almost nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES = {  # event that opens a span -> (event that closes it, phase)
    "stage_build_start": ("stage_done", "training (data building included)"),
    "summaries_start": ("summaries_done", "own summaries"),
    "generate_start": ("generate_done", "generation (answers, choices, contrast)"),
    "judge_start": ("judge_done", "judging"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", choices=["hf", "test-server"], default="hf")
    ap.add_argument("--keep", type=Path, help="keep the run and store in this (new) folder "
                    "(bench/store_bytes.py --keep DIR then measures them without retraining)")
    args = ap.parse_args()
    from emarena.protocol.run import read_events

    root = args.keep or Path(tempfile.mkdtemp(prefix="emarena-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    run, store = root / "run", root / "store"
    cmd = [sys.executable, "-m", "emarena", "score", str(REPO / "submissions" / "sgtr"),
           "--preset", "cpu-demo", "--em-dataset", "aesthetic-unpopular",
           "--regimes", "prevention", "--regimes", "reversal", "--run", str(run),
           "--store", str(store)]
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    # A fresh judgement cache (everything else of the cache is set-up, linked): judgements of
    # earlier runs (the base model's answers are the same every time) would make judging free.
    from emarena import settings

    cache = root / "cache"
    cache.mkdir(exist_ok=True)
    for p in settings.cache_dir().iterdir():
        if p.name != "judgements" and not (cache / p.name).exists():
            (cache / p.name).symlink_to(p.resolve())
    env["EMARENA_CACHE"] = str(cache)
    server = None
    if args.judge == "test-server":
        from tests.helpers.openai_server import OpenAIServer

        server = OpenAIServer().__enter__()
        cmd += ["--judge", f"openai:demo@{server.url}"]
        env["EMARENA_JUDGE_API_KEY"] = "sk-bench-not-a-secret"
    t0 = time.time()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    score_wall = time.time() - t0
    if server is not None:
        server.__exit__(None, None, None)
    if out.returncode:
        print(out.stdout[-3000:], out.stderr[-3000:])
        return 1
    # the rest of `make demo`: the local board folder with the published rows
    t1 = time.time()
    board = subprocess.run([sys.executable, "-m", "emarena", "published", "import", "sgtr-em",
                            "--out", str(root / "board" / "published")], cwd=REPO, env=env,
                           capture_output=True, text=True)
    board_secs = time.time() - t1
    if board.returncode:
        print(board.stdout[-3000:], board.stderr[-3000:])
        return 1
    wall = score_wall + board_secs
    spans: dict[str, float] = {}
    opened: dict[tuple[str, str], float] = {}
    for e in read_events(run):
        name = e["event"]
        key = e.get("stage") or e.get("summaries") or e.get("judgement") or e.get("eval") or ""
        if name in PHASES:
            opened[(name, key)] = e["time"]
        for start, (end, phase) in PHASES.items():
            if name == end and (start, key) in opened:
                spans[phase] = spans.get(phase, 0.0) + e["time"] - opened.pop((start, key))
    print(f"`make demo` after set-up: {wall:.0f} s wall ({wall / 60:.1f} min; target < 10 min "
          f"on 2 cores), judge {args.judge}, {os.cpu_count()} CPUs")
    for phase, secs in spans.items():
        print(f"  {phase:<48} {secs:7.0f} s  {secs / wall:6.1%}")
    rest = score_wall - sum(spans.values())
    print(f"  {'the rest of score (processes, planning, metrics)':<48} {rest:7.0f} s  "
          f"{rest / wall:6.1%}")
    print(f"  {'the board folder (published import)':<48} {board_secs:7.0f} s  "
          f"{board_secs / wall:6.1%}")
    print("\n" + "\n".join(out.stdout.splitlines()[-24:]))
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
