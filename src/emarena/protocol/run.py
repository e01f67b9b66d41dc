"""A run folder: a view of what one `score`, `grid` or worker request asked for.

    runs/<run>/plan.json                 what was asked, the cells, the store entries (schema 2)
    runs/<run>/events.jsonl              the driver's append-only log
    runs/<run>/events.d/<host>-<pid>.jsonl  each task process's own log (safe on shared file
                                         systems: one writer per file, merged by `read_events`)
    runs/<run>/refs.json                 the store entries this run uses (`emarena store du/gc`)
    runs/<run>/cells/<cell_id>/cell.json the cell, its stage keys and evaluation key
    runs/<run>/cells/<cell_id>/stage1..n, generate, judge, metrics -> links into the store
    runs/<run>/failed/<task>.json        why a task failed (removed when it later succeeds)
    runs/<run>/report.md                 the tables and plots of the run's cells

Nothing a run computes lives in the run folder: deleting it loses nothing but the view (the
store's `gc` then reclaims what no other run uses).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from emarena.protocol.cell import Cell
from emarena.protocol.store import Store, read_json, write_json_atomic


def _read_lines(p: Path) -> list[dict]:
    out = []
    try:
        text = p.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_events(root: Path) -> list[dict]:
    """A run's events: the driver's events.jsonl and every task process's file, merged in time
    order ([] before the first event). Lines cut by a kill are skipped. Never creates files."""
    root = Path(root)
    events = _read_lines(root / "events.jsonl")
    d = root / "events.d"
    if d.is_dir():
        for p in sorted(d.glob("*.jsonl")):
            events += _read_lines(p)
    return sorted(events, key=lambda e: e.get("time", 0))


def append_line(path: Path, line: str) -> None:
    """Append one line, fsynced; a torn last line left by a kill is ended first, so this one
    starts on its own line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"
        f.write((("\n" if torn else "") + line + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _relink(link: Path, target: Path) -> None:
    """Point `link` at `target` with a relative link between their real paths, so a run folder
    and its store that move together (a bind-mounted volume seen from the host, a copied
    folder) keep working, whatever symbolic links led to them."""
    link.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(os.path.realpath(target), os.path.realpath(link.parent))
    if link.is_symlink():
        if os.readlink(link) == rel:
            return
        link.unlink()
    elif link.exists():
        import shutil

        shutil.rmtree(link) if link.is_dir() else link.unlink()
    os.symlink(rel, link)


@dataclass
class Run:
    root: Path
    task_log: bool = False
    """True in a task process: events go to events.d/<host>-<pid>.jsonl, not events.jsonl."""
    driver: int | None = None
    """In a task process: the pid of the driver (`emarena score` / `grid`) that started it,
    recorded in every event, so a run's events can be told apart per invocation."""

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    @property
    def events_file(self) -> Path:
        if self.task_log:
            return self.root / "events.d" / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        return self.root / "events.jsonl"

    def log(self, event: str, **fields) -> None:
        line = json.dumps(
            {"time": round(time.time(), 3), "event": event, "pid": os.getpid(),
             "driver": self.driver if self.driver is not None else os.getpid(), **fields},
            default=str,
        )
        append_line(self.events_file, line)

    def events(self) -> list[dict]:
        return read_events(self.root)

    def plan(self) -> dict:
        return read_json(self.root / "plan.json") or {}

    def store(self) -> Store:
        """The store this run was planned against (plan.json), else the default one."""
        root = self.plan().get("store")
        return Store.open(root)

    def write_cell(self, cell: Cell, stages: list[str], eval_key: str, store: Store) -> Path:
        d = self.cells_dir / cell.id
        d.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            d / "cell.json",
            {
                "id": cell.id,
                "label": cell.label,
                "cell": cell.model_dump(mode="json"),
                "stages": list(stages),
                "eval": eval_key,
            },
        )
        for i, key in enumerate(stages, start=1):
            _relink(d / f"stage{i}", store.entry("stages", key).path)
        _relink(d / "generate", store.entry("evals", eval_key).path)
        return d

    def link(self, cell_id: str, name: str, target: Path) -> None:
        """Point cells/<cell_id>/<name> at a store entry (judge, metrics)."""
        _relink(self.cells_dir / cell_id / name, target)

    def read_cells(self) -> list[dict]:
        if not self.cells_dir.is_dir():
            return []
        order = self.plan().get("cells", [])
        cells = {}
        for p in self.cells_dir.glob("*/cell.json"):
            rec = read_json(p)
            if rec is not None:
                cells[p.parent.name] = rec
        ordered = [cells.pop(i) for i in order if i in cells]
        return ordered + sorted(cells.values(), key=lambda c: c["label"])

    # -- references into the store -------------------------------------------------------------

    def refs(self) -> list[str]:
        rec = read_json(self.root / "refs.json")
        return list(rec.get("entries", [])) if rec else []

    def add_refs(self, names: list[str]) -> None:
        have = self.refs()
        new = [n for n in names if n not in have]
        if new or not (self.root / "refs.json").exists():
            write_json_atomic(self.root / "refs.json", {"entries": have + new})

    # -- failures ---------------------------------------------------------------------------------

    def fail(self, task: str, error: str, detail: str = "") -> None:
        with contextlib.suppress(OSError):
            write_json_atomic(self.root / "failed" / f"{task}.json",
                              {"task": task, "error": error, "detail": detail,
                               "time": time.time()})

    def clear_failure(self, task: str) -> None:
        (self.root / "failed" / f"{task}.json").unlink(missing_ok=True)

    def failure(self, task: str) -> dict | None:
        return read_json(self.root / "failed" / f"{task}.json")

    def stage_status(self, key: str, store: Store | None = None) -> tuple[str, str]:
        """(state, detail) with state in done | running | interrupted | failed | pending."""
        store = store or self.store()
        entry = store.entry("stages", key)
        if entry.done() is not None:
            ok, why = entry.check()
            return ("done", "") if ok else ("failed", f"damaged in the store: {why}")
        owner = store.holder(entry)
        if owner is not None:
            return "running", f"pid {owner.get('pid')} on {owner.get('host')}"
        failed = self.failure(f"train-{key}")
        if failed is not None and "KeyboardInterrupt" not in str(failed.get("error", "")):
            return "failed", failed.get("error", "")
        started = any(e.get("stage") == key and e.get("event") == "stage_train_start"
                      for e in self.events())
        if started:
            return "interrupted", "its process died; rerun the same command to resume"
        return "pending", ""
