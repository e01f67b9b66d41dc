"""The one module that talks to the Hugging Face Hub: results and the submission queue.

Everything goes through `huggingface_hub.HfApi(endpoint=$HF_ENDPOINT, token=$HF_TOKEN)`, read
at each call (so a test or a worker can point it elsewhere). The token is sent as a header and
nowhere else: it is never written to a file, a log, a request JSON or an error message (every
error text passes through `scrub`). Both repos are *dataset* repos.

Results repo (`emarena publish`, `emarena worker`)::

    README.md                                          dataset card generated from the suite:
                                                       datasets and licences, metric
                                                       definitions, result schema version
    <model>/<em_dataset>/<submission>/<cell_id>.json           one result.json (schema v1)
    <model>/<em_dataset>/<submission>/<cell_id>.samples.jsonl  its per-answer details
    <model>/<em_dataset>/<submission>/<cell_id>.choices.jsonl  its forced-choice items

  `<model>` is the model registry id with "/" written "__" (`Qwen/Qwen2.5-7B` ->
  `Qwen__Qwen2.5-7B`); `<submission>` is the defense's submission name, or `_controls` for the
  `base` and `em` cells, which have no defense and are shared by every submission (a valid
  submission name never starts with "_"). Unofficial results (another preset or judge) sit in
  the same layout; their JSON says `"official": false` and the leaderboard marks them.

Requests repo (`emarena submit`, `emarena worker`; see `emarena.queue`)::

    requests/<config_hash[:16]>.json    one submission: name, defense.yaml and README text,
                                        config_hash, submitter, status PENDING | RUNNING |
                                        FINISHED | FAILED, history [{status, time, worker,
                                        note}], error, log location, worker heartbeat time

Writes are commits with a parent check (optimistic concurrency): `transact` reads the repo at
its head commit, builds the files to write, and commits them *with that head as parent*. If the
branch moved meanwhile (HTTP 412/409) it reads again and rebuilds; on a server error or a lost
connection it reads again too, and because only files whose content differs from the head are
committed, a commit that landed although its answer was lost is recognised rather than repeated.
So every write ends applied exactly once, or raises a `HubError` saying it was not.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emarena.errors import EmArenaError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from emarena.eval.result import Result

ENV_ENDPOINT = "HF_ENDPOINT"
ENV_TOKEN = "HF_TOKEN"
REPO_TYPE = "dataset"

#: How many times a write is tried (conflicts and transient errors) before it is reported failed.
ATTEMPTS = 6
#: First wait after a transient error, doubled per attempt (seconds); conflicts retry at once.
RETRY_BASE_S = 0.5
RETRY_MAX_S = 8.0

CONTROLS = "_controls"
"""The `<submission>` folder of the base and em cells (no defense, shared by all submissions)."""
RESULTS_CARD = "README.md"
REQUESTS_DIR = "requests"


class HubError(EmArenaError):
    """A Hub call failed (after retries where retrying is safe); the text never holds the token."""


# --- the token -------------------------------------------------------------------------------


def _token() -> str | None:
    return os.environ.get(ENV_TOKEN) or None


def _secrets() -> list[str]:
    """Every credential the client may send: $HF_TOKEN, and a stored `hf auth login` token
    (HfApi falls back to it when $HF_TOKEN is unset)."""
    found = [t for t in (_token(),) if t]
    if "huggingface_hub" in sys.modules:  # only then can a stored token be in use
        try:
            from huggingface_hub import get_token

            stored = get_token()
        except Exception:  # reading the token file must never break error reporting
            stored = None
        if stored and stored not in found:
            found.append(stored)
    return found


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",]+")


def scrub(text: str) -> str:
    """`text` with the Hub token (and any bearer credential) replaced by `***`."""
    for secret in _secrets():
        text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def check_repo_id(repo_id: str) -> str:
    """`org/name`, or a HubError saying how a repo id looks."""
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id:
        raise HubError(
            f"{repo_id!r} is not a Hub repo id",
            fix="use <user or org>/<name>, e.g. my-org/emarena-results",
        )
    return repo_id


# --- the client ------------------------------------------------------------------------------


def endpoint() -> str | None:
    return os.environ.get(ENV_ENDPOINT) or None


def api() -> HfApi:
    """A fresh HfApi for $HF_ENDPOINT (default: the public Hub) with $HF_TOKEN."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # a worker's log is for our lines, not for download bars
    return HfApi(endpoint=endpoint(), token=_token())


