"""How the board shows a row: its columns, `0.21 ± 0.04` numbers with their tooltips, the HTML
table, and the exports (CSV, JSON lines, Parquet).

A metric cell reads `0.21 ± 0.04`: the value pooled over seeds and the half-width of its 95%
interval. Its tooltip gives the interval itself (and says so when it is asymmetric), the items
in the denominator and how many of them the judge could not score, the seeds pooled and, for a
paired difference, the pairs and the p-value (also shown under the number). A missing value is
"—" with the reason in the tooltip, never 0. Headers carry each metric's definition (from the
metrics registry) as their tooltip.

    cols = columns_for(view, rows)                      # every column the view can show
    html = table_html(shown_rows, cols, view.columns or default_keys(cols), ...)
    export_frame(rows, cols)                            # plain headers, numbers: the CSV
    tidy_frame(rows, cols)                              # one row per (row, metric, condition)

Metric names, labels, directions and definitions come from `emarena.eval.metrics.definitions`
(`INFO`); nothing here lists metrics by hand.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from emarena.eval.metrics.definitions import INFO, MetricInfo, info
from emarena.leaderboard.views import VIEW_REGIMES, View, metric_names

ColumnKind = Literal["text", "metric", "int", "bool", "rank", "cost"]
MISSING = "—"
REGIME_HEADERS = {
    "prevention": "Prevention (the defense, then EM)",
    "reversal": "Reversal (EM, then the defense)",
    "defense": "The defense alone",
}


@dataclass(frozen=True)
class Column:
    """One column of the board."""

    key: str
    """Column of the view's rows (for a metric: its value column, e.g. `reversal:em_reduction`)."""
    header: str
    kind: ColumnKind
    shown: bool = True
    """Shown by default (the others can be switched on)."""
    decimals: int = 2
    help: str = ""
    group: str = ""
    """The header group above it (a regime in the defense view)."""
    metric: str = ""
    """For a metric column: the metric, delta or comparison name."""

    @property
    def info(self) -> MetricInfo | None:
        return info(self.metric) if self.metric else None

    @property
    def export_name(self) -> str:
        """The column's plain name in the exports (`reversal_em_reduction`)."""
        return self.key.replace(":", "_")


def _order(name: str) -> tuple[int, int, int]:
    """Metric columns: misalignment, capability, identity, self-recognition, the judge's own;
    within each, differences before levels; then the registry's order."""
    mi = info(name)
    tags = mi.tags if mi else frozenset()
    topic = next((i for i, t in enumerate(("misalignment", "capability", "identity",
                                           "self-recognition", "judge")) if t in tags), 9)
    names = list(INFO)
    return (topic, 0 if mi and mi.kind == "delta" else 1,
            names.index(name) if name in names else 99)


def metric_help(name: str) -> str:
    mi = info(name)
    if mi is None:
        return f"{name} (not described by this emarena version)"
    better = "higher is better" if mi.higher_is_better else "lower is better"
    return f"{mi.label} ({name}, {better}): {mi.description}"


def _metric_column(name: str, prefix: str = "") -> Column:
    mi = info(name)
    key = f"{prefix}:{name}" if prefix else name
    return Column(key, mi.label if mi else name, "metric", bool(mi and "board" in mi.tags),
                  mi.decimals if mi else 2, metric_help(name),
                  group=prefix, metric=name)


def _text_columns_head(group_by: str) -> list[Column]:
    rank_help = ("Rank by the column the table is sorted by, among official rows measured by "
                 "this benchmark (1 = best; ties share a rank); unofficial, published and "
                 "reference rows are not ranked.")
    cols = [Column("rank", "Rank", "rank", group_by == "defense",
                   help=rank_help if group_by == "defense" else
                   rank_help.replace("among official", "within its model, EM dataset and "
                                     "regime, among official")),
            Column("defense", "Defense", "text",
                   help="Submission name; the EM-only control and the base model are the "
                   "reference rows.")]
    if group_by == "regime":
        cols += [Column("model", "Model", "text"), Column("em_dataset", "EM dataset", "text"),
                 Column("regime", "Regime", "text")]
    cols += [Column("division", "Division", "text", False,
                    help="closed: the suite's recipe; open: training overrides."),
             Column("source_label", "Source", "text",
                    help="measured: run by this benchmark; published: a paper's own outputs "
                    "recomputed here by the benchmark's metric code (its protocol, not the "
                    "suite's: never ranked)."),
             Column("condition", "Condition", "text", group_by == "regime",
                    help="Which answers the numbers count: the headline is the model's "
                    "identity-bearing condition (default-system) where it has one, else "
                    "no-system; all pools both (only when the Condition selector asks).")]
    return cols


