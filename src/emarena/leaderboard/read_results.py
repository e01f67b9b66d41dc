"""Read every result file of a results folder into cells, invalid files and leaderboard rows.

    rs = read_results(Path("results"))       # never raises for a bad file
    rs.cells        {cell_id: CellRecord}    the valid results, one per cell id
    rs.invalid      [InvalidFile]            every file that was not counted, with the reason
    rs.table("headline") pandas DataFrame    one row per (defense, model, EM dataset, regime,
                                             preset, judge) for one condition, pooled over
                                             seeds; built on first use, then kept. "headline"
                                             reads each row under its records' headline
                                             condition (suite v2: default-system for a model
                                             with an identity prompt, else no-system; older
                                             records: all); "all" pools both on request

Which files are results: `result.json` anywhere (a `runs/` folder: `.../metrics/result.json`,
samples in `samples.jsonl` beside it) and `<cell_id>.json` (the results dataset:
`<model>/<em_dataset>/<submission>/<cell_id>.json`, samples in `<cell_id>.samples.jsonl`).
Other JSON files (DONE.json, cell.json, adapter configs) are not results; hidden folders are
skipped.

A file is invalid, listed with its error and never counted (never as zero), when it cannot be
read, is not JSON, has an unknown schema_version or does not match the schema (all via
`emarena.eval.result.load_result`), holds a non-finite number (NaN, Infinity) or a value of
the wrong JSON type that lax validation would convert (`true` or "0.5" for a number), a number
no computation gives (a rate outside [0, 1], a negative count), or is named
after a different cell id than it holds. Two files with the same cell id are duplicates:
identical copies count once (the copy at the dataset's own path for the cell is kept, the
others are listed), copies that disagree count not at all (each is listed as a conflict).

Published records (`emarena published import`: a paper's own outputs, recomputed) become rows
like any other, with `source` "published" (else "measured"), the paper's condition in
`source_label` and its citation in `citation`; they are never official, so never ranked. Each
row's `judge_agreement` says how far its judge agrees with GPT-4o on published answers
(`emarena.eval.judges.calibration.agreement_cell`).

Pooling over seeds (a row of the table): `emarena.eval.metrics.pooling` (the n-weighted value,
a two-level bootstrap interval as the records' `ci_method` says; a seed whose value is null is
left out and the row's notes say so). A delta's `n` is the defense side's items and
`n_reference` the control's. Beside each defense row: its paired difference to the EM-only
control (`em_reduction`, paired by seed and question when the records carry per-question counts)
and to SGTR (`vs_sgtr`), with a p-value (`emarena.eval.metrics.paired`). The cost columns add up
what each cell's record says it took (`provenance.cost`).

Which metrics exist, their bounds, directions and whether unscored items sit in `n` come from
`emarena.eval.metrics.definitions` (`info(name)`), never from a list kept here.
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from emarena.errors import EmArenaError
from emarena.eval.metrics.definitions import BESIDE, info
from emarena.eval.metrics.pooling import Pooled, pool_rows
from emarena.eval.metrics.value import CONDITIONS
from emarena.eval.result import ChoiceItem, Result, ResultError, SampleRow, load_result

_CELL_ID_RE = re.compile(r"^[0-9a-f]{64}$")
#: The largest result file read (a result is ~15 kB; anything far bigger is not one).
MAX_RESULT_BYTES = 20 * 1024 * 1024

HEADLINE = "headline"
"""Not a condition: each row under its records' headline condition (`Result.headline_condition`)."""
TABLE_CONDITIONS = (HEADLINE, *CONDITIONS)
#: Label of the defense column for the controls, which have no defense.
CONTROL_LABELS = {"em": "(EM only)", "base": "(base model)"}

#: The columns that identify a row (besides the metric columns).
KEY_COLUMNS = [
    "defense",
    "model",
    "em_dataset",
    "regime",
    "preset",
    "judge",
    "suite",
    "config_hash",
    "model_revision",
]


