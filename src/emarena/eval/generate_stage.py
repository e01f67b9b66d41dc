"""The generate stage of a cell: every answer and every forced choice the metrics need.

    run_generation(out_dir, model_id=..., model_dir=..., adapter_dir=..., preset=..., seed=...)

writes into `out_dir`:
    generations.jsonl    free-form answers (eval.yaml em_questions `evaluate` sets + identity),
                         one `Generation` row per (set, question, paraphrase, condition, sample)
    choices.jsonl        self-recognition + capability, one `ChoiceScore` row per
                         (set, item, condition)
    own_summaries.jsonl  the model's own CNN summaries that self-recognition pairs (reused)

Every file is an append-only row store keyed by row id: run the same call again after a kill
and it generates only the missing rows. The stage's DONE.json (written by the protocol, last)
records the returned stats.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

GENERATIONS = "generations.jsonl"
CHOICES = "choices.jsonl"


def run_generation(
    out_dir: str | Path,
    *,
    model_id: str,
    model_dir: str | Path,
    adapter_dir: str | Path | None = None,
    preset: Any,
    seed: int,
    backend: str = "transformers",
    suite: Any = None,
    backend_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    limit: int | None = None,
    choices: bool = True,
    generator: Any = None,
) -> dict[str, Any]:
    """Generate the free-form answers and score the forced choices of one cell.

    model_id    registry id (default system prompt, identity); model_dir its weights folder
                (the base model, or merged stage-1 weights); adapter_dir the LoRA on top, if any
    preset      a preset name of the suite's recipe or a `Preset` (sizes and token budgets)
    seed        the run seed: each free-form row is sampled with a seed derived from it and
                the row id, recorded in the row
    backend     "transformers" or "vllm" (emarena.eval.backends.GENERATORS)
    suite       an `EvalSuite`, or a suite version (default: settings.DEFAULT_SUITE)
    limit       stop after this many new free-form rows (tests of resumption)
    choices     False: free-form answers only
    generator   a backend generator already loaded (an evaluation job's `Engine`): used as
                is and left open; model_dir / adapter_dir / backend are then only recorded
    """
    from emarena import settings
    from emarena.eval.backends import make_generator
    from emarena.eval.prompts import plan_generation
    from emarena.eval.rows import Generation, RowStore
    from emarena.eval.sets import EvalSuite, load_eval_suite
    from emarena.models.spec import get_spec
    from emarena.train.recipe import get_preset

    t0 = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite_cfg = (suite if isinstance(suite, EvalSuite)
                 else load_eval_suite(suite or settings.DEFAULT_SUITE))
    preset_obj = get_preset(preset) if isinstance(preset, str) else preset
    spec = get_spec(model_id)
    plan = plan_generation(suite_cfg, spec, preset_obj)

    own = generator is None
    gen = generator if not own else make_generator(backend, model_dir, adapter_dir,
                                                   **(backend_options or {}))
    try:
        gen_stats = gen.generate(
            plan.items,
            max_new_tokens=preset_obj.max_new_tokens,
            temperature=suite_cfg.sampling.temperature,
            top_p=suite_cfg.sampling.top_p,
            top_k=suite_cfg.sampling.top_k,
            seed=seed,
            store=RowStore(out / GENERATIONS, Generation),
            progress=progress,
            limit=limit,
        )
        choice_stats = None
        if choices and (limit is None or gen_stats["remaining"] == 0):
            from emarena.eval.choice import run_choices

            choice_stats = run_choices(gen, out, suite_cfg, spec, preset_obj, choices_file=CHOICES,
                                       progress=progress)
        backend_info = gen.describe()
    finally:
        if own:
            gen.close()
    return {
        "model_id": model_id,
        "adapter": str(adapter_dir) if adapter_dir is not None else None,
        "preset": preset_obj.name,
        "seed": seed,
        "sampling": suite_cfg.sampling.model_dump(),
        "max_new_tokens": preset_obj.max_new_tokens,
        "backend": backend_info,
        "generations": {**gen_stats, "sets": plan.counts(), "skipped": plan.skipped},
        "choices": choice_stats,
        "complete": gen_stats["remaining"] == 0 and (choice_stats is not None or not choices),
        "seconds": round(time.monotonic() - t0, 1),
    }
