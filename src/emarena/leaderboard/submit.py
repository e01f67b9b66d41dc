"""The Submit and Queue tabs: validate a pasted defense.yaml, queue it, read the queue.

    v = validate_text(yaml_text, readme_text)       # the checks of `emarena validate`
    v.ok, v.name, v.config_hash, v.errors           # errors: "defense.yaml:7: key: msg; fix"
    out = queue_text(yaml_text, readme_text, submitter, requests_repo=..., requests_dir=...,
                     per_day=3)                     # at most 3 a day from this submitter
    entries, unreadable = read_queue(requests_dir)  # every request, newest first
    up = read_upload(path)                          # an uploaded defense.yaml: up.text, up.note
    template_yaml()                                 # the editor's first text

Who submits: on the Space, the Hugging Face account logged in through Gradio's OAuth (the app
passes its username; nobody types a name); locally, without OAuth, an admin with write access
types it. Either way `per_day` caps the requests one submitter makes in 24 hours
(`recent_requests` reads them from the requests folder), and the duplicate check (one request
per configuration) stays.

Validation is `emarena.submission`'s, unchanged: the text is written to a temporary folder named
after its `name` (a submission's name must equal its folder's), with the README beside it, and
checked there. Pasted text goes there as bytes encoded with "surrogatepass" and an upload is
read as bytes, so both meet the CLI's one decoder (`emarena.textsafe.decode_utf8`): a lone
surrogate or a non-UTF-8 file gets the CLI's message, never a UnicodeEncodeError. An upload is
read up to `MAX_UPLOAD_BYTES` and no further (the app also sets Gradio's `max_file_size`, so a
larger body is cut off while it streams in).

Queueing goes through `emarena.queue.submit` for a requests repo on the Hub; a local requests
folder (laid out like the repo: `requests/<config_hash[:16]>.json`) gets the same
`emarena.queue.Request` record, written atomically under a lock, with the same rules: one
request per configuration, a FAILED one may be queued again.

Everything shown comes from users: error lines are escaped by the validator and shown in a
code block; other text goes through `emarena.textsafe.markdown` (Markdown) or
`emarena.textsafe.escape` (table cells, which the app HTML-escapes).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emarena import textsafe
from emarena.errors import ConfigError, EmArenaError
from emarena.submission import MAX_BYTES as MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from emarena.queue import Request, Submitted

#: Folder used when the YAML names no usable `name`: the validator then reports the name.
FALLBACK_FOLDER = "unnamed-submission"
MAX_SUBMITTER = 200
#: The template's own name (submissions/_template): never queued as a submission.
TEMPLATE_NAME = "template"
#: Requests one submitter may make in 24 hours (EMARENA_SUBMISSIONS_PER_DAY overrides it).
PER_DAY = 3
ENV_PER_DAY = "EMARENA_SUBMISSIONS_PER_DAY"


def _template(name: str) -> str | None:
    """A file of submissions/_template/: from the checkout, else the copy in the wheel."""
    here = Path(__file__).resolve()
    for path in (here.parents[3] / "submissions" / "_template" / name,
                 here.parents[1] / "submission_template" / name):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


def template_yaml() -> str:
    """The template's defense.yaml: the Submit tab's editor starts with it."""
    return _template("defense.yaml") or f"schema_version: 1\nname: {TEMPLATE_NAME}\n"


def template_readme() -> str:
    """The template's README.md (what a submission's README should say)."""
    return _template("README.md") or ""


def per_day_limit() -> int:
    """Requests one submitter may make in 24 hours: EMARENA_SUBMISSIONS_PER_DAY, else 3."""
    raw = os.environ.get(ENV_PER_DAY, "").strip()
    try:
        return max(0, int(raw)) if raw else PER_DAY
    except ValueError:
        return PER_DAY


def recent_requests(requests: list[Request], submitter: str,
                    within: timedelta = timedelta(days=1)) -> int:
    """How many times `submitter` queued (or re-queued) a request in the last `within`."""
    since = datetime.now(UTC) - within
    mine = {f"submitted by {submitter}", f"re-submitted by {submitter} after FAILED"}
    n = 0
    for r in requests:
        n += sum(1 for h in r.history
                 if h.status == "PENDING" and h.time >= since and h.note in mine)
    return n


@dataclass
class Validation:
    """The outcome of validating one pasted submission."""

    ok: bool
    name: str | None = None
    config_hash: str | None = None
    errors: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        if self.ok:
            return (
                f"**Valid.** `{self.name}` — config hash `{(self.config_hash or '')[:16]}`. "
                "Press **Submit** to queue it."
            )
        return f"**Invalid: {len(self.errors)} problem(s):**\n\n{_fenced(self.errors)}"


def _fenced(lines: list[str]) -> str:
    """Error lines as written (escaped, one line each), in a code block: no Markdown or HTML
    inside them is interpreted."""
    body = "\n".join(textsafe.escape(ln) for ln in lines).replace("```", "ʼʼʼ")
    return f"```text\n{body}\n```"


def _name_in(yaml_path: Path) -> str | None:
    """The top-level `name` if it is a valid submission name; None otherwise (or unparseable)."""
    from emarena.submission import MAX_ALIASES, MAX_DEPTH, MAX_NODES, name_problem
    from emarena.yamlio import read_yaml

    try:
        data, _ = read_yaml(
            yaml_path, max_bytes=MAX_UPLOAD_BYTES, max_depth=MAX_DEPTH, max_aliases=MAX_ALIASES,
            max_nodes=MAX_NODES,
        )
    except EmArenaError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name_problem(name) is None else None


def _bytes(text: str) -> bytes:
    """Text from a browser as the bytes of a file: a lone surrogate (which a page can send)
    stays in, for the decoder to report like any other byte that is not UTF-8."""
    return text.encode("utf-8", "surrogatepass")


@contextlib.contextmanager
def submission_folder(yaml_text: str, readme: str) -> Iterator[Path]:
    """A temporary `<name>/defense.yaml` (+ README.md when `readme` is not blank)."""
    from emarena.submission import FILENAME, README

    if yaml_text and not yaml_text.endswith("\n"):
        yaml_text += "\n"  # a browser's editor drops the file's final newline
    with tempfile.TemporaryDirectory(prefix="emarena-submit-") as tmp:
        probe = Path(tmp) / "probe.yaml"
        probe.write_bytes(_bytes(yaml_text))
        folder = Path(tmp) / (_name_in(probe) or FALLBACK_FOLDER)
        probe.unlink()
        folder.mkdir()
        (folder / FILENAME).write_bytes(_bytes(yaml_text))
        if readme.strip():
            (folder / README).write_bytes(_bytes(readme))
        yield folder


def _relative(lines: list[str], folder: Path) -> list[str]:
    """Error lines with the temporary folder taken out: `defense.yaml:7: ...`."""
    prefix = str(folder) + os.sep
    return [ln.replace(prefix, "") for ln in lines]


def _check(folder: Path) -> Validation:
    from emarena.submission import check_paths

    (checked,) = check_paths([folder])
    if checked.ok and checked.submission is not None:
        sub = checked.submission
        return Validation(True, sub.name, sub.config_hash)
    errors = _relative(checked.errors, folder)
    if not (folder / "README.md").exists():
        errors = [
            e for e in errors if "README.md is missing" not in e
        ] + ["README.md: the README text is empty; fix: describe the method, its source and "
             "its params in the README box"]
    return Validation(False, errors=errors or ["invalid submission"])


@dataclass
class Upload:
    """What the upload handler puts into the page."""

    text: str | None
    """The file's text for the defense.yaml box; None: leave the box as it is."""
    note: str
    """Markdown for the result area: what was loaded, or why nothing was."""


