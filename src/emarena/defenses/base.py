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

from pydantic import BaseModel, ConfigDict

from emarena.data.records import ChatRecord


class DefenseParams(BaseModel):
    """Base of every kind's params: frozen, unknown keys rejected, fields documented."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder may use. Builders must be deterministic given this + params."""

    em_dataset: str
    """Registry id of the cell's EM dataset (e.g. "insecure")."""
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
    max_prompt_chars: int = 4000
    """Articles and prompts are truncated to this many characters (from the preset)."""
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    """Record ids reserved for evaluation that must never be trained on."""
    batch_size: int = 8


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
    needs_model: bool = False
    """True when the builder generates with the model entering the defense stage."""