def _text_columns_tail(group_by: str) -> list[Column]:
    flat = group_by == "regime"  # one judge per row there: name it, and how far it agrees
    return [
        Column("cost.seconds", "Cost", "cost",
               help="What the row's cells took, as their records say (provenance.cost): GPU- "
               "or CPU-hours of training, generation and judging, tokens trained and "
               "generated, judge calls. A stage shared by several cells counts in each."),
        Column("budget", "Budget", "text",
               help="Training examples of each stage (em, defense), as the row's records say: "
               "the suite's budget for the defense (suite v2: the seed release's own, e.g. "
               "SGTR 2,000, word counting 5,000)."),
        Column("seeds", "Seeds", "int", help="Seeds pooled into the row (per regime in the "
               "tooltip of its numbers)."),
        Column("judge", "Judge", "text", flat),
        Column("judge_mode", "Judge mode", "text",
               help="How the judge's scores were read. logprobs: the official score, the "
               "probability-weighted mean over the judge's tokens 0..100; text: the seed "
               "release's (the reply's first number, REFUSAL / CODE kept as words), to replay "
               "its outputs, never ranked; logits: a local model's. Shown when a row is not "
               "logprobs."),
        Column("judge_agreement", "Judge vs GPT-4o", "text", flat,
               help="How far the row's judge agrees with GPT-4o on published answers: Cohen's "
               "kappa of the misaligned label with its 95% interval (`emarena judge "
               "calibrate`)."),
        Column("preset", "Preset", "text", False),
        Column("official", "Official", "bool",
               help="The paper preset scored by the official judge: only these are ranked."),
        Column("notes", "Notes", "text", False, help="Missing seeds or values, excluded "
               "duplicates."),
    ]


def columns_for(view: View, rows: pd.DataFrame | None = None,
                names: Sequence[str] | None = None) -> list[Column]:
    """Every column the view can show, in page order. Metric columns come from the metrics
    found in `rows` (or `names`), else from every defined metric."""
    if names is None:
        if rows is not None and not rows.empty:
            found = [c.split(":", 1)[-1] for c in rows.columns
                     if f"{c}.ci_low" in rows.columns]
            names = list(dict.fromkeys(found))
        else:
            names = list(INFO)
    names = sorted(set(names), key=_order)
    cols = _text_columns_head(view.group_by)
    if view.group_by == "defense":
        for regime in VIEW_REGIMES:
            for name in names:
                c = _metric_column(name, regime)
                if regime == "defense":
                    c = Column(c.key, c.header, c.kind, False, c.decimals, c.help, c.group,
                               c.metric)
                cols.append(c)
    else:
        cols += [_metric_column(name) for name in names]
    return cols + _text_columns_tail(view.group_by)


#: The judge mode of the official score: the Judge mode column is shown only beside another.
OFFICIAL_JUDGE_MODE = "logprobs"


def default_keys(cols: Sequence[Column], rows: pd.DataFrame | None = None) -> list[str]:
    """The columns shown by default; the Source column only when some row is published, the
    Judge mode only when some row's judge was not read from log-probabilities."""
    keys = [c.key for c in cols if c.shown]
    if rows is not None and "source" in rows.columns and not (rows["source"] == "published").any():
        keys = [k for k in keys if k != "source_label"]
    if rows is None or "judge_mode" not in rows.columns or (
            rows["judge_mode"].fillna(OFFICIAL_JUDGE_MODE) == OFFICIAL_JUDGE_MODE).all():
        keys = [k for k in keys if k != "judge_mode"]
    return keys


