"""Which rows the board shows: the defense view (the default) and the row-per-regime view.

The defense view answers the board's question: for one model and one EM dataset, how does each
defense do? One row per defense, prevention and reversal side by side (`prevention:<metric>`,
`reversal:<metric>` columns), the EM-only control and the base model as reference rows at the
bottom; ranks 1..k among the official measured rows by the column the table is sorted by.
The regime view is `ResultSet.table()` as it is: one row per (defense, model, EM dataset,
regime, preset, judge), ranked within its model, EM dataset and regime.

    view = View(model="qwen2.5-32b-instruct", em_dataset="insecure")
    rows = apply_view(rs.table(view.condition), view)    # filtered, sorted, ranked (numbers)
    shown = first_rows(rows, view.limit)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from emarena import settings

GroupBy = Literal["defense", "regime"]
#: The defense view's regime column groups, in page order.
VIEW_REGIMES = ("prevention", "reversal", "defense")
#: Regimes of the reference rows (controls), and the label their Defense column shows.
REFERENCE_REGIMES = ("em", "base")
REGIME_ORDER = ("reversal", "prevention", "defense", "em", "base")
#: The columns that identify a defense across its regimes (one row of the defense view).
DEFENSE_KEY = ["defense", "config_hash", "preset", "judge", "suite", "model_revision",
               "source_label"]
#: Columns the search box looks in.
SEARCHED = ("defense", "kind", "division", "model", "em_dataset", "regime", "judge", "preset",
            "notes", "source_label")
#: Filters (the dropdowns above the table): view field -> table column.
FILTERS = {
    "regimes": "regime",
    "divisions": "division",
    "judges": "judge",
    "sources": "source",
}
#: Rows the table shows until the visitor asks for all.
FIRST_ROWS = 100


@dataclass(frozen=True)
class View:
    """What the visitor asked for: grouping, model and EM dataset, filters, search, sort."""

    group_by: GroupBy = "defense"
    model: str = ""
    """The model (the defense view needs one; the regime view: "" for all)."""
    em_dataset: str = ""
    condition: str = "headline"
    """headline (each row under its records' headline condition), default-system, no-system or
    all (both pooled): `ResultSet.table`'s conditions."""
    regimes: Sequence[str] = ()
    """Regime view only."""
    divisions: Sequence[str] = ()
    judges: Sequence[str] = ()
    sources: Sequence[str] = ()
    """published | measured (empty: both)."""
    official_only: bool = False
    search: str = ""
    sort_by: str = ""
    """A column key; "" for the view's default."""
    descending: bool = True
    columns: Sequence[str] = field(default_factory=tuple)
    """Shown column keys; empty for the view's defaults."""
    limit: int | None = FIRST_ROWS

    @property
    def sort_key(self) -> str:
        if self.sort_by:
            return self.sort_by
        return "reversal:em_reduction" if self.group_by == "defense" else "em_reduction"


@functools.cache
def headline(suite: str = settings.DEFAULT_SUITE) -> tuple[str, str]:
    """The suite's headline model and EM dataset: the first of each in its paper grid."""
    from emarena.yamlio import read_yaml

    path = settings.suite_dir(suite) / "grids" / "paper.yaml"
    try:
        data, _ = read_yaml(path)
    except Exception:  # noqa: BLE001 - a missing or odd grid only loses the default
        return "", ""
    models = data.get("models") if isinstance(data, dict) else None
    ems = data.get("em_datasets") if isinstance(data, dict) else None
    return (str(models[0]) if models else "", str(ems[0]) if ems else "")


def default_selection(table: pd.DataFrame) -> tuple[str, str]:
    """The model and EM dataset the board opens on: the suite's headline pair when it has
    official measured rows, else the pair with the most of them (then the most rows)."""
    if table.empty:
        return "", ""
    pairs = table.groupby(["model", "em_dataset"]).size()
    measured = table[(table["source"] == "measured") & table["official"].astype(bool)]
    counts = (measured.groupby(["model", "em_dataset"]).size().reindex(pairs.index,
                                                                        fill_value=0))
    model, em = headline()
    if (model, em) in pairs.index and counts[(model, em)] > 0:
        return model, em
    best = sorted(pairs.index, key=lambda p: (-counts[p], -pairs[p], p))[0]
    return str(best[0]), str(best[1])


def metric_names(table: pd.DataFrame) -> list[str]:
    """The metric, delta and comparison columns of a table (those with an interval)."""
    return [c for c in table.columns if f"{c}.ci_low" in table.columns and ":" not in c]


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def defense_table(table: pd.DataFrame, model: str, em_dataset: str) -> pd.DataFrame:
    """One row per defense of `model` and `em_dataset`: every metric column `m` of the regime
    rows becomes `<regime>:m`; the EM-only control and the base model become reference rows
    whose metrics (not their deltas) stand in every regime's columns."""
    if table.empty:
        return table.iloc[0:0]
    sub = table[(table["model"] == model) & (table["em_dataset"] == em_dataset)]
    names = metric_names(table)
    metric_cols = [c for c in table.columns
                   if c in names or (c.split(".", 1)[0] in names and "." in c)]
    cost_cols = [c for c in table.columns if c.startswith("cost.")]
    out: dict[tuple, dict[str, Any]] = {}
    for rec in sub.to_dict("records"):
        key = tuple(rec[k] for k in DEFENSE_KEY)
        regime = rec["regime"]
        reference = regime in REFERENCE_REGIMES
        row = out.get(key)
        if row is None:
            row = {k: rec.get(k) for k in ("defense", "division", "kind", "config_hash",
                                           "preset", "judge", "judge_agreement", "suite",
                                           "model", "model_revision", "em_dataset", "source",
                                           "source_label", "citation", "condition",
                                           "judge_mode", "budget")}
            row.update(reference=reference, official=True, regimes=[], cell_ids=[],
                       notes=[], seeds=0, **{c: (0.0 if c != "cost.device" else "")
                                              for c in cost_cols})
            out[key] = row
        row["regimes"].append(regime)
        row["official"] = row["official"] and bool(rec["official"])
        row["cell_ids"] += list(rec["cell_ids"])
        row["seeds"] = max(row["seeds"], int(rec["seeds"]))
        row[f"{regime}:seeds"] = rec["seeds"]
        row[f"{regime}:seed_list"] = rec["seed_list"]
        if rec.get("notes"):
            row["notes"].append(f"{regime}: {rec['notes']}")
        for c in cost_cols:
            v = rec.get(c)
            if c == "cost.device":
                row[c] = ",".join(sorted({*filter(None, row[c].split(",")), *filter(
                    None, str(v or "").split(","))}))
            elif not _is_missing(v):
                row[c] += v
        targets = VIEW_REGIMES if reference else (regime,)
        for c in metric_cols:
            name = c.split(".", 1)[0]
            if reference and _is_delta(table, name):
                continue
            for t in targets:
                row[f"{t}:{c}"] = rec[c]
    rows = []
    for row in out.values():
        row["regimes"] = ", ".join(sorted(row["regimes"], key=REGIME_ORDER.index))
        row["cell_ids"] = tuple(row["cell_ids"])
        row["notes"] = "; ".join(row["notes"])
        rows.append(row)
    df = pd.DataFrame(rows)
    return df if not df.empty else table.iloc[0:0]


def _is_delta(table: pd.DataFrame, name: str) -> bool:
    return f"{name}.n_reference" in table.columns or name in ("vs_sgtr",)


# --- filters, search, sort, rank -----------------------------------------------------------


def choices(table: pd.DataFrame, column: str) -> list[str]:
    """The values a filter offers, sorted (regimes in protocol order)."""
    if column not in table.columns:
        return []
    values = sorted({str(v) for v in table[column].dropna() if str(v)})
    if column == "regime":
        values.sort(key=lambda r: (REGIME_ORDER.index(r) if r in REGIME_ORDER else 99, r))
    return values


def search_mask(table: pd.DataFrame, query: str) -> pd.Series:
    """Rows whose text columns contain every whitespace-separated term (case-insensitive)."""
    terms = [t for t in query.lower().split() if t]
    mask = pd.Series(True, index=table.index)
    if not terms or table.empty:
        return mask
    present = [c for c in SEARCHED if c in table.columns]
    haystack = table[present].astype(str).agg(" ".join, axis=1).str.lower()
    for term in terms:
        mask &= haystack.str.contains(term, regex=False)
    return mask


def sort_rows(table: pd.DataFrame, sort_by: str, descending: bool) -> pd.DataFrame:
    """Official rows first (only they are ranked), each group sorted by a column's value
    (numbers numerically; missing values last in both directions); ties by model, EM dataset,
    regime and defense; reference rows (the controls of the defense view) last."""
    if table.empty:
        return table
    if sort_by not in table.columns:
        sort_by = "defense"
    ties = [c for c in ("model", "em_dataset", "regime", "defense") if c != sort_by
            and c in table.columns]
    has = table[sort_by].notna() & (table[sort_by].astype(str) != "")
    with_value = table[has].sort_values(
        [sort_by, *ties], ascending=[not descending] + [True] * len(ties), kind="stable"
    )
    without = table[~has].sort_values(ties, kind="stable") if ties else table[~has]
    ordered = pd.concat([with_value, without])
    if "official" in ordered.columns:
        ordered = ordered.sort_values("official", ascending=False, kind="stable")
    if "reference" in ordered.columns:
        ordered = ordered.sort_values("reference", ascending=True, kind="stable")
    return ordered


def rankable(table: pd.DataFrame) -> pd.Series:
    """Rows that are ranked: official, measured here, not a reference row (nor a control)."""
    mask = table["official"].astype(bool) if "official" in table.columns else pd.Series(
        False, index=table.index)
    if "source" in table.columns:
        mask &= table["source"] == "measured"
    if "reference" in table.columns:
        mask &= ~table["reference"].astype(bool)
    if "regime" in table.columns:
        mask &= ~table["regime"].isin(REFERENCE_REGIMES)
    return mask


def add_rank(table: pd.DataFrame, sort_by: str, descending: bool,
             within: Sequence[str] = ()) -> pd.DataFrame:
    """`rank`: 1 = the best value of `sort_by` among the rankable rows (`within` the groups
    given), ties sharing a rank; other rows and rows without a value are not ranked (NaN)."""
    table = table.copy()
    table["rank"] = math.nan
    if table.empty or sort_by not in table.columns:
        return table
    values = pd.to_numeric(table[sort_by], errors="coerce")
    mask = rankable(table) & values.notna()
    if not mask.any():
        return table
    ranked = values[mask]
    if within:
        r = ranked.groupby([table.loc[mask, c] for c in within]).rank(
            ascending=not descending, method="min")
    else:
        r = ranked.rank(ascending=not descending, method="min")
    table.loc[r.index, "rank"] = r
    return table


def apply_view(table: pd.DataFrame, view: View) -> pd.DataFrame:
    """The rows of one condition for `view`: pivoted (defense view), filtered, searched,
    sorted and ranked (numbers, not yet formatted)."""
    if table.empty:
        return table.assign(rank=pd.Series(dtype=float))
    if view.group_by == "defense":
        model, em = view.model, view.em_dataset
        if not model or not em:
            dm, de = default_selection(table)
            model, em = model or dm, em or de
        rows = defense_table(table, model, em)
    else:
        rows = table
        mask = pd.Series(True, index=rows.index)
        if view.model:
            mask &= rows["model"] == view.model
        if view.em_dataset:
            mask &= rows["em_dataset"] == view.em_dataset
        rows = rows[mask]
    if rows.empty:
        return rows.assign(rank=pd.Series(dtype=float))
    mask = pd.Series(True, index=rows.index)
    for attr, column in FILTERS.items():
        wanted = [str(v) for v in getattr(view, attr) or ()]
        if wanted and column in rows.columns:
            mask &= rows[column].astype(str).isin(wanted)
    if view.official_only and "official" in rows.columns:
        mask &= rows["official"].astype(bool) | rows.get("reference", False)
    if view.search.strip():
        mask &= search_mask(rows, view.search)
    rows = sort_rows(rows[mask], view.sort_key, view.descending)
    within = () if view.group_by == "defense" else ("model", "em_dataset", "regime", "preset",
                                                    "judge")
    return add_rank(rows, view.sort_key, view.descending, within)


def first_rows(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows shown: all of them, or the first `limit` in the current order."""
    return rows if limit is None else rows.head(limit)
