"""A cell: one unit of work, identified by the sha256 of its canonical JSON.

The regimes (ARCHITECTURE.md):
  base        no training
  em          EM finetune only (the control every defense is compared against)
  defense     defense finetune only
  reversal    EM finetune, then the defense (can the defense undo EM?)
  prevention  defense finetune, then EM (does the defense protect against EM?)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Regime = Literal["base", "em", "defense", "reversal", "prevention"]
REGIMES: tuple[Regime, ...] = ("base", "em", "defense", "reversal", "prevention")
DEFENSE_REGIMES: tuple[Regime, ...] = ("defense", "reversal", "prevention")


def canonical_json(obj: Any) -> str:
    """The one serialisation every hash in EM Arena is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class OmitDefaults(Frozen):
    """A model some of whose fields were added later (`ADDED`): while at their default they are
    left out of the dump, so ids and keys hashed from dumps made before they existed stay."""

    ADDED: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for name, default in self.ADDED.items():
                if name in out and out[name] == default:
                    del out[name]
        return out


class ModelRef(Frozen):
    id: str
    """Model registry id."""
    revision: str
    """Pinned revision (Hub commit, or the wheel version + sha256 for the embedded model)."""


class DefenseRef(Frozen):
    name: str
    """Submission name (folder name)."""
    kind: str
    """Registered defense kind."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The kind's params, validated and with defaults filled in."""
    division: Literal["closed", "open"] = "closed"
    training: dict[str, Any] = Field(default_factory=dict)
    """Open-division training overrides (empty in the closed division)."""
    config_hash: str
    """sha256 of the validated submission."""


class Cell(OmitDefaults):
    ADDED: ClassVar[dict[str, Any]] = {"em_system_turn": "default"}

    schema_version: Literal[1] = 1
    """Version of the cell format."""
    suite: str
    """Benchmark suite version (benchmark/suites/<suite>/)."""
    model: ModelRef
    """The base model, pinned."""
    em_dataset: str
    """Dataset registry id of the EM-induction data."""
    regime: Regime
    """base | em | defense | reversal | prevention."""
    defense: DefenseRef | None = None
    """None for the `base` and `em` controls."""
    seed: int
    """Seed of every random choice in the cell (data order, LoRA init, sampling)."""
    preset: str
    """Preset from recipe.yaml (paper, cpu-demo)."""
    em_system_turn: Literal["default", "none"] = "default"
    """How the EM finetune renders its conversations (which hold no system message): `default`
    as the chat template does (a template with a default system prompt, such as Qwen's, puts
    the identity prompt in: the seed release's `em_*` models); `none` with no system turn at
    all (its `em_*_nosys` models, the paper's third finding: EM learnt without the identity
    prompt is much weaker under it)."""

    @property
    def id(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def label(self) -> str:
        d = self.defense.name if self.defense else "-"
        em = self.em_dataset + ("(nosys)" if self.em_system_turn == "none" else "")
        return f"{self.regime}/{d}/{em}/seed{self.seed}"