def _cache_dir() -> str | None:
    """The download cache, resolved at call time (huggingface_hub reads HF_HOME at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures: the HTTP library's (httpx2 or httpx), and a download whose
    metadata call failed with nothing cached (huggingface_hub's LocalEntryNotFoundError)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, LocalEntryNotFoundError]
    for name in ("httpx2", "httpx"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        errors.append(mod.TransportError)
    return tuple(errors)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _is_hub_http_error(err: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(err, HfHubHTTPError)


def _describe(err: BaseException) -> str:
    first = str(err).strip().splitlines()
    text = " ".join(line.strip() for line in first if line.strip())
    return scrub(f"{type(err).__name__}: {text}" if text else type(err).__name__)


def _is_transient(err: BaseException) -> bool:
    if _is_hub_http_error(err):
        status = _status(err)
        return status is None or status >= 500 or status == 429
    return isinstance(err, _transport_errors())


def _is_conflict(err: BaseException) -> bool:
    return _is_hub_http_error(err) and _status(err) in (409, 412)


def _not_found(err: BaseException) -> bool:
    """The Hub said the file or folder does not exist (not: the repo, or the connection)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError

    return isinstance(err, RemoteEntryNotFoundError)


def _backoff(attempt: int) -> None:
    wait = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1))
    time.sleep(wait * (0.5 + random.random() / 2))


def _call(what: str, fn: Callable[[], Any], *, repo_id: str, attempts: int | None = None) -> Any:
    """Run an idempotent Hub call, retrying transient errors; raise HubError otherwise."""
    check_repo_id(repo_id)
    attempts = attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if _is_hub_http_error(e) or isinstance(e, _transport_errors()):
                if _is_transient(e) and attempt < attempts:
                    _backoff(attempt)
                    continue
                raise _hub_error(what, repo_id, e, attempt) from None
            raise
    raise AssertionError("unreachable")


def _hub_error(what: str, repo_id: str, err: BaseException, attempts: int) -> HubError:
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    status = _status(err)
    if status in (401, 403):
        fix = f"check that ${ENV_TOKEN} holds a token with write access to {repo_id}"
    elif status == 404:
        fix = f"check the repo id {repo_id!r} (a dataset repo) and ${ENV_ENDPOINT}"
    else:
        fix = f"check ${ENV_ENDPOINT} ({endpoint() or 'https://huggingface.co'}) is reachable"
    return HubError(f"{what}{tried}: {_describe(err)}", where=repo_id, fix=fix)


# --- repos, reads -----------------------------------------------------------------------------


def ensure_repo(repo_id: str, *, private: bool | None = None) -> str:
    """Create the dataset repo if it does not exist; return its URL."""
    return str(
        _call(
            f"cannot create dataset repo {repo_id}",
            lambda: api().create_repo(repo_id, repo_type=REPO_TYPE, exist_ok=True, private=private),
            repo_id=repo_id,
        )
    )


def head(repo_id: str) -> str:
    """The commit id at the head of main."""
    info = _call(
        f"cannot read {repo_id}",
        lambda: api().repo_info(repo_id, repo_type=REPO_TYPE),
        repo_id=repo_id,
    )
    assert info.sha, "the Hub answered repo info without a commit id"
    return info.sha


def _tree(repo_id: str, prefix: str, revision: str) -> dict[str, str]:
    """{path: blob id} of every file under folder `prefix` ("" = the whole repo)."""
    from huggingface_hub.hf_api import RepoFile

    folder = prefix.strip("/") or None

    def listing() -> dict[str, str]:
        try:
            entries = api().list_repo_tree(
                repo_id, folder, recursive=True, revision=revision, repo_type=REPO_TYPE
            )
            return {e.path: e.blob_id for e in entries if isinstance(e, RepoFile)}
        except Exception as e:
            if folder is not None and _not_found(e):
                return {}
            raise

    return _call(f"cannot list {repo_id}/{prefix}", listing, repo_id=repo_id)


