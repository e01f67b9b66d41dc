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


class JudgedAnswer(Record):
    """A published answer to an evaluation question with the judge scores its authors published.

    The seed release's EM tables (GPT-4o in text mode: a number, or the word REFUSAL) and
    Betley et al.'s example answers (GPT-4o scored from its top-20 token probabilities). Read by
    `emarena published`, judge calibration and the log-likelihood contrast set; never trained on.
    `id` is "<part>/<row>/<sample>": the file's part, the 0-based data row, the sample index.
    """

    kind: Literal["judged_answer"] = "judged_answer"
    question_id: str
    question: str
    """The question as asked (the release asked the first paraphrase only)."""
    answer: str
    aligned: float | None
    """The published aligned score 0..100; None when the judge gave none (REFUSAL, or upstream's
    empty cell when its probability mass on numbers was too low)."""
    coherent: float | None
    aligned_raw: str
    """The published value as written (e.g. "85.0", "REFUSAL", "" for none)."""
    coherent_raw: str
    judge: str
    """The judge as the source names it (e.g. "gpt-4o-2024-08-06")."""
    judge_method: Literal["text", "logprobs"]
    """text: the judge's reply parsed as a number; logprobs: the probability-weighted mean."""
    task_model: str
    """The answering model as the source names it (e.g. "hf_qwen_32b_em_unpop_3")."""
    row: int = Field(ge=0)
    """0-based data row of the file (one row holds a question's samples in the release)."""
    sample: int = Field(ge=0)
    """Index of the answer within its row (0 for one-answer-per-row files)."""
    run: int = Field(default=0, ge=0)
    """Which evaluation run of the file the row belongs to (0-based): a release file that holds
    the eight questions twice holds two runs."""
    run_samples: int = Field(ge=1)
    """Answers per question in that run (30 or 100 in the release, 1 for Betley's examples)."""
    judge_probs: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per rubric, the judge's published token probabilities (logprobs method only)."""


class PublishedChoice(Record):
    """One published forced choice: a TruthfulQA A/B answer or a self-recognition pick.

    `id` is "<part>/<item>" (TruthfulQA: the 0-based row; self-recognition: the article key).
    """

    kind: Literal["published_choice"] = "published_choice"
    task: Literal["truthfulqa", "self-recognition"]
    model: str
    """The model that chose, as the source names it."""
    item: str
    """The question (TruthfulQA) or the article key (self-recognition)."""
    chosen: str
    """What the model answered: "A"/"B" (TruthfulQA), or the source whose summary it picked
    (self-recognition; the raw reply when it named neither, e.g. '1"')."""
    correct: bool
    """TruthfulQA: the release's is_correct. Self-recognition: the pick is `source_1`'s summary
    (the model's own when `source_1` is the model itself)."""
    source_1: str | None = None
    """Self-recognition: the file's first source (the release puts the judged model's own
    summaries first; in a few files it is another model's)."""
    source_2: str | None = None
    """Self-recognition: the other source (claude-21, human, llama, gpt41)."""
    corpus: str | None = None
    """Self-recognition: the article corpus (cnn, xsum)."""


class PromptConfig(Record):
    """A small configuration record (e.g. the SGTR summary-generation prompts)."""

    kind: Literal["config"] = "config"
    values: dict[str, str | int | float | bool | None]


AnyRecord = (
    ChatRecord | EvalQuestion | Article | Summary | BinaryChoice | MultipleChoice | PromptOnly
    | PromptConfig | JudgedAnswer | PublishedChoice
)
