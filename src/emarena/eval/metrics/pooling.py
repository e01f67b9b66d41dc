"""One row of the leaderboard pools its seeds' cells: the value, and a 95% interval computed the
way every record's `ci_method` says: a two-level percentile bootstrap, seeds with replacement,
then the items of each drawn seed with replacement.

The board reads each seed's record, not its items. For a binary metric (a share of 0/1 items:
`MetricInfo.items == "binary"`) the record is enough to draw exactly what the engine's two-level
bootstrap draws: resampling a seed's n items with replacement gives Binomial(n, value) hits. For
a mean or an entropy (`continuous`) each drawn seed's value is redrawn from a normal with its
own bootstrap standard error (its interval's width / 3.92), an approximation named as such in
`POOLED_CI_METHOD`.

A delta (defense minus EM-only control) pools both sides paired by seed: a drawn seed brings its
defense cell and its control cell together (the same seed, EM data and questions), and each side
redraws its own items. Its `n` is the defense side's items and `n_reference` the control's: the
two are never added up.

    p = pool(per_seed_values, info("misalignment_rate"), key="row/misalignment_rate/all")
    p.value, p.ci_low, p.ci_high, p.n, p.n_unscored, p.n_seeds, p.n_missing

One seed: its record's own interval (the two-level bootstrap with one seed is the one-level
one). A seed without a value is left out of the value and counted in `n_missing`, never as 0.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emarena.eval.metrics import bootstrap as bs
from emarena.eval.metrics.definitions import MetricInfo
from emarena.eval.metrics.value import MetricValue

POOLED_CI_METHOD = (
    "seeds pooled: n-weighted mean; 95% interval: two-level percentile bootstrap (seeds with "
    "replacement, then each drawn seed's items with replacement: exact from the counts for "
    "rates and accuracies; for means and entropies each drawn seed's value is redrawn from a "
    "normal with its own bootstrap standard error); deltas pair the defense and the EM-only "
    "control by seed; one seed: its own interval"
)
N_RESAMPLES = 1000
"""As the engine's per-cell intervals (`MetricsConfig.n_resamples`)."""


