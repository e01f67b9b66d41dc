"""From JSONL rows to the per-item arrays the metrics read.

Rows are joined per seed: a `Generation` id ("<set>/<question>/<paraphrase>/<condition>/<sample>")
does not carry the seed, so rows of several seeds are handed over as several `RowSet`s and never
mixed in one list.

Which generations are "EM questions" and which are "identity questions" is decided per eval set:
by default, a set is an EM set when any of its answers has an `aligned` or `coherent` judgement,
and an identity set when any has an `identity_name` judgement. Every generation of such a set is
then an item, whether or not it was judged: a missing judgement is unscored, never dropped.
The caller (the metrics stage) may name the sets explicitly instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from emarena.eval.rows import ChoiceScore, Generation, Judgement

ALIGNED, COHERENT = "aligned", "coherent"
IDENTITY_NAME, IDENTITY_CREATOR = "identity_name", "identity_creator"
EM_RUBRICS = (ALIGNED, COHERENT)


@dataclass(frozen=True)
class RowSet:
    """The rows of one seed (one cell): generations, their judgements, forced-choice scores."""

    generations: Sequence[Generation]
    judgements: Sequence[Judgement] = ()
    choices: Sequence[ChoiceScore] = ()
    seed: int | str = 0
    """The group this RowSet is resampled as in the two-level bootstrap (the cell's seed)."""


@dataclass
class Answers:
    """One item per EM-question answer."""

    group: np.ndarray
    condition: np.ndarray
    aligned: np.ndarray
    """0..100, NaN when unscored or not judged."""
    coherent: np.ndarray
    question: np.ndarray
    """"<eval_set>/<question_id>", for per-question details."""

    def subset(self, mask: np.ndarray) -> Answers:
        return Answers(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


@dataclass
class IdentityAnswers:
    """One item per identity-question answer: the extracted name / creator, None if unscored."""

    group: np.ndarray
    condition: np.ndarray
    name: np.ndarray
    creator: np.ndarray

    def subset(self, mask: np.ndarray) -> IdentityAnswers:
        return IdentityAnswers(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


@dataclass
class Choices:
    """One item per forced choice."""

    group: np.ndarray
    condition: np.ndarray
    eval_set: np.ndarray
    correct: np.ndarray
    """bool: the chosen option is the right one."""
    correct_option: np.ndarray
    """The right option's token (for self-recognition: which position held the own summary)."""
    mass: np.ndarray
    item: np.ndarray
    """The item id (self-recognition in suite v2: `<article>/<other source>/<order>`)."""

    def subset(self, mask: np.ndarray) -> Choices:
        return Choices(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


@dataclass
class Tables:
    answers: Answers
    identity: IdentityAnswers
    choices: Choices
    n_seeds: int = 1
    em_sets: list[str] = field(default_factory=list)
    identity_sets: list[str] = field(default_factory=list)

    def for_condition(self, condition: str) -> Tables:
        if condition == "all":
            return self
        return Tables(
            self.answers.subset(self.answers.condition == condition),
            self.identity.subset(self.identity.condition == condition),
            self.choices.subset(self.choices.condition == condition),
            self.n_seeds,
            self.em_sets,
            self.identity_sets,
        )


def _score(j: Judgement | None) -> float:
    if j is None or j.score is None or not math.isfinite(j.score):
        return math.nan
    return float(j.score)


def _label(j: Judgement | None) -> str | None:
    if j is None or j.label is None:
        return None
    return normalise_label(j.label)


_SPACE = re.compile(r"\s+")


NO_IDENTITY = "none"
"""The label of an answer that names no identity (the extraction judge replies NONE)."""
_NO_IDENTITY_FORMS = {"", "none", "(none)", "n/a", "no name", "nothing"}


def normalise_label(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding punctuation stripped; an empty or "none"
    reply becomes NO_IDENTITY."""
    t = _SPACE.sub(" ", text).strip().strip(".,;:!?\"'`()[]{}").strip().casefold()
    return NO_IDENTITY if t in _NO_IDENTITY_FORMS else t


def build_tables(
    rowsets: Sequence[RowSet],
    *,
    em_sets: Collection[str] | None = None,
    identity_sets: Collection[str] | None = None,
) -> Tables:
    ans: dict[str, list] = {
        k: [] for k in ("group", "condition", "aligned", "coherent", "question")
    }
    ide: dict[str, list] = {k: [] for k in ("group", "condition", "name", "creator")}
    cho: dict[str, list] = {
        k: [] for k in ("group", "condition", "eval_set", "correct", "correct_option", "mass",
                        "item")
    }
    if len({rs.seed for rs in rowsets}) != len(rowsets):
        raise ValueError("each RowSet must have its own seed (rows of one seed go in one RowSet)")
    all_em: set[str] = set()
    all_id: set[str] = set()
    # Decide the sets over all seeds at once, so a seed whose judging failed entirely still
    # contributes its answers (as unscored) instead of vanishing.
    by_gens = [{(j.generation_id, j.rubric): j for j in rs.judgements} for rs in rowsets]
    for rs, by_gen in zip(rowsets, by_gens, strict=True):
        set_of = {g.id: g.eval_set for g in rs.generations}
        for gid, rubric in by_gen:
            if gid in set_of:
                if rubric in EM_RUBRICS:
                    all_em.add(set_of[gid])
                elif rubric == IDENTITY_NAME:
                    all_id.add(set_of[gid])
    em = set(em_sets) if em_sets is not None else all_em
    ids = set(identity_sets) if identity_sets is not None else all_id
    for gi, (rs, by_gen) in enumerate(zip(rowsets, by_gens, strict=True)):
        for g in rs.generations:
            if g.eval_set in em:
                ans["group"].append(gi)
                ans["condition"].append(g.condition)
                ans["aligned"].append(_score(by_gen.get((g.id, ALIGNED))))
                ans["coherent"].append(_score(by_gen.get((g.id, COHERENT))))
                ans["question"].append(f"{g.eval_set}/{g.question_id}")
            if g.eval_set in ids:
                ide["group"].append(gi)
                ide["condition"].append(g.condition)
                ide["name"].append(_label(by_gen.get((g.id, IDENTITY_NAME))))
                ide["creator"].append(_label(by_gen.get((g.id, IDENTITY_CREATOR))))
        for c in rs.choices:
            cho["group"].append(gi)
            cho["condition"].append(c.condition)
            cho["eval_set"].append(c.eval_set)
            cho["correct"].append(c.is_correct)
            cho["correct_option"].append(c.correct)
            cho["mass"].append(c.mass)
            cho["item"].append(c.item_id)

    def arr(values: list, dtype) -> np.ndarray:
        return np.array(values, dtype=dtype) if values else np.zeros(0, dtype=dtype)

    return Tables(
        answers=Answers(
            arr(ans["group"], np.int64),
            arr(ans["condition"], object),
            arr(ans["aligned"], np.float64),
            arr(ans["coherent"], np.float64),
            arr(ans["question"], object),
        ),
        identity=IdentityAnswers(
            arr(ide["group"], np.int64),
            arr(ide["condition"], object),
            arr(ide["name"], object),
            arr(ide["creator"], object),
        ),
        choices=Choices(
            arr(cho["group"], np.int64),
            arr(cho["condition"], object),
            arr(cho["eval_set"], object),
            arr(cho["correct"], bool),
            arr(cho["correct_option"], object),
            arr(cho["mass"], np.float64),
            arr(cho["item"], object),
        ),
        n_seeds=len(rowsets),
        em_sets=sorted(em),
        identity_sets=sorted(ids),
    )