def list_files(repo_id: str, prefix: str = "", *, revision: str | None = None) -> list[str]:
    """Paths of every file under folder `prefix` ("" = all), sorted; [] if the folder is absent."""
    return sorted(_tree(repo_id, prefix, revision or "main"))


#: Small files already read, by (repo, git blob id): content-addressed, so never stale.
_BLOBS: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_BLOB_CACHE_ITEMS = 4096
_BLOB_CACHE_MAX_BYTES = 1 << 20


def _download_path(repo_id: str, path: str, revision: str) -> Path:
    def fetch() -> str | None:
        try:
            return api().hf_hub_download(
                repo_id, path, repo_type=REPO_TYPE, revision=revision, cache_dir=_cache_dir()
            )
        except Exception as e:
            if _not_found(e):
                return None
            raise

    local = _call(f"cannot download {repo_id}/{path}", fetch, repo_id=repo_id)
    if local is None:
        raise HubError(
            f"{repo_id}/{path}: no such file at {revision}",
            where=repo_id,
            fix="check the path (`emarena.hub.list_files`)",
        )
    return Path(local)


def download(repo_id: str, path: str, *, revision: str | None = None) -> bytes:
    """The content of one file (at `revision`, default the head of main).

    The head is resolved to a commit id first: huggingface_hub answers a failed lookup of a
    branch from its cache, which could be stale; a commit's files never are.
    """
    return _download_path(repo_id, path, revision or head(repo_id)).read_bytes()


def snapshot(
    repo_id: str, local_dir: str | Path, *, allow_patterns: list[str] | None = None
) -> Path:
    """Download the repo's files at the head of main into `local_dir`; return it.

    Pinned to the head's commit id, so a failed call can fall back only to a complete local
    copy of that same commit, never to an older one.
    """
    revision = head(repo_id)
    return Path(
        _call(
            f"cannot download a snapshot of {repo_id}",
            lambda: api().snapshot_download(
                repo_id,
                repo_type=REPO_TYPE,
                revision=revision,
                local_dir=str(local_dir),
                allow_patterns=allow_patterns,
                cache_dir=_cache_dir(),
            ),
            repo_id=repo_id,
        )
    )


@dataclass
class RepoView:
    """The repo frozen at one commit: what a transaction reads its decisions from."""

    repo_id: str
    revision: str
    _tree_cache: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def files(self, prefix: str = "") -> dict[str, str]:
        """{path: git blob id} under folder `prefix`."""
        if prefix not in self._tree_cache:
            self._tree_cache[prefix] = _tree(self.repo_id, prefix, self.revision)
        return self._tree_cache[prefix]

    def list_files(self, prefix: str = "") -> list[str]:
        return sorted(self.files(prefix))

    def blob_id(self, path: str) -> str | None:
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        return self.files(folder).get(path)

    def blob_ids(self, paths: list[str]) -> dict[str, str]:
        """{path: git blob id} of those `paths` that are files here (one request per 100)."""
        from huggingface_hub.hf_api import RepoFile

        out: dict[str, str] = {}
        for i in range(0, len(paths), 100):
            chunk = paths[i : i + 100]
            entries = _call(
                f"cannot read {self.repo_id}",
                lambda chunk=chunk: api().get_paths_info(
                    self.repo_id, chunk, revision=self.revision, repo_type=REPO_TYPE
                ),
                repo_id=self.repo_id,
            )
            out.update({e.path: e.blob_id for e in entries if isinstance(e, RepoFile)})
        return out

    def read(self, path: str) -> bytes | None:
        """The file's content at this commit, or None if it does not exist."""
        blob = self.blob_id(path)
        if blob is None:
            return None
        key = (self.repo_id, blob)
        if key in _BLOBS:
            _BLOBS.move_to_end(key)
            return _BLOBS[key]
        data = _download_path(self.repo_id, path, self.revision).read_bytes()
        if len(data) <= _BLOB_CACHE_MAX_BYTES:
            _BLOBS[key] = data
            while len(_BLOBS) > _BLOB_CACHE_ITEMS:
                _BLOBS.popitem(last=False)
        return data


