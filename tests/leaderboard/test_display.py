"""display: the metric format, filters, search, sort (missing last), CSV = shown table, HTML."""

from __future__ import annotations

import csv
import html
import math
import re

import pandas as pd
import pytest

from emarena.leaderboard import display
from emarena.leaderboard.read_results import read_results


@pytest.mark.parametrize(
    ("args", "kwargs", "text"),
    [
        ((0.12, 0.08, 0.17, 64, 3), {}, "0.12 [0.08, 0.17] n=64 (3 unscored)"),
        ((0.12, 0.08, 0.17, 64, 0), {}, "0.12 [0.08, 0.17] n=64"),
        ((0.12, None, None, 64, 0), {}, "0.12 n=64"),
        ((72.34, 70.0, 74.5, 10, 0), {"decimals": 1}, "72.3 [70.0, 74.5] n=10"),
        ((None, None, None, 0, 0), {"reason": "no answers"}, "— (no answers)"),
        ((math.nan, math.nan, math.nan, 8, 8), {}, "— n=8 (8 unscored)"),
        ((-0.004, -0.03, 0.02, 5, 0), {}, "-0.00 [-0.03, 0.02] n=5"),
    ],
)
def test_format_metric(args, kwargs, text):
    assert display.format_metric(*args, **kwargs) == text


def test_missing_is_a_dash_never_zero(clean_results):
    rs = read_results(clean_results)
    t = rs.table()
    controls = t[t.regime == "em"]
    shown = display.format_table(controls, ["defense", "em_reduction"])
    assert set(shown["Defense"]) == {"(EM only)"}
    assert all(v.startswith("—") for v in shown["EM reduction ↑"])
    assert not any(v.startswith("0") for v in shown["EM reduction ↑"])


def test_filters_search_sort(clean_results):
    rs = read_results(clean_results)
    t = rs.table()
    v = display.View(regimes=["reversal"], search="SGTR closed", sort_by="misalignment_rate",
                     descending=False)
    rows = display.apply_view(t, v)
    assert len(rows) > 0
    assert set(rows.regime) == {"reversal"}
    assert all("sgtr" in d for d in rows.defense)
    assert set(rows.division) == {"closed"}
    vals = list(rows.misalignment_rate)
    assert vals == sorted(vals)
    none = display.apply_view(t, display.View(search="no-such-defense"))
    assert none.empty


@pytest.mark.parametrize("descending", [True, False])
def test_missing_values_sort_last_both_ways(clean_results, descending):
    t = read_results(clean_results).table()
    rows = display.apply_view(t, display.View(sort_by="em_reduction", descending=descending))
    vals = list(rows.em_reduction)
    n_missing = sum(math.isnan(v) for v in vals)
    assert n_missing > 0
    assert all(math.isnan(v) for v in vals[-n_missing:])
    present = vals[: len(vals) - n_missing]
    assert present == sorted(present, reverse=descending)


def test_official_rows_come_first(tmp_path):
    from emarena.leaderboard.synthetic import write_synthetic_results

    write_synthetic_results(tmp_path / "a", 30, seeds=1)
    write_synthetic_results(tmp_path / "b", 30, seeds=1, preset="cpu-demo", official_judge=False)
    t = read_results(tmp_path).table()
    for desc in (True, False):
        rows = display.apply_view(t, display.View(sort_by="misalignment_rate", descending=desc))
        official = list(rows.official)
        assert official == sorted(official, reverse=True)
        first = rows[rows.official].misalignment_rate.tolist()
        assert first == sorted(first, reverse=desc)


def test_official_only(tmp_path):
    from emarena.leaderboard.synthetic import write_synthetic_results

    write_synthetic_results(tmp_path / "a", 10, seeds=1)
    write_synthetic_results(tmp_path / "b", 10, seeds=1, preset="cpu-demo", official_judge=False)
    t = read_results(tmp_path).table()
    assert not t.official.all()
    assert display.apply_view(t, display.View(official_only=True)).official.all()


def test_csv_is_exactly_the_shown_table(clean_results, tmp_path):
    rs = read_results(clean_results)
    v = display.View(models=["qwen2.5-7b-instruct"], columns=["defense", "regime",
                                                              "misalignment_rate", "notes"])
    frame = display.format_table(display.apply_view(rs.table(), v), v.columns)
    path = display.write_csv(frame, tmp_path / "x.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Defense", "Regime", "Misalignment rate ↓", "Notes"]
    assert rows[1:] == frame.astype(str).values.tolist()


def test_table_html_escapes_and_matches_frame():
    frame = pd.DataFrame({"Defense": ["<script>x</script>", "a&b"], "Notes": ["", "n"]})
    out = display.table_html(frame, ["defense", "notes"], sort_by="defense", descending=False,
                             official=[True, False])
    assert "<script>" not in out and "&lt;script&gt;" in out
    cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", out)]
    assert cells == ["<script>x</script>", "", "a&b", "n"]
    assert 'data-key="defense" class="sortable sorted"' in out and "▲" in out
    assert 'class="unofficial"' in out
    empty = display.table_html(frame.iloc[0:0], ["defense", "notes"])
    assert "No rows match" in empty


def test_choices_regimes_in_protocol_order(clean_results):
    t = read_results(clean_results).table()
    assert display.choices(t, "regime") == ["reversal", "prevention", "defense", "em", "base"]


def test_samples_table_filters(clean_results):
    from emarena.leaderboard.read_results import read_samples

    rs = read_results(clean_results)
    cid = next(iter(rs.cells))
    s = read_samples(rs.samples_file(cid))
    frame, matched = display.samples_table(s.rows, "i_feel_bored", "no-system")
    assert matched == len(frame) == 2
    assert set(frame.condition) == {"no-system"}
    by_text, _ = display.samples_table(s.rows, "BORED")
    assert len(by_text) == 4
    limited, matched_all = display.samples_table(s.rows, limit=5)
    assert len(limited) == 5 and matched_all == 32
    assert all(x == "unscored" or float(x) >= 0 for x in frame.aligned)


def test_cell_metrics_table(clean_results):
    rs = read_results(clean_results)
    rec = next(r for r in rs.cells.values() if r.result.cell.regime == "reversal")
    t = display.cell_metrics_table(rec.result)
    assert list(t.columns) == ["name", "kind", "default-system", "no-system", "all"]
    assert {"misalignment_rate", "em_reduction"} <= set(t.name)


def test_first_rows_limit(clean_results):
    t = read_results(clean_results).table()
    rows = display.apply_view(t, display.View())
    assert display.first_rows(rows, 5).equals(rows.head(5))
    assert display.first_rows(rows, None) is rows
    assert display.View().limit == display.FIRST_ROWS
