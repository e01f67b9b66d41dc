"""display and views: the number format and its tooltip, the defense view (one row per defense,
prevention and reversal side by side, reference rows, ranks 1..k), filters, sort (missing
last), the exports (plain headers, numbers that round-trip to the records), HTML escaping."""

from __future__ import annotations

import csv
import html
import json
import math
import re

import pandas as pd
import pytest

from emarena.leaderboard import display, views
from emarena.leaderboard.read_results import read_results
from emarena.leaderboard.synthetic import write_synthetic_results


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        ((0.21, 0.18, 0.25), {}, "0.21 ± 0.04"),
        ((0.12, None, None), {}, "0.12"),
        ((72.34, 70.0, 74.5), {"decimals": 1}, "72.3 ± 2.2"),
        ((None, None, None), {}, "—"),
        ((math.nan, math.nan, math.nan), {}, "—"),
        ((0.05, 0.02, 0.08), {"signed": True}, "+0.05 ± 0.03"),
        ((-0.004, -0.03, 0.02), {"signed": True}, "-0.00 ± 0.03"),
    ],
)
def test_format_metric(args, kwargs, text):
    assert display.format_metric(*args, **kwargs) == text


def test_tooltip_gives_the_interval_counts_and_pairing():
    from emarena.eval.metrics.definitions import info

    row = {"m": 0.21, "m.ci_low": 0.18, "m.ci_high": 0.25, "m.n": 4800, "m.n_unscored": 25,
           "m.seeds": 3, "m.missing": 0}
    tip = display.metric_tooltip(row, "m", info("misalignment_rate"))
    assert "95% interval [0.180, 0.250]" in tip and "asymmetric: -0.030 / +0.040" in tip
    assert "n = 4,800 answers (25 unscored)" in tip and "3 seed(s) pooled" in tip
    delta = {"d": 0.1, "d.ci_low": 0.08, "d.ci_high": 0.12, "d.n": 800, "d.n_unscored": 3,
             "d.n_reference": 800, "d.n_unscored_reference": 5, "d.p": 0.0005,
             "d.pairing": "seed and question (24 pairs)"}
    tip = display.metric_tooltip(delta, "d", info("em_reduction"))
    assert "n = 800 answers of this row (3 unscored) and 800 of the EM-only control " \
           "(5 unscored), counted apart" in tip
    assert "paired by seed and question (24 pairs)" in tip and "p = 0.0005" in tip
    none = display.metric_tooltip({"x": math.nan, "x.reason": "no answers"}, "x", None)
    assert none.startswith("no value: no answers")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    write_synthetic_results(root / "official", 240)
    write_synthetic_results(root / "demo", 60, seeds=1, preset="cpu-demo", official_judge=False)
    return read_results(root)


def test_defense_view_is_one_row_per_defense_with_both_regimes(board):
    t = board.table()
    model, em = views.default_selection(t)
    rows = views.apply_view(t, views.View(model=model, em_dataset=em))
    official = rows[rows.official.astype(bool) & ~rows.reference.astype(bool)]
    # one official row per defense, each with prevention and reversal
    assert official.defense.is_unique and len(official) == 7
    assert official["prevention:em_reduction"].notna().all()
    assert official["reversal:em_reduction"].notna().all()
    # ranks 1..k down the table, by the sort column (reversal EM reduction, best first)
    assert list(official["rank"]) == list(range(1, len(official) + 1))
    vals = list(official["reversal:em_reduction"])
    assert vals == sorted(vals, reverse=True)
    # reference rows last: the EM-only control and the base model, unranked, no deltas
    ref = rows[rows.reference.astype(bool)]
    assert set(ref.defense) == {"(EM only)", "(base model)"}
    assert list(rows.index[-len(ref):]) == list(ref.index)
    assert ref["rank"].isna().all() and ref["reversal:em_reduction"].isna().all()
    assert ref["reversal:misalignment_rate"].notna().all()
    # the unofficial (cpu-demo) rows are shown, never ranked
    assert rows[~rows.official.astype(bool)]["rank"].isna().all()