@dataclass(frozen=True)
class CellRecord:
    """One valid, counted result file."""

    path: str
    """The file, relative to the results folder."""
    result: Result
    samples_path: str | None
    """samples.jsonl of this cell, relative to the results folder, when it exists."""
    choices_path: str | None = None
    """choices.jsonl of this cell (its forced-choice items), when it exists."""

    @property
    def cell_id(self) -> str:
        return self.result.cell_id

    @property
    def label(self) -> str:
        c = self.result.cell
        d = c.defense.name if c.defense else CONTROL_LABELS.get(c.regime, "-")
        return (
            f"{c.model.id} / {c.em_dataset} / {c.regime} / {d} / seed {c.seed} / {c.preset}"
            f" / {self.result.provenance.judge.id} [{c.id[:12]}]"
        )


@dataclass(frozen=True)
class InvalidFile:
    """A file that is not counted, and why."""

    path: str
    error: str
    kind: str = "invalid"
    """invalid (unreadable or not a valid result) | duplicate (an identical copy, counted once
    elsewhere) | conflict (same cell id as another file with different contents)."""


@dataclass
class ResultSet:
    """Everything the leaderboard shows, from one scan of the results folder."""

    root: Path
    cells: dict[str, CellRecord] = field(default_factory=dict)
    invalid: list[InvalidFile] = field(default_factory=list)
    excluded: dict[tuple, int] = field(default_factory=dict)
    """Cells left out of a row (conflicting duplicates), by row key."""
    n_files: int = 0
    seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def table(self, condition: str = HEADLINE) -> pd.DataFrame:
        """The rows of one condition (headline, default-system, no-system, all); see
        `build_table`."""
        if condition not in TABLE_CONDITIONS:
            raise ValueError(f"unknown condition {condition!r}; one of "
                             f"{', '.join(TABLE_CONDITIONS)}")
        with self._lock:
            if condition not in self._tables:
                self._tables[condition] = build_table(self.cells, self.excluded, condition)
            return self._tables[condition]

    def samples_file(self, cell_id: str) -> Path | None:
        rec = self.cells.get(cell_id)
        if rec is None or rec.samples_path is None:
            return None
        return self.root / rec.samples_path

    def choices_file(self, cell_id: str) -> Path | None:
        rec = self.cells.get(cell_id)
        if rec is None or rec.choices_path is None:
            return None
        return self.root / rec.choices_path

    def invalid_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"file": f.path, "kind": f.kind, "error": f.error} for f in self.invalid],
            columns=["file", "kind", "error"],
        )


# --- finding and loading files --------------------------------------------------------------


def is_result_file(name: str) -> bool:
    """`result.json` or `<64 hex cell id>.json`."""
    if name == "result.json":
        return True
    return name.endswith(".json") and bool(_CELL_ID_RE.match(name[: -len(".json")]))


def find_result_files(root: Path) -> list[Path]:
    """Every result file under `root`, sorted; hidden folders are skipped."""
    out: list[Path] = []
    # followlinks: a run folder links each cell's metrics into the shared store
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if is_result_file(f))
    return sorted(out)


def samples_path_for(path: Path, what: str = "samples") -> Path:
    """Where a result's samples (or `what="choices"`: its choice items) live:
    `<cell_id>.samples.jsonl` or `samples.jsonl` beside."""
    if path.name == "result.json":
        return path.with_name(f"{what}.jsonl")
    return path.with_name(path.name[: -len(".json")] + f".{what}.jsonl")


def _non_finite_metric(result: Result) -> str | None:
    """The first metric or delta number that is NaN or infinite (JSON allows writing them;
    pydantic's float accepts them), or None."""
    for section in ("metrics", "deltas"):
        for name, by_cond in getattr(result, section).items():
            for cond, mv in by_cond.items():
                for attr in ("value", "ci_low", "ci_high"):
                    x = getattr(mv, attr)
                    if x is not None and not math.isfinite(x):
                        return f"{section}.{name}.{cond}.{attr} is {x}"
    return None