@dataclass(frozen=True)
class Pooled:
    """One metric of one row, pooled over the row's seeds."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    """Items in the denominator over the seeds (for a delta: the defense side's)."""
    n_unscored: int
    n_seeds: int
    """Seeds whose value went into `value`."""
    n_missing: int
    """Seeds of the row without a value for this metric (null, or the metric absent)."""
    higher_is_better: bool | None
    reason: str | None = None
    n_reference: int | None = None
    """A delta's control-side items (None for a metric)."""
    n_unscored_reference: int | None = None


@functools.cache
def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def _se(v: MetricValue, confidence: float) -> float:
    if v.ci_low is None or v.ci_high is None:
        return 0.0
    return (v.ci_high - v.ci_low) / (2 * _z(confidence))


def _clip(lo: float | None, hi: float | None, bounds: tuple[float, float]):
    if lo is None or hi is None:
        return lo, hi
    return max(bounds[0], lo), min(bounds[1], hi)


def _side(details: dict, side: str) -> tuple[float, int, int] | None:
    """(value, n, n_unscored) of one side of a delta's details, or None when absent or not
    numbers (details are free-form: a damaged record must not break the pooling)."""
    d = details.get(side)
    if not isinstance(d, dict):
        return None
    try:
        value, n = float(d["value"]), int(d["n"])
        nu = int(d.get("n_unscored") or 0)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if not np.isfinite(value) or n <= 0 or nu < 0:
        return None
    return value, n, nu


def pool(
    values: Sequence[MetricValue | None],
    info: MetricInfo | None,
    *,
    key: str = "",
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
) -> Pooled:
    """Pool one metric's (or delta's) per-seed values; None means absent in that seed's record.

    `key` seeds the bootstrap (the same rows give the same interval); `info` says what the
    items are and the bounds (None: an unknown name, pooled as continuous and unbounded)."""
    return pool_rows([values], info, key=key, n_resamples=n_resamples,
                     confidence=confidence)[0]


@dataclass
class _Todo:
    """A row whose interval needs the bootstrap, with its seeds' numbers."""

    row: int
    mode: str
    v: list[float]
    n: list[float]
    se: list[float]
    cv: list[float]
    cn: list[float]


def pool_rows(
    rows: Sequence[Sequence[MetricValue | None]],
    info: MetricInfo | None,
    *,
    key: str = "",
    n_resamples: int = N_RESAMPLES,
    confidence: float = 0.95,
) -> list[Pooled]:
    """`pool` for many rows of one metric at once: rows with the same number of seeds share one
    draw of seed indices and are resampled together (the leaderboard pools every row of a table
    in a few array operations). Deterministic for the same rows and `key`."""
    out: list[Pooled | None] = []
    todo: list[_Todo] = []
    is_delta = info is not None and info.kind == "delta"
    binary = info is not None and info.items == "binary"
    bounds = info.bounds if info is not None else (-np.inf, np.inf)
    sign = float(getattr(info, "sign", 1))
    for i, values in enumerate(rows):
        p, t = _prepare(i, values, is_delta, binary, confidence, sign)
        out.append(p)
        if t is not None:
            todo.append(t)
    groups: dict[tuple[int, str], list[_Todo]] = {}
    for t in todo:
        groups.setdefault((len(t.v), t.mode), []).append(t)
    for (k, mode), ts in groups.items():
        rng = bs.rng_for(0, "pool", key, str(k), mode)
        idx = rng.integers(0, k, size=(n_resamples, k))
        arr = {f: np.array([getattr(t, f) for t in ts], dtype=float)[:, idx]
               for f in ("v", "n", "se", "cv", "cn")}
        with np.errstate(invalid="ignore", divide="ignore"):
            if mode == "binary":
                hits = rng.binomial(arr["n"].astype(np.int64), np.clip(arr["v"], 0, 1))
                reps = hits.sum(2) / arr["n"].sum(2)
            elif mode == "paired":
                hd = rng.binomial(arr["n"].astype(np.int64), np.clip(arr["v"], 0, 1))
                hc = rng.binomial(arr["cn"].astype(np.int64), np.clip(arr["cv"], 0, 1))
                reps = sign * (hd.sum(2) / arr["n"].sum(2) - hc.sum(2) / arr["cn"].sum(2))
            else:  # continuous: each drawn seed's value from its own normal
                draws = arr["v"] + arr["se"] * rng.standard_normal(arr["v"].shape)
                w = arr["n"]
                reps = (w * draws).sum(2) / w.sum(2)
        lo, hi = _percentile_rows(reps, confidence)
        for j, t in enumerate(ts):
            p = out[t.row]
            assert p is not None
            clo, chi = _clip(lo[j], hi[j], bounds)
            out[t.row] = Pooled(p.value, clo, chi, p.n, p.n_unscored, p.n_seeds, p.n_missing,
                                p.higher_is_better, None, p.n_reference,
                                p.n_unscored_reference)
    return [p for p in out if p is not None]


def _percentile_rows(reps: np.ndarray, confidence: float):
    """`bootstrap.percentile_ci` of every row of `reps` (rows with fewer than half of their
    resamples defined get no interval)."""
    alpha = (1 - confidence) / 2
    finite = np.isfinite(reps)
    n_finite = finite.sum(1)
    lo: list[float | None] = [None] * len(reps)
    hi: list[float | None] = [None] * len(reps)
    whole = n_finite == reps.shape[1]
    if whole.any():  # the usual case: one vectorised quantile for all these rows
        q = np.quantile(reps[whole], [alpha, 1 - alpha], axis=1)
        for j, i in enumerate(np.flatnonzero(whole)):
            lo[i], hi[i] = float(q[0, j]), float(q[1, j])
    for i in np.flatnonzero(~whole & (n_finite >= 0.5 * reps.shape[1])):
        lo[i], hi[i] = bs.percentile_ci(reps[i], confidence)
    return lo, hi


def _prepare(i: int, values: Sequence[MetricValue | None], is_delta: bool, binary: bool,
             confidence: float, sign: float) -> tuple[Pooled, _Todo | None]:
    """The row's value and counts; what its interval needs (None: no bootstrap)."""
    given = [v for v in values if v is not None]
    present = [v for v in given if v.value is not None]
    hib = given[0].higher_is_better if given else None
    missing = len(values) - len(present)
    n_ref = n_unscored_ref = None
    n, n_unscored = sum(v.n for v in given), sum(v.n_unscored for v in given)
    sides = [(_side(v.details, "defense"), _side(v.details, "control")) for v in present]
    if is_delta:
        all_sides = [(_side(v.details, "defense"), _side(v.details, "control")) for v in given]
        if any(a for a, _ in all_sides):  # the defense side's items; the control's apart
            n = sum(a[1] for a, _ in all_sides if a)
            n_unscored = sum(a[2] for a, _ in all_sides if a)
            n_ref = sum(b[1] for _, b in all_sides if b)
            n_unscored_ref = sum(b[2] for _, b in all_sides if b)
    if not present:
        reasons = [str(v.details.get("reason")) for v in given if v.details.get("reason")]
        reason = reasons[0] if reasons else ("not reported" if not given else "no value")
        return Pooled(None, None, None, n, n_unscored, 0, missing, hib, reason, n_ref,
                      n_unscored_ref), None
    if len(present) == 1:
        v = present[0]
        return Pooled(v.value, v.ci_low, v.ci_high, n, n_unscored, 1, missing, hib, None, n_ref,
                      n_unscored_ref), None
    paired = is_delta and all(a and b for a, b in sides)
    if paired:
        dv = [a[0] for a, _ in sides]  # type: ignore[index]
        dn = [float(a[1]) for a, _ in sides]  # type: ignore[index]
        cv = [b[0] for _, b in sides]  # type: ignore[index]
        cn = [float(b[1]) for _, b in sides]  # type: ignore[index]
        pd_ = sum(x * m for x, m in zip(dv, dn, strict=True)) / sum(dn)
        pc = sum(x * m for x, m in zip(cv, cn, strict=True)) / sum(cn)
        value = sign * (pd_ - pc)
        todo = _Todo(i, "paired" if binary else "continuous", dv, dn, [0.0] * len(dv), cv, cn)
        if not binary:
            todo.v = [float(x.value) for x in present]  # type: ignore[arg-type]
            todo.se = [_se(x, confidence) for x in present]
            todo.n = [float(x.n) or 1.0 for x in present]
    else:
        vs = [float(x.value) for x in present]  # type: ignore[arg-type]
        ns = [float(x.n) for x in present]
        ws = ns if sum(ns) > 0 else [1.0] * len(ns)
        value = sum(x * w for x, w in zip(vs, ws, strict=True)) / sum(ws)
        mode = "binary" if binary and not is_delta and sum(ns) > 0 else "continuous"
        todo = _Todo(i, mode, vs, ws, [_se(x, confidence) for x in present], vs, ws)
    return Pooled(value, None, None, n, n_unscored, len(present), missing, hib, None, n_ref,
                  n_unscored_ref), todo
