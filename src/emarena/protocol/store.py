"""The content-addressed store: every stage, generation, judgement and metric, done once.

One store serves every run, grid and worker on a machine (or a cluster, on a shared file
system). An entry's key is the sha256 of everything that determines its content, so two runs
that need the same thing (the EM stage of a model, EM dataset and seed; the base model's
answers; a judge's scores of those answers) find it under the same key and never redo it.
A run folder is only a view: its plan, its events and links into the store.

    $EMARENA_STORE  (default: $EMARENA_CACHE/store)
      stages/<key>/      a LoRA training stage: adapter/, data.jsonl, build.json, DONE.json
      summaries/<key>/   a model's own summaries (SGTR data), one row per article
      evals/<key>/       one model state's answers: generations.jsonl, choices.jsonl, DONE.json
      judgements/<key>/  one judge's scores of one eval entry: judgements.jsonl, DONE.json
      metrics/<key>/     one cell's result.json and samples.jsonl, DONE.json
      claims/<kind>/<key>/  who is building that entry now (owner.json, refreshed while alive)
      runs/<id>.json     the run folders that use this store (for `store du` and `store gc`)
      tmp/               entries being built (renamed into place when complete)

Rules every entry follows (the nanochat rule, "the marker is written last"):
  * an entry is done only when its DONE.json exists, records the inputs asked for, and every
    file it lists still has the recorded sha256 (`Entry.check`); anything else is not used;
  * whoever builds an entry first *claims* it (`Store.claim`: an atomic `mkdir`, which is
    atomic on local and network file systems alike); a second process that wants the same entry
    waits for the claim to be released and then finds it done. A claim whose owner died (its
    pid is gone on the same host, or it stopped refreshing `owner.json` for `STALE_SECONDS`) is
    broken by an atomic rename, so exactly one waiter takes over;
  * a damaged or half-written entry (DONE.json missing, unreadable, recording other inputs, or
    a file whose hash changed) is moved aside and built again, never read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.errors import EmArenaError

ENV_STORE = "EMARENA_STORE"

#: Entry kinds, each a folder of the store.
KINDS = ("stages", "summaries", "evals", "judgements", "metrics")

DONE = "DONE.json"
#: A claim not refreshed for this long is taken to belong to a dead process (any host).
STALE_SECONDS = 600.0
#: How often a live claim refreshes its owner.json.
HEARTBEAT_SECONDS = 20.0


def store_dir(explicit: str | Path | None = None) -> Path:
    """The store folder: an explicit path > $EMARENA_STORE > $EMARENA_CACHE/store."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get(ENV_STORE)
    if env:
        return Path(env).expanduser().absolute()
    return (settings.cache_dir() / "store").absolute()


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON written to a temp file, fsynced and renamed into place: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:
            e.filename = str(path)
        raise


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def sha256_file(path: Path) -> str:
    from emarena.data.fetch import sha256_file as _sha

    return _sha(path)