def _out_of_range(result: Result) -> str | None:
    """The first metric number no computation can give: a value or interval end outside the
    metric's bounds (`MetricInfo.bounds`: a rate in [0, 1], a mean alignment in [0, 100]...),
    a negative count, more unscored answers than answers where those sit in `n`
    (`MetricInfo.unscored_in_n`). (Deltas may be negative.)"""
    for name, by_cond in result.metrics.items():
        mi = info(name)
        lo, hi = mi.bounds if mi is not None else (-math.inf, math.inf)
        for cond, mv in by_cond.items():
            where = f"metrics.{name}.{cond}"
            for attr in ("value", "ci_low", "ci_high"):
                x = getattr(mv, attr)
                if x is not None and not lo <= x <= hi:
                    return f"{where}.{attr} is {x}: {name} lies in [{lo:g}, {hi:g}]"
            if mv.n < 0 or mv.n_unscored < 0:
                return f"{where}: n={mv.n}, n_unscored={mv.n_unscored}: counts must be >= 0"
            # Only there do unscored answers sit inside `n`; other metrics count them apart
            # (e.g. no coherent answer scored: n=0, n_unscored=2).
            if mi is not None and mi.unscored_in_n and mv.n_unscored > mv.n:
                return (f"{where}: n={mv.n}, n_unscored={mv.n_unscored}: {name} counts its "
                        "unscored answers in n, so n_unscored <= n")
    return None


def _coerced_value(path: Path) -> str | None:
    """The first value of the wrong JSON type that the lax schema check converted, or None.

    `load_result` validates in pydantic's lax mode, which reads `true` as 1.0 and "0.5" as 0.5.
    The pipeline never writes such values, so one means a damaged or hand-edited file: it is
    invalid rather than shown as a number it never was."""
    try:
        Result.model_validate_json(path.read_bytes(), strict=True)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        shown = repr(err.get("input"))
        shown = shown[:60] + "..." if len(shown) > 60 else shown
        return f"{loc}: {err['msg']} (got {shown}); values must have the schema's JSON types"
    except (RecursionError, MemoryError, ValueError, OSError) as e:
        return f"cannot be parsed strictly ({type(e).__name__})"
    return None


def load_file(path: Path, root: Path) -> CellRecord | InvalidFile:
    """One file -> a CellRecord, or an InvalidFile with the error. Never raises for bad data."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return InvalidFile(rel, f"cannot be read ({e.strerror or e})")
    if size > MAX_RESULT_BYTES:
        return InvalidFile(rel, f"{size:,} bytes: larger than any result ({MAX_RESULT_BYTES:,})")
    try:
        result = load_result(path)
    except ResultError as e:
        return InvalidFile(rel, _relative_error(e.render(), path, rel))
    except (RecursionError, MemoryError, ValueError) as e:  # absurdly nested or huge numbers
        return InvalidFile(rel, f"cannot be parsed ({type(e).__name__}: {str(e)[:200]})")
    bad = _non_finite_metric(result)
    if bad:
        return InvalidFile(rel, f"{bad}: metric values must be finite numbers or null")
    bad = _coerced_value(path) or _out_of_range(result)
    if bad:
        return InvalidFile(rel, bad)
    stem = path.name[: -len(".json")]
    if _CELL_ID_RE.match(stem) and stem != result.cell_id:
        return InvalidFile(
            rel,
            f"the file is named after cell {stem[:12]}... but holds cell "
            f"{result.cell_id[:12]}... (moved or renamed?)",
        )
    found = []
    for what in ("samples", "choices"):
        sp = samples_path_for(path, what)
        srel = str(sp.relative_to(root)) if sp.is_relative_to(root) else str(sp)
        found.append(srel if sp.is_file() else None)
    return CellRecord(rel, result, *found)


def _relative_error(text: str, path: Path, rel: str) -> str:
    return text.replace(str(path), rel)


def _canonical_path(result: Result) -> str:
    """`<model>/<em_dataset>/<submission>/<cell_id>.json`, the results dataset's layout."""
    from emarena.hub import result_base

    return f"{result_base(result)}.json"


