"""Row types written as JSONL, and the append-only store that makes evaluation resumable.

Every row has an `id` that is a pure function of what it is (not of when it was made), so a
killed run that is started again skips the rows already on disk and appends only the missing
ones. A torn last line (the process died mid-write) is dropped when the file is opened.

Unscored is not zero: a `Judgement` with `score=None` always carries `unscored_reason`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emarena.data.records import ChatMessage

Condition = Literal["default-system", "no-system"]
"""default-system: the model registry's identity-bearing default system prompt as an explicit
system turn; no-system: the rendered prompt has no system turn at all."""


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    id: str


class Generation(Row):
    """One sampled answer.

    id = "<eval_set>/<question_id>/<paraphrase_index>/<condition>/<sample>".
    """

    eval_set: str
    question_id: str
    paraphrase_index: int
    condition: Condition
    sample: int
    seed: int
    """The seed this row was sampled with (recorded per row)."""
    messages: list[ChatMessage]
    """The conversation sent (system turn included for default-system)."""
    answer: str
    n_tokens: int
    finish_reason: Literal["stop", "length"]
    backend: str
    """Generator id, e.g. "transformers" or "vllm"."""

    @staticmethod
    def make_id(
        eval_set: str, question_id: str, paraphrase_index: int, condition: str, sample: int
    ) -> str:
        return f"{eval_set}/{question_id}/{paraphrase_index}/{condition}/{sample}"


class Judgement(Row):
    """One judge score of one generation under one rubric. id = "<generation_id>#<rubric>"."""

    generation_id: str
    rubric: str
    """aligned | coherent | identity_name | identity_creator | ..."""
    judge: str
    """Judge id (e.g. "openai:gpt-4o-2024-08-06" or "hf:smollm2-135m-q4")."""
    prompt_sha256: str
    """sha256 of the rendered judge prompt: the judgement cache key with `judge`."""
    score: float | None
    """0..100, or None when unscored (never 0 for "could not score")."""
    label: str | None = None
    """For extraction rubrics (identity): the extracted text, normalised."""
    unscored_reason: str | None = None
    """Why `score` is None: low-probability-mass, refusal, http-error, malformed-response, ..."""
    method: Literal["logprobs", "text-parse", "hf-logits", "extraction"] = "logprobs"
    """How the score was obtained; text-parse is only used where an endpoint has no logprobs."""
    raw: dict[str, Any] = Field(default_factory=dict)
    """The judge's raw output (top logprobs, text), for audit."""

    @model_validator(mode="after")
    def _unscored_has_reason(self) -> Judgement:
        if self.score is None and self.label is None and not self.unscored_reason:
            raise ValueError("an unscored judgement must say why (unscored_reason)")
        return self

    @staticmethod
    def make_id(generation_id: str, rubric: str) -> str:
        return f"{generation_id}#{rubric}"


class ChoiceScore(Row):
    """A forced choice scored from answer-token probabilities (no judge).

    Self-recognition: which of two summaries the model wrote (both orders);
    TruthfulQA: best answer vs best incorrect answer, in a seeded random order.
    """

    eval_set: str
    item_id: str
    condition: Condition
    options: list[str]
    """The answer tokens offered, e.g. ["1", "2"] or ["A", "B"]."""
    correct: str
    probs: dict[str, float]
    """Probability of each option's token, renormalised over the options."""
    mass: float
    """Total probability of the option tokens before renormalising."""
    chosen: str

    @property
    def is_correct(self) -> bool:
        return self.chosen == self.correct


class ContrastScore(Row):
    """The cell's log-likelihood of one published answer (the judge-free contrast).
    id = "<condition>/<answer id>"."""

    condition: Condition
    question_id: str
    answer_id: str
    cls: Literal["misaligned", "aligned"]
    """How the published judge labelled it (emarena.eval.contrast)."""
    loglik: float
    """Sum of the log-probabilities of the answer's scored tokens (nats)."""
    n_tokens: int
    """Answer tokens scored (the answer cut to the suite's `max_answer_tokens`)."""

    @property
    def mean(self) -> float | None:
        """Mean per-token log-likelihood (nats/token), None for an empty answer."""
        return self.loglik / self.n_tokens if self.n_tokens else None


class OwnSummary(Row):
    """A model's own greedy summary of one article (self-recognition and SGTR data).
    id = "<article_id>#<request key>": a row made under other settings is never reused."""

    article_id: str
    summary: str
    """Greedy answer, stripped."""
    key: str
    """Hash of (system prompt, user prompt, max_new_tokens, greedy)."""
    n_tokens: int
    finish_reason: Literal["stop", "length"]
    backend: str


R = TypeVar("R", bound=Row)


class RowStore(Generic[R]):
    """An append-only JSONL file of rows keyed by id; resumable and duplicate-free.

    Opening reads every complete line; a torn final line (no trailing newline, or invalid JSON)
    is truncated away so the next append starts clean. `append` writes one line and fsyncs, so
    a row is either wholly on disk or not at all.
    """

    def __init__(self, path: Path, row_type: type[R]):
        self.path = Path(path)
        self.row_type = row_type
        self._rows: dict[str, R] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl == -1:
                break  # torn last line
            line = data[pos:nl]
            try:
                row = self.row_type.model_validate_json(line)
            except ValueError:
                break  # a corrupt line: keep what came before, rewrite the rest
            self._rows.setdefault(row.id, row)
            pos = nl + 1
            good_end = pos
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def __contains__(self, row_id: object) -> bool:
        return row_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[R]:
        return iter(self._rows.values())

    def get(self, row_id: str) -> R | None:
        return self._rows.get(row_id)

    def append(self, rows: R | Iterable[R]) -> int:
        """Append rows whose id is new; return how many were written."""
        batch = [rows] if isinstance(rows, Row) else list(rows)
        new = [r for r in batch if r.id not in self._rows]
        if not new:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            for r in new:
                f.write(r.model_dump_json() + "\n")
                self._rows[r.id] = r
            f.flush()
            os.fsync(f.fileno())
        return len(new)


def read_rows(path: Path, row_type: type[R]) -> list[R]:
    return list(RowStore(path, row_type))


def dump_jsonl(path: Path, objs: Iterable[BaseModel | dict]) -> None:
    """Write a whole JSONL file atomically (temp + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        for o in objs:
            f.write((o.model_dump_json() if isinstance(o, BaseModel) else json.dumps(o)) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
