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

Pooling over seeds (a row of the table): the value is the n-weighted mean of the seeds' values,
which for a rate is the pooled rate; a seed whose value is null is left out and the row's notes
say so. The 95% interval is value +- 1.96 SE with SE the larger of (a) the seeds' bootstrap
standard errors combined, SE_i = CI width / 3.92, and (b) the spread between seeds,
stdev / sqrt(k); rates and accuracies are clipped to [0, 1]. With one seed the row shows that
seed's own bootstrap interval. `n` and `n_unscored` add up over seeds.
"""

from __future__ import annotations

import functools
import math
import os
import re
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from emarena.errors import EmArenaError
from emarena.eval.metrics.value import CONDITIONS, MetricValue
from emarena.eval.result import Result, ResultError, SampleRow, load_result

_CELL_ID_RE = re.compile(r"^[0-9a-f]{64}$")
#: The largest result file read (a result is ~15 kB; anything far bigger is not one).
MAX_RESULT_BYTES = 20 * 1024 * 1024

#: Metrics and deltas bounded to [0, 1]: their pooled intervals are clipped there.
UNIT_METRICS = frozenset(
    {
        "misalignment_rate",
        "misalignment_rate_coherent",
        "coherence_rate",
        "unscored_rate",
        "identity_consistency",
        "self_recognition_accuracy",
        "truthfulqa_accuracy",
        "mmlu_accuracy",
        "misalignment_rate_release_plot",
        "misalignment_rate_no_system",
        "factual_accuracy",
    }
)
HEADLINE = "headline"
"""Not a condition: each row under its records' headline condition (`Result.headline_condition`)."""
TABLE_CONDITIONS = (HEADLINE, *CONDITIONS)
#: Shown beside the headline: the same metric with no system turn.
BESIDE = {"misalignment_rate_no_system": ("misalignment_rate", "no-system")}
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


def samples_path_for(path: Path) -> Path:
    """Where a result's samples live: `<cell_id>.samples.jsonl` or `samples.jsonl` beside."""
    if path.name == "result.json":
        return path.with_name("samples.jsonl")
    return path.with_name(path.name[: -len(".json")] + ".samples.jsonl")


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


#: Metrics whose denominator `n` includes the unscored answers (their descriptions say so).
UNSCORED_IN_N = frozenset({"misalignment_rate"})
#: Bounds of the metrics that are not rates (rates: UNIT_METRICS, [0, 1]).
_RANGES = {"mean_alignment": (0.0, 100.0), "identity_diversity": (0.0, math.inf)}


def _out_of_range(result: Result) -> str | None:
    """The first metric number no computation can give: a rate or accuracy outside [0, 1], a
    mean alignment outside [0, 100], a negative entropy or count, more unscored answers than
    answers where those sit in `n` (UNSCORED_IN_N). (Deltas may be negative.)"""
    for name, by_cond in result.metrics.items():
        for cond, mv in by_cond.items():
            where = f"metrics.{name}.{cond}"
            lo, hi = (0.0, 1.0) if name in UNIT_METRICS else _RANGES.get(name, (-math.inf,
                                                                                 math.inf))
            for attr in ("value", "ci_low", "ci_high"):
                x = getattr(mv, attr)
                if x is not None and not lo <= x <= hi:
                    return f"{where}.{attr} is {x}: {name} lies in [{lo:g}, {hi:g}]"
            if mv.n < 0 or mv.n_unscored < 0:
                return f"{where}: n={mv.n}, n_unscored={mv.n_unscored}: counts must be >= 0"
            # Only there do unscored answers sit inside `n`; other metrics count them apart
            # (e.g. no coherent answer scored: n=0, n_unscored=2).
            if name in UNSCORED_IN_N and mv.n_unscored > mv.n:
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
    sp = samples_path_for(path)
    srel = str(sp.relative_to(root)) if sp.is_relative_to(root) else str(sp)
    return CellRecord(rel, result, srel if sp.is_file() else None)


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


