"""The Plots tab: matplotlib figures of the leaderboard rows (one condition, pooled seeds).

    misalignment_vs_capability(rows, model, em_dataset)   scatter, both axes with 95% CIs
    defense_bars(rows, "em_reduction", model, em_dataset)  one bar per defense and regime
    figure_html(fig, "alt text")                           the figure as an inline PNG <img>

Figures are `matplotlib.figure.Figure` objects made without pyplot: no global figure registry
to leak from a long-running server, and safe to build from several request threads.
A row without a value is left out of a figure and named in its footnote, never drawn as 0.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from emarena.leaderboard.display import BY_KEY, REGIME_ORDER

REGIME_COLORS = {
    "reversal": "#1f77b4",
    "prevention": "#2ca02c",
    "defense": "#9467bd",
    "em": "#d62728",
    "base": "#7f7f7f",
}
CAPABILITY_METRICS = ("truthfulqa_accuracy", "mmlu_accuracy")
BAR_METRICS = (
    "em_reduction",
    "misalignment_rate",
    "capability_change_truthfulqa",
    "capability_change_mmlu",
    "identity_consistency",
    "self_recognition_accuracy",
)


def _label(metric: str) -> str:
    return BY_KEY[metric].header if metric in BY_KEY else metric


def _err(row: pd.Series, metric: str) -> tuple[float, float] | None:
    v, lo, hi = row.get(metric), row.get(f"{metric}.ci_low"), row.get(f"{metric}.ci_high")
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (v, lo, hi)):
        return None
    return max(0.0, float(v) - float(lo)), max(0.0, float(hi) - float(v))


def _has(row: pd.Series, metric: str) -> bool:
    v = row.get(metric)
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _subset(rows: pd.DataFrame, model: str | None, em_dataset: str | None) -> pd.DataFrame:
    if rows.empty:
        return rows
    mask = pd.Series(True, index=rows.index)
    if model:
        mask &= rows["model"] == model
    if em_dataset:
        mask &= rows["em_dataset"] == em_dataset
    return rows[mask]


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _footnote(fig: Figure, skipped: Sequence[str]) -> None:
    if skipped:
        more = f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
        shown = ", ".join(skipped[:6]) + more
        fig.text(0.01, 0.005, f"No value (not drawn): {shown}", fontsize=7, color="#555")


def figure_html(fig: Figure, alt: str) -> str:
    """The figure as an `<img>` with the PNG inline. The app shows plots this way (in gr.HTML)
    rather than with gr.Plot, which would add gradio's plot and image modules to every first
    page load although the Plots tab is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" '
            'style="max-width: 100%; height: auto;">')


def misalignment_vs_capability(
    rows: pd.DataFrame,
    model: str | None,
    em_dataset: str | None,
    capability: str = "truthfulqa_accuracy",
) -> Figure:
    """Misalignment rate (x, lower is better) against a capability accuracy (y), one point per
    defense and regime of one model and EM dataset, with 95% intervals on both axes."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    sub = _subset(rows, model, em_dataset)
    title = f"{model or 'all models'} — {em_dataset or 'all EM datasets'}"
    if sub.empty:
        return _empty(fig, f"No rows for {title} with the current filters.")
    ax = fig.add_subplot()
    skipped: list[str] = []
    seen_regimes: set[str] = set()
    for _, r in sub.iterrows():
        name = f"{r['defense']} ({r['regime']})"
        if not (_has(r, "misalignment_rate") and _has(r, capability)):
            skipped.append(name)
            continue
        regime = str(r["regime"])
        color = REGIME_COLORS.get(regime, "#17becf")
        xe, ye = _err(r, "misalignment_rate"), _err(r, capability)
        ax.errorbar(
            r["misalignment_rate"],
            r[capability],
            xerr=[[xe[0]], [xe[1]]] if xe else None,
            yerr=[[ye[0]], [ye[1]]] if ye else None,
            fmt="s" if regime in ("em", "base") else "o",
            color=color,
            ecolor=color,
            alpha=0.85,
            capsize=3,
            label=regime if regime not in seen_regimes else None,
        )
        seen_regimes.add(regime)
        ax.annotate(
            str(r["defense"]), (r["misalignment_rate"], r[capability]),
            textcoords="offset points", xytext=(4, 4), fontsize=7,
        )
    ax.set_xlabel(f"{_label('misalignment_rate')} (lower is better)")
    ax.set_ylabel(f"{_label(capability)} (higher is better)")
    ax.set_title(f"Misalignment vs capability: {title}")
    ax.grid(alpha=0.3)
    if seen_regimes:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(
            range(len(labels)),
            key=lambda i: REGIME_ORDER.index(labels[i]) if labels[i] in REGIME_ORDER else 99,
        )
        ax.legend([handles[i] for i in order], [labels[i] for i in order], title="regime")
    _footnote(fig, skipped)
    return fig


def defense_bars(
    rows: pd.DataFrame,
    metric: str = "em_reduction",
    model: str | None = None,
    em_dataset: str | None = None,
) -> Figure:
    """One bar per defense (grouped by regime) for one metric of one model and EM dataset, with
    95% interval error bars."""
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    sub = _subset(rows, model, em_dataset)
    title = f"{model or 'all models'} — {em_dataset or 'all EM datasets'}"
    if sub.empty or metric not in sub.columns:
        return _empty(fig, f"No rows for {title} with the current filters.")
    has_value = sub[metric].notna()
    skipped: list[str] = [f"{r.defense} ({r.regime})" for r in sub[~has_value].itertuples()]
    drawn = sub[has_value]
    if drawn.empty:
        return _empty(fig, f"No {_label(metric)} values for {title}.")
    # Only defenses and regimes with at least one value get a slot on the axis.
    present = set(drawn["regime"])
    regimes = [g for g in REGIME_ORDER if g in present] + sorted(present - set(REGIME_ORDER))
    defenses = sorted(set(drawn["defense"]), key=lambda d: (d.startswith("("), d))
    ax = fig.add_subplot()
    width = 0.8 / max(len(regimes), 1)
    several: list[str] = []
    for i, regime in enumerate(regimes):
        xs, ys, lo, hi, xs_noci, ys_noci = [], [], [], [], [], []
        for j, d in enumerate(defenses):
            match = drawn[(drawn["defense"] == d) & (drawn["regime"] == regime)]
            if match.empty:
                continue
            if len(match) > 1:
                several.append(f"{d} ({regime})")
            r = match.iloc[0]
            x = j + (i - (len(regimes) - 1) / 2) * width
            err = _err(r, metric)
            if err is None:
                xs_noci.append(x)
                ys_noci.append(float(r[metric]))
            else:
                xs.append(x)
                ys.append(float(r[metric]))
                lo.append(err[0])
                hi.append(err[1])
        color = REGIME_COLORS.get(regime, "#17becf")
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=color, label=regime)
        if xs_noci:
            ax.bar(xs_noci, ys_noci, width, color=color, hatch="//",
                   label=None if xs else regime)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(defenses)), defenses, rotation=30, ha="right")
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{_label(metric)} by defense: {title}")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="regime")
    _footnote(fig, skipped)
    if several:
        fig.text(0.01, 0.03, "Several rows (judges or presets) for "
                 f"{', '.join(several[:4])}: the first is drawn; filter by judge on the "
                 "Leaderboard tab.", fontsize=7, color="#a00")
    return fig
