"""Metrics: registered definitions, computed per condition with bootstrap CIs.

    value.py        MetricValue (what result.json stores per metric and condition), thresholds
    tables.py       rows (Generation, Judgement, ChoiceScore) joined into per-answer arrays
    bootstrap.py    percentile bootstrap; two-level (seeds, then answers) when seeds are pooled
    definitions.py  METRICS: each metric's direction, description and the rows it reads;
                    DELTAS: differences against the EM-only control
    compute.py      compute_metrics / compute_pooled_metrics / deltas

Only `value.py` is imported eagerly: reading a result.json (result.py, the leaderboard) needs
pydantic alone. Everything that computes needs numpy and is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from emarena.eval.metrics.value import (
    CONDITIONS,
    MetricValue,
    ReportCondition,
    Thresholds,
    load_thresholds,
)

_LAZY = {
    "DEFAULT_RESAMPLES": "bootstrap",
    "MetricTable": "compute",
    "compute_metrics": "compute",
    "compute_pooled_metrics": "compute",
    "deltas": "compute",
    "DELTAS": "definitions",
    "DELTA_ORDER": "definitions",
    "ORDER": "definitions",
    "METRICS": "definitions",
    "DeltaDef": "definitions",
    "MetricDef": "definitions",
    "identity_matches": "definitions",
    "RowSet": "tables",
    "normalise_label": "tables",
}

if TYPE_CHECKING:
    from emarena.eval.metrics.bootstrap import DEFAULT_RESAMPLES
    from emarena.eval.metrics.compute import (
        MetricTable,
        compute_metrics,
        compute_pooled_metrics,
        deltas,
    )
    from emarena.eval.metrics.definitions import (
        DELTA_ORDER,
        DELTAS,
        METRICS,
        ORDER,
        DeltaDef,
        MetricDef,
        identity_matches,
    )
    from emarena.eval.metrics.tables import RowSet, normalise_label


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONDITIONS",
    "DEFAULT_RESAMPLES",
    "DELTAS",
    "DELTA_ORDER",
    "METRICS",
    "ORDER",
    "DeltaDef",
    "MetricDef",
    "MetricTable",
    "MetricValue",
    "ReportCondition",
    "RowSet",
    "Thresholds",
    "compute_metrics",
    "compute_pooled_metrics",
    "deltas",
    "identity_matches",
    "load_thresholds",
    "normalise_label",
]