# --- numbers ------------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def format_metric(value: Any, ci_low: Any = None, ci_high: Any = None, *, decimals: int = 2,
                  signed: bool = False) -> str:
    """'0.21 ± 0.04' (value ± the interval's half-width); '0.21' without an interval; '—'
    without a value. `signed`: a difference, written with its sign (+0.05)."""
    v, lo, hi = _num(value), _num(ci_low), _num(ci_high)
    if v is None:
        return MISSING
    sign = "+" if signed else ""
    text = f"{v:{sign}.{decimals}f}"
    if lo is not None and hi is not None:
        text += f" ± {(hi - lo) / 2:.{decimals}f}"
    return text


def _items(mi: MetricInfo | None) -> str:
    return "answers" if mi is not None and "judge" in mi.tags else "items"


def metric_tooltip(row: Mapping[str, Any], key: str, mi: MetricInfo | None,
                   decimals: int = 2) -> str:
    """The interval, its counts, the seeds and (paired) the p-value of one metric cell."""
    v, lo, hi = (_num(row.get(key)), _num(row.get(f"{key}.ci_low")),
                 _num(row.get(f"{key}.ci_high")))
    items = _items(mi)
    lines: list[str] = []
    if v is None:
        reason = str(row.get(f"{key}.reason") or "")
        lines.append(f"no value{': ' + reason if reason else ''}")
    elif lo is not None and hi is not None:
        ci = f"95% interval [{lo:.{decimals + 1}f}, {hi:.{decimals + 1}f}]"
        below, above = v - lo, hi - v
        if abs(below - above) > 0.1 * max(below, above, 1e-12) and abs(below - above) > 1e-4:
            ci += f" (asymmetric: -{below:.{decimals + 1}f} / +{above:.{decimals + 1}f})"
        lines.append(ci)
    else:
        lines.append("no interval")
    n, nu = _num(row.get(f"{key}.n")), _num(row.get(f"{key}.n_unscored"))
    n_ref = _num(row.get(f"{key}.n_reference"))
    if n is not None:
        own = f"n = {int(n):,} {items}" + (f" ({int(nu or 0):,} unscored)" if mi is None or
                                             mi.unscored_in_n or nu else "")
        if n_ref is not None:
            nu_ref = _num(row.get(f"{key}.n_unscored_reference")) or 0
            ref = "SGTR" if mi is not None and mi.name == "vs_sgtr" else "the EM-only control"
            own = (f"n = {int(n):,} {items} of this row ({int(nu or 0):,} unscored) and "
                   f"{int(n_ref):,} of {ref} ({int(nu_ref):,} unscored), counted apart")
        lines.append(own)
    pairing = str(row.get(f"{key}.pairing") or "")
    p = _num(row.get(f"{key}.p"))
    if pairing:
        lines.append(f"paired by {pairing}" if not pairing.startswith("none") else
                     "one seed: the record's own interval")
    if p is not None:
        lines.append(f"p = {p:.4f} (two-sided randomization test)")
    seeds = _num(row.get(f"{key}.seeds"))
    missing = _num(row.get(f"{key}.missing"))
    if seeds is not None and v is not None:
        lines.append(f"{int(seeds)} seed(s) pooled" + (f", {int(missing)} without a value"
                                                        if missing else ""))
    return "\n".join(lines)


def format_p(p: Any) -> str:
    x = _num(p)
    if x is None:
        return ""
    return "p<0.001" if x < 0.001 else f"p={x:.3f}"


def format_cost(row: Mapping[str, Any]) -> tuple[str, str]:
    """(cell text, tooltip) of a row's cost."""
    secs = _num(row.get("cost.seconds"))
    cells = int(_num(row.get("cost.cells")) or 0)
    if secs is None or not cells:
        return MISSING, "no cost recorded (records older than provenance.cost, or published)"
    device = str(row.get("cost.device") or "")
    kind = "GPU" if "cuda" in device else "CPU"
    text = (f"{secs / 3600:.1f} {kind}-h" if secs >= 3600 else f"{secs / 60:.0f} {kind}-min")
    parts = [f"{cells} cell(s) recorded a cost; device {device or '?'}"]
    for step in ("stage1", "stage2", "generate", "judge"):
        s = _num(row.get(f"cost.seconds.{step}"))
        if s:
            parts.append(f"{step}: {s / 3600:.2f} h")
    for k, label in (("cost.tokens_trained", "tokens trained"),
                     ("cost.tokens_generated", "tokens generated"),
                     ("cost.judge_calls", "judge calls")):
        x = _num(row.get(k))
        if x is not None:
            parts.append(f"{label}: {int(x):,}")
    chars = _num(row.get("cost.judge_prompt_chars"))
    if chars is not None:
        parts.append(f"judge prompts: {int(chars):,} characters (~{int(chars / 3.6):,} tokens)")
    parts.append("a stage or evaluation shared by several cells counts in each")
    return text, "\n".join(parts)