def view(repo_id: str) -> RepoView:
    """The repo at its current head."""
    return RepoView(repo_id, head(repo_id))


# --- writes -----------------------------------------------------------------------------------


@dataclass
class CommitResult:
    """What a write did."""

    commit: str | None
    """The commit holding the change; None when there was nothing to change."""
    paths: list[str]
    """Paths whose content the commit changed ([] when nothing changed)."""
    attempts: int
    """How many tries it took (conflicts and transient errors included)."""
    recovered: bool = False
    """True when an earlier try had landed although its answer was lost."""

    @property
    def changed(self) -> bool:
        return bool(self.paths)


def _git_blob_id(data: bytes) -> str:
    from huggingface_hub.utils import sha

    return sha.git_hash(data)


def _changed_paths(v: RepoView, files: Mapping[str, bytes]) -> list[str]:
    """Paths of `files` whose content differs from the repo at `v` (new files included)."""
    remote = v.blob_ids(list(files))
    return sorted(p for p, data in files.items() if remote.get(p) != _git_blob_id(data))


Build = Callable[[RepoView], Mapping[str, bytes] | None]


def transact(
    repo_id: str, build: Build, message: str, *, attempts: int | None = None
) -> CommitResult:
    """Read-modify-write as one commit with a parent check, retried until it applies once.

    `build(view)` reads the repo at a fixed commit and returns {path: content} to write (or
    None / {} for nothing). It is called again on a fresh view after a conflict or a
    transient error, so it must decide from what it reads: after a lost answer it sees its own
    earlier write and must return it unchanged (or nothing). Files equal to the head are left
    out; when none differ no commit is made.
    """
    from huggingface_hub import CommitOperationAdd

    attempts = attempts or ATTEMPTS
    ambiguous = False  # a commit may have landed without us hearing so
    last: BaseException | None = None
    # One extra round after the last attempt only reads: did an unanswered commit land?
    for attempt in range(1, attempts + 2):
        verify_only = attempt > attempts
        if verify_only and not ambiguous:
            break
        try:
            v = view(repo_id)
            files = dict(build(v) or {})
            changed = _changed_paths(v, files)
            if not changed:
                return CommitResult(
                    v.revision if ambiguous else None, [], attempt, recovered=ambiguous
                )
            if verify_only:
                break
            ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=files[p]) for p in changed]
            try:
                info = api().create_commit(
                    repo_id,
                    ops,
                    commit_message=message,
                    repo_type=REPO_TYPE,
                    parent_commit=v.revision,
                )
            except Exception as e:
                if _is_transient(e):
                    ambiguous = True
                raise
            return CommitResult(info.oid, changed, attempt)
        except HubError:
            if verify_only:  # the read failed: whether the commit landed stays unknown
                raise HubError(
                    f"commit {message!r} to {repo_id}: the Hub did not answer after {attempts} "
                    f"attempts and could not be read back (last: {_describe(last)})",
                    where=repo_id,
                    fix="it may or may not have been applied; run the command again "
                    "(re-running is safe: unchanged files make no new commit)",
                ) from None
            raise  # a read inside an attempt has been retried already
        except Exception as e:
            if not (_is_hub_http_error(e) or isinstance(e, _transport_errors())):
                raise
            last = e
            if _is_conflict(e):
                time.sleep(random.random() * 0.2)  # the branch moved: read again, rebuild
                continue
            if _is_transient(e):
                if attempt < attempts:
                    _backoff(attempt)
                continue
            raise _hub_error(
                f"commit {message!r} to {repo_id} failed", repo_id, e, attempt
            ) from None
    assert last is not None
    raise HubError(
        f"commit {message!r} to {repo_id} was not applied after {attempts} attempts "
        f"(last: {_describe(last)})",
        where=repo_id,
        fix="nothing was written; run the command again (re-running is safe)",
    )


def upload_files(
    repo_id: str,
    files: Mapping[str, str | Path | bytes],
    message: str,
    *,
    attempts: int | None = None,
) -> CommitResult:
    """Write `files` ({path_in_repo: local path or bytes}) as ONE commit.

    Files whose content already equals the repo's are skipped; if all are equal no commit is
    made (so re-uploading is idempotent). Conflicts and transient errors are retried; the
    upload ends applied exactly once or raises HubError.
    """
    data: dict[str, bytes] = {}
    for path, src in files.items():
        _check_path(path)
        data[path] = src if isinstance(src, bytes) else Path(src).read_bytes()
    return transact(repo_id, lambda _v: data, message, attempts=attempts)


