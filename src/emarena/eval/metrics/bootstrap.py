"""Percentile bootstrap over answers, and over seeds then answers when seeds are pooled.

A statistic is a function of a weight matrix `w` of shape (resamples, items): row b holds how
many times each item was drawn in resample b, so a mean is `w @ x / w.sum(1)` and every metric
is a few matrix products, with no Python loop over resamples.

One seed: the classic bootstrap, n items drawn with replacement from the n items.
Several seeds: a two-level bootstrap (Davison & Hinkley 1997, section 3.8): draw S seeds with
replacement from the S seeds, then, for every seed drawn, draw its n_s items with replacement.
A seed drawn k times contributes k independent within-seed resamples. With S = 1 this is
exactly the one-level bootstrap, so one code path serves both.

Everything is seeded: the same rows and the same `rng_seed` give the same interval.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps weights (B, n) to one value per resample (B,); NaN where undefined (empty denominator)."""

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
_CHUNK_CELLS = 2_000_000  # weights held in memory at once (rows x items), ~16 MB of float64


def rng_for(rng_seed: int, *keys: str) -> np.random.Generator:
    """An independent, reproducible stream per (seed, metric, condition, side...)."""
    return np.random.default_rng([rng_seed, *(zlib.crc32(k.encode()) for k in keys)])


def resample_weights(
    groups: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield chunks of the (n_resamples, n) weight matrix of a (two-level) bootstrap.

    `groups[i]` is the seed item i belongs to.
    """
    groups = np.asarray(groups)
    n = len(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    n_seeds = len(uniq)
    members = [np.flatnonzero(inverse == s) for s in range(n_seeds)]
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        if n_seeds == 1:
            times = np.ones((b, 1), dtype=np.int64)
        else:
            times = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=b)
        flat = np.zeros(b * n, dtype=np.int64)
        for s, idx in enumerate(members):
            draws_per_row = times[:, s] * len(idx)
            total = int(draws_per_row.sum())
            if total == 0:
                continue
            rows = np.repeat(np.arange(b), draws_per_row)
            picks = idx[rng.integers(0, len(idx), size=total)]
            flat += np.bincount(rows * n + picks, minlength=b * n)
        yield flat.reshape(b, n).astype(np.float64)


def replicates(
    stat: Statistic, groups: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """The statistic on each of `n_resamples` bootstrap resamples, shape (n_resamples,)."""
    return replicates_many([stat], groups, n_resamples, rng)[0]


def replicates_many(
    stats: list[Statistic], groups: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Several statistics of the same items on the same resamples (one draw serves them all)."""
    if len(groups) == 0 or n_resamples <= 0:
        return [np.full(max(n_resamples, 0), np.nan) for _ in stats]
    parts: list[list[np.ndarray]] = [[] for _ in stats]
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in resample_weights(groups, n_resamples, rng):
            for part, stat in zip(parts, stats, strict=True):
                part.append(stat(w))
    return [np.concatenate(p) for p in parts]


def point(stat: Statistic, n_items: int) -> float | None:
    """The statistic on the data themselves (every item once); None when undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = float(stat(np.ones((1, n_items)))[0])
    return v if np.isfinite(v) else None


def percentile_ci(
    reps: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float] | tuple[None, None]:
    """The central `confidence` percentile interval of the finite replicates.

    Resamples where the statistic is undefined (e.g. no coherent answer drawn) are left out;
    if fewer than half are defined the interval would mislead, so there is none.
    """
    finite = reps[np.isfinite(reps)]
    if len(reps) == 0 or len(finite) < 0.5 * len(reps):
        return None, None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


# --- statistics --------------------------------------------------------------------------


def ratio(num: np.ndarray, den: np.ndarray) -> Statistic:
    """sum(w * num) / sum(w * den): a rate (den = 1) or a conditional rate / mean (den = 0/1)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)

    def stat(w: np.ndarray) -> np.ndarray:
        d = w @ den
        return np.where(d > 0, (w @ num) / np.where(d > 0, d, 1.0), np.nan)

    return stat


def entropy_bits(codes: np.ndarray, n_categories: int) -> Statistic:
    """Shannon entropy (bits) of the weighted category counts; `codes[i]` is item i's category."""
    onehot = np.zeros((len(codes), n_categories))
    onehot[np.arange(len(codes)), codes] = 1.0

    def stat(w: np.ndarray) -> np.ndarray:
        counts = w @ onehot
        total = counts.sum(axis=1, keepdims=True)
        p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
        logp = np.log2(p, out=np.zeros_like(p), where=p > 0)
        h = -(p * logp).sum(axis=1)
        return np.where(total[:, 0] > 0, h + 0.0, np.nan)  # +0.0: no negative zero

    return stat