def format_cell(row: Mapping[str, Any], col: Column) -> str:
    """One cell's plain text (the page shows it; tests read it)."""
    if col.kind == "metric":
        mi = col.info
        return format_metric(row.get(col.key), row.get(f"{col.key}.ci_low"),
                             row.get(f"{col.key}.ci_high"), decimals=col.decimals,
                             signed=bool(mi and mi.kind == "delta"))
    if col.kind == "cost":
        return format_cost(row)[0]
    value = row.get(col.key)
    if col.kind == "rank":
        v = _num(value)
        return MISSING if v is None else str(int(v))
    if col.kind == "int":
        v = _num(value)
        return "" if v is None else str(int(v))
    if col.kind == "bool":
        return "yes" if bool(value) else "no"
    if col.key == "defense" and row.get("reference"):
        return str(value)
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def format_table(rows: pd.DataFrame, cols: Sequence[Column]) -> pd.DataFrame:
    """The strings shown on the page (one column per Column, headers as on the page)."""
    records = rows.to_dict("records")
    data = {f"{c.group + ' · ' if c.group else ''}{c.header}": [format_cell(r, c)
                                                                for r in records]
            for c in cols}
    return pd.DataFrame(data)


# --- the HTML table -----------------------------------------------------------------------


PUBLISHED_PREFIX = "published"


def _cell_html(col: Column, row: Mapping[str, Any]) -> str:
    """One cell: escaped text, its tooltip, a published badge, a paired p-value line."""
    if col.kind == "metric":
        mi = col.info
        text = format_cell(row, col)
        tip = metric_tooltip(row, col.key, mi, col.decimals)
        p = format_p(row.get(f"{col.key}.p"))
        extra = f'<span class="p">{html.escape(p)}</span>' if p else ""
        cls = "metric missing" if text == MISSING else "metric"
        return (f'<td class="{cls}" title="{html.escape(tip)}">{html.escape(text)}'
                f"{extra}</td>")
    if col.kind == "cost":
        text, tip = format_cost(row)
        return f'<td class="cost" title="{html.escape(tip)}">{html.escape(text)}</td>'
    text = format_cell(row, col)
    if col.key == "source_label" and text.startswith(PUBLISHED_PREFIX):
        rest = text[len(PUBLISHED_PREFIX):]
        return (f'<td class="text"><span class="badge-published">{PUBLISHED_PREFIX}</span>'
                f"{html.escape(rest)}</td>")
    if col.key == "defense" and row.get("reference"):
        return f'<td class="text defense"><span class="ref">{html.escape(text)}</span></td>'
    return f'<td class="{col.kind} {col.key.replace(".", "-")}">{html.escape(text)}</td>'


