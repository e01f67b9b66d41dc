"""The paired difference (seed and question) and the pooled-seed intervals on constructed
examples whose answers are known."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from emarena.eval.metrics.definitions import DELTAS, info
from emarena.eval.metrics.paired import paired_difference
from emarena.eval.metrics.pooling import pool
from emarena.eval.metrics.value import MetricValue

QUESTIONS = [f"q{i}" for i in range(8)]


def counts(rates_by_seed: dict[int, list[float]], n: int = 100):
    return {s: {q: (round(r * n), n) for q, r in zip(QUESTIONS, rates, strict=True)}
            for s, rates in rates_by_seed.items()}


def test_a_constant_paired_difference_is_exact():
    """Questions differ a lot (0.05 .. 0.85), the defense is 0.10 below the reference on every
    (seed, question): the paired difference is 0.10 with a zero-width interval, and the swap
    test rejects; an unpaired bootstrap of the same numbers would be wide."""
    ref = counts({s: [0.15 + 0.1 * i for i in range(8)] for s in (0, 1, 2)})
    other = counts({s: [0.05 + 0.1 * i for i in range(8)] for s in (0, 1, 2)})
    d = paired_difference(ref, other, key="constant")
    assert d is not None
    assert d.value == pytest.approx(0.10)
    assert d.ci_low == pytest.approx(0.10) and d.ci_high == pytest.approx(0.10)
    assert d.n_pairs == 24 and d.seeds == (0, 1, 2) and d.n_questions == 8
    assert d.n == d.n_reference == 2400
    assert d.p_value < 0.01  # only "no swap" and "swap all" reach |T| = 0.10


def test_identical_sides_differ_by_nothing():
    ref = counts({0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]})
    d = paired_difference(ref, ref, key="same")
    assert d.value == 0.0 and d.ci_low == 0.0 and d.ci_high == 0.0 and d.p_value == 1.0


def test_interval_and_p_value_match_normal_theory():
    """One seed, 400 questions with 100 answers each on both sides: the paired difference is the
    mean of the per-question differences, so its 95% interval is mean +- 1.96 sd / sqrt(400)
    and its p-value that of a z-test, within bootstrap noise."""
    rng = np.random.default_rng(7)
    qs = [f"q{i}" for i in range(400)]
    base = rng.integers(20, 80, size=400)
    diff = rng.integers(-8, 11, size=400)  # mean ~ +1 hit per 100: a small effect
    ref = {0: {q: (int(b + d), 100) for q, b, d in zip(qs, base, diff, strict=True)}}
    other = {0: {q: (int(b), 100) for q, b in zip(qs, base, strict=True)}}
    d = paired_difference(ref, other, n_resamples=4000, key="normal")
    per_q = diff / 100
    mean, sd = per_q.mean(), per_q.std(ddof=1)
    half = 1.96 * sd / math.sqrt(400)
    assert d.value == pytest.approx(mean)
    assert d.ci_low == pytest.approx(mean - half, abs=0.15 * half)
    assert d.ci_high == pytest.approx(mean + half, abs=0.15 * half)
    z = mean / (sd / math.sqrt(400))
    p_normal = 2 * (1 - statistics.NormalDist().cdf(abs(z)))
    assert d.p_value == pytest.approx(p_normal, abs=0.02 + 0.2 * p_normal)


def test_only_shared_pairs_are_compared():
    ref = counts({0: [0.2] * 8, 1: [0.2] * 8})
    other = counts({1: [0.1] * 8, 2: [0.0] * 8})
    d = paired_difference(ref, other)
    assert d.seeds == (1,) and d.n_pairs == 8 and d.value == pytest.approx(0.1)
    assert paired_difference(ref, counts({5: [0.1] * 8})) is None


def mv(value, n, lo=None, hi=None, unscored=0, **details):
    return MetricValue(value=value, ci_low=lo, ci_high=hi, n=n, n_unscored=unscored,
                       higher_is_better=False, condition="all", details=details)


def test_pooled_binary_interval_is_the_two_level_bootstrap():
    """Three seeds of a rate: the pooled value is the pooled share, and the interval is what a
    two-level bootstrap over the items themselves gives (seeds, then items within seed)."""
    seeds = [(0.10, 400), (0.20, 400), (0.15, 400)]
    p = pool([mv(v, n, v - 0.03, v + 0.03) for v, n in seeds], info("misalignment_rate"),
             key="k", n_resamples=4000)
    assert p.value == pytest.approx(0.15) and p.n == 1200 and p.n_seeds == 3
    # the same bootstrap run on the 0/1 items
    from emarena.eval.metrics import bootstrap as bs

    items = np.concatenate([np.r_[np.ones(int(v * n)), np.zeros(n - int(v * n))]
                            for v, n in seeds])
    groups = np.repeat([0, 1, 2], 400)
    reps = bs.replicates(bs.ratio(items, np.ones(len(items))), groups, 4000,
                         np.random.default_rng(1))
    lo, hi = bs.percentile_ci(reps)
    assert p.ci_low == pytest.approx(lo, abs=0.006) and p.ci_high == pytest.approx(hi, abs=0.006)


def test_pooled_one_seed_keeps_its_interval_and_missing_is_not_zero():
    one = pool([mv(0.12, 64, 0.08, 0.17, unscored=3)], info("misalignment_rate"))
    assert (one.value, one.ci_low, one.ci_high, one.n, one.n_unscored) == (0.12, 0.08, 0.17,
                                                                             64, 3)
    some = pool([mv(0.4, 50, 0.3, 0.5), mv(None, 0, reason="no answers"), None],
                info("misalignment_rate"))
    assert some.value == 0.4 and some.n_seeds == 1 and some.n_missing == 2
    none = pool([mv(None, 10, unscored=10, reason="no coherent scored answers")],
                info("misalignment_rate"))
    assert none.value is None and none.reason == "no coherent scored answers"


def test_pooled_delta_pairs_seeds_and_keeps_both_counts():
    """em_reduction from three seeds: value = pooled control - pooled defense; n is the defense
    side's answers and n_reference the control's, never their sum."""
    ddef = DELTAS.get("em_reduction")
    vals = []
    for d, c in ((0.05, 0.20), (0.10, 0.25), (0.06, 0.18)):
        vals.append(MetricValue(
            value=c - d, ci_low=c - d - 0.05, ci_high=c - d + 0.05, n=800, n_unscored=4,
            higher_is_better=True, condition="all",
            details={"defense": {"value": d, "n": 400, "n_unscored": 1},
                     "control": {"value": c, "n": 400, "n_unscored": 3}}))
    p = pool(vals, ddef, key="d")
    assert p.value == pytest.approx((0.20 + 0.25 + 0.18) / 3 - (0.05 + 0.10 + 0.06) / 3)
    assert (p.n, p.n_reference, p.n_unscored, p.n_unscored_reference) == (1200, 1200, 3, 9)
    assert p.ci_low < p.value < p.ci_high