# --- pooling over seeds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pooled:
    """One metric of one row, pooled over the row's seeds."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_unscored: int
    n_seeds: int
    """Seeds whose value went into `value`."""
    n_missing: int
    """Seeds of the row without a value for this metric (null, or the metric absent)."""
    higher_is_better: bool | None
    reason: str | None = None


@functools.cache
def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def pool(
    values: Iterable[MetricValue | None], *, unit: bool = False, confidence: float = 0.95
) -> Pooled:
    """Pool one metric's per-seed values (see the module docstring); None means absent."""
    values = list(values)
    given = [v for v in values if v is not None]
    present = [v for v in given if v.value is not None]
    n = sum(v.n for v in given)
    n_unscored = sum(v.n_unscored for v in given)
    hib = given[0].higher_is_better if given else None
    missing = len(values) - len(present)
    if not present:
        reasons = [str(v.details.get("reason")) for v in given if v.details.get("reason")]
        reason = reasons[0] if reasons else ("not reported" if not given else "no value")
        return Pooled(None, None, None, n, n_unscored, 0, missing, hib, reason)
    if len(present) == 1:
        v = present[0]
        return Pooled(v.value, v.ci_low, v.ci_high, n, n_unscored, 1, missing, hib)
    total = sum(v.n for v in present)
    weights = [v.n / total if total else 1 / len(present) for v in present]
    xs = [float(v.value) for v in present]  # type: ignore[arg-type]
    value = sum(w * x for w, x in zip(weights, xs, strict=True))
    lo = hi = None
    if all(v.ci_low is not None and v.ci_high is not None for v in present):
        z = _z(confidence)
        se_within = math.sqrt(
            sum(
                (w * (v.ci_high - v.ci_low) / (2 * z)) ** 2  # type: ignore[operator]
                for w, v in zip(weights, present, strict=True)
            )
        )
        k = len(xs)
        mean = sum(xs) / k
        # plain floats: statistics.stdev's exact arithmetic costs seconds over 1,000 files
        se_between = math.sqrt(sum((x - mean) ** 2 for x in xs) / (k - 1) / k)
        se = max(se_within, se_between)
        lo, hi = value - z * se, value + z * se
        if unit:
            lo, hi = max(0.0, lo), min(1.0, hi)
    return Pooled(value, lo, hi, n, n_unscored, len(present), missing, hib)


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


def build_table(
    cells: dict[str, CellRecord],
    excluded: dict[tuple, int] | None = None,
    condition: str = HEADLINE,
) -> pd.DataFrame:
    """One row per row key with every metric and delta of `condition` pooled over seeds
    (`headline`: each row under its first record's headline condition; a row's records share
    the model and suite, so the same one), and `misalignment_rate_no_system` beside it.

    Columns: KEY_COLUMNS, condition, division, kind, official, seeds, cell_ids, notes, and for
    each metric or delta `m`: `m`, `m.ci_low`, `m.ci_high`, `m.n`, `m.n_unscored`, `m.seeds`,
    `m.missing`, `m.reason` (`m` holds the value, NaN when there is none)."""
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
        )
        judge = first.provenance.judge.id
        base["judge_mode"] = first.provenance.judge.mode
        base["budget"] = ", ".join(f"{k} {v:,}" for k, v in first.provenance.budget.items())
        if judge not in agreement:
            from emarena.eval.judges.calibration import agreement_cell

            agreement[judge] = agreement_cell(judge)
        base["judge_agreement"] = agreement[judge]
        seed_counts = defaultdict(int)
        for r in recs:
            seed_counts[r.result.cell.seed] += 1
        confidence = first.provenance.metrics.confidence
        cond = first.headline_condition if condition == HEADLINE else condition
        row = dict(base, condition=cond)
        notes: list[str] = []
        columns = {n: (n, cond, d) for n, d in names.items()}
        columns.update({k: (m, c, False) for k, (m, c) in BESIDE.items()})
        for name, (metric, mcond, is_delta) in columns.items():
            vals = [
                (r.result.delta(metric, mcond) if is_delta else r.result.metric(metric, mcond))
                for r in recs
            ]
            p = pool(vals, unit=metric in UNIT_METRICS and not is_delta, confidence=confidence)
            row[name] = p.value if p.value is not None else math.nan
            row[f"{name}.ci_low"] = p.ci_low if p.ci_low is not None else math.nan
            row[f"{name}.ci_high"] = p.ci_high if p.ci_high is not None else math.nan
            row[f"{name}.n"] = p.n
            row[f"{name}.n_unscored"] = p.n_unscored
            row[f"{name}.seeds"] = p.n_seeds
            row[f"{name}.missing"] = p.n_missing
            row[f"{name}.reason"] = p.reason or ""
            if p.n_missing and p.n_seeds:
                notes.append(f"{name}: {p.n_missing} of {len(recs)} seeds have no value")
        if c.regime in ("reversal", "prevention", "defense") and not any(
            r.result.deltas for r in recs
        ):
            notes.append("no EM control: no deltas")
        if excluded.get(key):
            notes.append(f"{excluded[key]} cell(s) excluded: conflicting duplicate files")
        repeated = sorted(s for s, k in seed_counts.items() if k > 1)
        if repeated:
            notes.append(f"seed(s) {repeated} appear in more than one cell")
        row["notes"] = "; ".join(notes)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "condition", "official", "seeds", "notes",
                                     "source"])
    # Rows that look alike on the page but pool different configurations or model revisions.
    shown = ["defense", "model", "em_dataset", "regime", "preset", "judge"]
    alike = df.duplicated(shown, keep=False)
    for i in df.index[alike]:
        what = f"config {df.at[i, 'config_hash'][:8] or '-'}, model revision " \
               f"{df.at[i, 'model_revision'][:12]}, suite {df.at[i, 'suite']}"
        note = f"another row has the same defense name with a different setup; this one: {what}"
        df.at[i, "notes"] = "; ".join(x for x in (df.at[i, "notes"], note) if x)
    return add_rank(df)


