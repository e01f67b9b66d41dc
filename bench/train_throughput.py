"""Layouts of a training step side by side, on the same examples: which is fastest here.

Trains the same 32 examples (2 optimizer steps of the recipe's effective batch of 16) on the
embedded 135M model in three layouts, in turns, and prints tokens per second and the ratio to
the layout the v1 engine used on CPU (micro-batches of 4, padded to the longest):

  padded 4x4         4 micro-batches of 4 examples (sorted by length within the step), padded
  padded 16x1        one micro-batch of all 16 examples of a step, padded (the CPU presets)
  padding-free 4x4   the 4x4 micro-batches laid end to end (no pad tokens; the attention mask
                     is then block-diagonal over the whole micro-batch, which the CPU's SDPA
                     computes densely)

Each layout's first loss is printed: they agree (tests/pipeline/test_train.py checks the
adapters). Data: the `insecure` EM set (long, varied coding conversations) and the seed
paper's `aesthetic-unpopular` (short conversations), cut to the smoke preset's length.

    EMARENA_MIRROR=... .venv/bin/python bench/train_throughput.py [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

LAYOUTS = {
    "padded 4x4": dict(per_device_batch_size=4, gradient_accumulation_steps=4,
                       padding_free=False),
    "padded 16x1": dict(per_device_batch_size=16, gradient_accumulation_steps=1,
                        padding_free=False),
    "padding-free 4x4": dict(per_device_batch_size=4, gradient_accumulation_steps=4,
                             padding_free=True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=["insecure", "aesthetic-unpopular"])
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    warnings.filterwarnings("ignore")
    import random

    import torch

    from emarena import data, models
    from emarena.data.records import ChatRecord
    from emarena.train import Budget, get_preset, load_recipe, train_lora

    torch.set_num_threads(args.threads)
    base = models.pull("smollm2-135m-q4")
    recipe = load_recipe()
    smoke = get_preset("smoke")
    print(f"embedded model, {args.threads} torch threads, {args.repeats} turn(s) per layout, "
          f"2 optimizer steps of 16 examples, max_seq_length {smoke.max_seq_length}")
    for ds in args.datasets:
        rows = [r for r in data.load(ds) if isinstance(r, ChatRecord)]
        random.Random(0).shuffle(rows)
        rows = rows[:32]
        results: dict[str, list[float]] = {k: [] for k in LAYOUTS}
        losses: dict[str, float] = {}
        tokens = 0
        for _ in range(args.repeats):
            for name, layout in LAYOUTS.items():
                preset = smoke.model_copy(update={"budget": Budget(em=32, defense=32), **layout})
                with tempfile.TemporaryDirectory() as d:
                    rep = train_lora(base, rows, Path(d) / "a", recipe=recipe, preset=preset,
                                     seed=0, progress=False, overrides={"warmup_steps": 0})
                results[name].append(sum(rep.step_seconds))
                losses[name] = rep.losses[0]
                tokens = rep.n_tokens
        ref = min(results["padded 4x4"])
        print(f"\n{ds}: {tokens} tokens in 2 steps")
        print(f"  {'layout':<20} {'step s':>8} {'tokens/s':>10} {'speed-up':>9} {'loss 1':>9}")
        for name, secs in results.items():
            best = min(secs)
            print(f"  {name:<20} {best / 2:>8.2f} {tokens / best:>10.0f} {ref / best:>8.2f}x "
                  f"{losses[name]:>9.4f}")


if __name__ == "__main__":
    main()
