"""The submission queue: one JSON per submission in the requests repo, and the worker loop.

    requests/<config_hash[:16]>.json     PENDING -> RUNNING -> FINISHED | FAILED

A request records the submission (name, defense.yaml and README text, config hash), who
submitted it, its status and every transition in `history` ({status, time, worker, note}),
the error text and log location of a failure, and while RUNNING the worker, its claim id and
its last heartbeat.

Every change is one `emarena.hub.transact`: read the requests at the head commit, decide,
commit with that head as parent; if another worker or submitter committed first, read again
and decide again. So two workers never both claim one request, and a write whose answer was
lost is recognised on the retry (each change is recognisable from what it wrote: the claim id,
the status, the heartbeat).

Never stuck: a RUNNING request whose heartbeat is older than `stale_after_s` (its worker died)
is put back to PENDING by the next `claim_next` with a history note, up to `max_attempts`
claims in all; after that it is FAILED with the reason. Requests are claimed oldest first
(submission time); a re-queued request keeps its place.

Times are the workers' UTC clocks: keep `stale_after_s` well above clock skew plus the
heartbeat interval.

A request is data anyone with write access to the repo can plant. Its one-line texts (`name`,
`submitter`, history notes) are escaped as they are read (`emarena.textsafe.escape`, which
changes nothing in ordinary text), so a name with a newline or a terminal escape in it reaches
no log and no terminal; and `checked_submission` writes its files without following any link
and validates them, as `emarena validate` does, before any work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emarena import hub, textsafe
from emarena.errors import ConfigError, EmArenaError

log = logging.getLogger(__name__)

Status = Literal["PENDING", "RUNNING", "FINISHED", "FAILED"]
#: A submission in one of these states is not queued again.
ACTIVE_OR_DONE: tuple[Status, ...] = ("PENDING", "RUNNING", "FINISHED")

#: Each heartbeat is a commit to the requests repo: every 2 minutes keeps a handful of workers
#: well inside the Hub's commit rate limits, and 15 minutes of silence is 7 missed beats.
HEARTBEAT_S = 120.0
STALE_AFTER_S = 15 * 60.0
MAX_ATTEMPTS = 3
ERROR_MAX_CHARS = 4000
DEFAULT_SCORER = "emarena.protocol.score:score"


class QueueError(EmArenaError):
    """A queue operation that cannot proceed (not a Hub failure: that is `hub.HubError`)."""


def now() -> datetime:
    return datetime.now(UTC)


class HistoryEntry(BaseModel):
    """One status transition (or a note on one)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    status: Status
    """The status after this entry."""
    time: datetime
    """When (UTC)."""
    worker: str | None = None
    """The worker that made the change; null for the submitter."""
    note: str = ""
    """Why, in words (escaped: one printable line)."""

    @field_validator("note")
    @classmethod
    def _one_line(cls, v: str) -> str:
        return textsafe.escape(v)


