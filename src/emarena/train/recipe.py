"""The training recipe: `benchmark/suites/<version>/recipe.yaml` as typed objects.

One `Recipe` (LoRA shape, optimizer, schedule, loss, default seed) is shared by every training
stage of every cell; a `Preset` says how big a run is (data budget, sequence length, how the
effective batch is split, precision, evaluation sizes) without touching the recipe. Open-division
submissions may override the few recipe keys in `OPEN_DIVISION_KEYS`; everything else is fixed by
the suite version.

This module is torch-free: `emarena validate` and the leaderboard import it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from emarena import settings
from emarena.errors import ConfigError
from emarena.yamlio import load_model

RECIPE_FILE = "recipe.yaml"

Stage = Literal["em", "defense"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Budget(_Frozen):
    """How many training examples each stage of a cell uses (the same for every defense)."""

    em: int | None = Field(gt=0)
    """Examples in the EM finetune; null = every record of the cell's EM dataset."""
    defense: int | None = Field(gt=0)
    """Examples in a defense finetune; null = as many as the EM stage of the same cell.
    Pair-building defenses derive their source size from it (SGTR: two examples per article,
    one per order, so ceil(n / 2) articles)."""
    defenses: dict[str, int | None] = {}
    """Per reference defense, where its source defines its own budget (suite v2: the seed
    release's, e.g. word-counting 5000, sgtr-random 4000): budget class
    (`emarena.defenses.budget_class`: the kind, or `sgtr-random`) -> examples; null = as the
    EM stage. A defense not listed gets `defense`."""

    @model_serializer(mode="wrap")
    def _omit_empty_defenses(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if isinstance(out, dict) and not self.defenses:
            out.pop("defenses", None)  # so a suite without them (v1) keeps its training hash
        return out

    def n_examples(self, stage: Stage, *, em_dataset_size: int,
                   defense: str | None = None) -> int:
        """The number of examples `stage` trains on, given the size of the cell's EM dataset
        (and, for a defense stage, its budget class)."""
        em = self.em if self.em is not None else em_dataset_size
        if stage == "em":
            return em
        if defense is not None and defense in self.defenses:
            own = self.defenses[defense]
            return own if own is not None else em
        return self.defense if self.defense is not None else em


class Preset(_Frozen):
    """The size of a run. A preset never changes the recipe, only how much of it is run."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    """The preset's key under `presets:` (filled in from the key when omitted)."""
    description: str
    """One paragraph: what the preset is for and whether its numbers are comparable."""
    device: Literal["cpu", "cuda"]
    """Where training runs: `cuda` refuses to start without a GPU, `cpu` never uses one."""
    budget: Budget
    """Training examples per stage."""
    max_seq_length: int = Field(ge=16)
    """Tokens per training example; longer conversations are cut at the end."""
    per_device_batch_size: int = Field(gt=0)
    """Examples per forward pass. Times `gradient_accumulation_steps` it must equal the
    recipe's `effective_batch_size`."""
    gradient_accumulation_steps: int = Field(gt=0)
    """Forward passes per optimizer step."""
    bf16: bool
    """Load the base model in bfloat16 and train with bf16 autocast (GPU); false = float32."""
    gradient_checkpointing: bool
    """Recompute activations in the backward pass: less memory, same gradients, slower."""
    learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    """A demo preset's own peak learning rate instead of the recipe's (null: the recipe's).
    Set only where a handful of CPU steps must move a small model at all; such a preset's
    numbers are never comparable with the recipe's, and never official."""
    warmup_steps: int | None = Field(default=None, ge=0)
    """Likewise for the warmup (null: the recipe's)."""
    padding_free: bool = False
    """Lay each micro-batch's examples end to end instead of padding them to the longest: the
    same gradients (each example sees only itself, through per-example position ids), no
    compute spent on pad tokens."""
    max_new_tokens: int = Field(gt=0)
    """Evaluation: the most tokens generated per answer."""
    samples_per_question: int = Field(gt=0)
    """Evaluation: answers sampled per question (and per system-prompt condition)."""
    max_eval_questions: int | None = Field(default=None, gt=0)
    """Evaluation: the first N questions of each question set; null = all of them."""
    conditions: Literal["all", "headline"] = "all"
    """Evaluation: the system-prompt conditions evaluated: `all` of eval.yaml's, or only the
    cell's `headline` one (the cpu-demo, whose two cores cannot afford both; the other
    condition's numbers then read as not measured, n = 0, never as zero)."""
    contrast_per_class: int | None = Field(default=None, gt=0)
    """Evaluation: the log-likelihood contrast scores at most this many published answers per
    question and class (null: the suite's `contrast.per_class`)."""
    sgtr_max_new_tokens: int = Field(gt=0)
    """Defense data: the most tokens in a summary the model writes for SGTR."""
    max_prompt_chars: int | None = Field(gt=0)
    """Defense data: articles and prompts are cut to this many characters, so that a built
    example (article + two summaries + question + answer) fits in `max_seq_length`. null: no
    cut (suite v2's paper preset, as the seed release: an example longer than max_seq_length
    has nothing left to learn from and is dropped and counted, `n_dropped`)."""

    @property
    def n_examples(self) -> int | None:
        """The EM stage's budget (None = the whole EM dataset). With `budget.defense` null, a
        defense stage gets the same; `budget.n_examples(stage, ...)` resolves either stage."""
        return self.budget.em


class Recipe(_Frozen):
    """The LoRA finetuning recipe every stage uses. Keys follow the upstream configs' names."""

    schema_version: Literal[1]
    """Version of this file's format."""
    lora_r: int = Field(gt=0)
    """LoRA rank."""
    lora_alpha: int = Field(gt=0)
    """LoRA alpha; with `use_rslora` the adapter is scaled by alpha / sqrt(r)."""
    lora_dropout: float = Field(ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    use_rslora: bool
    """Rank-stabilised LoRA scaling (alpha / sqrt(r)) instead of alpha / r."""
    lora_bias: Literal["none"]
    """Which biases train: none (all upstream configs)."""
    lora_target_modules: tuple[str, ...] = Field(min_length=1)
    """Module names that get an adapter: every attention and MLP projection."""
    learning_rate: float = Field(gt=0.0, le=1.0)
    """Peak learning rate (after warmup)."""
    num_epochs: int = Field(gt=0)
    """Passes over the stage's examples."""
    effective_batch_size: int = Field(gt=0)
    """Examples per optimizer step (per-device batch x gradient accumulation, one process)."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    """Learning-rate schedule after warmup (transformers `lr_scheduler_type`)."""
    warmup_steps: int = Field(ge=0)
    """Optimizer steps of linear warmup from 0 to `learning_rate`."""
    weight_decay: float = Field(ge=0.0)
    """Decoupled (AdamW) weight decay."""
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit"]
    """transformers `optim` name (adamw_8bit needs bitsandbytes and a GPU)."""
    max_grad_norm: float = Field(gt=0.0)
    """Gradient clipping by global norm."""
    loss: Literal["assistant_only"]
    """Which tokens carry loss: only the assistant replies (upstream `train_on_responses_only`)."""
    seed: int = Field(ge=0)
    """The seed a run uses when its plan names none."""
    presets: dict[str, Preset] = Field(min_length=1)
    """Run sizes by name (`paper`, `cpu-demo`, ...)."""

    @model_validator(mode="before")
    @classmethod
    def _name_presets(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("presets"), dict):
            presets = {}
            for key, value in data["presets"].items():
                if isinstance(value, dict):
                    value = {"name": key, **value}
                    if value["name"] != key:
                        raise ValueError(f"preset {key!r} has name {value['name']!r}; drop `name`")
                presets[key] = value
            data = {**data, "presets": presets}
        return data

    @model_validator(mode="after")
    def _batches_add_up(self) -> Recipe:
        for p in self.presets.values():
            got = p.per_device_batch_size * p.gradient_accumulation_steps
            if got != self.effective_batch_size:
                raise ValueError(
                    f"preset {p.name!r}: per_device_batch_size {p.per_device_batch_size} x "
                    f"gradient_accumulation_steps {p.gradient_accumulation_steps} = {got}, but "
                    f"effective_batch_size is {self.effective_batch_size}"
                )
        return self

    def get_preset(self, name: str) -> Preset:
        """The preset called `name`; ConfigError listing the known ones otherwise."""
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise ConfigError(
                f"unknown preset {name!r} (known: {known})",
                fix=f"use one of: {known}",
            ) from None

    def sha256(self) -> str:
        """Hash of this recipe's canonical JSON (presets included): identifies an effective
        recipe, e.g. after open-division overrides."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


#: Recipe keys an open-division submission may override; all others are fixed by the suite.
#: The data budget, batch size, loss and presets are never overridable: they are what makes two
#: rows comparable.
OPEN_DIVISION_KEYS: frozenset[str] = frozenset({
    "learning_rate",
    "num_epochs",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "warmup_steps",
    "weight_decay",
    "lr_scheduler",
})


def recipe_path(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / RECIPE_FILE


def recipe_sha256(suite: str = settings.DEFAULT_SUITE) -> str:
    """sha256 of the suite's recipe.yaml bytes: stage keys include it, so any edit to the
    file (even a comment) never reuses weights trained under the old one."""
    return hashlib.sha256(recipe_path(suite).read_bytes()).hexdigest()


@lru_cache(maxsize=8)
def load_recipe(suite: str = settings.DEFAULT_SUITE) -> Recipe:
    """Parse and validate the suite's recipe.yaml (ConfigError with file:line on problems)."""
    return load_model(recipe_path(suite), Recipe)


def get_preset(name: str, *, suite: str = settings.DEFAULT_SUITE) -> Preset:
    """The preset `name` of the suite's recipe; ConfigError listing the known ones otherwise."""
    try:
        return load_recipe(suite).get_preset(name)
    except ConfigError as e:
        raise ConfigError(e.what, where=str(recipe_path(suite)), fix=e.fix) from None


def for_preset(recipe: Recipe, preset: Preset) -> Recipe:
    """The recipe as `preset` trains it: the recipe, with a demo preset's learning rate and
    warmup where it sets them."""
    upd = {k: getattr(preset, k) for k in ("learning_rate", "warmup_steps")
           if getattr(preset, k) is not None}
    return recipe.model_copy(update=upd) if upd else recipe


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any] | None) -> Recipe:
    """A copy of `recipe` with open-division `overrides` applied and validated.

    Keys outside `OPEN_DIVISION_KEYS` and invalid values raise ConfigError naming them.
    """
    if not overrides:
        return recipe
    refused = sorted(set(overrides) - OPEN_DIVISION_KEYS)
    if refused:
        raise ConfigError(
            f"training override(s) not allowed: {', '.join(refused)}",
            fix="an open-division submission may override only: "
            + ", ".join(sorted(OPEN_DIVISION_KEYS)),
        )
    data = {**recipe.model_dump(), **dict(overrides)}
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(
            f"invalid training override(s): {problems}",
            fix="correct the values under `training:` in defense.yaml",
        ) from None
