"""report.md, plots and the terminal table for a run folder; bad result files are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emarena.eval.report import (
    PLOT_MISALIGNMENT,
    PLOT_TRADEOFF,
    format_table,
    load_results,
    write_report,
)
from emarena.eval.result import write_result
from tests.unit.test_result import build_result, cell_rows, make_cell

PNG = b"\x89PNG\r\n\x1a\n"


def write_cell(run: Path, result) -> Path:
    d = run / "cells" / result.cell_id
    (d / "metrics").mkdir(parents=True, exist_ok=True)
    (d / "cell.json").write_text(json.dumps({"id": result.cell_id, "label": result.cell.label}))
    return write_result(d / "metrics" / "result.json", result)


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "runs" / "demo"
    control_rows = cell_rows(misaligned=5, tqa_correct=7)
    em = make_cell("em", defense=None)
    write_cell(
        run, build_result(make_cell("base", defense=None), rows=cell_rows(misaligned=0, unscored=0))
    )
    write_cell(run, build_result(em, rows=control_rows))
    write_cell(
        run,
        build_result(
            make_cell("reversal"),
            rows=cell_rows(misaligned=1, tqa_correct=5),
            control=control_rows,
            control_cell=em,
        ),
    )
    # a prevention cell whose control was never evaluated: no delta, said so
    write_cell(run, build_result(make_cell("prevention"), rows=cell_rows(misaligned=3)))
    return run


def test_report_tables_and_plots(run):
    printed: list[str] = []
    path = write_report(run, echo=printed.append)
    assert path == run / "report.md"
    md = path.read_text()
    for regime in ("base", "em", "reversal", "prevention"):
        assert f"## Regime: {regime}" in md
    assert "## Regime: defense" not in md
    assert "4 cell(s) with results, 0 pending, 0 unreadable" in md
    # misalignment with CI and counts, unscored visible
    assert "0.375 [" in md and "(n=8, unscored 1)" in md  # prevention: 3 of 8
    assert "0.625 [" in md  # the em control: 5 of 8
    # the reversal cell's reduction vs the control: 5/8 - 1/8 = 0.5
    reversal_line = next(ln for ln in md.splitlines() if make_cell("reversal").id[:12] in ln)
    assert "| 0.500 [" in reversal_line and "sgtr" in reversal_line and "insecure" in reversal_line
    prevention_line = next(ln for ln in md.splitlines() if make_cell("prevention").id[:12] in ln)
    assert "no em control result" in prevention_line
    assert "unofficial" in md and "*`" in md
    for name in (PLOT_MISALIGNMENT, PLOT_TRADEOFF):
        assert (run / name).read_bytes()[:8] == PNG
        assert f"]({name})" in md
    # the judge's measured agreement with GPT-4o (the calibration record the suite ships),
    # in the report and before the judged table in the terminal
    assert "## The judge" in md
    assert "judge hf:smollm2-135m-q4: agreement with GPT-4o: kappa=0.00" in md
    assert printed[0].startswith("judge hf:smollm2-135m-q4: agreement with GPT-4o")
    # the terminal table
    table = printed[1]
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["regime", "defense", "em", "dataset"]
    assert sum(ln.startswith(("base", "em", "reversal", "prevention")) for ln in lines) == 4
    assert "unscored" in lines[0]
    reversal_row = next(ln for ln in lines if ln.startswith("reversal"))
    assert "0.125" in reversal_row and "0.500" in reversal_row


def test_malformed_results_are_reported_never_counted(run):
    ok = load_results(run)
    assert len(ok.results) == 4 and not ok.problems
    # 1. a truncated file
    broken = run / "cells" / ("b" * 64) / "metrics"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text('{"schema_version": 1, "metrics": {')
    # 2. valid JSON, wrong schema
    wrong = run / "cells" / ("c" * 64) / "metrics"
    wrong.mkdir(parents=True)
    (wrong / "result.json").write_text('{"schema_version": 1, "metrics": {}}')
    # 3. a result filed under another cell's folder
    stray = build_result(make_cell("defense"))
    misfiled = run / "cells" / ("d" * 64) / "metrics"
    misfiled.mkdir(parents=True)
    write_result(misfiled / "result.json", stray)
    # 4. a cell not evaluated yet
    pending = run / "cells" / ("e" * 64)
    pending.mkdir(parents=True)
    (pending / "cell.json").write_text(json.dumps({"label": "defense/sgtr/insecure/seed1"}))

    found = load_results(run)
    assert len(found.results) == 4
    assert {p.parent.parent.name[0] for p, _ in found.problems} == {"b", "c", "d"}
    assert found.pending == ["defense/sgtr/insecure/seed1 (eeeeeeeeeeee)"]

    printed: list[str] = []
    md = write_report(run, echo=printed.append).read_text()
    assert "4 cell(s) with results, 1 pending, 3 unreadable" in md
    assert "## Unreadable results" in md and "not counted as zero" in md
    assert f"cells/{'b' * 64}/metrics/result.json" in md and "not valid JSON" in md
    assert "does not match result schema v1" in md
    assert "holds the result of cell" in md
    assert "## Regime: defense" not in md  # the misfiled result is not shown as a cell
    assert "## Pending" in md and "defense/sgtr/insecure/seed1" in md
    assert sum("unreadable:" in p for p in printed) == 3


def test_empty_run_still_writes_a_report(tmp_path):
    run = tmp_path / "runs" / "empty"
    run.mkdir(parents=True)
    md = write_report(run, echo=None).read_text()
    assert "0 cell(s) with results" in md
    assert (run / PLOT_MISALIGNMENT).read_bytes()[:8] == PNG
    assert format_table([]).splitlines()[0].startswith("regime")


def test_values_missing_show_the_reason(run):
    # a cell without TruthfulQA rows: its column says why, and the trade-off plot leaves it out
    rows = cell_rows()
    no_tqa = type(rows)(
        rows.generations,
        rows.judgements,
        [c for c in rows.choices if c.eval_set != "truthfulqa"],
        rows.seed,
    )
    write_cell(run, build_result(make_cell("defense"), rows=no_tqa))
    md = write_report(run, echo=None).read_text()
    line = next(ln for ln in md.splitlines() if make_cell("defense").id[:12] in ln)
    assert "no truthfulqa choice rows" in line
    assert "Left out of the trade-off plot" in md and "no truthfulqa_accuracy value" in md
