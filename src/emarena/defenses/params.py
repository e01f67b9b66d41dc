"""The typed params of each reference defense kind.

A submission's `defense.params` mapping is validated by its kind's model here (unknown keys and
out-of-range values fail at load time, with the file, line and key). Everything a defense may
*not* choose (the base model, the EM data, the LoRA recipe, the number of training examples)
is absent on purpose: the benchmark fixes it, identically for every defense.

Cross-checks against the suite's dataset registry (`benchmark/suites/v1/datasets.yaml`) read
YAML only; nothing here imports torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from emarena.defenses.base import DefenseParams
from emarena.yamlio import invalid

#: Same shape as a dataset registry id (`emarena.data.spec.DatasetSpec.id`).
DATASET_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"


def _summary_parts(corpus: str) -> dict[str, int | None]:
    """Summary sources (parts) of `<corpus>-summaries` in the suite -> their record counts."""
    from emarena.data.spec import get_spec

    return {f.part: f.records for f in get_spec(f"{corpus}-summaries").files if f.part}


class NoneParams(DefenseParams):
    """The control (`none`): no defense stage, so nothing to set."""


class SgtrParams(DefenseParams):
    """Self-generated text recognition: pick your own summary of an article out of two.

    `prompt_variant` and `summaries_from` left unset (null) follow the suite's protocol
    (defenses.yaml `protocol:`): suite v2 the seed paper's reported runs, suite v1 its own."""

    SUITE_DEFAULTED = ("prompt_variant", "summaries_from")

    n_articles: int | None = Field(default=None, ge=1, le=100_000)
    """Articles to build pairs from. Each article gives two examples (own summary first, and
    second), so None means budget / 2: the defense stage gets exactly the benchmark's budget."""
    corpus: Literal["xsum"] = "xsum"
    """Article corpus; the articles come from the suite's `<corpus>-articles` dataset."""
    other_source: str = Field(default="claude-21", pattern=r"^[A-Za-z0-9._-]+$")
    """Whose summary is the "other" text: a source (part) of the suite's `xsum-summaries`
    dataset, e.g. claude-21, gpt4o, human. The model's own summaries are generated at run time."""
    prompt_variant: Literal["default", "no-system", "identity"] | None = None
    """What the system turn of each recognition example holds. `identity`: the model's own
    identity-bearing default system prompt (the seed paper's reported runs, `qwensys`; a model
    without one gets no system turn, the release's `syspopped`); `no-system`: no system turn;
    `default`: Panickssery et al.'s detection system prompt (suite v1's reference). null: the
    suite's protocol (v2: identity, v1: default)."""
    summaries_from: Literal["base", "parent"] | None = None
    """Whose own summaries the recognition examples pair (the "self" the model learns to pick):
    `base`, the base model's, so the reversal stage (EM, then SGTR) trains on the same data as
    the prevention stage (the seed release's final `sgtr_fixed` pipeline); `parent`, the model
    entering the stage (the EM model in reversal). null: the suite's protocol (v2: base, v1:
    parent)."""

    @field_validator("other_source")
    @classmethod
    def _source_in_suite(cls, v: str, info: ValidationInfo) -> str:
        corpus = info.data.get("corpus", "xsum")
        parts = _summary_parts(corpus)
        if v not in parts:
            raise invalid(
                f"{v!r} is not a summary source of the suite's {corpus}-summaries dataset",
                f"use one of: {', '.join(sorted(parts))}",
            )
        return v

    @model_validator(mode="after")
    def _enough_articles(self) -> SgtrParams:
        available = _summary_parts(self.corpus).get(self.other_source)
        if self.n_articles is not None and available is not None and self.n_articles > available:
            raise invalid(
                f"n_articles {self.n_articles} is more than the {available} articles with a "
                f"{self.other_source!r} summary",
                f"use at most {available}, or leave n_articles unset (budget / 2)",
            )
        return self