def _dedupe(
    records: list[CellRecord],
) -> tuple[dict[str, CellRecord], list[InvalidFile], dict[tuple, int]]:
    """One record per cell id; extra identical copies and disagreeing copies become invalid.

    Returns (cells, invalid, excluded cells per row key)."""
    by_id: dict[str, list[CellRecord]] = defaultdict(list)
    for rec in records:
        by_id[rec.cell_id].append(rec)
    cells: dict[str, CellRecord] = {}
    invalid: list[InvalidFile] = []
    excluded: dict[tuple, int] = defaultdict(int)
    for cid, recs in by_id.items():
        if len(recs) == 1:
            cells[cid] = recs[0]
            continue
        # The copy at the results dataset's own path for this cell is the one kept.
        canonical = _canonical_path(recs[0].result)
        recs = sorted(recs, key=lambda r: (r.path != canonical, r.path))
        dumps = [r.result.model_dump(mode="json", exclude={"created"}) for r in recs]
        if all(d == dumps[0] for d in dumps[1:]):
            cells[cid] = recs[0]
            for r in recs[1:]:
                invalid.append(
                    InvalidFile(
                        r.path,
                        f"duplicate: cell {cid[:12]}... is also in {recs[0].path} with the same "
                        "contents; counted once (from that file)",
                        "duplicate",
                    )
                )
        else:
            others = ", ".join(r.path for r in recs)
            for r in recs:
                invalid.append(
                    InvalidFile(
                        r.path,
                        f"conflict: cell {cid[:12]}... appears in {len(recs)} files with "
                        f"different numbers ({others}); none of them is counted until one is "
                        "removed",
                        "conflict",
                    )
                )
            excluded[row_key(recs[0].result)] += 1
    return cells, invalid, excluded


# --- pooling over seeds ----------------------------------------------------------------------


def row_key(result: Result) -> tuple:
    """What a leaderboard row pools over seeds: everything about the cell but the seed, and the
    judge (numbers from different judges or presets are not comparable)."""
    c = result.cell
    return (
        c.defense.name if c.defense else CONTROL_LABELS.get(c.regime, "-"),
        c.model.id,
        c.em_dataset,
        c.regime,
        c.preset,
        result.provenance.judge.id,
        c.suite,
        c.defense.config_hash if c.defense else "",
        c.model.revision,
    )


def _set(row: dict[str, Any], name: str, p: Pooled) -> None:
    """A pooled value's columns (`name`, `name.ci_low`, ...); NaN where there is none."""
    nan = math.nan
    row[name] = p.value if p.value is not None else nan
    row[f"{name}.ci_low"] = p.ci_low if p.ci_low is not None else nan
    row[f"{name}.ci_high"] = p.ci_high if p.ci_high is not None else nan
    row[f"{name}.n"] = p.n
    row[f"{name}.n_unscored"] = p.n_unscored
    row[f"{name}.seeds"] = p.n_seeds
    row[f"{name}.missing"] = p.n_missing
    row[f"{name}.reason"] = p.reason or ""
    if p.n_reference is not None:
        row[f"{name}.n_reference"] = p.n_reference
        row[f"{name}.n_unscored_reference"] = p.n_unscored_reference


#: Steps whose seconds the records' `provenance.cost` keeps (training stages, then evaluation).
COST_STEPS = ("stage1", "stage2", "generate", "judge")
#: The cost columns of a row: summed over its cells' `provenance.cost`.
COST_COLUMNS = ("cost.seconds", *(f"cost.seconds.{s}" for s in COST_STEPS),
                "cost.tokens_trained", "cost.tokens_generated", "cost.judge_calls",
                "cost.judge_prompt_chars", "cost.device", "cost.cells")


