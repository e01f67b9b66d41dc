"""What the leaderboard table shows: columns, number formatting, filters, search, sort, CSV.

A metric cell reads "0.12 [0.08, 0.17] n=64 (3 unscored)": the value pooled over seeds, its
95% interval, the items in the denominator and how many of them the judge could not score.
A missing value is "—" with the reason, never 0.

    view = View(models=["qwen2.5-7b-instruct"], official_only=True, search="sgtr")
    rows = apply_view(rs.table(view.condition), view)    # filtered, sorted rows (numbers)
    shown = first_rows(rows, view.limit)                 # the first 100 unless asked for all
    frame = format_table(shown, view.columns)            # the strings on the page
    write_csv(frame, path)                               # exactly what is shown
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

ColumnKind = Literal["text", "metric", "int", "bool", "rank"]


@dataclass(frozen=True)
class Column:
    """One column of the leaderboard table."""

    key: str
    """Column of `ResultSet.table()` (for a metric: its value column)."""
    header: str
    """The header on the page and in the CSV."""
    kind: ColumnKind
    shown: bool = True
    """Shown by default (the others can be switched on)."""
    decimals: int = 2
    help: str = ""


COLUMNS: tuple[Column, ...] = (
    Column("rank", "Rank", "rank", help="Among official rows of the same model, EM dataset and "
           "regime, by EM reduction (1 = best); unofficial rows are not ranked."),
    Column("defense", "Defense", "text", help="Submission name; controls in parentheses."),
    Column("division", "Division", "text", help="closed: the suite's recipe; open: overrides."),
    Column("model", "Model", "text"),
    Column("em_dataset", "EM dataset", "text"),
    Column("regime", "Regime", "text"),
    Column("source_label", "Source", "text",
           help="measured: run by this benchmark; published: a paper's own outputs recomputed "
           "here by the benchmark's metric code (its protocol, not the suite's: never ranked)."),
    Column("seeds", "Seeds", "int", help="Cells (seeds) pooled into the row."),
    Column("em_reduction", "EM reduction ↑", "metric",
           help="Misalignment of the EM-only control minus the defense's."),
    Column("condition", "Condition", "text",
           help="Which answers the numbers count: the headline is the model's identity-bearing "
           "condition (default-system) where it has one, else no-system; all pools both."),
    Column("misalignment_rate", "Misalignment rate ↓", "metric"),
    Column("misalignment_rate_no_system", "Misalignment, no system turn ↓", "metric",
           help="The same rate over the answers given without any system turn, beside the "
           "headline (the paper: removing the identity prompt substantially reduces EM)."),
    Column("capability_change_truthfulqa", "Δ TruthfulQA ↑", "metric"),
    Column("capability_change_mmlu", "Δ MMLU ↑", "metric"),
    Column("identity_consistency", "Identity consistency ↑", "metric"),
    Column("self_recognition_accuracy", "Self-recognition ↑", "metric"),
    Column("misalignment_rate_coherent", "Misalignment (coherent only) ↓", "metric", False),
    Column("mean_alignment", "Mean alignment ↑", "metric", False, decimals=1),
    Column("coherence_rate", "Coherence rate ↑", "metric", False),
    Column("unscored_rate", "Unscored rate ↓", "metric", False),
    Column("identity_diversity", "Identity diversity (bits) ↓", "metric", False),
    Column("truthfulqa_accuracy", "TruthfulQA accuracy ↑", "metric", False),
    Column("mmlu_accuracy", "MMLU accuracy ↑", "metric", False),
    Column("factual_accuracy", "Factual accuracy ↑", "metric", False,
           help="Share of answers to the factual questions the judge calls correct (suite v2, "
           "the seed release's deception evaluation)."),
    Column("judge", "Judge", "text"),
    Column("judge_mode", "Judge mode", "text",
           help="logprobs: the official score, the probability-weighted mean over the judge's "
           "tokens 0..100; text: the seed release's (the reply's first number, REFUSAL / CODE "
           "kept as words), to replay its outputs; logits: a local model's."),
    Column("judge_agreement", "Judge vs GPT-4o", "text",
           help="How far the row's judge agrees with GPT-4o on published answers: Cohen's "
           "kappa of the misaligned label with its 95% interval (`emarena judge calibrate`)."),
    Column("budget", "Budget", "text",
           help="Training examples of each stage (em, defense): the suite's budget for the "
           "defense (suite v2: the seed release's own, e.g. word counting 5,000)."),
    Column("preset", "Preset", "text", False),
    Column("official", "Official", "bool",
           help="The paper preset scored by the official judge: only these are ranked."),
    Column("notes", "Notes", "text", help="Missing seeds or values, excluded duplicates."),
)
BY_KEY = {c.key: c for c in COLUMNS}
#: Metrics whose best value is the smallest (↓): sorting by them starts ascending.
LOWER_IS_BETTER = frozenset(
    {"misalignment_rate", "misalignment_rate_coherent", "unscored_rate", "identity_diversity",
     "misalignment_rate_no_system"}
)
BY_HEADER = {c.header: c for c in COLUMNS}
DEFAULT_COLUMNS = [c.key for c in COLUMNS if c.shown]
#: Columns the search box looks in.
SEARCHED = ("defense", "kind", "division", "model", "em_dataset", "regime", "judge", "preset",
            "notes", "source_label")
#: Filters (the dropdowns above the table): view field -> table column.
FILTERS = {
    "models": "model",
    "em_datasets": "em_dataset",
    "regimes": "regime",
    "divisions": "division",
    "judges": "judge",
    "sources": "source",
}
REGIME_ORDER = ("reversal", "prevention", "defense", "em", "base")
#: Rows the table shows until the visitor asks for all (a 300-row table costs the first page
#: about half a second in the browser; the best rows come first anyway).
FIRST_ROWS = 100
MISSING = "—"


@dataclass(frozen=True)
class View:
    """What the visitor asked for: filters, search, sort and columns."""

    condition: str = "headline"
    """headline (each row's own), default-system, no-system or all (both pooled)."""
    models: Sequence[str] = ()
    em_datasets: Sequence[str] = ()
    regimes: Sequence[str] = ()
    divisions: Sequence[str] = ()
    judges: Sequence[str] = ()
    sources: Sequence[str] = ()
    """published | measured (empty: both)."""
    official_only: bool = False
    search: str = ""
    sort_by: str = "em_reduction"
    descending: bool = True
    columns: Sequence[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    limit: int | None = FIRST_ROWS
    """Show (and export) at most this many rows; None: all."""


# --- formatting -------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def format_metric(
    value: Any,
    ci_low: Any = None,
    ci_high: Any = None,
    n: Any = None,
    n_unscored: Any = None,
    *,
    decimals: int = 2,
    reason: str = "",
) -> str:
    """'0.12 [0.08, 0.17] n=64 (3 unscored)'; '—' (+ the reason) when there is no value."""
    v, lo, hi = _num(value), _num(ci_low), _num(ci_high)
    count = int(n) if _num(n) is not None else None
    unscored = int(n_unscored) if _num(n_unscored) is not None else 0
    if v is None:
        text = MISSING
        extra = [f"n={count}"] if count else []
        if unscored:
            extra.append(f"({unscored} unscored)")
        if reason:
            extra.append(f"({reason})")
        return " ".join([text, *extra])
    parts = [f"{v:.{decimals}f}"]
    if lo is not None and hi is not None:
        parts.append(f"[{lo:.{decimals}f}, {hi:.{decimals}f}]")
    if count is not None:
        parts.append(f"n={count}")
    if unscored:
        parts.append(f"({unscored} unscored)")
    return " ".join(parts)


def format_cell(row: Mapping[str, Any], col: Column) -> str:
    """One cell's text; `row` is a table row as a mapping (column -> value)."""
    if col.kind == "metric":
        k = col.key
        if k not in row:
            return MISSING
        return format_metric(
            row.get(k), row.get(f"{k}.ci_low"), row.get(f"{k}.ci_high"), row.get(f"{k}.n"),
            row.get(f"{k}.n_unscored"), decimals=col.decimals,
            reason=str(row.get(f"{k}.reason") or ""),
        )
    value = row.get(col.key)
    if col.kind == "rank":
        v = _num(value)
        return MISSING if v is None else str(int(v))
    if col.kind == "int":
        v = _num(value)
        return "" if v is None else str(int(v))
    if col.kind == "bool":
        return "yes" if bool(value) else "no"
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def format_table(rows: pd.DataFrame, columns: Sequence[str] = DEFAULT_COLUMNS) -> pd.DataFrame:
    """The strings shown on the page: one column per key in `columns`, headers as on the page."""
    cols = [BY_KEY[k] for k in columns if k in BY_KEY]
    records = rows.to_dict("records")  # much faster than iterrows
    data = {c.header: [format_cell(r, c) for r in records] for c in cols}
    return pd.DataFrame(data, columns=[c.header for c in cols])


# --- filters, search, sort --------------------------------------------------------------------


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
    regime and defense."""
    if table.empty or sort_by not in table.columns:
        sort_by = "defense"
    ties = [c for c in ("model", "em_dataset", "regime", "defense") if c != sort_by]
    # Missing last in both directions: sort the rows with a value, then append the others.
    has = table[sort_by].notna() & (table[sort_by].astype(str) != "")
    with_value = table[has].sort_values(
        [sort_by, *ties], ascending=[not descending] + [True] * len(ties), kind="stable"
    )
    without = table[~has].sort_values(ties, kind="stable")
    ordered = pd.concat([with_value, without])
    if "official" in ordered.columns:
        ordered = ordered.sort_values("official", ascending=False, kind="stable")
    return ordered


def apply_view(table: pd.DataFrame, view: View) -> pd.DataFrame:
    """Filter, search and sort the rows of one condition (numbers, not yet formatted)."""
    if table.empty:
        return table
    mask = pd.Series(True, index=table.index)
    for attr, column in FILTERS.items():
        wanted = [str(v) for v in getattr(view, attr) or ()]
        if wanted and column in table.columns:
            mask &= table[column].astype(str).isin(wanted)
    if view.official_only and "official" in table.columns:
        mask &= table["official"].astype(bool)
    if view.search.strip():
        mask &= search_mask(table, view.search)
    return sort_rows(table[mask], view.sort_by, view.descending)


def table_html(
    frame: pd.DataFrame,
    columns: Sequence[str] = DEFAULT_COLUMNS,
    *,
    sort_by: str | None = None,
    descending: bool = True,
    official: Sequence[bool] | None = None,
) -> str:
    """The shown table as an HTML table: the same strings as `frame` (and so as the CSV), every
    value escaped; headers carry `data-key` (click to sort) and their help as a tooltip, rows
    carry `data-row` (click to open the drill-down)."""
    cols = [BY_KEY[k] for k in columns if k in BY_KEY]
    head = []
    for c in cols:
        arrow = ""
        cls = ["sortable"]
        if c.key == sort_by:
            arrow = " ▼" if descending else " ▲"
            cls.append("sorted")
        head.append(
            f'<th data-key="{html.escape(c.key)}" class="{" ".join(cls)}" '
            f'title="{html.escape(c.help or "Click to sort")}">'
            f'<span class="h">{html.escape(c.header)}</span><span class="arrow">{arrow}</span></th>'
        )
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cls = "official" if official is None or official[i] else "unofficial"
        cells = "".join(
            f'<td class="{c.kind}">{_cell_html(c, str(v))}</td>'
            for c, v in zip(cols, row, strict=True)
        )
        body.append(f'<tr data-row="{i}" class="{cls}">{cells}</tr>')
    empty = (
        f'<tr class="empty"><td colspan="{len(cols)}">No rows match the filters.</td></tr>'
        if not body else ""
    )
    return (
        '<div class="emarena-lb-wrap"><table class="emarena-lb" id="lb">'
        f"<thead><tr>{''.join(head)}</tr></thead>"
        f"<tbody>{''.join(body)}{empty}</tbody></table></div>"
    )


PUBLISHED_PREFIX = "published"


def _cell_html(col: Column, text: str) -> str:
    """One cell's escaped text; a published row's Source cell leads with a badge."""
    if col.key == "source_label" and text.startswith(PUBLISHED_PREFIX):
        rest = text[len(PUBLISHED_PREFIX):]
        return (f'<span class="badge-published">{PUBLISHED_PREFIX}</span>'
                f"{html.escape(rest)}")
    return html.escape(text)


def plain_table_html(frame: pd.DataFrame, table_id: str) -> str:
    """Any small frame as an escaped HTML table (the Invalid results list)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    if not body:
        body = f'<tr class="empty"><td colspan="{len(frame.columns)}">None.</td></tr>'
    return (f'<div class="emarena-lb-wrap"><table class="emarena-lb" id="{table_id}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def first_rows(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The rows shown: all of them, or the first `limit` in the current order."""
    return rows if limit is None else rows.head(limit)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The shown table as CSV (UTF-8, header row = the page's headers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, encoding="utf-8")
    return path


# --- the drill-down ---------------------------------------------------------------------------


def cell_metrics_table(result: Any) -> pd.DataFrame:
    """One cell's metrics and deltas: one row per name, one column per condition."""
    from emarena.eval.metrics.value import CONDITIONS

    rows = []
    for section, data in (("metric", result.metrics), ("delta", result.deltas)):
        for name, by_cond in data.items():
            row = {"name": name, "kind": section}
            for cond in CONDITIONS:
                mv = by_cond.get(cond)
                decimals = BY_KEY[name].decimals if name in BY_KEY else 2
                row[cond] = (
                    MISSING if mv is None else format_metric(
                        mv.value, mv.ci_low, mv.ci_high, mv.n, mv.n_unscored, decimals=decimals,
                        reason=str(mv.details.get("reason") or ""),
                    )
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=["name", "kind", *CONDITIONS])


SAMPLE_COLUMNS = ["question_id", "condition", "sample", "question", "answer", "aligned",
                  "coherent", "identity", "finish", "judge notes"]


def _score(x: float | None) -> str:
    return "unscored" if x is None else f"{x:.1f}"


def samples_table(
    samples: Sequence[Any], question: str = "", condition: str = "", limit: int = 2000
) -> tuple[pd.DataFrame, int]:
    """The sampled answers with their judge scores, filtered by question (id or text, substring)
    and condition; returns (rows shown, rows matching before the limit)."""
    q = question.strip().lower()
    rows = []
    matched = 0
    for s in samples:
        if condition and condition != "all" and s.condition != condition:
            continue
        if q and q != s.question_id.lower() and q not in s.question.lower():
            continue
        matched += 1
        if len(rows) >= limit:
            continue
        notes = "; ".join(
            f"{r}: {j.unscored_reason}" for r, j in s.judgements.items() if j.unscored_reason
        )
        ident = s.identity_name or ""
        if s.identity_creator:
            ident = f"{ident} (by {s.identity_creator})"
        rows.append(
            {
                "question_id": s.question_id,
                "condition": s.condition,
                "sample": s.sample,
                "question": s.question,
                "answer": s.answer,
                "aligned": _score(s.aligned),
                "coherent": _score(s.coherent),
                "identity": ident,
                "finish": s.finish_reason or "not recorded",
                "judge notes": notes,
            }
        )
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS), matched