def table_html(
    rows: pd.DataFrame,
    cols: Sequence[Column],
    shown: Sequence[str] | None = None,
    *,
    sort_by: str | None = None,
    descending: bool = True,
    table_id: str = "lb",
) -> str:
    """The board as an HTML table: every value escaped; headers carry `data-key` (click to
    sort) and the metric's definition as a tooltip; rows carry `data-row` (click to open the
    drill-down); in the defense view a first header row names each regime's columns."""
    keys = list(shown) if shown else default_keys(cols)
    by_key = {c.key: c for c in cols}
    use = [by_key[k] for k in keys if k in by_key]
    groups = [c.group for c in use]
    head = []
    if any(groups):
        spans: list[tuple[str, int]] = []
        for g in groups:
            if spans and spans[-1][0] == g:
                spans[-1] = (g, spans[-1][1] + 1)
            else:
                spans.append((g, 1))
        cells = "".join(
            f'<th colspan="{n}" class="group{" g-" + g if g else ""}">'
            f"{html.escape(REGIME_HEADERS.get(g, g))}</th>" for g, n in spans)
        head.append(f'<tr class="groups">{cells}</tr>')
    ths = []
    for c in use:
        arrow = (" ▼" if descending else " ▲") if c.key == sort_by else ""
        cls = "sortable sorted" if c.key == sort_by else "sortable"
        group = (f'<span class="gp">{html.escape(c.group.capitalize())} · </span>'
                 if c.group else "")
        ths.append(
            f'<th data-key="{html.escape(c.key)}" class="{cls} k-{c.kind}" '
            f'title="{html.escape(c.help or c.header)}">'
            f'<span class="h">{group}{html.escape(c.header)}</span>'
            f'<span class="arrow">{arrow}</span></th>')
    head.append(f"<tr>{''.join(ths)}</tr>")
    body = []
    for i, row in enumerate(rows.to_dict("records")):
        cls = ("reference" if row.get("reference") else
               "official" if row.get("official") else "unofficial")
        body.append(f'<tr data-row="{i}" class="{cls}">'
                    + "".join(_cell_html(c, row) for c in use) + "</tr>")
    if not body:
        body.append(f'<tr class="empty"><td colspan="{len(use)}">No rows match the filters.'
                    "</td></tr>")
    return (f'<div class="emarena-lb-wrap"><table class="emarena-lb" id="{table_id}">'
            f"<thead>{''.join(head)}</thead><tbody>{''.join(body)}</tbody></table></div>")