def cost_columns(results: list[Result]) -> dict[str, Any]:
    """The row's cost: every cell's `provenance.cost` added up (a shared stage counts in each
    cell, as each record says); `cost.cells` says how many cells recorded one."""
    costs = [r.provenance.cost for r in results if r.provenance.cost is not None]
    out: dict[str, Any] = {"cost.cells": len(costs)}
    if not costs:
        out.update({k: math.nan for k in COST_COLUMNS if k != "cost.cells"})
        out["cost.device"] = ""
        return out
    for step in COST_STEPS:
        out[f"cost.seconds.{step}"] = sum(c.seconds.get(step, 0.0) for c in costs)
    out["cost.seconds"] = sum(sum(c.seconds.values()) for c in costs)
    out["cost.tokens_trained"] = sum(c.tokens_trained for c in costs)
    out["cost.tokens_generated"] = sum(c.tokens_generated for c in costs)
    out["cost.judge_calls"] = sum(c.judge_calls for c in costs)
    out["cost.judge_prompt_chars"] = sum(c.judge_prompt_chars for c in costs)
    out["cost.device"] = ",".join(sorted({c.device.split(":")[0] for c in costs}))
    return out


def budget_text(result: Result) -> str:
    """The cell's training budget as the Budget column shows it ("em 6,000, defense 2,000");
    "" for the base model and records older than `provenance.budget`."""
    return ", ".join(f"{k} {v:,}" for k, v in result.provenance.budget.items())


def build_table(
    cells: dict[str, CellRecord],
    excluded: dict[tuple, int] | None = None,
    condition: str = HEADLINE,
) -> pd.DataFrame:
    """One row per row key with every metric and delta of `condition` pooled over seeds
    (`headline`: each row under its first record's headline condition; a row's records share
    the model and suite, so the same one), and the BESIDE columns of the metrics registry
    (`misalignment_rate_no_system`) under their own condition.

    Columns: KEY_COLUMNS, condition, division, kind, official, seeds, seed_list, cell_ids,
    notes, judge_mode, judge_agreement, budget, source columns, COST_COLUMNS, and for each
    metric, delta or comparison `m`: `m`, `m.ci_low`, `m.ci_high`, `m.n`, `m.n_unscored`,
    `m.seeds`, `m.missing`, `m.reason` (`m` holds the value, NaN when there is none); deltas
    and comparisons add `m.n_reference`, `m.n_unscored_reference`, and the paired ones `m.p`
    and `m.pairing`."""
    excluded = excluded or {}
    groups: dict[tuple, list[CellRecord]] = defaultdict(list)
    for rec in cells.values():
        groups[row_key(rec.result)].append(rec)
    agreement: dict[str, str] = {}  # judge id -> its calibration, looked up once per table
    # name -> True for a delta, False for a metric, in first-seen order
    names: dict[str, bool] = {}
    for rec in cells.values():
        for is_delta, section in ((False, rec.result.metrics), (True, rec.result.deltas)):
            for name in section:
                names.setdefault(name, is_delta)
    rows: list[dict[str, Any]] = []
    results_of: list[list[Result]] = []
    for key, recs in groups.items():
        recs.sort(key=lambda r: r.result.cell.seed)
        first = recs[0].result
        c = first.cell
        base: dict[str, Any] = dict(zip(KEY_COLUMNS, key, strict=True))
        base.update(
            division=c.defense.division if c.defense else "",
            kind=c.defense.kind if c.defense else "",
            official=all(r.result.official for r in recs),
            seeds=len(recs),
            seed_list=",".join(str(r.result.cell.seed) for r in recs),
            cell_ids=tuple(r.cell_id for r in recs),
            **_source_columns(first),
            **cost_columns([r.result for r in recs]),
        )
        judge = first.provenance.judge.id
        base["judge_mode"] = first.provenance.judge.mode
        base["budget"] = budget_text(first)
        if judge not in agreement:
            from emarena.eval.judges.calibration import agreement_cell

            agreement[judge] = agreement_cell(judge)
        base["judge_agreement"] = agreement[judge]
        seed_counts = defaultdict(int)
        for r in recs:
            seed_counts[r.result.cell.seed] += 1
        row = dict(base, condition=(first.headline_condition if condition == HEADLINE
                                    else condition))
        notes: list[str] = []
        if c.regime in ("reversal", "prevention", "defense") and not any(
            r.result.deltas for r in recs
        ):
            notes.append("no EM control: no deltas")
        if excluded.get(key):
            notes.append(f"{excluded[key]} cell(s) excluded: conflicting duplicate files")
        repeated = sorted(s for s, k in seed_counts.items() if k > 1)
        if repeated:
            notes.append(f"seed(s) {repeated} appear in more than one cell")
        row["notes"] = notes
        rows.append(row)
        results_of.append([r.result for r in recs])
    # every row of one metric and condition pooled at once (pooling.pool_rows); `headline`
    # reads each row under its own condition, a BESIDE column every row under its fixed one
    confidence = next(iter(cells.values())).result.provenance.metrics.confidence if cells \
        else 0.95
    by_condition: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_condition[row["condition"]].append(i)
    columns = [(name, name, is_delta, None) for name, is_delta in names.items()]
    columns += [(b.name, b.metric, False, b.condition) for b in map(BESIDE.get, BESIDE.names())
                if b.metric in names and not names[b.metric]]
    for name, metric, is_delta, fixed in columns:
        parts = {fixed: list(range(len(rows)))} if fixed else by_condition
        for mcond, idx in parts.items():
            per_row = [
                [(r.delta(metric, mcond) if is_delta else r.metric(metric, mcond))
                 for r in results_of[i]]
                for i in idx
            ]
            pooled = pool_rows(per_row, info(name), key=f"{metric}/{mcond}",
                               confidence=confidence)
            for i, p in zip(idx, pooled, strict=True):
                row = rows[i]
                _set(row, name, p)
                if is_delta:
                    row[f"{name}.pairing"] = "seed" if p.n_seeds > 1 else "none (one seed)"
                if p.n_missing and p.n_seeds:
                    row["notes"].append(f"{name}: {p.n_missing} of {row['seeds']} seeds have "
                                        "no value")
    for row in rows:
        row["notes"] = "; ".join(row["notes"])
    add_paired(rows, results_of)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "condition", "official", "seeds", "notes",
                                     "source", "cell_ids"])
    # Rows that look alike on the page but pool different configurations or model revisions.
    shown = ["defense", "model", "em_dataset", "regime", "preset", "judge"]
    alike = df.duplicated(shown, keep=False)
    for i in df.index[alike]:
        what = f"config {df.at[i, 'config_hash'][:8] or '-'}, model revision " \
               f"{df.at[i, 'model_revision'][:12]}, suite {df.at[i, 'suite']}"
        note = f"another row has the same defense name with a different setup; this one: {what}"
        df.at[i, "notes"] = "; ".join(x for x in (df.at[i, "notes"], note) if x)
    return df