class Request(BaseModel):
    """`requests/<config_hash[:16]>.json`: one submission in the queue."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    schema_version: Literal[1] = 1
    """Version of this file format."""
    name: str
    """Submission name (the folder name); escaped as read, so a planted one is shown as written
    (`checked_submission` refuses any name that is not a valid submission name)."""
    config_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the validated submission (`Submission.config_hash`): the dedupe key."""
    yaml: str
    """defense.yaml exactly as submitted."""
    readme: str
    """README.md of the submission, as submitted."""
    submitter: str
    """Who submitted it (free text, escaped as read; never a credential)."""
    submitted: datetime
    """When it was (last) submitted; the queue order."""
    status: Status
    """PENDING | RUNNING | FINISHED | FAILED."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """Every transition, oldest first."""
    error: str | None = None
    """Why it FAILED (the error text, cut at 4000 characters)."""
    log: str | None = None
    """Where the worker's log of the last run is (`<worker>:<path>` on the worker host)."""
    worker: str | None = None
    """The worker that holds (or last held) it."""
    claim_id: str | None = None
    """Identifies the current claim: a worker acts on a request only while this is its own."""
    heartbeat: datetime | None = None
    """The running worker's last sign of life (UTC)."""
    attempts: int = Field(default=0, ge=0)
    """How many times a worker claimed it."""
    results: list[str] = Field(default_factory=list)
    """Paths in the results repo this submission's run published (when FINISHED)."""

    @field_validator("name", "submitter")
    @classmethod
    def _shown_as_written(cls, v: str) -> str:
        # Idempotent, so a request read and written again is unchanged.
        return textsafe.escape(v)

    @property
    def path(self) -> str:
        return request_path(self.config_hash)

    @property
    def key(self) -> str:
        return self.config_hash[:16]

    def dump(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode("utf-8")

    def moved(self, status: Status, *, by: str | None, note: str, **changes: Any) -> Request:
        """A copy in `status` with a history entry by worker `by` appended (and `changes`)."""
        entry = HistoryEntry(status=status, time=now(), worker=by, note=note)
        return self.model_copy(
            update={"status": status, "history": [*self.history, entry], **changes}
        )


def request_path(config_hash: str) -> str:
    return f"{hub.REQUESTS_DIR}/{config_hash[:16]}.json"


def _parse(path: str, data: bytes) -> Request:
    try:
        return Request.model_validate_json(data)
    except ValueError as e:
        raise QueueError(
            f"{path}: not a valid request ({str(e).splitlines()[0]})",
            fix="repair or delete the file in the requests repo",
        ) from None


def read_requests(v: hub.RepoView) -> dict[str, Request]:
    """Every valid request at the view's commit, by repo path.

    A file that is not a valid request is skipped with a logged warning, so one damaged file
    never blocks the queue (`submit` of that very configuration still reports it).
    """
    out = {}
    for path in v.list_files(hub.REQUESTS_DIR):
        if not path.endswith(".json"):
            continue
        data = v.read(path)
        if data is None:
            continue
        try:
            out[path] = _parse(path, data)
        except QueueError as e:
            log.warning("skipping %s", e.what)
    return out


def list_requests(requests_repo: str) -> list[Request]:
    """All requests, oldest first."""
    reqs = read_requests(hub.view(requests_repo)).values()
    return sorted(reqs, key=lambda r: (r.submitted, r.key))


def get_request(requests_repo: str, config_hash: str) -> Request | None:
    data = hub.view(requests_repo).read(request_path(config_hash))
    return _parse(request_path(config_hash), data) if data is not None else None


# --- submit -----------------------------------------------------------------------------------


@dataclass
class Submitted:
    request: Request
    created: bool
    """False: an identical configuration was already queued, running or finished."""
    message: str


def submit(path: str | Path, requests_repo: str, submitter: str) -> Submitted:
    """Validate the submission at `path` and queue it as PENDING (once per configuration).

    Invalid: `SubmissionError` (a ConfigError) with one line per problem, nothing written.
    An identical configuration (same config hash) already PENDING, RUNNING or FINISHED is
    reported and not queued again; a FAILED one is queued again, its history kept.
    """
    from emarena.submission import load_submission, read_texts

    sub = load_submission(path)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    yaml_text, readme = read_texts(folder)  # as validated: never through a link
    submitter = submitter.strip() or "anonymous"
    token = os.environ.get(hub.ENV_TOKEN)
    if token and token in submitter:
        raise ConfigError("--submitter contains the Hub token", fix="give a name, not a token")
    rpath = request_path(sub.config_hash)
    outcome: dict[str, Any] = {}

    def build(v: hub.RepoView) -> dict[str, bytes] | None:
        outcome.clear()
        data = v.read(rpath)
        old = _parse(rpath, data) if data is not None else None
        if old is not None and old.config_hash != sub.config_hash:
            raise QueueError(
                f"{rpath} holds another configuration ({old.name}, {old.config_hash[:12]}...) "
                "with the same 16-character hash prefix",
                fix="change the submission (e.g. its description) and submit again",
            )
        if old is not None and old.status in ACTIVE_OR_DONE:
            outcome["request"], outcome["created"] = old, False
            return None
        note = f"submitted by {submitter}"
        if old is None:
            req = Request(
                name=sub.name,
                config_hash=sub.config_hash,
                yaml=yaml_text,
                readme=readme,
                submitter=submitter,
                submitted=now(),
                status="PENDING",
                history=[HistoryEntry(status="PENDING", time=now(), note=note)],
            )
        else:  # FAILED before: queue again, keep the history
            req = old.moved(
                "PENDING",
                by=None,
                note=f"re-submitted by {submitter} after FAILED",
                yaml=yaml_text,
                readme=readme,
                submitter=submitter,
                submitted=now(),
                error=None,
                worker=None,
                claim_id=None,
                heartbeat=None,
                attempts=0,
                results=[],
            )
        outcome["request"], outcome["created"] = req, True
        return {rpath: req.dump()}

    hub.ensure_repo(requests_repo)
    res = hub.transact(requests_repo, build, f"submit {sub.name} ({sub.config_hash[:12]})")
    req: Request = outcome["request"]
    if outcome["created"] or res.recovered:
        return Submitted(req, True, f"queued {sub.name} as {rpath} (PENDING)")
    return Submitted(
        req,
        False,
        f"{sub.name}: an identical configuration is already {req.status} as {rpath} "
        f"(submitted {req.submitted:%Y-%m-%d %H:%M} UTC by {req.submitter}); not queued again",
    )


# --- claim, heartbeat, finish, fail -----------------------------------------------------------


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _requeue_stale(
    reqs: dict[str, Request], *, stale_after_s: float, max_attempts: int, worker_id: str
) -> dict[str, Request]:
    """RUNNING requests whose worker stopped heartbeating, re-queued or FAILED."""
    changed = {}
    cutoff = now() - timedelta(seconds=stale_after_s)
    for path, r in reqs.items():
        if r.status != "RUNNING":
            continue
        beat = r.heartbeat or (r.history[-1].time if r.history else r.submitted)
        if beat >= cutoff:
            continue
        silent = f"worker {r.worker} sent no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC"
        if r.attempts < max_attempts:
            changed[path] = r.moved(
                "PENDING",
                by=worker_id,
                note=f"{silent}; re-queued (attempt {r.attempts} of {max_attempts} lost)",
                claim_id=None,
                heartbeat=None,
            )
        else:
            reason = (
                f"{silent}; gave up after {r.attempts} attempt(s), each lost without a result "
                f"(max_attempts={max_attempts})"
            )
            changed[path] = r.moved(
                "FAILED",
                by=worker_id,
                note=reason,
                error=reason,
                claim_id=None,
                heartbeat=None,
            )
    return changed


def claim_next(
    requests_repo: str,
    worker_id: str,
    *,
    stale_after_s: float = STALE_AFTER_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Request | None:
    """Claim the oldest PENDING request (RUNNING, with a fresh claim id); None if none.

    In the same commit, requests whose worker died are re-queued or FAILED (see the module
    docstring).
    """
    claim_id = uuid.uuid4().hex
    picked: dict[str, Request] = {}

    def build(v: hub.RepoView) -> dict[str, bytes] | None:
        picked.clear()
        reqs = read_requests(v)
        for path, r in reqs.items():  # our own claim landed, but its answer was lost
            if r.claim_id == claim_id:
                picked[path] = r
                return None
        changed = _requeue_stale(
            reqs, stale_after_s=stale_after_s, max_attempts=max_attempts, worker_id=worker_id
        )
        reqs = {**reqs, **changed}
        pending = sorted(
            (r for r in reqs.values() if r.status == "PENDING"), key=lambda r: (r.submitted, r.key)
        )
        if pending:
            r = pending[0]
            attempt = r.attempts + 1
            claimed = r.moved(
                "RUNNING",
                by=worker_id,
                note=f"claimed (attempt {attempt} of {max_attempts})",
                worker=worker_id,
                claim_id=claim_id,
                heartbeat=now(),
                attempts=attempt,
                error=None,
            )
            changed[r.path] = claimed
            picked[r.path] = claimed
        return {p: r.dump() for p, r in changed.items()}

    hub.transact(requests_repo, build, f"worker {worker_id}: claim next request")
    return next(iter(picked.values()), None)


def _update_own(
    requests_repo: str,
    req: Request,
    change: Callable[[Request], Request | None],
    message: str,
) -> bool:
    """Apply `change` to the request if the claim is still `req`'s; False if it was lost."""
    if req.claim_id is None:
        raise QueueError(f"{req.path}: not a claimed request", fix="use claim_next's result")
    state = {"own": False}

    def build(v: hub.RepoView) -> dict[str, bytes] | None:
        data = v.read(req.path)
        cur = _parse(req.path, data) if data is not None else None
        state["own"] = cur is not None and cur.claim_id == req.claim_id
        if cur is None or not state["own"]:
            return None
        new = change(cur)
        return {req.path: new.dump()} if new is not None else None

    hub.transact(requests_repo, build, message)
    return state["own"]


def heartbeat(requests_repo: str, req: Request) -> bool:
    """Refresh the running request's heartbeat; False if the claim is no longer ours."""
    return _update_own(
        requests_repo,
        req,
        lambda cur: (
            cur.model_copy(update={"heartbeat": now()}) if cur.status == "RUNNING" else None
        ),
        f"worker {req.worker}: heartbeat {req.key}",
    )


def finish(requests_repo: str, req: Request, results: list[str]) -> bool:
    """Mark FINISHED with the published result paths; False if the claim was lost meanwhile."""

    def change(cur: Request) -> Request | None:
        if cur.status == "FINISHED":
            return None  # already done (a retry after a lost answer)
        return cur.moved(
            "FINISHED",
            by=req.worker,
            note=f"published {len(results)} file(s)",
            results=sorted(results),
            heartbeat=now(),
            error=None,
        )

    return _update_own(requests_repo, req, change, f"worker {req.worker}: finished {req.key}")


def release(requests_repo: str, req: Request, note: str) -> bool:
    """Put a claimed request back to PENDING (the worker is stopping), keeping its place."""

    def change(cur: Request) -> Request | None:
        if cur.status != "RUNNING":
            return None
        return cur.moved("PENDING", by=req.worker, note=note, claim_id=None, heartbeat=None)

    return _update_own(requests_repo, req, change, f"worker {req.worker}: released {req.key}")


def fail(requests_repo: str, req: Request, error_text: str, log_path: str | Path | None) -> bool:
    """Mark FAILED with the error text (token scrubbed, cut) and the log location."""
    text = hub.scrub(error_text).strip() or "(no error text)"
    if len(text) > ERROR_MAX_CHARS:
        text = text[: ERROR_MAX_CHARS - 40] + f"\n... ({len(text)} characters, cut; see the log)"
    log = f"{req.worker}:{log_path}" if log_path is not None else None

    def change(cur: Request) -> Request | None:
        if cur.status == "FAILED":
            return None
        first = text.splitlines()[0][:200]
        return cur.moved("FAILED", by=req.worker, note=first, error=text, log=log)

    return _update_own(requests_repo, req, change, f"worker {req.worker}: failed {req.key}")


# --- the worker -------------------------------------------------------------------------------

Scorer = Callable[..., Any]
"""`emarena.protocol.score.score`'s signature: (submission_path, *, model_id, em_dataset,
regimes, seeds, preset_name, run_dir, echo) -> a report with `.run` and `.cells`."""


def load_scorer(spec: str) -> Scorer:
    """ "module:attr" -> the scoring function."""
    from emarena.registry import import_ref

    if ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise ConfigError(f"--scorer {spec!r} is not 'module:attr'", fix=f"e.g. {DEFAULT_SCORER}")
    try:
        return import_ref(spec)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"--scorer {spec!r} cannot be loaded ({e})", fix="check the name"
        ) from None


@dataclass
class WorkerConfig:
    """How a worker runs; the CLI flags of `emarena worker`."""

    requests_repo: str
    results_repo: str
    worker_id: str = field(default_factory=default_worker_id)
    run_root: Path = Path("runs")
    """Local folder for the requests' submissions, runs and logs."""
    preset: str = "paper"
    model: str | None = None
    """Model registry id; None: the scorer's default."""
    em_dataset: str = "insecure"
    seeds: list[int] | None = None
    unofficial: bool = False
    """Publish results that are not official (marked so) instead of failing the request."""
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    max_attempts: int = MAX_ATTEMPTS
    poll_s: float = 30.0
    """Wait between polls of an empty queue (loop mode)."""
    scorer: Scorer | None = None
    """The scoring function; None: `emarena.protocol.score.score`."""
    judge: str | None = None
    """Judge spec for the scorer; None: its default."""
    store: Path | None = None
    """The shared store (None: EMARENA_STORE or the cache's): every request of every worker
    on it reuses what any run already trained, generated or judged."""


@dataclass
class Outcome:
    request: Request
    status: Status
    """FINISHED or FAILED as recorded, or RUNNING when the claim was lost meanwhile."""
    detail: str
    log: Path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


def request_folder(cfg: WorkerConfig, req: Request) -> Path:
    """`<run-root>/requests/<hash16>/`: the submission (`<name>/`), the run and the log."""
    return cfg.run_root / "requests" / req.key


def _write_new(path: Path, text: str) -> None:
    """Write `text` as a new file at `path`, replacing whatever is there (a link included, never
    followed). A lone surrogate is written as is, for the validator's decoder to report."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode("utf-8", "surrogatepass"))
    os.replace(tmp, path)


def _write_submission(cfg: WorkerConfig, req: Request) -> Path:
    from emarena.submission import FILENAME, NAME_RULE, README, name_problem

    why = name_problem(req.name)
    if why is not None:  # checked before the name becomes a folder
        raise QueueError(
            f"{req.path}: name '{req.name}' is not a valid submission name: it {why}",
            fix=f"submit again with a name of {NAME_RULE}",
        )
    folder = request_folder(cfg, req) / req.name
    if folder.is_symlink():  # left by someone else: never write through it
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    _write_new(folder / FILENAME, req.yaml)
    _write_new(folder / README, req.readme)
    return folder


def checked_submission(cfg: WorkerConfig, req: Request) -> Path:
    """The worker's own check, before any work: write the request's submission into its
    request folder and validate it against the request's config hash. Returns the folder;
    raises QueueError or SubmissionError (a ConfigError) with the specific problems."""
    sub_dir = _write_submission(cfg, req)
    _check_request(req, sub_dir)
    return sub_dir


def _check_request(req: Request, sub_dir: Path) -> None:
    """Validate the request's submission before any work, and check it is the configuration
    the request names. A request is data in a repo anyone with write access can edit: one
    planted or edited by hand, past `submit`'s validation, fails here with the file's problems."""
    from emarena.submission import load_submission

    sub = load_submission(sub_dir)  # SubmissionError: one line per problem
    if sub.config_hash != req.config_hash:
        raise QueueError(
            f"{req.path}: config_hash {req.config_hash[:12]}... does not match its defense.yaml "
            f"(which hashes to {sub.config_hash[:12]}...): the request was edited by hand",
            fix="submit the submission folder again with `emarena submit`",
        )


class _Heartbeat:
    """A thread refreshing the request's heartbeat every `interval` seconds while it runs."""

    def __init__(self, cfg: WorkerConfig, req: Request, log: Callable[[str], None]):
        self.cfg, self.req, self.log = cfg, req, log
        self.stop_event = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{req.key}", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.cfg.heartbeat_s):
            try:
                if not heartbeat(self.cfg.requests_repo, self.req):
                    self.lost = True
                    self.log(f"heartbeat: the claim on {self.req.path} was lost (re-queued?)")
                    return
            except Exception as e:  # a missed beat is not fatal; staleness needs many
                self.log(f"heartbeat failed: {hub.scrub(str(e)).splitlines()[0]}")

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)


