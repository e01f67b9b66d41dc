"""The reliability suite's figures: run `pytest tests/reliability`, print one table.

Every test in tests/reliability/ records what it tried and how it ended (kill points, injected
faults, hostile inputs) into a ledger (tests/reliability/figures.py); this script runs the
whole folder with a fresh ledger and prints one row per (area, item): tried, handled (a clean
recovery, or a clear error with nothing wrong recorded), lost and duplicated (items that went
missing or were recorded twice), plus totals; then, for hostile submissions, one row per entry
point: tried, accepted (correctly), rejected with a specific message, accepted wrongly and
crashed (both must be 0).

    python bench/reliability.py                  # CI scale: 1 kill point per phase, ...
    python bench/reliability.py --scale full     # the full counts (3 kill points per phase, ...)
    python bench/reliability.py -- -k kill       # extra pytest arguments after --

Needs the data (EMARENA_MIRROR). Exits non-zero if a test failed, if a test recorded nothing
because it failed, or if anything was lost, duplicated or not handled.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.reliability.figures import ENV, SCALE_ENV, Figure, read  # noqa: E402

COLUMNS = ("area", "item", "tried", "handled", "lost", "duplicated")


def table(figures: list[Figure]) -> tuple[list[tuple], tuple]:
    """Rows summed per (area, item), in first-seen order, and the totals row."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for f in figures:
        s = sums[(f.area, f.item)]
        for i, v in enumerate((f.tried, f.handled, f.lost, f.duplicated)):
            s[i] += v
    rows = [(area, item, *v) for (area, item), v in sums.items()]
    totals = ("total", f"{len(rows)} items", *(sum(r[i] for r in rows) for i in range(2, 6)))
    return rows, totals


ENTRY_COLUMNS = ("entry point", "tried", "accepted", "rejected (specific message)",
                 "accepted wrongly", "crashed")  # fmt: skip


def entry_table(figures: list[Figure]) -> list[tuple]:
    """Hostile submissions summed per entry point, in first-seen order."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for f in figures:
        if f.entry:
            s = sums[f.entry]
            for i, v in enumerate((f.tried, f.accepted, f.rejected, f.wrongly_accepted,
                                   f.crashed)):  # fmt: skip
                s[i] += v
    return [(entry, *v) for entry, v in sums.items()]


def markdown(rows: list[tuple], totals: tuple | None = None, columns=COLUMNS) -> str:
    n_text = len(columns) - 5 if columns is ENTRY_COLUMNS else len(columns) - 4
    align = ["---"] * n_text + ["---:"] * (len(columns) - n_text)
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(align) + " |"]
    for r in [*rows, *([totals] if totals else [])]:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("ci", "full"), default="ci")
    ap.add_argument("--figures", type=Path, help="ledger file to write (default: a temp file)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()

    ledger = args.figures or Path(tempfile.mkdtemp(prefix="emarena-reliability-")) / "figures.jsonl"
    if ledger.exists():
        ledger.unlink()  # a fresh ledger: only this run's figures
    env = {
        **os.environ,
        ENV: str(ledger),
        SCALE_ENV: args.scale,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-rfE", *args.pytest_args]
    print(f"$ {ENV}={ledger} {SCALE_ENV}={args.scale} {shlex.join(cmd[1:])}", flush=True)
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    wall = time.time() - t0

    rows, totals = table(read(ledger))
    print()
    print(f"reliability figures ({args.scale} scale, {wall / 60:.1f} min, pytest exit {rc}):")
    print()
    print(markdown(rows, totals))
    print()
    entries = entry_table(read(ledger))
    if entries:
        print("hostile submissions by entry point:")
        print()
        print(markdown(entries, columns=ENTRY_COLUMNS))
        print()
    tried, handled, lost, dup = totals[2:]
    problems = []
    if rc != 0:
        problems.append(f"pytest failed (exit {rc}); a failed test records no figures")
    if not rows:
        problems.append("no figures were recorded")
    if handled < tried:
        problems.append(f"{tried - handled} of {tried} not handled")
    if lost or dup:
        problems.append(f"{lost} lost, {dup} duplicated (both must be 0)")
    wrong, crashed = (sum(r[i] for r in entries) for i in (4, 5))
    if wrong or crashed:
        problems.append(f"{wrong} hostile submission(s) accepted wrongly, {crashed} crashed "
                        "(both must be 0)")  # fmt: skip
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print(f"OK: {tried} tried, {handled} handled, 0 lost, 0 duplicated")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