#: The reference defense every other is also compared with (`vs_sgtr`).
SGTR = "sgtr"
#: Regimes whose rows are compared with the EM-only control and with SGTR.
COMPARED_REGIMES = ("reversal", "prevention", "defense")


def _group(row: dict[str, Any]) -> tuple:
    """Rows compared with each other: one model (and revision), EM dataset, preset, judge,
    suite, source and condition; the seeds and questions are then the grid's."""
    return (row["model"], row["model_revision"], row["em_dataset"], row["preset"], row["judge"],
            row["suite"], row["source"], row["condition"])


def add_paired(rows: list[dict[str, Any]], results_of: list[list[Result]]) -> None:
    """Each defense row's paired differences: `em_reduction` against the EM-only control (paired
    by seed and question, replacing the seed-paired pooled delta when both rows carry
    per-question counts) and `vs_sgtr` against SGTR in the same regime, each with `.p`; both
    under the row's condition."""
    from emarena.eval.metrics.paired import paired_difference, question_counts

    index: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        index[(*_group(row), row["regime"], row["defense"])] = i
    counts: dict[int, Any] = {}

    def counts_of(i: int):
        if i not in counts:
            counts[i] = question_counts(results_of[i], rows[i]["condition"])
        return counts[i]

    for i, row in enumerate(rows):
        for k in ("vs_sgtr", "vs_sgtr.ci_low", "vs_sgtr.ci_high", "vs_sgtr.p", "em_reduction.p",
                  "vs_sgtr.n", "vs_sgtr.n_reference"):
            row.setdefault(k, math.nan)
        if row["regime"] not in COMPARED_REGIMES:
            row["vs_sgtr.reason"] = "a control row"
            continue
        g = _group(row)
        control = index.get((*g, "em", CONTROL_LABELS["em"]))
        if control is not None and "em_reduction" in row:
            d = _paired(counts_of(control), counts_of(i), row["condition"], paired_difference)
            if d is not None:
                _set_paired(row, "em_reduction", d, rows[control])
        if row["defense"] == SGTR:
            row["vs_sgtr.reason"] = "SGTR itself"
            continue
        sgtr = index.get((*g, row["regime"], SGTR))
        if sgtr is None:
            row["vs_sgtr.reason"] = f"no SGTR row in {row['regime']} for this model and judge"
            continue
        d = _paired(counts_of(sgtr), counts_of(i), row["condition"], paired_difference)
        if d is None:
            row["vs_sgtr.reason"] = "no seed and question in common with SGTR's records"
            continue
        _set_paired(row, "vs_sgtr", d, rows[sgtr])