def _source_columns(result: Result) -> dict[str, str]:
    """source (published | measured), source_label (what the Source column shows), citation."""
    pub = result.published
    if pub is None:
        return {"source": "measured", "source_label": "measured", "citation": ""}
    label = f"published: {pub.source}/{pub.condition}"
    if not pub.comparable:
        label += f" ({pub.run.split(',')[0]})"
    return {"source": "published", "source_label": label, "citation": pub.citation}


def add_rank(df: pd.DataFrame) -> pd.DataFrame:
    """`rank`: 1 = the largest EM reduction among the OFFICIAL rows of the same model, EM
    dataset, regime (reversal or prevention) and condition; unofficial rows and rows without
    an EM reduction are not ranked (NaN)."""
    df = df.copy()
    df["rank"] = math.nan
    if "em_reduction" not in df.columns:
        return df
    mask = df["official"].astype(bool) & df["regime"].isin(["reversal", "prevention"])
    mask &= df["em_reduction"].notna()
    ranked = (
        df[mask]
        .groupby(["model", "em_dataset", "regime", "condition", "judge", "preset"])["em_reduction"]
        .rank(ascending=False, method="min")
    )
    df.loc[ranked.index, "rank"] = ranked
    return df


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
        self.sync_error: str | None = None

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
                except (EmArenaError, OSError) as e:  # shown on the page; the old data stay
                    self.sync_error = e.render() if isinstance(e, EmArenaError) else str(e)
            self._current = read_results(self.root, _parsed=self._parsed)
            return self._current


# --- samples.jsonl (the drill-down) -----------------------------------------------------------

#: The largest samples.jsonl the drill-down reads.
MAX_SAMPLES_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Samples:
    """One cell's sampled answers with their judge scores, and the lines that were not rows."""

    rows: list[SampleRow]
    errors: list[str]


@functools.lru_cache(maxsize=32)
def _read_samples(path: str, stamp: tuple[int, int]) -> Samples:
    rows: list[SampleRow] = []
    errors: list[str] = []
    if stamp[0] > MAX_SAMPLES_BYTES:
        return Samples([], [f"{stamp[0]:,} bytes: larger than the drill-down reads"])
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(SampleRow.model_validate_json(line))
            except ValidationError as e:
                first = e.errors()[0]
                key = ".".join(str(p) for p in first["loc"]) or "(line)"
                errors.append(f"line {i}: {key}: {first['msg']}")
    return Samples(rows, errors)


def read_samples(path: Path | None) -> Samples:
    """The rows of a samples.jsonl (cached by path, size and mtime); bad lines are reported,
    not fatal. A missing file gives no rows and says so."""
    if path is None:
        return Samples([], ["no samples.jsonl was published with this result"])
    try:
        st = Path(path).stat()
    except OSError as e:
        return Samples([], [f"{path}: cannot be read ({e.strerror or e})"])
    return _read_samples(str(path), (st.st_size, st.st_mtime_ns))