def tree_files(folder: Path) -> list[Path]:
    """Every file under `folder` except DONE.json, sorted (symlinks are not followed)."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink() and p.name != DONE
    )


def tree_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"sha256", "bytes"}} of every file under `folder` (DONE.json aside)."""
    return {
        str(p.relative_to(folder)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in tree_files(folder)
    }


def folder_bytes(folder: Path) -> int:
    total = 0
    for p in Path(folder).rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


# --------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True)
class Entry:
    """One entry of the store: `<store>/<kind>/<key>/`."""

    store: Store
    kind: str
    key: str

    @property
    def path(self) -> Path:
        return self.store.root / self.kind / self.key

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.key}"

    def done(self) -> dict | None:
        """The DONE.json record, or None (missing or unreadable)."""
        return read_json(self.path / DONE)

    def check(self, inputs: Any = None, *, rows: bool = False) -> tuple[bool, str]:
        """(usable, why not). Usable: DONE.json exists, records `inputs` (when given), and every
        file it lists is there with the recorded sha256 (`rows`: row files may have grown past
        what DONE.json recorded only if their first recorded bytes are intact; see `_rows_ok`)."""
        done = self.done()
        if done is None:
            if self.path.exists():
                return False, "no DONE.json (unfinished or killed)"
            return False, "missing"
        if inputs is not None and done.get("inputs") != inputs:
            return False, "made from other inputs"
        for rel, meta in (done.get("outputs") or {}).items():
            p = self.path / rel
            if not p.is_file():
                return False, f"{rel} is missing"
            if p.stat().st_size != meta.get("bytes"):
                return False, f"{rel} has {p.stat().st_size} bytes, DONE.json recorded " \
                    f"{meta.get('bytes')}"
            if sha256_file(p) != meta.get("sha256"):
                return False, f"{rel} does not match its recorded sha256"
        return True, ""

    def is_done(self, inputs: Any = None) -> bool:
        return self.check(inputs)[0]

    def write_done(self, inputs: Any, **extra: Any) -> dict:
        """Hash every file of the entry and write DONE.json last, atomically."""
        record = {
            "schema_version": 1,
            "kind": self.kind,
            "key": self.key,
            "inputs": inputs,
            "outputs": tree_hashes(self.path),
            "finished": time.time(),
            **extra,
        }
        write_json_atomic(self.path / DONE, record)
        return record

    def discard(self, reason: str) -> None:
        """Move the entry aside (atomic) and delete it: never read a damaged entry."""
        if not self.path.exists():
            return
        aside = self.store.root / "tmp" / f"discarded-{self.kind}-{self.key}-{uuid.uuid4().hex[:8]}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        shutil.rmtree(aside, ignore_errors=True)
        self.store.note(f"discarded {self.name}: {reason}")

    def tmp_dir(self) -> Path:
        """A fresh folder to build this entry in; `publish` renames it into place."""
        d = self.store.root / "tmp" / f"{self.kind}-{self.key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        d.mkdir(parents=True)
        return d

    def publish(self, tmp: Path) -> None:
        """Rename a finished build folder into place (the entry must not exist)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.discard("replaced by a new build")
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------------
# Claims


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """A held claim on an entry; refreshed by a heartbeat thread until released."""

    path: Path
    owner: dict[str, Any]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(OSError):
                    os.utime(self.path / "owner.json")

        self._thread = threading.Thread(target=beat, name=f"claim:{self.path.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        shutil.rmtree(self.path, ignore_errors=True)


class ClaimTimeout(EmArenaError):
    """Waited too long for another process's claim."""


# --------------------------------------------------------------------------------------------
# The store


