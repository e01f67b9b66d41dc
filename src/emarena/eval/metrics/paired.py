"""Paired comparison of two rows of one grid: the difference in misalignment between a defense
and a reference (the EM-only control, or SGTR), paired by seed and question.

Defenses in one grid share the seeds and the questions (and, in reversal, the EM stage), so the
fair comparison pairs them: seed s and question q of the defense against seed s and question q
of the reference. The records carry the counts this needs: `misalignment_rate`'s
`details.by_question` holds, per question, the misaligned answers (`hits`) and all answers
(`n`, unscored ones included, as in the metric).

    ref = question_counts(reference_results, "all")     # {seed: {question: (hits, n)}}
    other = question_counts(defense_results, "all")
    d = paired_difference(ref, other)                    # ref - other: > 0 the defense is better
    d.value, d.ci_low, d.ci_high, d.p_value, d.n_pairs

- value: the reference's pooled rate minus the other's, over the (seed, question) pairs both
  have (for complete pairs: exactly the difference of the two rows' misalignment rates);
- interval: a paired two-level percentile bootstrap, the records' `ci_method` applied to pairs:
  seeds with replacement, then the questions of each drawn seed with replacement, the same draw
  for both sides;
- p-value (two-sided, H0: within each pair the two sides are exchangeable): a randomization
  test that swaps the sides of each pair at random, p = (1 + #{|T*| >= |T|}) / (1 + B).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from emarena.eval.metrics import bootstrap as bs

Counts = Mapping[int, Mapping[str, tuple[int, int]]]
"""{seed: {question id: (hits, n)}}"""
METRIC = "misalignment_rate"
N_RESAMPLES = 2000
"""Drawn once per layout of seeds and questions, so more than a cell's 1,000 cost little."""
PAIRED_METHOD = (
    "paired by seed and question: the reference's pooled misalignment minus this row's, over "
    "the (seed, question) pairs both have; 95% interval: paired two-level percentile bootstrap "
    "(seeds, then questions within each seed, one draw for both sides); p: two-sided "
    "randomization test swapping the two sides of each pair"
)


@dataclass(frozen=True)
class PairedDifference:
    value: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    n_pairs: int
    """(seed, question) pairs compared."""
    seeds: tuple[int, ...]
    n_questions: int
    n: int
    """Answers of this row in the pairs (unscored ones included)."""
    n_reference: int
    """Answers of the reference in the pairs."""


def question_counts(results: Iterable, condition: str = "all",
                    metric: str = METRIC) -> dict[int, dict[str, tuple[int, int]]] | None:
    """{seed: {question: (hits, n)}} from `Result` records (one per seed); None when a record
    lacks the per-question counts (then nothing can be paired)."""
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for r in results:
        mv = r.metric(metric, condition)
        if mv is None or mv.value is None:
            continue
        byq = mv.details.get("by_question")
        if not isinstance(byq, dict) or not byq:
            return None
        try:
            counts = {str(q): (int(c["hits"]), int(c["n"])) for q, c in byq.items()}
        except (KeyError, TypeError, ValueError, OverflowError):
            return None  # details are free-form: damaged counts pair nothing
        if any(not 0 <= h <= n for h, n in counts.values()):
            return None
        out[r.cell.seed] = counts
    return out or None


def paired_difference(
    reference: Counts,
    other: Counts,
    *,
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
    key: str = "",
) -> PairedDifference | None:
    """`reference` minus `other`, paired by seed and question; None when no pair is shared."""
    pairs = [(s, q) for s in sorted(set(reference) & set(other))
             for q in sorted(set(reference[s]) & set(other[s]))
             if reference[s][q][1] > 0 and other[s][q][1] > 0]
    if not pairs:
        return None
    h_r = np.array([reference[s][q][0] for s, q in pairs], dtype=float)
    n_r = np.array([reference[s][q][1] for s, q in pairs], dtype=float)
    h_o = np.array([other[s][q][0] for s, q in pairs], dtype=float)
    n_o = np.array([other[s][q][1] for s, q in pairs], dtype=float)
    groups = tuple(s for s, _ in pairs)
    value = float(h_r.sum() / n_r.sum() - h_o.sum() / n_o.sum())
    w, swap = _draws(groups, n_resamples, key)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = bs.percentile_ci((w @ h_r) / (w @ n_r) - (w @ h_o) / (w @ n_o), confidence)
        # swapping the sides of a pair moves its counts from one side's sums to the other's
        dh, dn = h_o - h_r, n_o - n_r
        t = ((h_r.sum() + swap @ dh) / (n_r.sum() + swap @ dn)
             - (h_o.sum() - swap @ dh) / (n_o.sum() - swap @ dn))
    extreme = int((np.abs(t) >= abs(value) - 1e-12).sum())
    p = (1 + extreme) / (1 + n_resamples)
    return PairedDifference(
        value=value, ci_low=lo, ci_high=hi, p_value=min(1.0, p), n_pairs=len(pairs),
        seeds=tuple(sorted(set(groups))), n_questions=len({q for _, q in pairs}),
        n=int(n_o.sum()), n_reference=int(n_r.sum()),
    )


@functools.lru_cache(maxsize=64)
def _draws(groups: tuple[int, ...], n_resamples: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap weights (seeds, then pairs within seed) and the swap masks for pairs
    grouped by seed as `groups`. Drawn once per layout: every comparison of a grid's rows has
    the same seeds and questions, so the leaderboard draws them once for the whole table."""
    rng = bs.rng_for(0, "paired", key, str(groups))
    w = np.concatenate(list(bs.resample_weights(np.array(groups), n_resamples, rng)))
    swap = (rng.random((n_resamples, len(groups))) < 0.5).astype(float)
    w.setflags(write=False)
    swap.setflags(write=False)
    return w, swap