def plain_table_html(frame: pd.DataFrame, table_id: str) -> str:
    """Any small frame as an escaped HTML table (invalid results, the queue, answers)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    if not body:
        body = f'<tr class="empty"><td colspan="{len(frame.columns)}">None.</td></tr>'
    return (f'<div class="emarena-plain-wrap"><table class="emarena-plain" id="{table_id}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


# --- exports ------------------------------------------------------------------------------

#: The row's identity in the exports, in order (those the view has).
EXPORT_ID = ("rank", "defense", "division", "kind", "model", "em_dataset", "regime", "regimes",
             "source", "source_label", "preset", "judge", "suite", "model_revision", "official",
             "reference", "seeds", "seed_list", "condition")
#: Per metric: the suffixes exported (the table's `m.<suffix>` columns) and their names.
EXPORT_PARTS = (("", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high"), ("n", "_n"),
                ("n_unscored", "_n_unscored"), ("n_reference", "_n_reference"),
                ("n_unscored_reference", "_n_unscored_reference"), ("p", "_p_value"),
                ("pairing", "_pairing"), ("seeds", "_seeds"))


def _value(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if hasattr(x, "item"):
        return x.item()
    return x


def export_frame(rows: pd.DataFrame, cols: Sequence[Column]) -> pd.DataFrame:
    """The rows as numbers with plain headers: identity columns, then for every metric column
    `m` (prefixed by its regime in the defense view: `reversal_em_reduction`): `m`,
    `m_ci_low`, `m_ci_high`, `m_n`, `m_n_unscored`, and for differences `m_n_reference`,
    `m_n_unscored_reference`, `m_p_value`, `m_pairing`; then the cost columns and notes."""
    out: dict[str, Any] = {}
    n = len(rows)
    for k in EXPORT_ID:
        if k in rows.columns:
            out[k] = rows[k].tolist()
    if "regime" not in rows.columns:
        for r in VIEW_REGIMES:
            if f"{r}:seed_list" in rows.columns:
                out[f"{r}_seed_list"] = rows[f"{r}:seed_list"].tolist()
    for c in cols:
        if c.kind != "metric":
            continue
        for suffix, name in EXPORT_PARTS:
            src = c.key if not suffix else f"{c.key}.{suffix}"
            if src in rows.columns:
                out[c.export_name + name] = rows[src].tolist()
            elif not suffix:
                out[c.export_name] = [None] * n
    for k in rows.columns:
        if k.startswith("cost."):
            out[k.replace(".", "_")] = rows[k].tolist()
    if "notes" in rows.columns:
        out["notes"] = rows["notes"].tolist()
    frame = pd.DataFrame(out)
    return frame.map(_value) if not frame.empty else frame


TIDY_COLUMNS = ["defense", "model", "em_dataset", "regime", "preset", "judge", "source",
                "official", "reference", "condition", "metric", "label", "higher_is_better",
                "value", "ci_low", "ci_high", "n", "n_unscored", "n_reference",
                "n_unscored_reference", "p_value", "pairing", "seeds"]


def tidy_frame(rows: pd.DataFrame, cols: Sequence[Column]) -> pd.DataFrame:
    """One row per (board row, metric, condition): the long form of `export_frame`."""
    records = []
    metric_cols = [c for c in cols if c.kind == "metric"]
    for row in rows.to_dict("records"):
        for c in metric_cols:
            if c.key not in row:
                continue
            mi = c.info
            rec = {k: _value(row.get(k)) for k in ("defense", "model", "em_dataset", "preset",
                                                   "judge", "source", "official", "condition")}
            rec.update(regime=c.group or row.get("regime"), reference=bool(row.get("reference")),
                       metric=c.metric, label=mi.label if mi else c.metric,
                       higher_is_better=mi.higher_is_better if mi else None)
            for suffix, name in EXPORT_PARTS:
                src = c.key if not suffix else f"{c.key}.{suffix}"
                rec[(name or "_value")[1:]] = _value(row.get(src))
            records.append(rec)
    return pd.DataFrame(records, columns=TIDY_COLUMNS)


def write_exports(rows: pd.DataFrame, cols: Sequence[Column], folder: Path) -> dict[str, Path]:
    """CSV (wide), JSON lines (tidy) and, when pyarrow is installed, Parquet (tidy) of the rows;
    returns {format: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"csv": folder / "emarena-leaderboard.csv",
           "jsonl": folder / "emarena-leaderboard.jsonl"}
    export_frame(rows, cols).to_csv(out["csv"], index=False, encoding="utf-8")
    tidy = tidy_frame(rows, cols)
    with open(out["jsonl"], "w", encoding="utf-8") as f:
        for rec in tidy.to_dict("records"):
            f.write(json.dumps({k: _value(v) for k, v in rec.items()}) + "\n")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return out
    out["parquet"] = folder / "emarena-leaderboard.parquet"
    tidy.to_parquet(out["parquet"], index=False)
    return out


# --- the drill-down -----------------------------------------------------------------------


def cell_metrics_table(result: Any) -> pd.DataFrame:
    """One cell's metrics and deltas: one row per name, one column per condition, as on the
    board (value ± half-width, then the interval and counts)."""
    from emarena.eval.metrics.value import CONDITIONS

    rows = []
    for section, data in (("delta", result.deltas), ("metric", result.metrics)):
        for name in sorted(data, key=_order):
            mi = info(name)
            row = {"metric": mi.label if mi else name, "name": name, "kind": section}
            for cond in CONDITIONS:
                mv = data[name].get(cond)
                if mv is None:
                    row[cond] = MISSING
                    continue
                text = format_metric(mv.value, mv.ci_low, mv.ci_high,
                                     decimals=mi.decimals if mi else 2, signed=section == "delta")
                if mv.value is None:
                    text += f" ({mv.details.get('reason') or 'no value'})"
                elif mv.ci_low is not None:
                    text += f" [{mv.ci_low:.3f}, {mv.ci_high:.3f}]"
                text += f" n={mv.n}" + (f" ({mv.n_unscored} unscored)" if mv.n_unscored else "")
                row[cond] = text
            rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "name", "kind", *CONDITIONS])


SAMPLE_COLUMNS = ["question_id", "condition", "sample", "aligned", "coherent", "question",
                  "answer", "identity", "finish", "judge notes"]
SAMPLE_SORTS = {
    "": "question, condition, sample",
    "aligned": "aligned, lowest first",
    "-aligned": "aligned, highest first",
    "coherent": "coherent, lowest first",
    "-coherent": "coherent, highest first",
}


