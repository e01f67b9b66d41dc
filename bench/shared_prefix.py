"""Forward passes that share a prompt opening, run once vs whole: the evaluation's two
forward-only steps, timed side by side on the embedded model.

The log-likelihood contrast scores every published answer to a question after the same prompt,
and self-recognition asks about one article with every other source's summary in both orders,
so most of their tokens are a few openings repeated. The transformers backend runs such an
opening once and shares its keys and values (`TransformersGenerator.share_prefixes`, on by
default). This script scores the same rows both ways, in one process on one loaded model,
checks that the numbers agree, and prints each step's seconds and the speed-up.

    EMARENA_MIRROR=... .venv/bin/python bench/shared_prefix.py [--preset cpu-demo] [--suite v2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--suite", default="v2")
    args = ap.parse_args()
    from emarena import models
    from emarena.eval.backends import make_generator
    from emarena.eval.choice import OWN_SUMMARIES, run_choices
    from emarena.eval.generate_stage import run_contrast
    from emarena.eval.rows import ChoiceScore, ContrastScore, RowStore
    from emarena.eval.sets import load_eval_suite
    from emarena.train import get_preset

    preset = get_preset(args.preset, suite=args.suite)
    spec = models.get_spec(models.default_model_id())
    suite = load_eval_suite(args.suite).for_preset(preset, spec.default_system_prompt)
    gen = make_generator("transformers", models.pull(spec.id))
    root = Path(tempfile.mkdtemp(prefix="emarena-prefix-"))
    try:
        # own summaries first (generation, the same either way), then each step both ways
        run_choices(gen, root / "warm", suite, spec, preset)
        timing: dict[str, dict[str, float]] = {}
        scores: dict[str, dict[str, dict[str, float]]] = {}
        for shared in (False, True):
            way = "shared" if shared else "whole"
            gen.share_prefixes = shared
            out = root / way
            out.mkdir()
            shutil.copy(root / "warm" / OWN_SUMMARIES, out / OWN_SUMMARIES)
            t0 = time.perf_counter()
            run_choices(gen, out, suite, spec, preset)
            t1 = time.perf_counter()
            run_contrast(gen, out, suite, spec, preset)
            t2 = time.perf_counter()
            timing[way] = {"choices": t1 - t0, "contrast": t2 - t1}
            scores[way] = {
                "choices": {r.id: r.mass for r in RowStore(out / "choices.jsonl", ChoiceScore)},
                "contrast": {r.id: r.loglik for r in RowStore(out / "contrast.jsonl",
                                                               ContrastScore)},
            }
        print(f"{spec.id}, preset {args.preset}, suite {args.suite}, conditions "
              f"{list(suite.conditions)}")
        print(f"{'step':<10} {'rows':>5} {'whole s':>8} {'shared s':>9} {'speed-up':>9} "
              f"{'max |diff|':>11}")
        for step in ("choices", "contrast"):
            a, b = scores["whole"][step], scores["shared"][step]
            assert a.keys() == b.keys(), step
            diff = max(abs(a[k] - b[k]) for k in a)
            w, s = timing["whole"][step], timing["shared"][step]
            print(f"{step:<10} {len(a):>5} {w:>8.1f} {s:>9.1f} {w / s:>8.2f}x {diff:>11.2e}")
    finally:
        gen.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
