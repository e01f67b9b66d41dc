"""Bytes a `score` writes: per stage and per run, measured, and projected to 7B and 32B models.

Runs `emarena score submissions/sgtr --preset cpu-demo --regimes prevention --regimes reversal`
(the demo's command: 4 training stages, 2 summaries generations, 4 evaluations) on the embedded
model into a fresh store, then prints what the store holds, by entry, next to what the v1 engine
kept for the same run (every stage's merged fp32 weights besides its adapter), and the
projection of both for bf16 7B and 32B models (an adapter's size follows from the model's
architecture and the recipe's rank; a merged copy is the whole model).

    EMARENA_MIRROR=... .venv/bin/python bench/store_bytes.py [--preset cpu-demo] [--keep DIR]

The judge is a local OpenAI-compatible test server (tests/helpers/openai_server.py), so the
run needs no key and judging is quick; the bytes do not depend on the judge.
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


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--em-dataset", default="insecure")
    ap.add_argument("--keep", type=Path, help="keep the run and store in this folder; a folder "
                    "that already holds them (bench/demo_time.py --keep) is resumed, so only "
                    "what is missing (here: judging with this judge) is done")
    args = ap.parse_args()
    from tests.helpers.openai_server import OpenAIServer

    from emarena import models
    from emarena.protocol.store import Store, folder_bytes, usage
    from emarena.train import load_recipe

    root = args.keep or Path(tempfile.mkdtemp(prefix="emarena-bytes-"))
    root.mkdir(parents=True, exist_ok=True)
    store, run = root / "store", root / "run"
    env = {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-bench-not-a-secret"}
    with OpenAIServer() as server:
        cmd = [sys.executable, "-m", "emarena", "score", str(REPO / "submissions" / "sgtr"),
               "--preset", args.preset, "--em-dataset", args.em_dataset,
               "--regimes", "prevention", "--regimes", "reversal", "--run", str(run),
               "--store", str(store), "--judge", f"openai:bench@{server.url}"]
        t0 = time.time()
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stdout[-3000:], out.stderr[-3000:])
            return 1
        seconds = time.time() - t0
    s = Store(store)
    spec = models.get_spec("smollm2-135m-q4")
    base_bytes = folder_bytes(models.pull(spec.id))
    print(f"`emarena score submissions/sgtr --preset {args.preset} --em-dataset "
          f"{args.em_dataset}` (prevention + reversal) on {spec.id}: {seconds:.0f} s"
          + (" (resumed)" if "0 stage(s) trained" in out.stdout else ""))
    print(f"\n{'entry':<36} {'bytes':>10}")
    kinds: dict[str, int] = {}
    n_stages = 0
    for e in s.entries():
        b = folder_bytes(e.path)
        kinds[e.kind] = kinds.get(e.kind, 0) + b
        if e.kind == "stages":
            n_stages += 1
            adapter = folder_bytes(e.path / "adapter")
            print(f"{e.name:<36} {human(b):>10}  (adapter {human(adapter)})")
    for k, b in sorted(kinds.items()):
        print(f"{k + '/*':<36} {human(b):>10}")
    total = sum(kinds.values())
    merged = sum(1 for _ in store.rglob("merged"))
    print(f"{'store total':<36} {human(total):>10}  merged-weight folders: {merged}")
    use = usage(s, [run])
    print(f"{'`emarena store du` of the run':<36} {human(use.runs[0].bytes):>10}")
    v1 = total + n_stages * base_bytes  # v1 kept each stage's merged fp32 copy as well
    print(f"{'the v1 engine, same run':<36} {human(v1):>10}  ({n_stages} merged fp32 copies of "
          f"{human(base_bytes)}); now {total / v1:.1%} of it")

    # projection: the same run's stages for 7B and 32B models in bf16
    recipe = load_recipe()
    print("\nprojected for the same run (4 stages, 4 evaluations), bf16 checkpoints:")
    print(f"  {'model':<24} {'adapter':>10} {'stages':>10} {'v1 merged copies':>18}")
    for mid in ("qwen2.5-7b-instruct", "qwen2.5-32b-instruct"):
        m = models.get_spec(mid)
        lora = m.architecture.lora_params(recipe.lora_r, recipe.lora_target_modules)
        adapter = 4 * lora  # fp32, as peft saves it
        params = m.parameters * 1e9
        print(f"  {mid:<24} {human(adapter):>10} {human(n_stages * adapter):>10} "
              f"{human(n_stages * 4 * params):>18}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