def _check_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(f"{path!r} is not a valid path inside a repo", fix="use a/b/c.json")


# --- results layout ---------------------------------------------------------------------------


def model_segment(model_id: str) -> str:
    """The `<model>` folder: the registry id with "/" written "__"."""
    seg = model_id.replace("/", "__")
    _check_path(seg)
    return seg


def result_base(result: Result) -> str:
    """`<model>/<em_dataset>/<submission>/<cell_id>` (add `.json` / `.samples.jsonl`)."""
    cell = result.cell
    submission = cell.defense.name if cell.defense is not None else CONTROLS
    base = f"{model_segment(cell.model.id)}/{cell.em_dataset}/{submission}/{result.cell_id}"
    _check_path(base)
    return base


def results_card(suite: str | None = None) -> str:
    """README.md of the results dataset: datasets with licences, metrics, schema version."""
    from emarena import settings
    from emarena.data.spec import all_specs
    from emarena.eval.result import OFFICIAL_PRESET, SCHEMA_VERSION, schema_markdown

    suite = suite or settings.DEFAULT_SUITE
    specs = all_specs(suite)
    lines = [
        "---",
        "pretty_name: EM Arena results",
        "license: other",
        "tags:",
        "- emergent-misalignment",
        "- ai-safety",
        "- benchmark",
        "---",
        "",
        "# EM Arena results",
        "",
        "<!-- Generated by `emarena publish` (src/emarena/hub.py); do not edit by hand. -->",
        "",
        "Scores of defenses against emergent misalignment (EM), one file per evaluated cell "
        "(a model, an EM dataset, a regime, a defense, a seed, a preset).",
        "",
        f"- Benchmark suite: `{suite}`",
        f"- Result schema version: {SCHEMA_VERSION}",
        f"- Official results: preset `{OFFICIAL_PRESET}` scored by the suite's official judge "
        '(`"official": true`); every other file is unofficial and is marked so on the '
        "leaderboard.",
        "",
        "## Layout",
        "",
        "```",
        "<model>/<em_dataset>/<submission>/<cell_id>.json           result.json (schema below)",
        "<model>/<em_dataset>/<submission>/<cell_id>.samples.jsonl  every answer and its judge "
        "scores",
        "<model>/<em_dataset>/<submission>/<cell_id>.choices.jsonl  every forced-choice item "
        "and the options' probabilities",
        "```",
        "",
        f"`<model>` is the model id with `/` written `__`; `<submission>` is `{CONTROLS}` for the "
        "`base` and `em` control cells, shared by all submissions.",
        "",
        "## Datasets used by the suite",
        "",
        "Results and samples quote questions and model answers derived from these datasets; "
        "each keeps its own licence.",
        "",
        "| id | role | licence | source | citation |",
        "|---|---|---|---|---|",
    ]
    for spec in sorted(specs.values(), key=lambda s: (s.role, s.id)):
        sources = sorted({f.src.repo for f in spec.files})
        lines.append(
            f"| `{spec.id}` | {spec.role} | {spec.license} | {', '.join(sources)} "
            f"| {spec.citation.replace('|', '/')} |"
        )
    lines += ["", "## Result schema and metric definitions", ""]
    for line in schema_markdown().splitlines():
        if line.startswith("#"):
            line = "#" + line  # one level below this card's own headings
        lines.append(line)
    return "\n".join(lines).rstrip() + "\n"


def upload_space(repo_id: str, folder: Path, *, private: bool | None = None) -> str | None:
    """Create the Gradio Space `repo_id` if needed and upload `folder` to it (the leaderboard's
    Space: `emarena space push`); returns the commit id. Everything else here is datasets."""
    def go() -> str | None:
        a = api()
        a.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True,
                      private=private)
        info = a.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                               commit_message="emarena space push")
        return getattr(info, "oid", None)

    return _call(f"cannot upload the Space {repo_id}", go, repo_id=repo_id)