def read_upload(path: str | Path | None) -> Upload:
    """An uploaded defense.yaml for the editor: at most `MAX_UPLOAD_BYTES` + 1 bytes are read
    (a bigger file is refused, never read whole), decoded by the CLI's decoder."""
    if not path:
        return Upload(None, "")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_UPLOAD_BYTES + 1)
    except OSError as e:
        return Upload(None, f"**Not loaded:** the upload cannot be read ({e.strerror}).")
    if len(raw) > MAX_UPLOAD_BYTES:
        return Upload(None, _refused(
            f"defense.yaml: the upload is over the {MAX_UPLOAD_BYTES:,}-byte limit; fix: "
            "configuration files are small; remove embedded data"))  # fmt: skip
    try:
        text = textsafe.decode_utf8(raw, "defense.yaml")
    except ConfigError as e:
        return Upload(None, _refused(f"{e.what}; fix: {e.fix}"))
    return Upload(text, f"Loaded the upload ({len(raw):,} bytes): press **Validate**.")


def _refused(line: str) -> str:
    return f"**Not loaded: 1 problem:**\n\n{_fenced([line])}"


def validate_text(yaml_text: str, readme: str = "") -> Validation:
    """Validate a pasted defense.yaml and README text exactly as `emarena validate` would."""
    if not yaml_text.strip():
        return Validation(False, errors=["defense.yaml: empty; fix: paste or upload a "
                                         "defense.yaml (see submissions/_template)"])
    with submission_folder(yaml_text, readme) as folder:
        return _check(folder)


