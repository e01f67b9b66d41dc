"""Compute every registered metric per condition, with bootstrap CIs, and deltas vs a control."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from emarena.eval.metrics import bootstrap as bs
from emarena.eval.metrics.definitions import DELTA_ORDER, DELTAS, METRICS, ORDER, Context, Estimand
from emarena.eval.metrics.tables import RowSet, Tables, build_tables
from emarena.eval.metrics.value import CONDITIONS, MetricValue, Thresholds, load_thresholds
from emarena.eval.rows import ChoiceScore, Generation, Judgement

MetricTable = dict[str, dict[str, MetricValue]]
"""{metric name: {condition: MetricValue}}"""


def compute_metrics(
    generations: Sequence[Generation],
    judgements: Sequence[Judgement],
    choices: Sequence[ChoiceScore] = (),
    *,
    identity: Any | None = None,
    thresholds: Thresholds | None = None,
    n_resamples: int = bs.DEFAULT_RESAMPLES,
    rng_seed: int = 0,
    em_sets: Collection[str] | None = None,
    identity_sets: Collection[str] | None = None,
    names: Sequence[str] | None = None,
) -> MetricTable:
    """Every metric (or `names`) of one cell's rows, per condition, with 95% bootstrap CIs.

    `identity` is the model's `Identity` (models.spec); `thresholds` default to the suite's
    judges.yaml (or 30 / 50). `em_sets` / `identity_sets` name the question sets; by default
    they are the sets whose answers carry aligned/coherent resp. identity_name judgements.
    """
    return compute_pooled_metrics(
        [RowSet(generations, judgements, choices)],
        identity=identity,
        thresholds=thresholds,
        n_resamples=n_resamples,
        rng_seed=rng_seed,
        em_sets=em_sets,
        identity_sets=identity_sets,
        names=names,
    )


def compute_pooled_metrics(
    rowsets: Sequence[RowSet],
    *,
    identity: Any | None = None,
    thresholds: Thresholds | None = None,
    n_resamples: int = bs.DEFAULT_RESAMPLES,
    rng_seed: int = 0,
    em_sets: Collection[str] | None = None,
    identity_sets: Collection[str] | None = None,
    names: Sequence[str] | None = None,
) -> MetricTable:
    """As `compute_metrics`, pooling several seeds (one RowSet each): the point value counts
    every answer once; the CI is the two-level bootstrap (seeds, then answers within seed)."""
    tables = build_tables(rowsets, em_sets=em_sets, identity_sets=identity_sets)
    ctx = Context(thresholds or load_thresholds(), identity)
    names = list(names or [n for n in ORDER if METRICS.get(n).engine == "tables"])
    out: MetricTable = {name: {} for name in names}
    for cond in CONDITIONS:
        sub = tables.for_condition(cond)
        ests = {name: METRICS.get(name).estimand(sub, ctx) for name in names}
        reps = _shared_replicates(ests, n_resamples, rng_seed, cond)
        for name, est in ests.items():
            out[name][cond] = _value(
                est, reps.get(name), METRICS.get(name).higher_is_better, cond, tables
            )
    return out


def _shared_replicates(
    ests: dict[str, Estimand], n_resamples: int, rng_seed: int, cond: str
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of every estimand, one weight draw per population of items."""
    by_pop: dict[str, list[str]] = {}
    for name, est in ests.items():
        if est.stat is not None:
            by_pop.setdefault(est.population, []).append(name)
    out: dict[str, np.ndarray] = {}
    for pop, members in by_pop.items():
        groups = ests[members[0]].group
        assert all(len(ests[m].group) == len(groups) for m in members), pop
        stats = [ests[m].stat for m in members]
        reps = bs.replicates_many(stats, groups, n_resamples, bs.rng_for(rng_seed, cond, pop))
        out.update(zip(members, reps, strict=True))
    return out