@dataclass(frozen=True)
class Store:
    root: Path

    @classmethod
    def open(cls, explicit: str | Path | None = None) -> Store:
        root = store_dir(explicit)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    def entry(self, kind: str, key: str) -> Entry:
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}")
        return Entry(self, kind, key)

    def note(self, message: str) -> None:
        """Append a line to the store's own log (damage found, claims broken, gc)."""
        line = json.dumps({"time": round(time.time(), 3), "pid": os.getpid(),
                           "host": socket.gethostname(), "message": message})
        with contextlib.suppress(OSError), open(self.root / "store.log", "a") as f:
            f.write(line + "\n")

    # -- claims ------------------------------------------------------------------------------

    def claim_path(self, entry: Entry) -> Path:
        return self.root / "claims" / entry.kind / entry.key

    def holder(self, entry: Entry) -> dict | None:
        """The owner.json of a live claim on `entry`, or None."""
        path = self.claim_path(entry)
        owner = read_json(path / "owner.json")
        if owner is None:
            return None
        return None if self._stale(path, owner) else owner

    def _stale(self, path: Path, owner: dict) -> bool:
        try:
            age = time.time() - (path / "owner.json").stat().st_mtime
        except OSError:
            return True
        if age > STALE_SECONDS:
            return True
        return owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"]))

    def _break(self, path: Path, why: str) -> None:
        aside = path.with_name(f".broken-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, aside)  # atomic: of two breakers, one wins
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)
        self.note(f"broke the claim {path.relative_to(self.root)}: {why}")

    def try_claim(self, entry: Entry, what: str = "") -> Claim | None:
        """Claim `entry` now, or return None if a live process holds it."""
        path = self.claim_path(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "what": what, "token": uuid.uuid4().hex}
        for _ in range(3):
            try:
                tmp = path.with_name(f".new-{path.name}-{owner['token']}")
                tmp.mkdir()
                write_json_atomic(tmp / "owner.json", owner)
                os.rename(tmp, path)  # fails if the claim exists: exactly one process wins
            except OSError:
                shutil.rmtree(path.with_name(f".new-{path.name}-{owner['token']}"),
                              ignore_errors=True)
                held = read_json(path / "owner.json")
                if held is None:
                    # mid-creation by another process, or a claim folder without an owner
                    if path.exists() and time.time() - path.stat().st_mtime > 5:
                        self._break(path, "no owner.json")
                    else:
                        return None
                    continue
                if self._stale(path, held):
                    self._break(path, f"owner pid {held.get('pid')} on {held.get('host')} "
                                "is gone or stopped refreshing its claim")
                    continue
                return None
            claim = Claim(path, owner)
            claim.start()
            return claim
        return None

    @contextlib.contextmanager
    def claim(
        self, entry: Entry, what: str = "", *, wait: float = 7 * 24 * 3600.0, poll: float = 0.5,
        on_wait=None,
    ) -> Iterator[Claim]:
        """Hold the claim on `entry` for the block; wait (up to `wait` seconds) while another
        live process holds it. `on_wait(owner)` is called once when waiting starts."""
        deadline = time.time() + wait
        told = False
        while True:
            c = self.try_claim(entry, what)
            if c is not None:
                break
            if not told and on_wait is not None:
                on_wait(read_json(self.claim_path(entry) / "owner.json") or {})
                told = True
            if time.time() > deadline:
                raise ClaimTimeout(
                    f"{entry.name} has been claimed by another process for over {wait:.0f} s",
                    where=str(self.claim_path(entry)),
                    fix="wait for that process, or stop it; a claim whose process died is "
                    f"broken automatically after {STALE_SECONDS:.0f} s",
                )
            time.sleep(poll)
        try:
            yield c
        finally:
            c.release()

    # -- runs that use this store ---------------------------------------------------------------

    def register_run(self, run_root: Path) -> None:
        import hashlib

        run_root = Path(run_root).absolute()
        rid = hashlib.sha256(str(run_root).encode()).hexdigest()[:16]
        p = self.root / "runs" / f"{rid}.json"
        if read_json(p) is None:
            write_json_atomic(p, {"path": str(run_root), "registered": time.time()})

    def runs(self) -> list[Path]:
        """Run folders registered with this store that still exist."""
        out = []
        for p in sorted((self.root / "runs").glob("*.json")):
            rec = read_json(p)
            if rec and Path(rec["path"]).is_dir():
                out.append(Path(rec["path"]))
        return out

    def forget_missing_runs(self) -> list[str]:
        gone = []
        for p in sorted((self.root / "runs").glob("*.json")):
            rec = read_json(p)
            if not rec or not Path(rec["path"]).is_dir():
                gone.append(rec["path"] if rec else p.name)
                p.unlink(missing_ok=True)
        return gone

    def entries(self) -> list[Entry]:
        out = []
        for kind in KINDS:
            d = self.root / kind
            if d.is_dir():
                out += [Entry(self, kind, p.name) for p in sorted(d.iterdir()) if p.is_dir()]
        return out


# --------------------------------------------------------------------------------------------
# Usage and garbage collection (`emarena store du`, `emarena store gc`)