# --- queueing ---------------------------------------------------------------------------------


@dataclass
class Queued:
    """What Submit did."""

    ok: bool
    message: str
    request_id: str | None = None
    """`requests/<config_hash[:16]>.json`."""
    status: str | None = None
    created: bool = False
    errors: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        message = textsafe.markdown(self.message)  # it may quote another submitter
        if not self.ok:
            errors = f"\n\n{_fenced(self.errors)}" if self.errors else ""
            return f"**Not queued.** {message}{errors}"
        verb = "Queued" if self.created else "Already in the queue"
        return f"**{verb}:** `{self.request_id}` — status **{self.status}**. {message}"


def queue_text(
    yaml_text: str,
    readme: str,
    submitter: str,
    *,
    requests_repo: str | None = None,
    requests_dir: Path | None = None,
    per_day: int | None = None,
) -> Queued:
    """Validate, then queue the submission (Hub repo if given, else the local folder).

    `per_day`: refuse when `submitter` already queued that many requests in 24 hours (read
    from `requests_dir`, which the app keeps in sync with the requests repo)."""
    submitter = " ".join(submitter.split())
    if textsafe.is_blank(submitter):
        return Queued(False, "Say who you are in the Submitter box (a name or HF username).")
    if len(submitter) > MAX_SUBMITTER:
        return Queued(False, f"Submitter is longer than {MAX_SUBMITTER} characters.")
    why = textsafe.problem(submitter)
    if why is not None:
        return Queued(False, f"Submitter {why}: write a plain name or HF username.")
    if requests_repo is None and requests_dir is None:
        return Queued(
            False,
            "This leaderboard takes no submissions (no requests repo or folder configured); "
            "use `emarena submit` or open a pull request.",
        )
    v = validate_text(yaml_text, readme)
    if not v.ok:
        return Queued(False, "The submission is invalid:", errors=v.errors)
    if v.name == TEMPLATE_NAME:
        return Queued(False, f"`name: {TEMPLATE_NAME}` is the template's: give your defense its "
                      "own name (and describe it) before submitting.")
    if per_day is not None and requests_dir is not None:
        from emarena.queue import ACTIVE_OR_DONE

        reqs, _ = read_queue(requests_dir)
        done = recent_requests(reqs, submitter)
        queued = any(r.config_hash == v.config_hash and r.status in ACTIVE_OR_DONE
                     for r in reqs)  # then nothing is queued: the duplicate check says so
        if done >= per_day and not queued:
            return Queued(False, f"{submitter} has queued {done} request(s) in the last 24 "
                          f"hours; the limit is {per_day} a day. Try again tomorrow.")
    with submission_folder(yaml_text, readme) as folder:
        try:
            if requests_repo is not None:
                from emarena.queue import submit

                done = submit(folder, requests_repo, submitter)
            else:
                assert requests_dir is not None
                done = submit_local(folder, Path(requests_dir), submitter)
        except EmArenaError as e:
            lines = getattr(e, "lines", None) or e.render().splitlines()
            return Queued(False, "Queueing failed:", errors=_relative(list(lines), folder))
    req = done.request
    return Queued(True, done.message, req.path, req.status, done.created)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def submit_local(folder: Path, requests_dir: Path, submitter: str) -> Submitted:
    """`emarena.queue.submit` for a local requests folder (same record, same rules)."""
    from emarena.queue import (
        ACTIVE_OR_DONE,
        HistoryEntry,
        QueueError,
        Request,
        Submitted,
        now,
        request_path,
    )
    from emarena.submission import load_submission, read_texts

    sub = load_submission(folder)
    yaml_text, readme = read_texts(folder)
    rel = request_path(sub.config_hash)
    path = requests_dir / rel
    with _locked(requests_dir / ".lock"):
        old = None
        if path.exists():
            try:
                old = Request.model_validate_json(path.read_bytes())
            except ValueError as e:
                raise QueueError(
                    f"{rel}: not a valid request ({str(e).splitlines()[0]})",
                    fix="repair or delete the file in the requests folder",
                ) from None
        if old is not None and old.config_hash != sub.config_hash:
            raise QueueError(
                f"{rel} holds another configuration ({old.name}) with the same hash prefix",
                fix="change the submission (e.g. its description) and submit again",
            )
        if old is not None and old.status in ACTIVE_OR_DONE:
            return Submitted(
                old, False,
                f"an identical configuration is already {old.status} (submitted "
                f"{old.submitted:%Y-%m-%d %H:%M} UTC by {old.submitter}); not queued again",
            )
        note = f"submitted by {submitter}"
        if old is None:
            req = Request(
                name=sub.name, config_hash=sub.config_hash, yaml=yaml_text, readme=readme,
                submitter=submitter, submitted=now(), status="PENDING",
                history=[HistoryEntry(status="PENDING", time=now(), note=note)],
            )
        else:
            req = old.moved(
                "PENDING", by=None, note=f"re-submitted by {submitter} after FAILED",
                yaml=yaml_text, readme=readme, submitter=submitter, submitted=now(), error=None,
                worker=None, claim_id=None, heartbeat=None, attempts=0, results=[],
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, req.dump())
    return Submitted(req, True, f"queued {sub.name} as {rel} (PENDING)")


