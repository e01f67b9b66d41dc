"""A run's report: report.md (one table per regime), two plots, and a terminal table.

Reads every `runs/<run>/cells/*/metrics/result.json`. A result that cannot be read is listed
under "Unreadable results" with its error and left out of every table and plot: it is never
shown as a zero. Cells without a result yet are listed as pending. Unscored counts appear next
to every judge-based number.

    write_report(run_dir)     report.md + misalignment.png + misalignment_vs_capability.png
    format_table(results)     the compact text table printed to the terminal
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emarena.errors import EmArenaError
from emarena.eval.metrics.value import MetricValue
from emarena.eval.result import Result, load_result
from emarena.protocol.cell import REGIMES

REPORT_NAME = "report.md"
HEADLINE = "headline"
"""Not a condition: each result's own headline condition (`Result.headline_condition`; suite v2:
default-system for a model with an identity prompt, else no-system; older records: all)."""
REPORT_CONDITIONS = (HEADLINE, "default-system", "no-system", "all")
PLOT_MISALIGNMENT = "misalignment.png"
PLOT_TRADEOFF = "misalignment_vs_capability.png"


def capability_metrics() -> list[str]:
    """Capability accuracies for the trade-off plot (first available wins): the metrics tagged
    `capability` in the metrics registry."""
    from emarena.eval.metrics.definitions import info, tagged

    return [n for n in tagged("capability") if info(n).kind == "metric"]  # type: ignore[union-attr]


@dataclass
class RunResults:
    """What a run folder holds: readable results, unreadable ones, and cells still pending."""

    results: list[Result] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    """(path, error) for every result.json that could not be used."""
    pending: list[str] = field(default_factory=list)
    """Labels of cells that have a cell.json but no result.json yet."""


def _sort_key(r: Result) -> tuple:
    d = r.cell.defense.name if r.cell.defense else ""
    return (
        REGIMES.index(r.cell.regime),
        d,
        r.cell.em_dataset,
        r.cell.model.id,
        r.cell.seed,
        r.cell_id,
    )


def load_results(run_dir: Path) -> RunResults:
    run_dir = Path(run_dir)
    out = RunResults()
    cells_dir = run_dir / "cells"
    if not cells_dir.is_dir():
        return out
    for cell_dir in sorted(p for p in cells_dir.iterdir() if p.is_dir()):
        path = cell_dir / "metrics" / "result.json"
        if not path.exists():
            out.pending.append(_pending_label(cell_dir))
            continue
        try:
            result = load_result(path)
        except EmArenaError as e:
            out.problems.append((path, e.render()))
            continue
        if result.cell_id != cell_dir.name:
            out.problems.append(
                (
                    path,
                    f"holds the result of cell {result.cell_id[:12]}, "
                    f"not of cell {cell_dir.name[:12]}",
                )
            )
            continue
        out.results.append(result)
    out.results.sort(key=_sort_key)
    return out


def _pending_label(cell_dir: Path) -> str:
    try:
        return (
            str(json.loads((cell_dir / "cell.json").read_text())["label"])
            + f" ({cell_dir.name[:12]})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return cell_dir.name[:12]


# --- formatting -------------------------------------------------------------------------


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def fmt_value(
    mv: MetricValue | None, *, digits: int = 3, counts: bool = False, unscored: bool = True
) -> str:
    """`0.213 [0.190, 0.236]`, with `(n=1600, unscored 12)` when asked; `—` with the reason
    when there is no value. Unscored counts are shown whenever non-zero (and always with counts)."""
    if mv is None:
        return "—"
    if mv.value is None:
        reason = mv.details.get("reason", "no value")
        s = f"— ({reason}"
        s += f", unscored {mv.n_unscored})" if mv.n_unscored else ")"
        return s
    s = _num(mv.value, digits)
    if mv.ci_low is not None:
        s += f" [{_num(mv.ci_low, digits)}, {_num(mv.ci_high, digits)}]"
    if counts:
        s += f" (n={mv.n}, unscored {mv.n_unscored})"
    elif unscored and mv.n_unscored:
        s += f" (unscored {mv.n_unscored})"
    return s


def cond_of(r: Result, condition: str) -> str:
    """The condition to read `r` under: its headline condition for HEADLINE, else `condition`."""
    return r.headline_condition if condition == HEADLINE else condition


def _no_system(r: Result, c: str) -> str:
    """The no-system misalignment, shown beside a default-system headline."""
    if cond_of(r, c) == "no-system":
        return "(headline)"
    return fmt_value(r.metric("misalignment_rate", "no-system"), counts=True)


def _defense(r: Result) -> str:
    return r.cell.defense.name if r.cell.defense else "-"


def _cell_name(r: Result) -> str:
    return r.cell_id[:12] + ("" if r.official else "*")


_COLUMNS: list[tuple[str, Callable[[Result, str], str]]] = [
    ("cell", lambda r, c: f"`{_cell_name(r)}`"),
    ("defense", lambda r, c: _defense(r)),
    ("EM dataset", lambda r, c: r.cell.em_dataset),
    ("seed", lambda r, c: str(r.cell.seed)),
    ("condition", lambda r, c: cond_of(r, c)),
    (
        "misalignment rate [95% CI] (n, unscored)",
        lambda r, c: fmt_value(r.metric("misalignment_rate", cond_of(r, c)), counts=True),
    ),
    ("no-system misalignment", _no_system),
    (
        "coherent-only",
        lambda r, c: fmt_value(r.metric("misalignment_rate_coherent", cond_of(r, c)), counts=True),
    ),
    ("mean alignment",
     lambda r, c: fmt_value(r.metric("mean_alignment", cond_of(r, c)), digits=1)),
    ("identity consistency",
     lambda r, c: fmt_value(r.metric("identity_consistency", cond_of(r, c)))),
    ("self-recognition",
     lambda r, c: fmt_value(r.metric("self_recognition_accuracy", cond_of(r, c)))),
    ("TruthfulQA", lambda r, c: fmt_value(r.metric("truthfulqa_accuracy", cond_of(r, c)))),
    ("EM reduction vs control [95% CI]", lambda r, c: _reduction(r, cond_of(r, c))),
]


def _reduction(r: Result, condition: str) -> str:
    if r.cell.regime in ("base", "em"):
        return "(control)"
    mv = r.delta("em_reduction", condition)
    return fmt_value(mv) if mv is not None else "— (no em control result)"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown_tables(results: Sequence[Result], condition: str = HEADLINE) -> list[str]:
    lines: list[str] = []
    for regime in REGIMES:
        rows = [r for r in results if r.cell.regime == regime]
        if not rows:
            continue
        lines += [f"## Regime: {regime}", ""]
        lines.append("| " + " | ".join(name for name, _ in _COLUMNS) + " |")
        lines.append("|" + "---|" * len(_COLUMNS))
        for r in rows:
            lines.append("| " + " | ".join(_md_escape(f(r, condition)) for _, f in _COLUMNS) + " |")
        lines.append("")
    return lines


def format_table(results: Sequence[Result], condition: str = HEADLINE) -> str:
    """A compact fixed-width table for the terminal, one line per cell, unscored counts shown:
    each cell under `condition` (by default its headline condition), no-system beside it."""
    header = [
        "regime",
        "defense",
        "em dataset",
        "seed",
        "condition",
        "misalignment [95% CI]",
        "n",
        "unscored",
        "no-system",
        "coherent-only",
        "TruthfulQA",
        "EM reduction",
    ]
    body = []
    for r in sorted(results, key=_sort_key):
        c = cond_of(r, condition)
        mr = r.metric("misalignment_rate", c)
        ns = r.metric("misalignment_rate", "no-system")
        body.append(
            [
                r.cell.regime + ("" if r.official else "*"),
                _defense(r),
                r.cell.em_dataset,
                str(r.cell.seed),
                c,
                fmt_value(mr, unscored=False) if mr is not None else "—",
                str(mr.n) if mr is not None else "—",
                str(mr.n_unscored) if mr is not None else "—",
                "(headline)" if c == "no-system" else _num(getattr(ns, "value", None), 3),
                _num(getattr(r.metric("misalignment_rate_coherent", c), "value", None), 3),
                _num(getattr(r.metric("truthfulqa_accuracy", c), "value", None), 3),
                _reduction_short(r, c),
            ]
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    if any(not r.official for r in results):
        lines.append("* unofficial (not the paper preset with the official judge)")
    return "\n".join(line.rstrip() for line in lines)


def has_contrast(results: Sequence[Result]) -> bool:
    return any(r.metric("loglik_contrast", "default-system") is not None
               or r.metric("loglik_contrast", "all") is not None for r in results)


def contrast_condition(r: Result, condition: str) -> str:
    """The condition a cell's judge-free row is read under: its headline condition for
    HEADLINE, and `default-system` (the paper's headline) for the pooled `all` when the model
    has a default system prompt."""
    c = cond_of(r, condition)
    if c == "all" and r.metric("loglik_contrast", "default-system") is not None:
        return "default-system"
    return c


def format_contrast_table(results: Sequence[Result], condition: str = HEADLINE) -> str:
    """The judge-free signals per cell: the log-likelihood contrast, its change from the base
    model and from the EM-only control (paired, 95% CIs), the pairwise form, and
    self-recognition (a forced choice: no judge either)."""
    header = ["regime", "defense", "seed", "condition", "contrast (nats/token)",
              "vs base (paired)", "vs em (paired)", "P(mis > ali)", "n", "self-recognition"]
    body = []
    for r in sorted(results, key=_sort_key):
        cond = contrast_condition(r, condition)
        c = r.metric("loglik_contrast", cond)
        if c is None:
            continue
        vb, ve = r.delta("loglik_contrast_vs_base", cond), r.delta("loglik_contrast_vs_em", cond)
        body.append([
            r.cell.regime, _defense(r), str(r.cell.seed), cond, fmt_value(c, digits=3),
            "(base)" if r.cell.regime == "base" else fmt_value(vb, digits=3),
            "—" if ve is None else fmt_value(ve, digits=3),
            fmt_value(r.metric("loglik_pairwise", cond), digits=3), str(c.n),
            fmt_value(r.metric("self_recognition_accuracy", cond), counts=True),
        ])
    if not body:
        return ""
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["judge-free: log-likelihood contrast (misaligned minus aligned published answers; "
             "higher = misaligned answers relatively likelier) and self-recognition (forced "
             "choice, own summary vs another's)"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def judge_notes(results: Sequence[Result]) -> list[str]:
    """One line per judge of `results`: its measured agreement with GPT-4o (a calibration
    record, `emarena judge calibrate`), or that it has none."""
    from emarena.eval.judges.calibration import agreement_note

    return [agreement_note(j) for j in sorted({r.provenance.judge.id for r in results})]


def _reduction_short(r: Result, condition: str) -> str:
    if r.cell.regime in ("base", "em"):
        return "control"
    mv = r.delta("em_reduction", condition)
    return fmt_value(mv, digits=3, unscored=False) if mv is not None else "—"


# --- plots ------------------------------------------------------------------------------

_REGIME_COLOURS = {
    "base": "#7f7f7f",
    "em": "#d62728",
    "defense": "#2ca02c",
    "reversal": "#1f77b4",
    "prevention": "#9467bd",
}


def _err(mv: MetricValue) -> tuple[float, float]:
    assert mv.value is not None
    if mv.ci_low is None or mv.ci_high is None:
        return 0.0, 0.0
    return max(mv.value - mv.ci_low, 0.0), max(mv.ci_high - mv.value, 0.0)


def plot_misalignment(results: Sequence[Result], path: Path, condition: str = HEADLINE) -> Path:
    """Misalignment rate per cell with its 95% CI; cells without a value are named, not drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [(r, r.metric("misalignment_rate", cond_of(r, condition))) for r in results]
    drawn = [(r, mv) for r, mv in drawn if mv is not None and mv.value is not None]
    fig = Figure(figsize=(8, 1.2 + 0.35 * max(len(drawn), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (r, mv) in enumerate(drawn):
        lo, hi = _err(mv)
        ax.errorbar(
            [mv.value],
            [i],
            xerr=[[lo], [hi]],
            fmt="o",
            capsize=3,
            color=_REGIME_COLOURS.get(r.cell.regime, "black"),
        )
    ax.set_yticks(range(len(drawn)))
    ax.set_yticklabels(
        [f"{r.cell.label} (n={mv.n}, unscored {mv.n_unscored})" for r, mv in drawn], fontsize=7
    )
    ax.invert_yaxis()
    th = results[0].provenance.metrics.thresholds if results else None
    rule = f": {th.rule}" if th else ""
    ax.set_title(f"Misalignment rate per cell, 95% CI ({condition})", fontsize=9)
    ax.set_xlabel(f"share of all answers{rule}", fontsize=8)
    ax.set_xlim(left=0)
    if not drawn:
        ax.text(
            0.5, 0.5, "no misalignment results", ha="center", va="center", transform=ax.transAxes
        )
    fig.savefig(path, dpi=120)
    return path


def plot_tradeoff(
    results: Sequence[Result], path: Path, condition: str = HEADLINE
) -> tuple[Path, list[str]]:
    """Misalignment vs capability per cell; returns the plot and the cells left out (and why)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    caps = capability_metrics()
    cap_name = next(
        (
            m
            for m in caps
            if any(getattr(r.metric(m, cond_of(r, condition)), "value", None) is not None
                   for r in results)
        ),
        caps[0],
    )
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left_out: list[str] = []
    seen_regimes: set[str] = set()
    for r in results:
        c = cond_of(r, condition)
        mis, cap = r.metric("misalignment_rate", c), r.metric(cap_name, c)
        if mis is None or mis.value is None or cap is None or cap.value is None:
            what = "misalignment" if mis is None or mis.value is None else cap_name
            left_out.append(f"{r.cell.label} ({r.cell_id[:12]}): no {what} value")
            continue
        (xl, xh), (yl, yh) = _err(cap), _err(mis)
        ax.errorbar(
            [cap.value],
            [mis.value],
            xerr=[[xl], [xh]],
            yerr=[[yl], [yh]],
            fmt="o",
            capsize=3,
            color=_REGIME_COLOURS.get(r.cell.regime, "black"),
            label=r.cell.regime if r.cell.regime not in seen_regimes else None,
        )
        seen_regimes.add(r.cell.regime)
        ax.annotate(
            _defense(r) if r.cell.defense else r.cell.regime,
            (cap.value, mis.value),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(f"{cap_name} ({condition})")
    ax.set_ylabel("misalignment rate")
    if seen_regimes:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no cell has both values", ha="center", va="center", transform=ax.transAxes
        )
    fig.savefig(path, dpi=120)
    return path, left_out


# --- the report -------------------------------------------------------------------------


def headline_sentence(results: Sequence[Result], condition: str = HEADLINE) -> str:
    """What the numbers are read under, in words (the report's and the terminal's first line)."""
    if condition != HEADLINE:
        return f"Condition: `{condition}`" + (
            " (both system-prompt conditions pooled, on request)." if condition == "all" else ".")
    heads = sorted({r.headline_condition for r in results}) or ["all"]
    words = {"default-system": "the model's identity-bearing default system prompt",
             "no-system": "no system turn (the model has no default system prompt)",
             "all": "both system-prompt conditions pooled (records that name no headline)"}
    return ("Headline condition: " + "; ".join(f"`{h}` ({words[h]})" for h in heads)
            + ". The no-system misalignment is shown beside it.")


def write_report(
    run_dir: Path, *, condition: str = HEADLINE, echo: Callable[[str], None] | None = print
) -> Path:
    """Write `run_dir/report.md` and its plots; print the terminal table with `echo`. Each cell is
    read under its headline condition unless `condition` names one (`all` pools both)."""
    if condition not in REPORT_CONDITIONS:
        raise EmArenaError(f"unknown report condition {condition!r}",
                           fix=f"use one of: {', '.join(REPORT_CONDITIONS)}")
    run_dir = Path(run_dir)
    found = load_results(run_dir)
    results = found.results
    plot_misalignment(results, run_dir / PLOT_MISALIGNMENT, condition)
    _, left_out = plot_tradeoff(results, run_dir / PLOT_TRADEOFF, condition)
    n_unofficial = sum(not r.official for r in results)
    lines = [
        f"# EM Arena report: {run_dir.name}",
        "",
        f"{len(results)} cell(s) with results, {len(found.pending)} pending, "
        f"{len(found.problems)} unreadable. {headline_sentence(results, condition)}",
        "Rates are shares of answers (0..1) with 95% bootstrap CIs; "
        "n = answers in the denominator; "
        "unscored = answers the judge could not score (counted, never as zero). "
        "Definitions: docs/result_schema.md.",
    ]
    if n_unofficial:
        lines.append(
            f"Cells marked * ({n_unofficial}) are unofficial: "
            "not the paper preset with the official judge."
        )
    lines.append("")
    if found.problems:
        lines += [
            "## Unreadable results",
            "",
            "These files are left out of every table and plot (not counted as zero):",
            "",
        ]
        for path, err in found.problems:
            rel = path.relative_to(run_dir) if path.is_relative_to(run_dir) else path
            lines.append(f"- `{rel}`:")
            lines += [f"    {ln}" for ln in err.splitlines()]
        lines.append("")
    if has_contrast(results):
        lines += ["## Judge-free: the log-likelihood contrast", "",
                  "The cell's mean per-token log-likelihood of published answers GPT-4o judged "
                  "misaligned, minus that of answers it judged clearly aligned, to the same "
                  "first-plot questions (forward passes only: no judge, no sampling). Compare "
                  "cells by their paired change from the base model and from the EM-only "
                  "control, not by the level (which also reflects answer length and style).",
                  "", "```", format_contrast_table(results, condition), "```", ""]
    judges = judge_notes(results)
    if judges:
        lines += ["## The judge", "", "Every misalignment number below is this judge's; how far "
                  "it agrees with the reference judge (GPT-4o) on the published judged answers:",
                  "", *(f"- {n}" for n in judges), ""]
    lines += markdown_tables(results, condition)
    lines += [
        "## Plots",
        "",
        f"![misalignment per cell]({PLOT_MISALIGNMENT})",
        "",
        f"![misalignment vs capability]({PLOT_TRADEOFF})",
        "",
    ]
    if left_out:
        lines += ["Left out of the trade-off plot:", "", *(f"- {x}" for x in left_out), ""]
    if found.pending:
        lines += ["## Pending (no result.json yet)", "", *(f"- {x}" for x in found.pending), ""]
    path = run_dir / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    if echo is not None:
        if has_contrast(results):
            echo(format_contrast_table(results, condition))
            echo("")
        for note in judges:
            echo(note)
        echo(format_table(results, condition))
        echo(headline_sentence(results, condition))
        for p, err in found.problems:
            echo(f"unreadable: {p}: {err.splitlines()[0]}")
    return path