def process(cfg: WorkerConfig, req: Request, echo: Callable[[str], Any] = print) -> Outcome:
    """Run one claimed request: write its submission, validate it against the request's
    config hash, score it, publish, mark FINISHED.

    Any exception marks it FAILED with the error text and the log location (and is not
    re-raised: one bad request never stops the worker).
    """
    folder = request_folder(cfg, req)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = (folder / "worker.log").resolve()
    lock = threading.Lock()

    def log(line: str) -> None:
        line = hub.scrub(str(line))
        with lock, open(log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        echo(line)

    log(
        f"== {now():%Y-%m-%d %H:%M:%S} UTC  worker {cfg.worker_id}: {req.name} ({req.key}), "
        f"attempt {req.attempts}"
    )
    try:
        with _Heartbeat(cfg, req, log) as beat:
            sub_dir = _write_submission(cfg, req)
            _check_request(req, sub_dir)
            run_dir = folder / _slug(
                f"run__{cfg.model or 'default-model'}__{cfg.em_dataset}__{cfg.preset}"
            )
            scorer = cfg.scorer or load_scorer(DEFAULT_SCORER)
            extra = {k: v for k, v in (("judge", cfg.judge), ("store", cfg.store)) if v}
            report = scorer(
                sub_dir,
                model_id=cfg.model,
                em_dataset=cfg.em_dataset,
                regimes=None,
                seeds=cfg.seeds,
                preset_name=cfg.preset,
                run_dir=run_dir,
                echo=log,
                **extra,
            )
            cells = [c.id for c in getattr(report, "cells", [])] or None
            pub = hub.publish_run(
                Path(getattr(report, "run", run_dir)),
                cfg.results_repo,
                unofficial=cfg.unofficial,
                cell_ids=cells,
                echo=log,
            )
            log(
                f"published {len(pub.cells)} cell(s) to {cfg.results_repo}: "
                + (f"commit {pub.commit[:12]}" if pub.commit else "unchanged")
                + (f", {len(pub.unofficial)} unofficial" if pub.unofficial else "")
            )
        if beat.lost:
            log(f"not marking {req.path} FINISHED: another worker holds it now")
            return Outcome(req, "RUNNING", "claim lost while running", log_path)
        if not finish(cfg.requests_repo, req, pub.paths):
            log(f"not marked FINISHED: the claim on {req.path} was lost")
            return Outcome(req, "RUNNING", "claim lost before finishing", log_path)
        log(f"{req.name}: FINISHED")
        return Outcome(req, "FINISHED", f"{len(pub.cells)} cell(s) published", log_path)
    except KeyboardInterrupt:  # the operator stops the worker: hand the request back
        log(f"{req.name}: interrupted; putting it back in the queue")
        try:
            release(cfg.requests_repo, req, "worker interrupted; re-queued")
        except Exception as e2:  # staleness will re-queue it
            log(f"could not re-queue {req.path}: {hub.scrub(str(e2)).splitlines()[0]}")
        raise
    except Exception as e:
        text = e.render() if isinstance(e, EmArenaError) else f"{type(e).__name__}: {e}"
        log(f"{req.name}: FAILED: {text}")
        if not isinstance(e, EmArenaError):
            log(traceback.format_exc())
        try:
            fail(cfg.requests_repo, req, text, log_path)
        except Exception as e2:  # the Hub is down: staleness will re-queue the request
            log(f"could not mark {req.path} FAILED: {hub.scrub(str(e2)).splitlines()[0]}")
        return Outcome(req, "FAILED", hub.scrub(text), log_path)


def work(
    cfg: WorkerConfig,
    *,
    once: bool = False,
    max_requests: int | None = None,
    echo: Callable[[str], Any] = print,
    sleep: Callable[[float], Any] | None = None,
) -> list[Outcome]:
    """Claim and process requests oldest first until the queue is empty (`once`: at most one).

    Without `once` it polls an empty queue every `cfg.poll_s` seconds, forever (or until
    `max_requests` were processed). A Hub failure while claiming is reported and retried at
    the next poll; it never ends the loop.
    """
    import time

    from emarena.eval.result import OFFICIAL_PRESET

    if cfg.preset != OFFICIAL_PRESET and not cfg.unofficial:
        raise ConfigError(
            f"--preset {cfg.preset} gives unofficial results, which publishing refuses",
            fix=f"use --preset {OFFICIAL_PRESET}, or pass --unofficial to publish them marked "
            "unofficial",
        )
    sleep = sleep or time.sleep
    hub.ensure_repo(cfg.requests_repo)
    hub.ensure_repo(cfg.results_repo)
    outcomes: list[Outcome] = []
    while True:
        try:
            req = claim_next(
                cfg.requests_repo,
                cfg.worker_id,
                stale_after_s=cfg.stale_after_s,
                max_attempts=cfg.max_attempts,
            )
        except EmArenaError as e:
            if once:
                raise
            echo(f"claiming failed: {hub.scrub(e.render())}")
            sleep(cfg.poll_s)
            continue
        if req is None:
            if once:
                echo("queue empty: nothing to do")
                return outcomes
            sleep(cfg.poll_s)
            continue
        outcomes.append(process(cfg, req, echo=echo))
        if once or (max_requests is not None and len(outcomes) >= max_requests):
            return outcomes
