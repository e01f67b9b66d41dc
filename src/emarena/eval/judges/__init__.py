"""Judges: who scores the answers, and how a score is made.

    base.py           the contract: JudgeRequest -> JudgeResult (scored, or unscored + reason),
                      render_prompt (braces in answers are safe), prompt_sha256
    aggregate.py      Betley's rule: probability-weighted mean over the tokens 0..100, None when
                      they hold < 0.25 of the mass
    openai_compat.py  OpenAIJudge: GPT-4o or any OpenAI-compatible server (vLLM), with
                      concurrency, retries and backoff; the reference judge
    hf.py             HFJudge: a local transformers model, exact multi-digit number scoring
    cache.py          JudgementCache: (judge id, prompt sha256) -> result, append-only JSONL
    run.py            judge_generations: generations -> judgements.jsonl, resumable, cached
    config.py         judges.yaml: the reference judge, thresholds, identity-extraction rubrics

Pick a judge with `resolve_judge(spec)`; a spec is "<backend>[:<model>[@<base_url>]]":

    resolve_judge("openai")                                  # the reference: gpt-4o-2024-08-06
    resolve_judge("openai-text")       # GPT-4o in the seed release's text mode (first number)
    resolve_judge("openai:Qwen/Qwen2.5-72B-Instruct@http://127.0.0.1:8000/v1")   # a vLLM server
                                     # (its key, if any, from $EMARENA_JUDGE_API_KEY)
    resolve_judge("hf:smollm2-135m-q4")                      # local, weak, not comparable
    resolve_judge(None)   # the reference judge if $OPENAI_API_KEY is set, else the local one

Importing this package imports neither torch nor httpx (backends load on first use).
"""

from __future__ import annotations

import os
from typing import Any

from emarena.errors import EmArenaError
from emarena.eval.judges.base import Judge, JudgeRequest, JudgeResult, prompt_sha256, render_prompt
from emarena.registry import Registry

JUDGES: Registry[Any] = Registry("judge")
JUDGES.register("openai", "emarena.eval.judges.openai_compat:OpenAIJudge")
#: The same judge in the seed release's text mode (never official; for replaying its outputs).
JUDGES.register("openai-text", "emarena.eval.judges.openai_compat:OpenAIJudge")
JUDGES.register("hf", "emarena.eval.judges.hf:HFJudge")

DEFAULT_LOCAL_MODEL = "smollm2-135m-q4"
OTHER_SERVER_KEY_ENV = "EMARENA_JUDGE_API_KEY"
"""The API key sent to an OpenAI-compatible judge server other than the reference API."""

LOCAL_JUDGE_NOTE = (
    "No OPENAI_API_KEY is set, so answers are judged by the local model {model}. A small local "
    "model is a weak judge: it often gives no number (those answers are counted as unscored) "
    "and its numbers are not comparable to the reference judge ({reference}). Judge-based "
    "numbers from this run (misalignment rate, alignment, coherence, identity) are for "
    "exercising the pipeline only; set OPENAI_API_KEY to use the reference judge."
)
NOT_REFERENCE_NOTE = (
    "The judge {judge} is not the reference judge ({reference}); judge-based numbers from this "
    "run are not comparable with results judged by the reference judge."
)


def resolve_judge(spec: str | None) -> tuple[Judge, str | None]:
    """(judge, note) for a judge spec; `note` is a plain sentence to show the user, or None.

    None picks the reference judge when its API key variable ($OPENAI_API_KEY) is set, else the
    local hf judge on the embedded model (with a note that its numbers are not comparable).
    """
    from emarena.eval.judges.config import load_judges_config

    config = load_judges_config()
    ref = config.reference
    extraction_max_tokens = config.extraction.max_tokens
    reference = f"openai:{ref.model}"
    if spec is None or not spec.strip():
        if os.environ.get(ref.api_key_env):
            spec = "openai"
        else:
            judge = JUDGES.get("hf")(DEFAULT_LOCAL_MODEL, min_mass=ref.min_mass,
                                     extraction_max_tokens=extraction_max_tokens)
            return judge, LOCAL_JUDGE_NOTE.format(model=DEFAULT_LOCAL_MODEL, reference=reference)
    backend, _, rest = spec.strip().partition(":")
    if backend not in JUDGES:
        raise EmArenaError(
            f"unknown judge backend {backend!r} in judge spec {spec!r}",
            fix="use openai[:MODEL[@BASE_URL]], openai-text[:MODEL[@BASE_URL]] or "
            "hf[:MODEL_ID_OR_DIR], e.g. "
            f"openai:{ref.model} or hf:{DEFAULT_LOCAL_MODEL}",
        )
    cls = JUDGES.get(backend)
    if backend in ("openai", "openai-text"):
        model, _, base_url = rest.partition("@")
        base_url = base_url or ref.base_url
        # The OpenAI key goes to OpenAI only: another server gets $EMARENA_JUDGE_API_KEY (e.g.
        # vLLM's --api-key), so pointing the judge at some URL cannot leak $OPENAI_API_KEY.
        own_key = base_url.rstrip("/") == ref.base_url.rstrip("/")
        judge = cls(
            model=model or ref.model,
            base_url=base_url,
            api_key_env=ref.api_key_env if own_key else OTHER_SERVER_KEY_ENV,
            top_logprobs=ref.top_logprobs,
            min_mass=ref.min_mass,
            seed=ref.seed,
            extraction_max_tokens=extraction_max_tokens,
            mode="text" if backend == "openai-text" else "logprobs",
        )
    else:
        if "@" in rest:
            raise EmArenaError(f"judge spec {spec!r}: an hf judge takes no @base_url",
                               fix=f"use hf:MODEL_ID_OR_DIR, e.g. hf:{DEFAULT_LOCAL_MODEL}")
        judge = cls(rest or DEFAULT_LOCAL_MODEL, min_mass=ref.min_mass,
                    extraction_max_tokens=extraction_max_tokens)
    note = None if judge.official else NOT_REFERENCE_NOTE.format(judge=judge.id,
                                                                 reference=reference)
    return judge, note


__all__ = [
    "JUDGES",
    "Judge",
    "JudgeRequest",
    "JudgeResult",
    "prompt_sha256",
    "render_prompt",
    "resolve_judge",
]