@dataclass
class RunUsage:
    run: Path
    entries: list[str]
    bytes: int
    """Bytes of every entry the run references."""
    own_bytes: int
    """Bytes of the entries no other registered run references."""


@dataclass
class Usage:
    store: Path
    runs: list[RunUsage]
    entry_bytes: dict[str, int]
    referenced: set[str]
    tmp_bytes: int

    @property
    def total(self) -> int:
        return sum(self.entry_bytes.values()) + self.tmp_bytes

    @property
    def unreferenced(self) -> list[str]:
        return sorted(set(self.entry_bytes) - self.referenced)


def run_refs(run_root: Path) -> list[str]:
    rec = read_json(Path(run_root) / "refs.json")
    return list(rec.get("entries", [])) if rec else []


def usage(store: Store, runs: list[Path] | None = None) -> Usage:
    """What each run references and its size; what nothing references."""
    entry_bytes = {e.name: folder_bytes(e.path) for e in store.entries()}
    registered = store.runs()
    refs = {r: [n for n in run_refs(r)] for r in registered}
    for r in runs or []:
        refs.setdefault(Path(r).absolute(), run_refs(r))
    counts: dict[str, int] = {}
    for names in refs.values():
        for n in set(names):
            counts[n] = counts.get(n, 0) + 1
    out = []
    for r in (runs and [Path(x).absolute() for x in runs]) or registered:
        names = [n for n in refs.get(r, []) if n in entry_bytes]
        out.append(RunUsage(
            run=r, entries=names, bytes=sum(entry_bytes[n] for n in names),
            own_bytes=sum(entry_bytes[n] for n in names if counts.get(n, 0) == 1),
        ))
    tmp = store.root / "tmp"
    return Usage(store=store.root, runs=out, entry_bytes=entry_bytes, referenced=set(counts),
                 tmp_bytes=folder_bytes(tmp) if tmp.is_dir() else 0)


def _tmp_owner_dead(p: Path) -> bool:
    """A tmp/ folder is named <what>-<key>-<pid>-<rand> or <what>-<tag>-<pid>: dead pid -> True."""
    for part in reversed(p.name.split("-")):
        if part.isdigit():
            return not _pid_alive(int(part))
    return True


def collect(store: Store, *, dry_run: bool = False) -> dict[str, Any]:
    """Delete what no registered run references: entries (unless claimed now), tmp folders of
    dead processes, stale claims; forget run folders that no longer exist."""
    forgotten = [] if dry_run else store.forget_missing_runs()
    use = usage(store)
    removed, freed, kept_claimed = [], 0, []
    for name in use.unreferenced:
        kind, key = name.split("/", 1)
        entry = store.entry(kind, key)
        if store.holder(entry) is not None:
            kept_claimed.append(name)
            continue
        removed.append(name)
        freed += use.entry_bytes[name]
        if not dry_run:
            shutil.rmtree(entry.path, ignore_errors=True)
    tmp = store.root / "tmp"
    if tmp.is_dir():
        for p in sorted(tmp.iterdir()):
            if _tmp_owner_dead(p):
                freed += folder_bytes(p) if p.is_dir() else p.stat().st_size
                removed.append(f"tmp/{p.name}")
                if not dry_run:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    claims = store.root / "claims"
    if claims.is_dir() and not dry_run:
        for kind_dir in claims.iterdir():
            for c in list(kind_dir.iterdir()) if kind_dir.is_dir() else []:
                owner = read_json(c / "owner.json")
                if owner is None or store._stale(c, owner):
                    store._break(c, "gc: stale")
    if not dry_run and removed:
        store.note(f"gc removed {len(removed)} entries ({freed} bytes)")
    return {"removed": removed, "freed_bytes": freed, "kept_claimed": kept_claimed,
            "forgotten_runs": forgotten, "dry_run": dry_run}
