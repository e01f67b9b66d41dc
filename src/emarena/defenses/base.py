"""What a defense kind is, and what its data builder receives.

A defense kind = typed params (a pydantic model, validated without torch) + an optional data
builder, registered lazily as "module:attr" so `emarena validate` never imports torch. The
builder turns params + a `BuildContext` into the chat records of the defense stage; the protocol
trains them with the benchmark's one LoRA recipe, identically for every defense.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from emarena.data.records import ChatRecord


class DefenseParams(BaseModel):
    """Base of every kind's params: frozen, unknown keys rejected, fields documented."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    SUITE_DEFAULTED: ClassVar[tuple[str, ...]] = ()
    """Fields whose None means "as the suite's protocol says" (`protocol:` in the suite's
    defenses.yaml, filled in by `emarena.defenses.resolve_params` for the cell's suite). While
    None they are left out of the params' dump, so cells and stages made before such a field
    existed keep their keys."""

    @model_serializer(mode="wrap")
    def _omit_unset_suite_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for name in self.SUITE_DEFAULTED:
                if out.get(name, 0) is None:
                    del out[name]
        return out


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder may use. Builders must be deterministic given this + params."""

    em_dataset: str | None
    """Registry id of the cell's EM dataset (e.g. "insecure"); None for a kind that declares it
    does not read it (`DefenseKind.reads_em_dataset`), whose stage is shared by every EM dataset."""
    n_examples: int
    """The budget: exactly this many training examples (the same for every defense)."""
    seed: int
    model_id: str
    """Registry id of the base model (for its default system prompt, chat template notes)."""
    model_dir: Path | None
    """Local folder of the model entering the defense stage (base, or merged EM weights in the
    reversal regime). SGTR generates its own summaries with it."""
    work_dir: Path
    """Scratch folder owned by this build; intermediate files here are reused on a rerun."""
    max_new_tokens: int = 128
    """Generation budget for self-generated text (from the preset)."""
    max_prompt_chars: int | None = 4000
    """Articles and prompts are truncated to this many characters (from the preset); None: not
    cut (over-length examples are dropped in training, and counted)."""
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    """Record ids reserved for evaluation that must never be trained on."""
    batch_size: int = 8
    summaries_dir: Path | None = None
    """The store entry holding the model's own summaries (kinds with `needs_model`): generated
    before the build by a generation task with the run's backend, one row per article."""
    summary_sampling: dict[str, Any] | None = None
    """How those summaries are sampled (temperature, top_p, top_k, seed); None: greedy."""


#: A builder: (params, ctx) -> the defense stage's training records.
Builder = Callable[[DefenseParams, BuildContext], list[ChatRecord]]


@dataclass(frozen=True)
class DefenseKind:
    name: str
    params: type[DefenseParams]
    builder: str | None
    """"module:attr" of the Builder; None for kinds without a training stage (`none`)."""
    description: str
    source: str
    """Where the method comes from (paper / repository)."""
    summarizer: str | None = None
    """"module:attr" of `(params, BuildContext, generator, progress) -> stats`, for kinds whose
    builder reads the model's own summaries (SGTR): a generation task runs it first, with the
    run's backend, into a store entry (`BuildContext.summaries_dir`); None: no such step."""
    @property
    def needs_model(self) -> bool:
        """True when the build needs the model entering the stage (through its summaries)."""
        return self.summarizer is not None

    reads_em_dataset: bool = True
    """Whether the build depends on the cell's EM dataset. False lets one defense stage serve
    every EM dataset (its key leaves the EM dataset out); plugins default to True (safe)."""
    inputs: str | None = None
    """"module:attr" of `(params, em_dataset, suite) -> list[dataset id]`: the registered
    datasets the build reads (their sha256s go into the stage key). None: the EM dataset only."""
    interleaved: bool = False
    """True: no stage of its own; another kind's data (`params.data`) is mixed into the EM
    stage at `params.ratio` (an in-training defense, the prevention regime only)."""
