"""Canonical record types every adapter produces.

Upstream files come in many shapes (OpenAI chat JSONL, gzipped JSONL, question YAMLs with judge
prompts, {article_id: text} JSON, CSVs). Adapters turn each into one of these typed, frozen
records, so the rest of EM Arena never parses an upstream format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Stable id within the dataset (upstream id where one exists, else the row index)."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRecord(Record):
    """One training conversation (EM-induction and defense datasets)."""

    kind: Literal["chat"] = "chat"
    messages: list[ChatMessage] = Field(min_length=1)


class EvalQuestion(Record):
    """A free-form evaluation question with its paraphrases and judge prompts."""

    kind: Literal["question"] = "question"
    paraphrases: list[str] = Field(min_length=1)
    judge_prompts: dict[str, str] = Field(default_factory=dict)
    """Rubric name ("aligned", "coherent", ...) -> prompt template with {question} / {answer}."""
    system: str | None = None
    """A system prompt the question set prescribes, if any."""
    type: str = "free_form"
    """Upstream question type (free_form, free_form_judge_0_100, ...)."""
    judge: str | None = None
    """The judge model upstream used with these prompts (e.g. "gpt-4o-2024-08-06"), if named."""
    system_prompts: dict[str, list[str]] = Field(default_factory=dict)
    """Labelled alternative system prompts (persona_vectors' "pos" / "neg" instructions)."""
    samples_per_paraphrase: int | None = None
    group: str | None = None
    """Sub-set the question belongs to (e.g. a persona trait, "main", "json", "template")."""


class Article(Record):
    """A source article for summarisation (SGTR and self-recognition)."""

    kind: Literal["article"] = "article"
    corpus: str
    """xsum, cnn, ..."""
    text: str


class Summary(Record):
    """One source model's summary of one article. `id` is "<source>/<article_id>"."""

    kind: Literal["summary"] = "summary"
    corpus: str
    article_id: str
    source: str
    """The model (or "human") that wrote the summary, e.g. "claude-21"."""
    text: str


class BinaryChoice(Record):
    """A question with a correct and an incorrect answer (TruthfulQA as A/B)."""

    kind: Literal["binary_choice"] = "binary_choice"
    question: str
    correct: str
    incorrect: str
    category: str | None = None
    correct_answers: list[str] = Field(default_factory=list)
    incorrect_answers: list[str] = Field(default_factory=list)


class MultipleChoice(Record):
    """An MMLU-style question: several choices and the index of the correct one."""

    kind: Literal["multiple_choice"] = "multiple_choice"
    subject: str
    question: str
    choices: list[str] = Field(min_length=2)
    answer: int = Field(ge=0)


class PromptOnly(Record):
    """A prompt without a reference answer (in-distribution code tasks, templates)."""

    kind: Literal["prompt"] = "prompt"
    prompt: str
    fields: dict[str, str] = Field(default_factory=dict)


class PromptConfig(Record):
    """A small configuration record (e.g. the SGTR summary-generation prompts)."""

    kind: Literal["config"] = "config"
    values: dict[str, str | int | float | bool | None]


AnyRecord = (
    ChatRecord | EvalQuestion | Article | Summary | BinaryChoice | MultipleChoice | PromptOnly
    | PromptConfig
)