def _value(
    est: Estimand, reps: np.ndarray | None, hib: bool, cond: str, tables: Tables
) -> MetricValue:
    details = {**est.details, "n_seeds": tables.n_seeds}
    value = bs.point(est.stat, len(est.group)) if est.stat is not None else None
    if value is None:
        details["reason"] = est.reason or "undefined on these rows"
        return MetricValue(
            value=None,
            n=est.n,
            n_unscored=est.n_unscored,
            higher_is_better=hib,
            condition=cond,
            details=details,
        )
    lo, hi = bs.percentile_ci(reps) if reps is not None else (None, None)
    return MetricValue(
        value=value,
        ci_low=lo,
        ci_high=hi,
        n=est.n,
        n_unscored=est.n_unscored,
        higher_is_better=hib,
        condition=cond,
        details=details,
    )


def _as_rowsets(rows: RowSet | Sequence[RowSet]) -> list[RowSet]:
    return [rows] if isinstance(rows, RowSet) else list(rows)


def deltas(
    defense_cell_rows: RowSet | Sequence[RowSet],
    em_control_rows: RowSet | Sequence[RowSet],
    *,
    thresholds: Thresholds | None = None,
    n_resamples: int = bs.DEFAULT_RESAMPLES,
    rng_seed: int = 0,
    em_sets: Collection[str] | None = None,
) -> MetricTable:
    """Every registered delta (em_reduction, capability changes) of a defense cell vs the `em`
    control of the same (model, EM dataset, seed), per condition.

    The CI resamples the two cells independently (each with its own stream) and takes the
    percentile interval of the replicate differences. `n` / `n_unscored` add both cells';
    `details` gives each side's value and counts.
    """
    ctx = Context(thresholds or load_thresholds())
    sides = {
        "defense": build_tables(_as_rowsets(defense_cell_rows), em_sets=em_sets, identity_sets=()),
        "control": build_tables(_as_rowsets(em_control_rows), em_sets=em_sets, identity_sets=()),
    }
    out: MetricTable = {}
    for name in DELTA_ORDER:
        ddef = DELTAS.get(name)
        if ddef.engine != "tables":
            continue  # the contrast's deltas: emarena.eval.contrast, in the metrics step
        mdef = METRICS.get(ddef.metric)
        out[name] = {}
        for cond in CONDITIONS:
            ests = {s: mdef.estimand(t.for_condition(cond), ctx) for s, t in sides.items()}
            vals = {
                s: bs.point(e.stat, len(e.group)) if e.stat is not None else None
                for s, e in ests.items()
            }
            details: dict[str, Any] = {
                s: {"value": vals[s], "n": e.n, "n_unscored": e.n_unscored} for s, e in ests.items()
            }
            details["metric"] = ddef.metric
            n = sum(e.n for e in ests.values())
            n_unscored = sum(e.n_unscored for e in ests.values())
            if vals["defense"] is None or vals["control"] is None:
                missing = [s for s in ("defense", "control") if vals[s] is None]
                details["reason"] = "; ".join(
                    f"{s}: {ests[s].reason or 'undefined on these rows'}" for s in missing
                )
                out[name][cond] = MetricValue(
                    value=None,
                    n=n,
                    n_unscored=n_unscored,
                    higher_is_better=ddef.higher_is_better,
                    condition=cond,
                    details=details,
                )
                continue
            reps = {
                s: bs.replicates(e.stat, e.group, n_resamples, bs.rng_for(rng_seed, name, cond, s))
                for s, e in ests.items()
            }
            sign = ddef.sign
            value = sign * (vals["defense"] - vals["control"])
            lo, hi = bs.percentile_ci(sign * (reps["defense"] - reps["control"]))
            out[name][cond] = MetricValue(
                value=value,
                ci_low=lo,
                ci_high=hi,
                n=n,
                n_unscored=n_unscored,
                higher_is_better=ddef.higher_is_better,
                condition=cond,
                details=details,
            )
    return out
