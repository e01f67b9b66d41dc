"""Metric metadata has one source: `emarena.eval.metrics.definitions` (labels, directions,
bounds, unscored-in-n, item kinds, tags). Every consumer derives from it: no other module keeps
its own collection of metric names, and every metric a record carries is described."""

from __future__ import annotations

import ast
import math
from pathlib import Path

from emarena.eval.metrics.definitions import (
    BESIDE,
    DELTA_ORDER,
    DELTAS,
    INFO,
    METRICS,
    ORDER,
    UNIT,
    info,
    tagged,
)
from emarena.eval.metrics.value import CONDITIONS

REPO = Path(__file__).resolve().parents[2]
DEFINITIONS = REPO / "src" / "emarena" / "eval" / "metrics" / "definitions.py"
SCANNED = [REPO / "src", REPO / "leaderboard", REPO / "bench"]


def _constant(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(map(_constant, node.elts))


def _names_in(node: ast.AST) -> list[str]:
    """Metric names listed by a collection literal: a set, list or tuple of names, or a dict
    from names to constants (a table of directions, bounds, labels). A dict from names to
    computed values (records being built) is data, not metadata."""
    elts = []
    if isinstance(node, (ast.Set, ast.List, ast.Tuple)):
        elts = node.elts
    elif isinstance(node, ast.Dict) and all(map(_constant, node.values)):
        elts = [k for k in node.keys if k is not None]
    return [e.value for e in elts if isinstance(e, ast.Constant) and e.value in INFO]


def test_no_module_but_definitions_lists_metrics():
    """A set, list, tuple or dict literal naming two or more metrics anywhere else is a copy of
    the metadata (a direction table, a bounds table, a "capability" list...): it must derive
    from `info()` / `tagged()` instead."""
    copies = []
    for root in SCANNED:
        for path in sorted(root.rglob("*.py")):
            if path == DEFINITIONS:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                names = _names_in(node)
                # a set or a constant table naming even one metric is metadata; a list or a
                # tuple of two (one name in a tuple is usually an argument list)
                least = 1 if isinstance(node, (ast.Set, ast.Dict)) else 2
                if len(set(names)) >= least:
                    copies.append(f"{path.relative_to(REPO)}:{node.lineno}: {sorted(set(names))}")
    assert not copies, "metric metadata copied outside definitions.py:\n" + "\n".join(copies)


def test_every_metric_and_delta_is_described_once():
    assert list(INFO)[: len(DELTA_ORDER)] == DELTA_ORDER
    assert set(ORDER) <= set(INFO) and set(DELTA_ORDER) <= set(INFO)
    for name, mi in INFO.items():
        assert mi.name == name
        assert mi.label and mi.description, name
        lo, hi = mi.bounds
        assert lo < hi, name
        if mi.items == "binary" and mi.kind == "metric":
            assert mi.bounds == UNIT, f"{name}: a share of items lies in [0, 1]"
    for name in ORDER:
        assert METRICS.get(name) is info(name)
    for name in DELTA_ORDER:
        d = DELTAS.get(name)
        assert d is info(name) and d.kind == "delta"
        assert info(d.metric) is not None, f"{name} compares an undefined metric {d.metric}"
    for name in BESIDE.names():  # a column reading a defined metric under a fixed condition
        b = BESIDE.get(name)
        assert b is info(name) and info(b.metric).kind == "metric"
        assert b.condition in CONDITIONS
        assert (b.higher_is_better, b.bounds, b.unscored_in_n) == (
            info(b.metric).higher_is_better, info(b.metric).bounds, info(b.metric).unscored_in_n)
    assert info("factual_accuracy").higher_is_better  # suite v2's metrics are described
    assert info("misalignment_rate_no_system").label


def test_unscored_in_n_matches_the_definitions():
    """The flag says where a metric's unscored answers go; each description says the same."""
    for name in ("misalignment_rate", "coherence_rate", "unscored_rate"):
        assert info(name).unscored_in_n, name
    for name in ("misalignment_rate_coherent", "mean_alignment", "identity_consistency"):
        assert not info(name).unscored_in_n, name
        assert "n_unscored" in info(name).description or "outside" in info(name).description


def test_tags_drive_the_board_and_the_plots():
    assert {"em_reduction", "misalignment_rate", "capability_change_truthfulqa",
            "capability_change_mmlu", "identity_consistency", "self_recognition_accuracy",
            "vs_sgtr", "misalignment_rate_no_system"} == set(tagged("board"))
    assert {"truthfulqa_accuracy", "mmlu_accuracy"} <= set(tagged("capability"))
    assert info("identity_diversity").bounds == (0.0, math.inf)
    assert info("mean_alignment").bounds == (0.0, 100.0)


def test_records_carry_only_described_metrics(tmp_path):
    """Everything the synthetic records (the shape the engine writes) carry is described."""
    from emarena.leaderboard.synthetic import synthetic_result

    control = synthetic_result("m", "insecure", 0, "em", None)
    r = synthetic_result("m", "insecure", 0, "reversal", "sgtr", control=control)
    for name in [*r.metrics, *r.deltas]:
        mi = info(name)
        assert mi is not None, name
        for mv in (r.metrics.get(name) or r.deltas[name]).values():
            assert mv.higher_is_better == mi.higher_is_better, name