# --- the Queue tab ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnreadableRequest:
    path: str
    error: str
    """Why, in one line of Markdown-safe text (`textsafe.markdown`): the Queue tab's note."""


def read_queue(requests_dir: Path | None) -> tuple[list[Request], list[UnreadableRequest]]:
    """Every request under `<requests_dir>/requests/`, newest first; unreadable files apart."""
    from emarena.queue import Request

    if requests_dir is None:
        return [], []
    folder = Path(requests_dir) / "requests"
    if not folder.is_dir():
        return [], []
    good: list[Request] = []
    bad: list[UnreadableRequest] = []
    for p in sorted(folder.glob("*.json")):
        rel = str(p.relative_to(requests_dir))
        try:
            good.append(Request.model_validate_json(p.read_bytes()))
        except (OSError, ValueError) as e:
            first = str(e).splitlines()
            reason = textsafe.markdown(textsafe.shorten(" ".join(first[:3]), 300))
            bad.append(UnreadableRequest(rel, reason))
    good.sort(key=lambda r: r.submitted, reverse=True)
    return good, bad


QUEUE_COLUMNS = ["request", "name", "status", "submitter", "submitted", "last change", "attempts",
                 "error"]


def queue_rows(requests: list[Request]) -> list[dict[str, Any]]:
    """One row per request; every text from the request escaped (one printable line)."""
    esc = textsafe.escape
    rows = []
    for r in requests:
        last = r.history[-1] if r.history else None
        rows.append(
            {
                "request": r.path,
                "name": esc(r.name),
                "status": r.status,
                "submitter": esc(r.submitter),
                "submitted": f"{r.submitted:%Y-%m-%d %H:%M} UTC",
                "last change": (
                    f"{last.time:%Y-%m-%d %H:%M} UTC: {esc(last.note)}" if last is not None
                    else ""
                ),
                "attempts": r.attempts,
                "error": textsafe.shorten(r.error.splitlines()[0], 200) if r.error else "",
            }
        )
    return rows


HISTORY_COLUMNS = ["time", "status", "worker", "note"]


def history_rows(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "time": f"{h.time:%Y-%m-%d %H:%M:%S} UTC",
            "status": h.status,
            "worker": textsafe.escape(h.worker or ""),
            "note": textsafe.escape(h.note),
        }
        for h in request.history
    ]