@dataclass
class PublishReport:
    commit: str | None
    """The commit that added or changed files; None when everything was already there."""
    cells: list[str]
    """Every cell published (cell ids), changed or not."""
    changed: list[str]
    """Repo paths whose content the commit changed."""
    paths: list[str] = field(default_factory=list)
    """Every result file of the published cells in the repo (`.json`, `.samples.jsonl`,
    `.choices.jsonl`)."""
    unofficial: list[str] = field(default_factory=list)
    """Cells published marked unofficial."""


def finished_cells(run_dir: Path) -> list[Path]:
    """result.json of every finished cell of a run (`cells/<cell_id>/metrics/result.json`)."""
    cells = Path(run_dir) / "cells"
    if not cells.is_dir():
        return []
    return sorted(p for p in cells.glob("*/metrics/result.json") if p.is_file())


def publish_run(
    run_dir: Path,
    results_repo: str,
    *,
    unofficial: bool = False,
    cell_ids: Iterable[str] | None = None,
    echo: Callable[[str], Any] = print,
) -> PublishReport:
    """Upload every finished cell of `run_dir` (result + samples) and the card as ONE commit.

    A cell whose result is not official is refused, and nothing is uploaded, unless
    `unofficial` (its JSON says `"official": false` and the leaderboard marks it). Identical
    content makes no new commit. `cell_ids`, when given, must all be finished.
    """
    from emarena.eval.result import load_result

    run_dir = Path(run_dir)
    paths = finished_cells(run_dir)
    if cell_ids is not None:
        wanted = list(cell_ids)
        by_id = {p.parent.parent.name: p for p in paths}
        missing = [c for c in wanted if c not in by_id]
        if missing:
            raise HubError(
                f"{run_dir}: {len(missing)} of {len(wanted)} cell(s) have no result.json: "
                + ", ".join(c[:12] for c in missing),
                where=[str(run_dir / "cells" / c / "metrics" / "result.json") for c in missing],
                fix=f"finish the run first (`emarena status {run_dir}` shows each cell)",
            )
        paths = [by_id[c] for c in wanted]
    if not paths:
        raise HubError(
            f"{run_dir}: no finished cell to publish",
            where=str(run_dir / "cells" / "*" / "metrics" / "result.json"),
            fix="run `emarena score` until the cells' metrics stage has written result.json",
        )
    results = [(p, load_result(p)) for p in paths]
    refused = [(p, r) for p, r in results if not r.official]
    if refused and not unofficial:
        lines = []
        for _, r in refused:
            judge = r.provenance.judge
            kind = "official" if judge.official else "unofficial"
            lines.append(
                f"  {r.cell_id[:12]} {r.label}: preset {r.cell.preset!r}, "
                f"judge {judge.id!r} ({kind})"
            )
        raise HubError(
            f"{run_dir}: {len(refused)} of {len(results)} cell(s) are not official results "
            "(official = preset 'paper' scored by the official judge); nothing was uploaded\n"
            + "\n".join(lines),
            fix="publish with --unofficial to upload them marked unofficial",
        )
    files: dict[str, bytes] = {RESULTS_CARD: results_card().encode("utf-8")}
    for p, r in results:
        base = result_base(r)
        files[f"{base}.json"] = p.read_bytes()
        samples = p.with_name("samples.jsonl")
        if samples.is_file():
            files[f"{base}.samples.jsonl"] = samples.read_bytes()
        else:
            echo(f"  note: {r.cell_id[:12]} has no samples.jsonl; the drill-down will be empty")
        choices = p.with_name("choices.jsonl")
        if choices.is_file():
            files[f"{base}.choices.jsonl"] = choices.read_bytes()
    ensure_repo(results_repo)
    n_unofficial = len(refused)
    message = f"publish {len(results)} cell(s) from {run_dir.name}" + (
        f" ({n_unofficial} unofficial)" if n_unofficial else ""
    )
    res = upload_files(results_repo, files, message)
    return PublishReport(
        commit=res.commit,
        cells=[r.cell_id for _, r in results],
        changed=res.paths,
        paths=sorted(p for p in files if p != RESULTS_CARD),
        unofficial=[r.cell_id for _, r in refused],
    )
