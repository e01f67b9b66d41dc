"""The reliability suite's ledger: every test adds what it tried and how it ended.

Each line of the ledger (JSONL, at $EMARENA_RELIABILITY_FIGURES, or a per-session temporary file)
is one group of injected faults or hostile inputs::

    {"area": "kill-resume", "item": "stage 2 (training)", "tried": 3, "handled": 3,
     "lost": 0, "duplicated": 0, "test": "tests/reliability/test_kill_resume.py::..."}

`tried` counts kill points, injected faults or hostile inputs; `handled` those that ended as
the suite demands (a clean recovery, or a clear error and nothing wrong recorded); `lost` and
`duplicated` count items (rows, judgements, uploads, requests) that went missing or were
recorded twice, which must be 0. `bench/reliability.py` runs the suite and prints the table.
A test records its figures only after it has checked them, so a failed test adds no row.

Hostile submissions also say which `entry` point they went through (`emarena validate`, the
Submit tab, the worker's check) and how each ended: `accepted` (correctly), `rejected` (with
the specific message), `wrongly_accepted` and `crashed` (both must be 0); `handled` is
accepted + rejected. Those tests record before they assert, so a failure shows in the table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "EMARENA_RELIABILITY_FIGURES"
#: The entry points hostile submissions go through (`Figure.entry`).
ENTRY_VALIDATE = "emarena validate"
ENTRY_TAB = "Submit tab"
ENTRY_QUEUE = "queue (worker's check, emarena submit)"
#: "ci" (the default: a reduced number of kill points and fuzz examples) or "full".
SCALE_ENV = "EMARENA_RELIABILITY_SCALE"


def scale() -> str:
    value = os.environ.get(SCALE_ENV, "ci")
    if value not in ("ci", "full"):
        raise ValueError(f"${SCALE_ENV}={value!r}: use 'ci' or 'full'")
    return value


def pick(ci: int, full: int) -> int:
    """How many of something to try at the current scale."""
    return full if scale() == "full" else ci


@dataclass(frozen=True)
class Figure:
    area: str
    item: str
    tried: int
    handled: int
    lost: int = 0
    duplicated: int = 0
    test: str = ""
    entry: str = ""
    accepted: int = 0
    rejected: int = 0
    wrongly_accepted: int = 0
    crashed: int = 0


class Ledger:
    def __init__(self, path: Path, test: str = ""):
        self.path = path
        self.test = test

    def record(
        self, area: str, item: str, *, tried: int, handled: int, lost: int = 0,
        duplicated: int = 0, entry: str = "", accepted: int = 0, rejected: int = 0,
        wrongly_accepted: int = 0, crashed: int = 0,
    ) -> None:
        fig = Figure(area, item, tried, handled, lost, duplicated, self.test, entry, accepted,
                     rejected, wrongly_accepted, crashed)  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(fig), sort_keys=True) + "\n")


def read(path: Path) -> list[Figure]:
    if not path.exists():
        return []
    return [Figure(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