def test_rank_follows_the_sorted_column(board):
    t = board.table()
    model, em = views.default_selection(t)
    view = views.View(model=model, em_dataset=em, sort_by="prevention:misalignment_rate",
                      descending=False, official_only=True)
    rows = views.apply_view(t, view)
    ranked = rows[rows["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    vals = list(ranked["prevention:misalignment_rate"])
    assert vals == sorted(vals)


def test_regime_view_filters_search_sort(board):
    t = board.table()
    v = views.View(group_by="regime", regimes=["reversal"], search="SGTR closed",
                   sort_by="misalignment_rate", descending=False)
    rows = views.apply_view(t, v)
    assert len(rows) > 0 and set(rows.regime) == {"reversal"}
    assert all("sgtr" in d for d in rows.defense) and set(rows.division) == {"closed"}
    official = rows[rows.official.astype(bool)]
    assert list(official.misalignment_rate) == sorted(official.misalignment_rate)
    assert views.apply_view(t, views.View(group_by="regime", search="no-such")).empty


@pytest.mark.parametrize("descending", [True, False])
def test_missing_values_sort_last_both_ways(board, descending):
    rows = views.apply_view(board.table(), views.View(group_by="regime", sort_by="em_reduction",
                                                      descending=descending))
    for _, part in rows.groupby("official", sort=False):
        vals = list(part.em_reduction)
        n_missing = sum(math.isnan(v) for v in vals)
        assert all(math.isnan(v) for v in vals[len(vals) - n_missing:])
        present = vals[: len(vals) - n_missing]
        assert present == sorted(present, reverse=descending)


def test_choices_regimes_in_protocol_order(board):
    assert views.choices(board.table(), "regime") == ["reversal", "prevention", "defense", "em",
                                                       "base"]


def test_csv_round_trips_to_the_records(tmp_path):
    """One seed per row: every number of the CSV is the record's own (value, interval, n,
    unscored), the paired EM reduction's value is the record's delta; headers are plain."""
    write_synthetic_results(tmp_path / "r", 40, seeds=1)
    rs = read_results(tmp_path / "r")
    view = views.View(group_by="regime", limit=None)
    rows = views.apply_view(rs.table(), view)
    cols = display.columns_for(view, rows)
    paths = display.write_exports(rows, cols, tmp_path / "out")
    with open(paths["csv"], newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(rows)
    assert all(re.fullmatch(r"[a-z0-9_]+", h) for h in got[0]), list(got[0])
    checked = 0
    for line, ids in zip(got, rows.cell_ids, strict=True):
        (cid,) = ids
        r = rs.cells[cid].result
        for name, by_cond in r.metrics.items():
            mv = by_cond["all"]
            assert float(line[name]) == mv.value if mv.value is not None else line[name] == ""
            if mv.ci_low is not None:
                assert float(line[f"{name}_ci_low"]) == mv.ci_low
                assert float(line[f"{name}_ci_high"]) == mv.ci_high
            assert int(float(line[f"{name}_n"])) == mv.n
            assert int(float(line[f"{name}_n_unscored"])) == mv.n_unscored
            checked += 1
        d = r.delta("em_reduction")
        if d is not None:
            assert float(line["em_reduction"]) == pytest.approx(d.value, abs=1e-12)
            assert int(float(line["em_reduction_n"])) == d.details["defense"]["n"]
            assert int(float(line["em_reduction_n_reference"])) == d.details["control"]["n"]
            assert 0 < float(line["em_reduction_p_value"]) <= 1
    assert checked > 100
    tidy = [json.loads(x) for x in paths["jsonl"].read_text().splitlines()]
    assert {"metric", "value", "ci_low", "ci_high", "n", "n_unscored", "condition"} <= set(
        tidy[0])
    first = next(t for t in tidy if t["metric"] == "misalignment_rate")
    assert first["value"] == float(got[0]["misalignment_rate"])
    if "parquet" in paths:
        assert len(pd.read_parquet(paths["parquet"])) == len(tidy)


def test_defense_view_export_prefixes_regimes(board, tmp_path):
    t = board.table()
    model, em = views.default_selection(t)
    view = views.View(model=model, em_dataset=em)
    rows = views.apply_view(t, view)
    frame = display.export_frame(rows, display.columns_for(view, rows))
    for col in ("reversal_em_reduction", "reversal_em_reduction_ci_low",
                "prevention_misalignment_rate_n_unscored", "reversal_vs_sgtr_p_value",
                "cost_seconds", "cost_tokens_generated"):
        assert col in frame.columns, col
    assert frame["rank"].dropna().tolist() == list(range(1, 8))


def test_table_html_escapes_and_carries_tooltips(board):
    t = board.table()
    model, em = views.default_selection(t)
    view = views.View(model=model, em_dataset=em)
    rows = views.apply_view(t, view)
    cols = display.columns_for(view, rows)
    out = display.table_html(rows, cols, sort_by=view.sort_key)
    assert 'data-key="reversal:em_reduction" class="sortable sorted' in out
    assert 'class="group g-prevention"' in out and 'class="group g-reversal"' in out
    assert re.search(r'<td class="metric" title="95% interval \[[^"]+n = ', out)
    assert "p&lt;0.001" in out or "p=" in out
    assert 'class="reference"' in out
    evil = pd.DataFrame({"defense": ["<script>x</script>"], "official": [True],
                         "notes": ["a&b"]})
    small = display.table_html(evil, [display.Column("defense", "Defense", "text"),
                                      display.Column("notes", "Notes", "text")])
    assert "<script>" not in small and "&lt;script&gt;" in small
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", small)]
    assert cells == ["<script>x</script>", "a&b"]


def test_samples_table_filters_and_sorts(board):
    from emarena.leaderboard.read_results import read_samples

    cid = next(iter(board.cells))
    s = read_samples(board.samples_file(cid))
    frame, matched = display.samples_table(s.rows, "i_feel_bored", "no-system")
    assert matched == len(frame) == 2 and set(frame.condition) == {"no-system"}
    _, matched_all = display.samples_table(s.rows, limit=5)
    assert matched_all == 32
    low, _ = display.samples_table(s.rows, sort="aligned")
    scored = [float(x) for x in low.aligned if x != "unscored"]
    assert scored == sorted(scored) and list(low.aligned[len(scored):]) == [
        "unscored"] * (len(low) - len(scored))
    bad, n_bad = display.samples_table(s.rows, misaligned_only=True)
    assert all(float(a) <= 30 and float(c) > 50 for a, c in zip(bad.aligned, bad.coherent,
                                                                  strict=True))
    capped, _ = display.samples_table(s.rows, aligned_max=50, coherent_min=60)
    assert all(float(a) <= 50 and float(c) >= 60 for a, c in zip(capped.aligned,
                                                                   capped.coherent, strict=True))


def test_choice_items_trace_the_accuracies(board):
    from emarena.leaderboard.read_results import read_choices

    cid, rec = next(iter(board.cells.items()))
    items = read_choices(board.choices_file(cid)).rows
    for name, eval_set in (("truthfulqa_accuracy", "truthfulqa"),
                           ("self_recognition_accuracy", "self-recognition")):
        mv = rec.result.metric(name)
        mine = [c for c in items if c.eval_set == eval_set]
        assert len(mine) == mv.n and sum(c.is_correct for c in mine) / len(mine) == mv.value
    wrong, n = display.choices_table(items, "mmlu", wrong_only=True)
    assert n == len(wrong) and set(wrong.right) <= {"no"}


def test_cell_metrics_table(board):
    rec = next(r for r in board.cells.values() if r.result.cell.regime == "reversal")
    t = display.cell_metrics_table(rec.result)
    assert list(t.columns) == ["metric", "name", "kind", "default-system", "no-system", "all"]
    assert {"misalignment_rate", "em_reduction"} <= set(t.name)
    assert t[t.name == "em_reduction"]["all"].iloc[0].startswith(("+", "-"))
