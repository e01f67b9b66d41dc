"""Which registered datasets each built-in defense's data builder reads (torch-free).

A defense stage's key hashes the sha256 of exactly these datasets (`StageSpec.datasets`), so a
changed input file never reuses an old stage, and an input a builder does not read (the EM
dataset, for SGTR and general knowledge) does not split one stage into several.
"""

from __future__ import annotations

from typing import Any


def _get(params: Any, name: str, default: Any) -> Any:
    if isinstance(params, dict):
        return params.get(name, default)
    return getattr(params, name, default)


def sgtr(params: Any, em_dataset: str | None, suite: str) -> list[str]:
    corpus = _get(params, "corpus", "xsum")
    return [f"{corpus}-articles", f"{corpus}-summaries", "sgtr-summary-prompts"]


def correct_domain(params: Any, em_dataset: str | None, suite: str) -> list[str]:
    from emarena.defenses.builders.simple import correct_counterpart

    counterpart = _get(params, "counterpart", None)
    if counterpart:
        return [counterpart]
    assert em_dataset is not None
    return [correct_counterpart(em_dataset, suite)]


def general_knowledge(params: Any, em_dataset: str | None, suite: str) -> list[str]:
    if _get(params, "source", "mmlu") == "truthfulqa":
        return ["truthfulqa"]
    return [f"mmlu-{_get(params, 'split', None) or 'test'}"]


def interleave(params: Any, em_dataset: str | None, suite: str) -> list[str]:
    """The EM dataset, and what the mixed-in kind reads."""
    from emarena.defenses import DEFENSES, defense_inputs, resolve_params

    kind = _get(params, "data", "word-counting")
    inner = resolve_params(kind, {}, suite)
    assert em_dataset is not None
    return [em_dataset, *defense_inputs(DEFENSES.get(kind), inner, em_dataset, suite)]


def word_counting(params: Any, em_dataset: str | None, suite: str) -> list[str]:
    from emarena.defenses.builders.simple import word_counting_source

    return [word_counting_source(params, em_dataset)]
