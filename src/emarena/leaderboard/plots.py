"""The Plots tab: one point per defense of one model and EM dataset (the defense view's rows),
with 95% interval bars on both axes.

    prevention_vs_reversal(rows, title)                       EM reduction, prevention (x)
                                                              against reversal (y)
    misalignment_vs_capability(rows, title, regime="reversal", capability="truthfulqa_accuracy")
    figure_html(fig, "alt text")                              the figure as an inline PNG <img>

Official rows only unless `include_unofficial` (unofficial points are hollow). Labels are
placed where they overlap no other label and no point (`place_labels`); a row without a value
is left out and named in the footnote, never drawn as 0. Figures are made without pyplot (no
global registry to leak from a long-running server; safe from several request threads).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emarena.eval.metrics.definitions import info

OFFICIAL_COLOR = "#1f4e9c"
UNOFFICIAL_COLOR = "#8a8a8a"
REFERENCE_COLOR = "#c0392b"
PUBLISHED_COLOR = "#7c3aed"


def _label(metric: str) -> str:
    mi = info(metric)
    return mi.label if mi else metric


def _num(x) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _err(row: dict, key: str) -> tuple[float, float] | None:
    v, lo, hi = _num(row.get(key)), _num(row.get(f"{key}.ci_low")), _num(row.get(f"{key}.ci_high"))
    if v is None or lo is None or hi is None:
        return None
    return max(0.0, v - lo), max(0.0, hi - v)


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _footnote(fig: Figure, skipped: Sequence[str]) -> None:
    if skipped:
        more = f" and {len(skipped) - 6} more" if len(skipped) > 6 else ""
        fig.text(0.01, 0.005, f"No value (not drawn): {', '.join(skipped[:6])}{more}",
                 fontsize=7, color="#555")


def figure_html(fig: Figure, alt: str) -> str:
    """The figure as an `<img>` with the PNG inline (in gr.HTML: no plot and image modules on
    every first page load although the Plots tab is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" '
            'style="max-width: 100%; height: auto;">')


def _selected(rows: pd.DataFrame, include_unofficial: bool) -> list[dict]:
    if rows.empty:
        return []
    recs = rows.to_dict("records")
    if not include_unofficial:  # reference rows too: the official group's controls only
        recs = [r for r in recs if r.get("official")]
    return recs


def _style(r: dict) -> dict:
    if r.get("reference"):
        return {"fmt": "s", "color": REFERENCE_COLOR, "mfc": REFERENCE_COLOR}
    color = PUBLISHED_COLOR if r.get("source") == "published" else (
        OFFICIAL_COLOR if r.get("official") else UNOFFICIAL_COLOR)
    return {"fmt": "o", "color": color, "mfc": color if r.get("official") else "white"}


def _overlaps(a, b, pad: float = 2.0) -> bool:
    return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0
                or b.y1 + pad < a.y0)


#: Where a label may go, in points from its point (then the same farther out).
_OFFSETS = [(6, 5), (6, -11), (-6, 5), (-6, -11), (0, 9), (0, -15), (9, -3), (-9, -3)]


