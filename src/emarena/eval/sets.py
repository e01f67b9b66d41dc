"""`benchmark/suites/<version>/eval.yaml` as typed objects: what every cell is evaluated on.

Four probes, each a list of sets:
  em_questions       free-form questions from a registry dataset (Betley's first-plot by default),
                     judged with the rubrics the question file carries (aligned, coherent)
  identity           our own identity questions (data in eval.yaml) and Betley's
                     deception-sit-aware questions
  self_recognition   own CNN/DailyMail summary vs another source's, answer "1" / "2"
  capability         TruthfulQA as A/B and MMLU as A-D, scored from answer-token probabilities

Sizes are not part of this file: the preset gives them (`preset.max_eval_questions` caps the
questions, articles or items taken from each set; `selection_seed` fixes which).

This module is torch-free (`emarena validate` reads it). Question texts and judge prompts stay
in the pinned upstream files: `load_questions` and `rubric_prompts` read them from the dataset
registry at run time.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emarena import settings
from emarena.errors import ConfigError
from emarena.eval.rows import Condition
from emarena.yamlio import load_model

_SET_ID = r"^[a-z0-9][a-z0-9._-]*$"
"""Set ids appear inside row ids ("<eval_set>/<question>/..."), so no "/" or spaces."""

T = TypeVar("T")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class QuestionFileSet(_Frozen):
    """Free-form questions from a registry dataset of question YAMLs (adapter question_yaml)."""

    dataset: str
    """Dataset id in datasets.yaml (e.g. `first-plot`); its questions and judge prompts are used
    as published, never copied into this repository."""
    groups: list[str] | None = None
    """Keep only questions of these groups (first-plot: `main`, `json`, `template`); null = all."""
    rubrics: list[str] = Field(default_factory=lambda: ["aligned", "coherent"], min_length=1)
    """Judge rubrics to score, by name; every kept question must carry a judge prompt for each."""
    description: str = ""
    """One line for reports and the leaderboard."""
    labels: list[str] = Field(default_factory=list)
    """Rubrics (of `rubrics`) the judge answers with a word instead of a 0..100 score (the
    question file's prompt asked as an extraction: deception-factual's TRUE / FALSE / UNKNOWN)."""
    first_paraphrase_only: bool = False
    """Ask only each question's first paraphrase (the seed release's evaluation scripts)."""
    task_system: bool = True
    """False: leave out the question's own system prompt (as the seed release's deception
    script does: it sends the paraphrase as the only user turn)."""
    max_samples: int | None = Field(default=None, gt=0)
    """At most this many answers per question (the preset's samples_per_question when fewer)."""

    @model_validator(mode="after")
    def _labels_are_rubrics(self) -> QuestionFileSet:
        if not set(self.labels) <= set(self.rubrics):
            raise ValueError(f"labels {self.labels} must be among the rubrics {self.rubrics}")
        return self


class InlineQuestion(_Frozen):
    """One of our own free-form questions, with paraphrases (identity questions)."""

    id: str = Field(pattern=_SET_ID)
    """Question id, unique within its set (appears in row ids)."""
    paraphrases: list[str] = Field(min_length=1)
    """Wordings of the same question; samples are spread over them in turn."""
    rubrics: list[str] = Field(min_length=1)
    """Extraction rubrics the judge applies (identity_name, identity_creator, ...)."""


class EmQuestions(_Frozen):
    """The misalignment question sets: one primary, alternatives selectable by name."""

    primary: str
    """The set the headline misalignment metrics come from."""
    evaluate: list[str] = Field(min_length=1)
    """The sets generated for every cell (the primary among them)."""
    sets: dict[str, QuestionFileSet] = Field(min_length=1)
    """Every selectable set by eval-set id."""

    @model_validator(mode="after")
    def _names_known(self) -> EmQuestions:
        for name in self.sets:
            if not re.match(_SET_ID, name):
                raise ValueError(f"set id {name!r} must match {_SET_ID}")
        unknown = [n for n in [self.primary, *self.evaluate] if n not in self.sets]
        if unknown:
            raise ValueError(f"unknown em_questions set(s) {unknown}; known: {sorted(self.sets)}")
        if self.primary not in self.evaluate:
            raise ValueError(f"the primary set {self.primary!r} must be in `evaluate`")
        if len(set(self.evaluate)) != len(self.evaluate):
            raise ValueError("`evaluate` lists a set twice")
        return self


class Identity(_Frozen):
    """Who the model says it is: our own questions plus question files (deception-sit-aware)."""

    eval_set: str = Field(default="identity", pattern=_SET_ID)
    """Eval-set id of the inline questions."""
    questions: list[InlineQuestion] = Field(min_length=1)
    """Our identity questions, each with a few paraphrases."""
    sets: dict[str, QuestionFileSet] = Field(default_factory=dict)
    """Further identity sets read from the dataset registry, by eval-set id."""

    @model_validator(mode="after")
    def _unique(self) -> Identity:
        ids = [q.id for q in self.questions]
        if len(set(ids)) != len(ids):
            raise ValueError("identity question ids must be unique")
        return self


class SelfRecognition(_Frozen):
    """Own summary vs another source's summary of a held-out article, answered "1" / "2"."""

    eval_set: str = Field(default="self-recognition", pattern=_SET_ID)
    """Eval-set id of the rows."""
    articles: str = "cnn-articles"
    """Article dataset (role sgtr-corpus)."""
    summaries: str = "cnn-summaries"
    """Summary dataset holding the other source's summaries (one part per source)."""
    corpus: str = "cnn"
    """Corpus the summaries must belong to (some summary files also carry other corpora)."""
    other_source: str = "claude-21"
    """The source whose summary the model's own is paired with (a part of `summaries`)."""
    other_sources: list[str] | None = None
    """Several "other" sources (suite v2: the seed release's claude-21, human, llama, gpt41):
    every article is paired with each, both orders (item ids `<article>/<source>/<order>`),
    over the articles all of them summarised; `self_recognition_accuracy` pools them and gives
    each source's accuracy in its details. null: `other_source` alone (suite v1)."""
    summary_prompt: str = "cnn"
    """Part of `sgtr-summary-prompts` the model's own summaries are generated with."""
    response_type: str | None = None
    """What fills the prompt's {response_type}: suite v2 `highlights`, the seed release's word
    for CNN/DailyMail; null: the prompt config's type (`summary`, suite v1)."""

    @property
    def sources(self) -> list[str]:
        """The other sources the model's own summaries are paired with."""
        return list(self.other_sources) if self.other_sources else [self.other_source]

    @field_validator("corpus")
    @classmethod
    def _held_out(cls, v: str) -> str:
        if v.startswith("xsum"):
            raise ValueError("self-recognition must be evaluated on a held-out corpus: SGTR "
                             "trains on XSUM; use cnn")
        return v


class ChoiceSet(_Frozen):
    """A forced-choice capability set: a prompt template and the dataset it is filled from."""

    eval_set: str = Field(pattern=_SET_ID)
    """Eval-set id of the rows."""
    dataset: str
    """Dataset id (BinaryChoice records for TruthfulQA, MultipleChoice for MMLU)."""
    prompt: str
    """User-turn template: {question}, the option letters ({A}, {B}, ...) and, for MMLU,
    {subject}. The answer is read from the probability of each letter as the first token."""
    required: bool = True
    """False: when the dataset cannot be resolved the set is skipped and the skip recorded."""
    chat_template: bool = True
    """False: the prompt is plain text, no chat template and no system turn, as
    lm-evaluation-harness scores MMLU by default (then scored once, and recorded under every
    condition: no condition applies to it)."""
    description: str = ""
    """Plain-text prompts: what opens the prompt, with {subject} (lm-evaluation-harness's MMLU
    description)."""
    fewshot: int = Field(default=0, ge=0)
    """Plain-text prompts: this many solved examples of the same subject before the question,
    the first ones of `fewshot_dataset` in file order (lm-evaluation-harness's `first_n`)."""
    fewshot_dataset: str | None = None
    """Where the solved examples come from (MMLU: `mmlu-dev`)."""
    option_prefix: str = ""
    """Put before each option letter as the answer token (" A": lm-evaluation-harness's target
    delimiter, so the option is one token after "Answer:")."""

    @model_validator(mode="after")
    def _fewshot_needs_a_dataset(self) -> ChoiceSet:
        if self.fewshot and not self.fewshot_dataset:
            raise ValueError("fewshot needs a fewshot_dataset")
        if (self.fewshot or self.description) and self.chat_template:
            raise ValueError("description and fewshot apply to plain-text prompts: set "
                             "chat_template: false")
        return self


class Capability(_Frozen):
    truthfulqa: ChoiceSet | None = None
    """TruthfulQA as A/B (best answer vs best incorrect answer, order seeded and balanced)."""
    mmlu: ChoiceSet | None = None
    """MMLU as A-D (the choices in MMLU's own order)."""

    @model_validator(mode="after")
    def _placeholders(self) -> Capability:
        for name, cs, need in (("truthfulqa", self.truthfulqa, ["question", "A", "B"]),
                               ("mmlu", self.mmlu, ["question", "A", "B", "C", "D"])):
            if cs is None:
                continue
            missing = [k for k in need if "{" + k + "}" not in cs.prompt]
            if missing:
                raise ValueError(f"capability.{name}.prompt lacks {missing}")
        return self


class Contrast(_Frozen):
    """The judge-free log-likelihood contrast (emarena.eval.contrast): published answers GPT-4o
    judged misaligned vs clearly aligned, scored by the cell's model under each condition."""

    datasets: list[str] = Field(min_length=1)
    """Registered datasets of published judged answers the set is built from."""
    per_class: int | None = Field(default=None, gt=0)
    """At most this many answers per question and class (seeded draw); null: all of them.
    A preset's `contrast_per_class` caps it further."""
    seed: int = Field(default=0, ge=0)
    """Seed of that draw (and of the bootstrap)."""
    max_answer_tokens: int = Field(default=64, gt=0)
    """Each answer is scored on its first this-many tokens (the question is the user turn)."""


class Sampling(_Frozen):
    temperature: float = Field(default=1.0, ge=0.0)
    """Sampling temperature of every free-form answer (0 = greedy)."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus mass; 1 = no truncation. Repetition penalty is always 1."""
    top_k: int = Field(default=0, ge=0)
    """Keep only the k most likely tokens before top_p (transformers' order); 0 = off (v1)."""


class EvalSuite(_Frozen):
    """The whole of eval.yaml."""

    schema_version: Literal[1]
    conditions: list[Condition] = Field(min_length=1)
    """Conditions every probe runs under: default-system and/or no-system."""
    headline: Literal["default-system", "no-system", "all"] = "all"
    """The condition a result's headline numbers come from: suite v2 `default-system` (the
    model's identity-bearing condition; a model without a default system prompt falls back to
    `no-system`), suite v1 `all` (both conditions pooled). The others are shown beside it."""
    selection_seed: int = Field(default=0, ge=0)
    """Fixes which items a capped preset keeps and the answer orders, the same for every cell."""
    sampling: Sampling = Field(default_factory=Sampling)
    """How free-form answers are sampled."""
    em_questions: EmQuestions
    identity: Identity
    self_recognition: SelfRecognition | None = None
    """null: no self-recognition probe."""
    capability: Capability = Field(default_factory=Capability)
    contrast: Contrast | None = None
    """null: no log-likelihood contrast."""

    @model_validator(mode="after")
    def _check(self) -> EvalSuite:
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("`conditions` lists a condition twice")
        if self.headline != "all" and self.headline not in self.conditions:
            raise ValueError(f"headline {self.headline!r} is not one of the `conditions`")
        names = [*self.em_questions.sets, self.identity.eval_set, *self.identity.sets]
        if self.self_recognition is not None:
            names.append(self.self_recognition.eval_set)
        names += [c.eval_set for c in (self.capability.truthfulqa, self.capability.mmlu) if c]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eval-set ids must be unique across the file: {dup} repeat")
        for name in self.identity.sets:
            if not re.match(_SET_ID, name):
                raise ValueError(f"set id {name!r} must match {_SET_ID}")
        return self

    def headline_for(self, default_system_prompt: str | None) -> str:
        """The headline condition of a model: `headline`, or no-system for a model that has no
        default system prompt when the headline is default-system."""
        if self.headline == "default-system" and not default_system_prompt:
            return "no-system"
        return self.headline

    def for_preset(self, preset: Any, default_system_prompt: str | None) -> EvalSuite:
        """The suite as a preset evaluates it: every condition, or (`conditions: headline`)
        only the model's headline condition (suite v1's pooled `all` headline keeps both)."""
        if preset.conditions == "all":
            return self
        head = self.headline_for(default_system_prompt)
        if head == "all":
            return self
        return self.model_copy(update={"conditions": [head]})

    def with_em_sets(self, names: Sequence[str]) -> EvalSuite:
        """A copy that generates these em_questions sets instead (the primary stays first)."""
        names = list(dict.fromkeys(names))
        if self.em_questions.primary not in names:
            names.insert(0, self.em_questions.primary)
        em = EmQuestions.model_validate({**self.em_questions.model_dump(), "evaluate": names})
        return self.model_copy(update={"em_questions": em})

    def free_form_sets(self) -> list[tuple[str, QuestionFileSet | list[InlineQuestion]]]:
        """(eval-set id, source) of every free-form set generated, in order."""
        out: list[tuple[str, QuestionFileSet | list[InlineQuestion]]] = [
            (n, self.em_questions.sets[n]) for n in self.em_questions.evaluate
        ]
        out.append((self.identity.eval_set, list(self.identity.questions)))
        out += list(self.identity.sets.items())
        return out


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def eval_path(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / "eval.yaml"


@lru_cache(maxsize=8)
def _load(path: Path) -> EvalSuite:
    return load_model(path, EvalSuite)


def load_eval_suite(suite: str = settings.DEFAULT_SUITE) -> EvalSuite:
    """Read and validate `benchmark/suites/<suite>/eval.yaml` (a ConfigError names the key)."""
    return _load(eval_path(suite))


def load_questions(fs: QuestionFileSet, eval_set: str = "") -> list:
    """The `EvalQuestion`s of a question-file set, in file order, groups filtered, rubrics
    checked (a ConfigError names the question without a judge prompt for a rubric)."""
    from emarena import data
    from emarena.data.records import EvalQuestion

    qs = [q for q in data.load(fs.dataset) if isinstance(q, EvalQuestion)]
    if fs.groups is not None:
        qs = [q for q in qs if q.group in fs.groups]
    if not qs:
        raise ConfigError(
            f"eval set {eval_set or fs.dataset!r}: dataset {fs.dataset!r} has no questions "
            f"in groups {fs.groups}",
            fix="check `groups` in eval.yaml against `emarena data show " + fs.dataset + "`",
        )
    for q in qs:
        if "/" in q.id:
            raise ConfigError(f"{fs.dataset}: question id {q.id!r} contains '/'",
                              fix="report it: row ids use '/' as separator")
        missing = [r for r in fs.rubrics if r not in q.judge_prompts]
        if missing:
            raise ConfigError(
                f"eval set {eval_set or fs.dataset!r}: question {q.id!r} of {fs.dataset!r} has "
                f"no judge prompt for rubric(s) {missing} (it has {sorted(q.judge_prompts)})",
                fix="choose rubrics the question file carries",
            )
    return qs


def rubric_prompts(
    suite: EvalSuite, eval_set: str
) -> dict[str, dict[str, str | None]]:
    """{question id: {rubric: judge prompt template, or None for an extraction rubric}}.

    Judges read the prompt templates from here (the pinned question file), so the templates
    are never copied into the repository.
    """
    for name, src in suite.free_form_sets():
        if name != eval_set:
            continue
        if isinstance(src, list):
            return {q.id: {r: None for r in q.rubrics} for q in src}
        all_fs = {**suite.em_questions.sets, **suite.identity.sets}
        fs = all_fs[name]
        return {q.id: {r: q.judge_prompts[r] for r in fs.rubrics}
                for q in load_questions(fs, name)}
    all_fs = {**suite.em_questions.sets, **suite.identity.sets}
    if eval_set in all_fs:  # a selectable set not generated by default
        fs = all_fs[eval_set]
        return {q.id: {r: q.judge_prompts[r] for r in fs.rubrics}
                for q in load_questions(fs, eval_set)}
    raise ConfigError(f"unknown free-form eval set {eval_set!r}",
                      fix=f"use one of: {[n for n, _ in suite.free_form_sets()]}")


# --------------------------------------------------------------------------------------------
# Selection: the same subset for every cell
# --------------------------------------------------------------------------------------------


def selection_rng(purpose: str, seed: int) -> random.Random:
    """A private random stream for one selection purpose (stable across processes)."""
    return random.Random(f"emarena:eval:{purpose}:{seed}")


def cap(items: Sequence[T], limit: int | None, *, purpose: str, seed: int) -> list[T]:
    """All of `items` (limit None or large enough), else a seeded subset of `limit`, kept in the
    original order. The subset depends only on (purpose, seed, len(items)), not on the run."""
    if limit is None or len(items) <= limit:
        return list(items)
    keep = sorted(selection_rng(f"cap:{purpose}", seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def balanced_positions(n: int, k: int, *, purpose: str, seed: int) -> list[int]:
    """n positions in range(k), each used n//k or n//k + 1 times, in a seeded order."""
    pos = [i % k for i in range(n)]
    selection_rng(f"positions:{purpose}", seed).shuffle(pos)
    return pos
