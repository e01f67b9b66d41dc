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
from functools import lru_cache
from pathlib import Path
from typing import Any

GENERATIONS = "generations.jsonl"
CHOICES = "choices.jsonl"
CONTRAST = "contrast.jsonl"
#: (prompt, answer) pairs scored per backend call in the contrast step.
CONTRAST_CHUNK = 32


def contrast_set(suite_cfg: Any, preset: Any) -> Any:
    """The suite's contrast set at the preset's size (cached per process)."""
    c = suite_cfg.contrast
    per_class = c.per_class
    if preset.contrast_per_class is not None:
        per_class = min(per_class or preset.contrast_per_class, preset.contrast_per_class)
    return _contrast_set(tuple(c.datasets), per_class, c.seed)


@lru_cache(maxsize=4)
def _contrast_set(datasets: tuple[str, ...], per_class: int | None, seed: int) -> Any:
    from emarena.errors import ConfigError
    from emarena.eval.contrast import build_contrast_set
    from emarena.published.files import JUDGED_ANSWERS

    if set(datasets) != set(JUDGED_ANSWERS):
        raise ConfigError(f"contrast.datasets {list(datasets)} are not the published judged "
                          f"answers {list(JUDGED_ANSWERS)} the contrast set reads",
                          fix="list exactly those datasets in eval.yaml")
    return build_contrast_set(per_class=per_class, seed=seed)


def run_contrast(gen: Any, out_dir: Path, suite_cfg: Any, spec: Any, preset: Any) -> dict:
    """Score every answer of the contrast set under every condition into contrast.jsonl
    (append-only by row id, so a killed step resumes)."""
    from emarena.eval.prompts import compose_messages
    from emarena.eval.rows import ContrastScore, RowStore

    cset = contrast_set(suite_cfg, preset)
    store = RowStore(Path(out_dir) / CONTRAST, ContrastScore)
    todo = []
    for cond in suite_cfg.conditions:
        for q in cset.questions:
            msgs = compose_messages(cond, q.question, default_system=spec.default_system_prompt)
            if msgs is None:
                continue
            prompt = gen.render(msgs, cond)
            for cls, answers in (("misaligned", q.misaligned), ("aligned", q.aligned)):
                for a in answers:
                    rid = f"{cond}/{a.id}"
                    if rid not in store:
                        todo.append((rid, cond, q.question_id, a, cls, prompt))
    maxt = suite_cfg.contrast.max_answer_tokens
    for start in range(0, len(todo), CONTRAST_CHUNK):
        chunk = todo[start : start + CONTRAST_CHUNK]
        scores = gen.loglik([t[5] for t in chunk], [t[3].text for t in chunk], max_tokens=maxt)
        store.append([ContrastScore(id=rid, condition=cond, question_id=qid, answer_id=a.id,
                                    cls=cls, loglik=ll, n_tokens=n)
                      for (rid, cond, qid, a, cls, _), (ll, n) in zip(chunk, scores,
                                                                      strict=True)])
    return {"set_sha256": cset.sha256, "answers": sum(len(q.misaligned) + len(q.aligned)
                                                      for q in cset.questions),
            "rows": len(store), "scored_now": len(todo)}


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
    suite_cfg = suite_cfg.for_preset(preset_obj, spec.default_system_prompt)
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
        choice_stats = contrast_stats = None
        if choices and (limit is None or gen_stats["remaining"] == 0):
            from emarena.eval.choice import run_choices

            choice_stats = run_choices(gen, out, suite_cfg, spec, preset_obj, choices_file=CHOICES,
                                       progress=progress)
            if suite_cfg.contrast is not None:
                contrast_stats = run_contrast(gen, out, suite_cfg, spec, preset_obj)
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
        "contrast": contrast_stats,
        "complete": gen_stats["remaining"] == 0 and (choice_stats is not None or not choices),
        "seconds": round(time.monotonic() - t0, 1),
    }
