"""A run folder and its status.

runs/<run>/plan.json                 the cells, in order, and what was asked
runs/<run>/events.jsonl              append-only log (stage start / skip / done / fail)
runs/<run>/cells/<cell_id>/cell.json the cell; stage1, stage2 -> ../../stages/<key>
runs/<run>/stages/<key>/             content-addressed stage outputs, shared by cells
runs/<run>/stages/<key>.work/        a stage's resumable scratch (e.g. own summaries)
runs/<run>/stages/<key>.running.json / <key>.failed.json   in-flight and failure markers
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from emarena.protocol.cell import Cell
from emarena.protocol.stages import StageSpec, read_done, write_json_atomic


def read_events(root: Path) -> list[dict]:
    """A run folder's events.jsonl, in order ([] before the first event); a line cut by a kill
    is skipped. Reads only: unlike `Run(root)`, it never creates the folder."""
    p = Path(root) / "events.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


@dataclass
class Run:
    root: Path

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    def log(self, event: str, **fields) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"time": round(time.time(), 3), "event": event, "pid": os.getpid(), **fields}
        )
        with open(self.root / "events.jsonl", "a+b") as f:
            # A process killed mid-line leaves a torn last line: end it, so this event starts
            # on its own line (the torn fragment stays one unreadable line, skipped by events()).
            end = f.seek(0, os.SEEK_END)
            torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
            f.write((("\n" if torn else "") + line + "\n").encode())
            f.flush()
            os.fsync(f.fileno())

    def events(self) -> list[dict]:
        return read_events(self.root)

    def write_cell(self, cell: Cell, stages: list[StageSpec]) -> Path:
        d = self.cells_dir / cell.id
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            d / "cell.json",
            {
                "id": cell.id,
                "label": cell.label,
                "cell": cell.model_dump(mode="json"),
                "stages": [s.key for s in stages],
            },
        )
        for i, s in enumerate(stages, start=1):
            link = d / f"stage{i}"
            target = Path("..") / ".." / "stages" / s.key
            if link.is_symlink() or link.exists():
                if os.readlink(link) == str(target):
                    continue
                link.unlink()
            os.symlink(target, link)
        return d

    def read_cells(self) -> list[dict]:
        if not self.cells_dir.is_dir():
            return []
        plan = self.root / "plan.json"
        order = json.loads(plan.read_text()).get("cells", []) if plan.exists() else []
        cells = {
            p.parent.name: json.loads(p.read_text()) for p in self.cells_dir.glob("*/cell.json")
        }
        ordered = [cells.pop(i) for i in order if i in cells]
        return ordered + sorted(cells.values(), key=lambda c: c["label"])

    def stage_status(self, key: str) -> tuple[str, str]:
        """(state, detail) with state in done | running | interrupted | failed | pending."""
        if read_done(self.stages_dir / key) is not None:
            return "done", ""
        running = self.stages_dir / f"{key}.running.json"
        if running.exists():
            try:
                pid = json.loads(running.read_text())["pid"]
                os.kill(pid, 0)
                return "running", f"pid {pid}"
            except (ProcessLookupError, json.JSONDecodeError, KeyError):
                return "interrupted", "its process died; rerun the same command to resume"
            except PermissionError:
                return "running", "another user's process"
        failed = self.stages_dir / f"{key}.failed.json"
        if failed.exists():
            try:
                return "failed", json.loads(failed.read_text()).get("error", "")
            except json.JSONDecodeError:
                return "failed", "(unreadable failure record)"
        return "pending", ""