def place_labels(fig: Figure, ax, points: list[tuple[float, float, str]]) -> list:
    """Annotate each point with its text where the text overlaps no label placed so far and
    no point; farther out (with a leader line) when the near spots are taken. Returns the
    annotations (tests check they do not collide)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay out first, then keep that layout while labels are placed
    fig.set_layout_engine("none")
    renderer = canvas.get_renderer()
    marks = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        marks.append((px, py))
    placed: list = []
    boxes: list = []
    for x, y, text in points:
        chosen = None
        for scale in (1, 2, 3, 4):
            for dx, dy in _OFFSETS:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                ann = ax.annotate(
                    text, (x, y), textcoords="offset points", xytext=(dx * scale, dy * scale),
                    fontsize=7.5, ha=ha, annotation_clip=False,
                    arrowprops=({"arrowstyle": "-", "color": "#999", "lw": 0.6}
                                if scale > 1 else None))
                bb = ann.get_window_extent(renderer)
                hits_point = any(bb.x0 - 3 <= mx <= bb.x1 + 3 and bb.y0 - 3 <= my <= bb.y1 + 3
                                 for mx, my in marks)
                inside = (fig.bbox.x0 <= bb.x0 and bb.x1 <= fig.bbox.x1
                          and fig.bbox.y0 <= bb.y0 and bb.y1 <= fig.bbox.y1)
                if not hits_point and inside and not any(_overlaps(bb, b) for b in boxes):
                    chosen = (ann, bb)
                    break
                ann.remove()
            if chosen:
                break
        if chosen is None:  # crowded beyond every spot: the farthest, still with its line
            ann = ax.annotate(text, (x, y), textcoords="offset points",
                              xytext=(0, -12 * (5 + len(placed) % 4)), fontsize=7.5,
                              ha="center", arrowprops={"arrowstyle": "-", "color": "#999",
                                                       "lw": 0.6})
            chosen = (ann, ann.get_window_extent(renderer))
        placed.append(chosen[0])
        boxes.append(chosen[1])
    return placed


def _scatter(fig: Figure, recs: list[dict], xkey: str, ykey: str, xlabel: str, ylabel: str,
             title: str, *, diagonal: bool = False, zero_lines: bool = False) -> Figure:
    skipped = [str(r["defense"]) for r in recs
               if _num(r.get(xkey)) is None or _num(r.get(ykey)) is None]
    drawn = [r for r in recs if _num(r.get(xkey)) is not None and _num(r.get(ykey)) is not None]
    if not drawn:
        return _empty(fig, f"No row of {title} has both {xlabel} and {ylabel}.")
    ax = fig.add_subplot()
    for r in drawn:
        st = _style(r)
        xe, ye = _err(r, xkey), _err(r, ykey)
        ax.errorbar(_num(r[xkey]), _num(r[ykey]),
                    xerr=[[xe[0]], [xe[1]]] if xe else None,
                    yerr=[[ye[0]], [ye[1]]] if ye else None,
                    fmt=st["fmt"], color=st["color"], mfc=st["mfc"], ecolor=st["color"],
                    alpha=0.9, capsize=2.5, ms=5, lw=1)
    if zero_lines:
        ax.axhline(0, color="#444", lw=0.6)
        ax.axvline(0, color="#444", lw=0.6)
    if diagonal:
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], ls="--", color="#bbb", lw=0.8,
                label="prevention = reversal")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    legend = [Line2D([], [], marker="o", ls="", color=OFFICIAL_COLOR, label="official")]
    if any(not r.get("official") and not r.get("reference") for r in drawn):
        legend.append(Line2D([], [], marker="o", ls="", color=UNOFFICIAL_COLOR, mfc="white",
                             label="unofficial"))
    if any(r.get("source") == "published" for r in drawn):
        legend.append(Line2D([], [], marker="o", ls="", color=PUBLISHED_COLOR,
                             label="published"))
    if any(r.get("reference") for r in drawn):
        legend.append(Line2D([], [], marker="s", ls="", color=REFERENCE_COLOR,
                             label="reference (EM only, base)"))
    ax.legend(handles=legend, fontsize=7, loc="best")
    _footnote(fig, skipped)
    place_labels(fig, ax, [(_num(r[xkey]), _num(r[ykey]), str(r["defense"]))  # type: ignore[misc]
                           for r in drawn])
    return fig


def prevention_vs_reversal(rows: pd.DataFrame, title: str, *,
                           include_unofficial: bool = False) -> Figure:
    """EM reduction in prevention (x) against reversal (y), one point per defense."""
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    recs = [r for r in _selected(rows, include_unofficial) if not r.get("reference")]
    if not recs:
        return _empty(fig, f"No {'' if include_unofficial else 'official '}defense rows for "
                      f"{title} with the current filters.")
    label = _label("em_reduction")
    return _scatter(fig, recs, "prevention:em_reduction", "reversal:em_reduction",
                    f"{label}, prevention (higher is better)",
                    f"{label}, reversal (higher is better)",
                    f"Prevention vs reversal: {title}", diagonal=True, zero_lines=True)


def misalignment_vs_capability(rows: pd.DataFrame, title: str, *, regime: str = "reversal",
                               capability: str = "truthfulqa_accuracy",
                               include_unofficial: bool = False) -> Figure:
    """Misalignment (x, lower is better) against a capability accuracy (y) in one regime, one
    point per defense, the EM-only control and the base model as reference points."""
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    recs = _selected(rows, include_unofficial)
    if not recs:
        return _empty(fig, f"No {'' if include_unofficial else 'official '}rows for {title} "
                      "with the current filters.")
    return _scatter(fig, recs, f"{regime}:misalignment_rate", f"{regime}:{capability}",
                    f"{_label('misalignment_rate')} ({regime}; lower is better)",
                    f"{_label(capability)} ({regime}; higher is better)",
                    f"Misalignment vs capability, {regime}: {title}")