def _paired(reference, other, key: str, fn):
    if reference is None or other is None:
        return None
    return fn(reference, other, key=key)


def _set_paired(row: dict[str, Any], name: str, d, reference_row: dict[str, Any]) -> None:
    row[name] = d.value
    row[f"{name}.ci_low"], row[f"{name}.ci_high"] = (
        (d.ci_low, d.ci_high) if d.ci_low is not None else (math.nan, math.nan))
    row[f"{name}.n"] = d.n
    row[f"{name}.n_reference"] = d.n_reference
    row[f"{name}.n_unscored"] = row.get("misalignment_rate.n_unscored", 0)
    row[f"{name}.n_unscored_reference"] = reference_row.get("misalignment_rate.n_unscored", 0)
    row[f"{name}.seeds"] = len(d.seeds)
    row[f"{name}.p"] = d.p_value
    row[f"{name}.pairing"] = f"seed and question ({d.n_pairs} pairs)"
    row[f"{name}.reason"] = ""


def _source_columns(result: Result) -> dict[str, str]:
    """source (published | measured), source_label (what the Source column shows), citation."""
    pub = result.published
    if pub is None:
        return {"source": "measured", "source_label": "measured", "citation": ""}
    label = f"published: {pub.source}/{pub.condition}"
    if not pub.comparable:
        label += f" ({pub.run.split(',')[0]})"
    return {"source": "published", "source_label": label, "citation": pub.citation}


# --- the whole folder, cached -----------------------------------------------------------------


def read_results(
    root: Path,
    *,
    _parsed: dict[str, tuple[tuple[int, int], CellRecord | InvalidFile]] | None = None,
) -> ResultSet:
    """Scan `root` and build the ResultSet. Never raises for a bad file.

    `_parsed` (path -> ((size, mtime_ns), outcome)) lets `ResultCache` re-read only the files
    that changed since its last scan."""
    t0 = time.perf_counter()
    root = Path(root)
    parsed = _parsed if _parsed is not None else {}
    records: list[CellRecord] = []
    invalid: list[InvalidFile] = []
    paths = find_result_files(root) if root.is_dir() else []
    seen = set()
    for path in paths:
        key = str(path)
        seen.add(key)
        try:
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        cached = parsed.get(key)
        if cached is not None and cached[0] == stamp:
            outcome = cached[1]
        else:
            outcome = load_file(path, root)
            parsed[key] = (stamp, outcome)
        (records if isinstance(outcome, CellRecord) else invalid).append(outcome)  # type: ignore[arg-type]
    for gone in set(parsed) - seen:
        del parsed[gone]
    cells, dup_invalid, excluded = _dedupe(records)
    invalid.extend(dup_invalid)
    invalid.sort(key=lambda f: f.path)
    rs = ResultSet(
        root=root,
        cells=cells,
        invalid=invalid,
        excluded=dict(excluded),
        n_files=len(paths),
    )
    rs.seconds = time.perf_counter() - t0
    return rs