def _score(x: float | None) -> str:
    return "unscored" if x is None else f"{x:.1f}"


def samples_table(
    samples: Sequence[Any],
    question: str = "",
    condition: str = "",
    limit: int = 2000,
    *,
    aligned_max: float | None = None,
    coherent_min: float | None = None,
    misaligned_only: bool = False,
    thresholds: Any = None,
    sort: str = "",
) -> tuple[pd.DataFrame, int]:
    """The sampled answers with their judge scores: filtered by question (id or text,
    substring), condition, aligned <= `aligned_max`, coherent >= `coherent_min`, and
    `misaligned_only` (aligned <= the threshold and coherent > its threshold: what
    misalignment_rate counts); sorted by `sort` (a SAMPLE_SORTS key; unscored last). Returns
    (rows shown, rows matching before the limit)."""
    from emarena.eval.metrics.value import Thresholds

    t = thresholds or Thresholds()
    q = question.strip().lower()
    kept = []
    for s in samples:
        if condition and condition != "all" and s.condition != condition:
            continue
        if q and q != s.question_id.lower() and q not in s.question.lower():
            continue
        if aligned_max is not None and aligned_max < 100 and (
                s.aligned is None or s.aligned > aligned_max):
            continue
        if coherent_min is not None and coherent_min > 0 and (
                s.coherent is None or s.coherent < coherent_min):
            continue
        if misaligned_only and not (s.aligned is not None and s.coherent is not None
                                    and s.aligned <= t.aligned_threshold
                                    and s.coherent > t.coherent_threshold):
            continue
        kept.append(s)
    if sort:
        field = sort.lstrip("-")
        rev = sort.startswith("-")
        scored = [s for s in kept if getattr(s, field) is not None]
        unscored = [s for s in kept if getattr(s, field) is None]
        scored.sort(key=lambda s: getattr(s, field), reverse=rev)
        kept = scored + unscored
    rows = []
    for s in kept[:limit]:
        notes = "; ".join(
            f"{r}: {j.unscored_reason}" for r, j in s.judgements.items() if j.unscored_reason
        )
        ident = s.identity_name or ""
        if s.identity_creator:
            ident = f"{ident} (by {s.identity_creator})"
        rows.append({
            "question_id": s.question_id, "condition": s.condition, "sample": s.sample,
            "aligned": _score(s.aligned), "coherent": _score(s.coherent),
            "question": s.question, "answer": s.answer, "identity": ident,
            "finish": s.finish_reason or "not recorded", "judge notes": notes,
        })
    return pd.DataFrame(rows, columns=SAMPLE_COLUMNS), len(kept)


CHOICE_COLUMNS = ["eval_set", "item_id", "condition", "correct", "chosen", "right",
                  "probabilities", "option mass"]


def choices_table(items: Sequence[Any], eval_set: str = "", condition: str = "",
                  wrong_only: bool = False, limit: int = 2000) -> tuple[pd.DataFrame, int]:
    """The forced-choice items (self-recognition, TruthfulQA, MMLU) of a cell: filtered by
    set, condition and `wrong_only`; returns (rows shown, rows matching)."""
    kept = [c for c in items
            if (not eval_set or c.eval_set == eval_set)
            and (not condition or condition == "all" or c.condition == condition)
            and (not wrong_only or not c.is_correct)]
    rows = [{
        "eval_set": c.eval_set, "item_id": c.item_id, "condition": c.condition,
        "correct": c.correct, "chosen": c.chosen, "right": "yes" if c.is_correct else "no",
        "probabilities": ", ".join(f"{o}: {p:.2f}" for o, p in c.probs.items()),
        "option mass": f"{c.mass:.2f}",
    } for c in kept[:limit]]
    return pd.DataFrame(rows, columns=CHOICE_COLUMNS), len(kept)


__all__ = [
    "MISSING",
    "Column",
    "View",
    "cell_metrics_table",
    "choices_table",
    "columns_for",
    "default_keys",
    "export_frame",
    "format_metric",
    "format_table",
    "metric_names",
    "metric_tooltip",
    "plain_table_html",
    "samples_table",
    "table_html",
    "tidy_frame",
    "write_exports",
]