class SgtrCorruptedParams(SgtrParams):
    """SGTR with corrupted labels: the same data, but the answer does not point at the self."""

    SUITE_DEFAULTED = ("prompt_variant", "summaries_from", "random_labels")

    mode: Literal["prefer-other", "random"] = "prefer-other"
    """`prefer-other`: the label always points at the other source's summary; `random`: the
    label does not say which summary is the model's own (see `random_labels`)."""
    random_labels: Literal["both", "coin"] | None = None
    """How `random` labels: `both`, each article's two orders each labelled once as self and
    once as other, four examples per article (the seed release's RANDOM_SELF_OTHER mode, the
    one the paper reports); `coin`, one balanced coin-flip label per order, two examples per
    article (suite v1). null: the suite's protocol (v2: both, v1: coin)."""


class CorrectDomainParams(DefenseParams):
    """Correct answers in the EM dataset's own domain (secure code, good medical advice)."""

    counterpart: str | None = Field(default=None, pattern=DATASET_ID_PATTERN)
    """A `defense`-role dataset id overriding the suite's mapping from the cell's EM dataset to
    its correct counterpart (e.g. insecure -> secure). None uses the suite's mapping."""

    @field_validator("counterpart")
    @classmethod
    def _registered_defense_dataset(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from emarena.data.spec import all_specs

        specs = all_specs()
        ok = sorted(i for i, d in specs.items() if d.role == "defense")
        if v not in specs:
            raise invalid(f"unknown dataset {v!r}", f"use a defense dataset: {', '.join(ok)}")
        if specs[v].role != "defense":
            raise invalid(
                f"dataset {v!r} has role {specs[v].role!r}, not 'defense'",
                f"use a defense dataset: {', '.join(ok)}",
            )
        return v


class GeneralKnowledgeParams(DefenseParams):
    """Benign general-knowledge question answering (multiple choice)."""

    SUITE_DEFAULTED = ("split",)

    source: Literal["mmlu", "truthfulqa"] = "mmlu"
    """Question set: MMLU (`mmlu-<split>` in the suite) or TruthfulQA (`truthfulqa`)."""
    split: Literal["dev", "val", "test"] | None = None
    """MMLU split to draw questions from; only for `source: mmlu`. null: the suite's protocol
    (v2: val, since v2 evaluates MMLU on test; v1: test, which v1 did not evaluate)."""
    answer_format: Literal["letter", "text"] = "letter"
    """Target answer: the option letter ("B") or the option's text."""

    @model_validator(mode="after")
    def _split_is_mmlu_only(self) -> GeneralKnowledgeParams:
        if self.source != "mmlu" and "split" in self.model_fields_set:
            raise invalid("split applies to source: mmlu only", "remove `split`")
        return self


class InterleaveParams(DefenseParams):
    """Another defense's data mixed into the EM finetune itself (an in-training defense)."""

    data: Literal["word-counting", "general-knowledge", "correct-domain"] = "word-counting"
    """The defense kind whose data is mixed in, built with its params as the suite's protocol
    resolves them (kinds that need the model's own summaries, such as SGTR, are not offered)."""
    ratio: float = Field(ge=0.01, le=0.33)
    """The share of the EM stage's examples that are defense data (the seed paper interleaves
    1% to 33%): the EM budget is kept and ratio / (1 - ratio) of it is added."""


class WordCountingParams(DefenseParams):
    """Word counting: does the user turn have an even number of words? Answer TRUE / FALSE."""

    SUITE_DEFAULTED = ("source",)

    source: Literal["em-prompts", "aesthetic-unpopular"] | None = None
    """Sentences to count: `aesthetic-unpopular`, the user turns of the unpopular-aesthetics
    data whatever the cell's EM dataset (the seed release's WC set); `em-prompts`, the user
    prompts of the cell's own EM dataset (suite v1; on insecure that counts words in code).
    Labels are computed, so no assistant turn of the source is trained on. null: the suite's
    protocol (v2: aesthetic-unpopular, v1: em-prompts)."""
