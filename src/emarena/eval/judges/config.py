"""`benchmark/suites/<version>/judges.yaml` as typed objects: the reference judge, the metric
thresholds and the identity-extraction rubrics.

Unknown keys and bad values fail at load time with the file, the line and the key. Torch-free.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emarena import settings
from emarena.eval.judges.base import template_fields
from emarena.yamlio import invalid, load_model

JUDGES_FILE = "judges.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ReferenceJudge(_Frozen):
    """The judge whose numbers the leaderboard compares (Betley et al.'s setup)."""

    model: str
    """OpenAI model name, dated (e.g. gpt-4o-2024-08-06), so the judge cannot drift silently."""
    base_url: str = Field(pattern=r"^https?://")
    """OpenAI-compatible API root (…/v1)."""
    api_key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    """Environment variable holding the API key (read at call time, never recorded)."""
    top_logprobs: int = Field(ge=1, le=20)
    """How many alternatives of the one answer token are requested."""
    min_mass: float = Field(gt=0, le=1)
    """Below this much probability on the tokens 0..100 an answer is unscored."""
    max_tokens: Literal[1]
    """The judge answers with a single token (one number)."""
    temperature: float = Field(ge=0)
    seed: int
    """Sent with every request (OpenAI's best-effort determinism)."""


class Thresholds(_Frozen):
    """Cut-offs the metrics apply to judge scores (0..100)."""

    aligned_threshold: float = Field(ge=0, le=100)
    """An answer is misaligned when its aligned score is below this (`aligned_op`) and it is
    coherent."""
    coherent_threshold: float = Field(ge=0, le=100)
    """An answer is coherent when its coherent score is above this (`coherent_op`)."""
    aligned_op: Literal["<", "<="] = "<="
    """`<` (suite v2) or `<=` (suite v1, the default when unset)."""
    coherent_op: Literal[">", ">="] = ">"
    """`>` in both suites."""


class ExtractionRubric(_Frozen):
    """A text-extraction question asked about one answer."""

    description: str
    """One line: what the label means."""
    prompt: str
    """Template with {answer} (and optionally {question}); literal braces as {{ and }}."""

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            fields = template_fields(v)
        except ValueError as e:
            raise invalid(f"prompt is not a valid template ({e})",
                          "write literal braces as {{ and }}") from None
        if "answer" not in fields or not fields <= {"question", "answer"}:
            raise invalid(f"prompt placeholders are {sorted(fields)}",
                          "use {answer} and optionally {question}, nothing else")
        return v


class Extraction(_Frozen):
    """How extraction calls are made (both judges use the same settings)."""

    max_tokens: int = Field(ge=1, le=256)
    """Room for a short name; longer replies are cut (the label keeps the first line)."""
    temperature: float = Field(ge=0)
    seed: int
    rubrics: dict[str, ExtractionRubric] = Field(min_length=1)
    """Rubric name (the `Judgement.rubric` of its rows) -> prompt."""


class JudgesConfig(_Frozen):
    """The whole judges.yaml."""

    schema_version: Literal[1]
    reference: ReferenceJudge
    thresholds: Thresholds
    extraction: Extraction


def judges_path(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / JUDGES_FILE


@lru_cache(maxsize=8)
def _load(path: Path) -> JudgesConfig:
    return load_model(path, JudgesConfig)


def load_judges_config(
    suite: str = settings.DEFAULT_SUITE, path: Path | None = None
) -> JudgesConfig:
    """The suite's judges.yaml (cached per path). Raises ConfigError naming file, line and key."""
    return _load(Path(path) if path is not None else judges_path(suite))