class ResultCache:
    """The parsed results of one folder, shared by every page view.

    The first `get()` scans the folder (in a background thread when `start()` was called
    first); later `get()`s return the same ResultSet until `refresh()` rescans, which re-reads
    only changed files. `sync` (e.g. a Hub snapshot into the folder) runs before each scan.
    """

    def __init__(self, root: Path, sync: Callable[[], None] | None = None):
        self.root = Path(root)
        self.sync = sync
        self._parsed: dict[str, tuple[tuple[int, int], CellRecord | InvalidFile]] = {}
        self._current: ResultSet | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._signature: tuple = ()
        self.sync_error: str | None = None

    #: Written into the folder after each successful sync: when its data were downloaded
    #: (a restarted app that cannot reach the Hub says how old what it shows is).
    SYNCED = ".emarena-synced"

    @property
    def last_sync(self) -> str | None:
        """When the folder was last synced ("2026-01-02 10:00 UTC"), or None."""
        try:
            return (self.root / self.SYNCED).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def start(self) -> ResultCache:
        """Begin the first scan in the background (the server starts meanwhile)."""
        if self._thread is None and self._current is None:
            self._thread = threading.Thread(target=self.refresh, name="read-results", daemon=True)
            self._thread.start()
        return self

    def get(self) -> ResultSet:
        if self._current is None:
            t = self._thread
            if t is not None:
                t.join()
            if self._current is None:
                self.refresh()
        assert self._current is not None
        return self._current

    def refresh(self) -> ResultSet:
        with self._lock:
            if self.sync is not None:
                try:
                    self.sync()
                    self.sync_error = None
                    self.root.mkdir(parents=True, exist_ok=True)
                    (self.root / self.SYNCED).write_text(
                        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), encoding="utf-8")
                except (EmArenaError, OSError) as e:  # shown on the page; the old data stay
                    self.sync_error = e.render() if isinstance(e, EmArenaError) else str(e)
            fresh = read_results(self.root, _parsed=self._parsed)
            signature = tuple(sorted((k, v[0]) for k, v in self._parsed.items()))
            if self._current is None or signature != self._signature:
                # a rescan that found no file changed keeps the same ResultSet: its tables
                # (and a page built from it) stay valid
                self._current, self._signature = fresh, signature
            return self._current


# --- samples.jsonl (the drill-down) -----------------------------------------------------------

#: The largest samples.jsonl the drill-down reads.
MAX_SAMPLES_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Items:
    """One cell's item rows (answers: `SampleRow`; forced choices: `ChoiceItem`), and the
    lines that were not rows."""

    rows: list
    errors: list[str]


#: The drill-down's two kinds of item files: samples.jsonl and choices.jsonl.
Samples = Choices = Items
_ROW_TYPES = {"samples": SampleRow, "choices": ChoiceItem}


@functools.lru_cache(maxsize=64)
def _read_items(path: str, stamp: tuple[int, int], what: str) -> Items:
    rows: list = []
    errors: list[str] = []
    if stamp[0] > MAX_SAMPLES_BYTES:
        return Items([], [f"{stamp[0]:,} bytes: larger than the drill-down reads"])
    row_type = _ROW_TYPES[what]
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(row_type.model_validate_json(line))
            except ValidationError as e:
                first = e.errors()[0]
                key = ".".join(str(p) for p in first["loc"]) or "(line)"
                errors.append(f"line {i}: {key}: {first['msg']}")
    return Items(rows, errors)


def read_items(path: Path | None, what: str = "samples") -> Items:
    """The rows of a samples.jsonl (`what="choices"`: choices.jsonl), cached by path, size and
    mtime; bad lines are reported, not fatal. A missing file gives no rows and says so."""
    if path is None:
        return Items([], [f"no {what}.jsonl was published with this result"])
    try:
        st = Path(path).stat()
    except OSError as e:
        return Items([], [f"{path}: cannot be read ({e.strerror or e})"])
    return _read_items(str(path), (st.st_size, st.st_mtime_ns), what)


def read_samples(path: Path | None) -> Items:
    """The answers of a samples.jsonl with their judge scores (`read_items`)."""
    return read_items(path, "samples")


def read_choices(path: Path | None) -> Items:
    """The forced-choice items of a choices.jsonl (`read_items`)."""
    return read_items(path, "choices")
