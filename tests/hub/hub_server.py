"""A small Hugging Face Hub on 127.0.0.1: exactly the endpoints `emarena.hub` makes HfApi use.

Real HTTP, real `huggingface_hub` client code on the other end; only the server is ours. Read
from huggingface_hub 2.x (hf_api.py, _commit_api.py, file_download.py, _snapshot_download.py):

  POST /api/repos/create                               create_repo (409 + {"url"} if it exists)
  GET  /api/{type}s/{org}/{name}[/revision/{rev}]      repo_info / dataset_info (sha, siblings;
                                                       ?blobs=true adds size and blobId)
  POST /api/validate-yaml                              README.md front matter check (create_commit)
  POST /api/{type}s/{repo}/preupload/{rev}             upload modes: always "regular" (inline
                                                       base64 in the commit, no LFS / Xet), with
                                                       the current blob oid so unchanged files
                                                       are recognised
  POST /api/{type}s/{repo}/commit/{rev}                NDJSON: header (+ parentCommit) then
                                                       `file` / `deletedFile` / `deletedFolder`
  GET  /api/{type}s/{repo}/tree/{rev}[/{path}]         list_repo_tree (?recursive=, Link paging)
  POST /api/{type}s/{repo}/paths-info/{rev}            get_paths_info (form: paths=..., expand=)
  HEAD/GET /{type}s/{repo}/resolve/{rev}/{path}        hf_hub_download / snapshot_download:
                                                       ETag (git blob sha1), X-Repo-Commit,
                                                       Content-Length
  GET  /api/whoami-v2                                  whoami: the account of the bearer
                                                       token (`users`: token -> account), 401
                                                       for any other (what Gradio's local,
                                                       mocked OAuth logs a visitor in as)

History is real: every commit gets an id and a parent, a file tree per commit, and reads at
any past commit id work. A commit whose `parentCommit` is not the branch head is refused with
412 (what the Hub does when the branch moved), so optimistic concurrency can be tested.

Writes (create, preupload, commit, validate-yaml) need `Authorization: Bearer <token>` when
the server has a token; reads are public. The server keeps the Authorization values it saw in
memory only (`auth_seen`), never on disk.

Faults for the commit endpoint (`commit_faults`, consumed in order, one per commit request):
  CommitFault(status=500)               refuse with 500, nothing applied
  CommitFault(status=500, apply=True)   apply the commit, then answer 500 (a lost response)
  CommitFault(status=412)               refuse as if the branch had moved
`before_commit` (a callable taking the server) runs before each commit is processed: a test
uses it to land a concurrent commit from "another writer" (`commit_direct`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data`: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    summary: str
    files: dict[str, bytes]
    """The whole tree at this commit (path -> content)."""
    time: float


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    commits: list[Commit] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def resolve(self, rev: str) -> Commit | None:
        if rev == "main":
            return self.head
        for c in self.commits:
            if len(rev) >= 7 and c.oid.startswith(rev):
                return c
        return None


@dataclass
class CommitFault:
    status: int = 500
    apply: bool = False
    """Apply the commit before answering the error (the client never learns it landed)."""


class HubState:
    """Everything the server knows; guarded by one lock."""

    def __init__(self, token: str | None):
        self.token = token
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.commit_faults: list[CommitFault] = []
        self.before_commit: Callable[[HubState], None] | None = None
        self.auth_seen: list[str | None] = []
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, in order."""
        self.commit_requests = 0
        self.tree_page_size = 1000
        self.users: dict[str, str] = {}
        """token -> the account name whoami answers for it."""

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commit_direct(
        self, repo_id: str, files: dict[str, bytes | None], summary: str, repo_type: str = "dataset"
    ) -> str:
        """Land a commit as another writer would (None deletes a path); returns its id."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            tree = dict(repo.head.files)
            for path, data in files.items():
                if data is None:
                    tree.pop(path, None)
                else:
                    tree[path] = data
            return _append_commit(repo, tree, summary)


def _append_commit(repo: Repo, tree: dict[str, bytes], summary: str) -> str:
    parent = repo.commits[-1].oid if repo.commits else None
    seed = f"{repo.repo_id}\n{parent}\n{summary}\n{len(repo.commits)}\n{time.time_ns()}"
    oid = hashlib.sha1(seed.encode()).hexdigest()
    repo.commits.append(Commit(oid, parent, summary, tree, time.time()))
    return oid


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class _Error(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **headers: str):
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


def _make_handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests`
            pass

        # --- plumbing -------------------------------------------------------------------

        @property
        def base(self) -> str:
            host, port = self.server.server_address[:2]
            return f"http://{host}:{port}"

        def _body(self) -> bytes:
            return self._raw_body

        def _read_body(self) -> None:
            # Read the whole body before any answer, so an early error keeps the connection sane.
            n = int(self.headers.get("Content-Length") or 0)
            self._raw_body = self.rfile.read(n) if n else b""

        def _send(
            self,
            status: int,
            body: bytes = b"",
            ctype: str = "application/json",
            headers: dict[str, str] | None = None,
            head: bool = False,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _error(self, e: _Error, head: bool = False) -> None:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(
                e.status, json.dumps({"error": e.message}).encode(), headers=headers, head=head
            )

        def _auth(self, write: bool) -> None:
            value = self.headers.get("Authorization")
            state.auth_seen.append(value)
            if write and state.token is not None and value != f"Bearer {state.token}":
                raise _Error(401, "Invalid credentials in Authorization header")

        def _dispatch(self, method: str) -> None:
            self._read_body()
            url = urlsplit(self.path)
            state.requests.append((method, url.path))
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            # Segments stay quoted until the route is known: a tree path arrives as one
            # segment with %2F inside, a resolve path as several.
            parts = url.path.strip("/").split("/")
            try:
                with state.lock:
                    self._route(method, parts, query)
            except _Error as e:
                self._error(e, head=method == "HEAD")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

        # --- routing --------------------------------------------------------------------

        def _repo(self, type_plural: str, org: str, name: str) -> Repo:
            rtype = type_plural.removesuffix("s")
            repo = state.repos.get((rtype, f"{unquote(org)}/{unquote(name)}"))
            if repo is None:
                raise _Error(404, "Repository not found", "RepoNotFound")
            return repo

        def _commit_at(self, repo: Repo, rev: str) -> Commit:
            c = repo.resolve(unquote(rev))
            if c is None:
                raise _Error(404, f"Invalid rev id: {unquote(rev)}", "RevisionNotFound")
            return c

        def _route(self, method: str, p: list[str], q: dict[str, str]) -> None:
            plural = tuple(f"{t}s" for t in REPO_TYPES)
            if method == "POST" and p == ["api", "repos", "create"]:
                return self._create()
            if method == "GET" and p == ["api", "whoami-v2"]:
                return self._whoami()
            if method == "POST" and p == ["api", "validate-yaml"]:
                self._auth(write=True)
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if len(p) >= 4 and p[0] == "api" and p[1] in plural:
                self._auth(write=method == "POST")
                repo = self._repo(p[1], p[2], p[3])
                rest = p[4:]
                if method == "GET" and not rest:
                    return self._info(repo, repo.head, q)
                if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                    return self._info(repo, self._commit_at(repo, rest[1]), q)
                if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                    return self._preupload(repo, self._commit_at(repo, rest[1]))
                if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                    return self._commit(repo, unquote(rest[1]))
                if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                    path = "/".join(unquote(s) for s in rest[2:])
                    return self._tree(repo, self._commit_at(repo, rest[1]), path, q)
                if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                    return self._paths_info(repo, self._commit_at(repo, rest[1]))
            if method in ("GET", "HEAD") and len(p) >= 6 and p[0] in plural and p[3] == "resolve":
                self._auth(write=False)
                repo = self._repo(p[0], p[1], p[2])
                commit = self._commit_at(repo, p[4])
                return self._resolve(commit, unquote("/".join(p[5:])), head=method == "HEAD")
            raise _Error(404, f"no route for {method} /{'/'.join(p)}")

        # --- endpoints ------------------------------------------------------------------

        def _whoami(self) -> None:
            value = self.headers.get("Authorization") or ""
            state.auth_seen.append(value or None)
            name = state.users.get(value.removeprefix("Bearer "))
            if name is None:
                raise _Error(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": name, "fullname": name.title(),
                                    "avatarUrl": "", "orgs": [], "auth": {}})

        def _create(self) -> None:
            self._auth(write=True)
            payload = json.loads(self._body() or b"{}")
            rtype = payload.get("type") or "model"
            org, name = payload.get("organization"), payload["name"]
            repo_id = f"{org}/{name}" if org else f"user/{name}"
            prefix = "" if rtype == "model" else f"{rtype}s/"
            url = f"{self.base}/{prefix}{repo_id}"
            if (rtype, repo_id) in state.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            repo = Repo(repo_id, rtype)
            _append_commit(repo, {}, "initial commit")
            state.repos[(rtype, repo_id)] = repo
            return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _info(self, repo: Repo, commit: Commit, q: dict[str, str]) -> None:
            blobs = q.get("blobs", "").lower() in ("1", "true")
            siblings = []
            for path, data in sorted(commit.files.items()):
                s: dict[str, Any] = {"rfilename": path}
                if blobs:
                    s.update(size=len(data), blobId=git_blob_sha1(data))
                siblings.append(s)
            self._json(
                200,
                {
                    "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                    "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": commit.oid,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "createdAt": _iso(repo.created),
                    "lastModified": _iso(commit.time),
                    "siblings": siblings,
                },
            )

        def _preupload(self, repo: Repo, commit: Commit) -> None:
            payload = json.loads(self._body() or b"{}")
            files = []
            for f in payload.get("files", []):
                existing = commit.files.get(f["path"])
                files.append(
                    {
                        "path": f["path"],
                        "uploadMode": "regular",  # inline base64 in the commit: no LFS, no Xet
                        "shouldIgnore": False,
                        "oid": git_blob_sha1(existing) if existing is not None else None,
                    }
                )
            self._json(200, {"files": files, "commitOid": commit.oid})

        def _commit(self, repo: Repo, rev: str) -> None:
            body = self._body()
            state.commit_requests += 1
            if rev != "main":
                raise _Error(400, f"commits go to main in this test hub, not {rev!r}")
            if state.before_commit is not None:
                hook, state.before_commit = state.before_commit, None
                hook(state)
            fault = state.commit_faults.pop(0) if state.commit_faults else None
            if fault is not None and not fault.apply:
                if fault.status == 412:
                    raise _Error(412, "A commit has happened since. Please refresh and try again.")
                raise _Error(fault.status, f"injected fault: HTTP {fault.status}")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _Error(400, "the first NDJSON line must be the header")
            header = lines[0]["value"]
            parent = header.get("parentCommit")
            if parent is not None and not repo.head.oid.startswith(parent):
                raise _Error(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(repo.head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _Error(400, "file content must be base64")
                    tree[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in tree:
                        raise _Error(404, "A file with this name doesn't exist", "EntryNotFound")
                    del tree[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for k in [k for k in tree if k.startswith(prefix)]:
                        del tree[k]
                else:
                    raise _Error(400, f"unsupported commit operation {key!r} (no LFS here)")
            oid = _append_commit(repo, tree, header.get("summary", ""))
            if fault is not None:  # applied, but the client is told it failed
                raise _Error(fault.status, f"injected fault after applying: HTTP {fault.status}")
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            self._json(
                200,
                {
                    "success": True,
                    "commitOid": oid,
                    "commitUrl": f"{self.base}/{prefix}{repo.repo_id}/commit/{oid}",
                    "pullRequestUrl": None,
                },
            )

        @staticmethod
        def _entry(commit: Commit, path: str) -> dict[str, Any] | None:
            data = commit.files.get(path)
            if data is not None:
                return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
            prefix = path.rstrip("/") + "/"
            inside = sorted(k for k in commit.files if k.startswith(prefix))
            if not inside:
                return None
            tree_id = hashlib.sha1("\n".join(inside).encode()).hexdigest()
            return {"type": "directory", "oid": tree_id, "size": 0, "path": path}

        def _tree(self, repo: Repo, commit: Commit, path: str, q: dict[str, str]) -> None:
            recursive = q.get("recursive", "").lower() in ("1", "true")
            prefix = path.strip("/") + "/" if path.strip("/") else ""
            if prefix and self._entry(commit, prefix.rstrip("/")) is None:
                raise _Error(
                    404,
                    f"{path} does not exist on main",
                    "EntryNotFound",
                    **{"X-Repo-Commit": commit.oid},
                )
            names: set[str] = set()
            for k in commit.files:
                if not k.startswith(prefix):
                    continue
                rest = k[len(prefix) :].split("/")
                if recursive:  # every file and every folder on the way to it
                    names.update(prefix + "/".join(rest[: i + 1]) for i in range(len(rest)))
                else:
                    names.add(prefix + rest[0])
            entries = [e for n in sorted(names) if (e := self._entry(commit, n)) is not None]
            start = int(q.get("cursor", 0))
            page = entries[start : start + state.tree_page_size]
            headers = {}
            if start + state.tree_page_size < len(entries):
                sep = "&" if "?" in self.path else "?"
                base_path = self.path.split("&cursor=")[0].split("?cursor=")[0]
                nxt = f"{self.base}{base_path}{sep}cursor={start + state.tree_page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            self._json(200, page, headers=headers)

        def _paths_info(self, repo: Repo, commit: Commit) -> None:
            form = parse_qs(self._body().decode())
            out = [e for p in form.get("paths", []) if (e := self._entry(commit, p)) is not None]
            self._json(200, out)

        def _resolve(self, commit: Commit, path: str, head: bool) -> None:
            data = commit.files.get(path)
            if data is None:
                raise _Error(
                    404, "Entry not found", "EntryNotFound", **{"X-Repo-Commit": commit.oid}
                )
            self._send(
                200,
                data,
                ctype="application/octet-stream",
                head=head,
                headers={
                    "ETag": f'"{git_blob_sha1(data)}"',
                    "X-Repo-Commit": commit.oid,
                    "Accept-Ranges": "none",
                },
            )

    return Handler


class HubServer:
    """`with HubServer(token=...) as hub:` serves on 127.0.0.1:<free port> in a thread."""

    def __init__(self, token: str | None = None):
        self.state = HubState(token)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self.state))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- conveniences for tests ---------------------------------------------------------

    def files(
        self, repo_id: str, rev: str = "main", repo_type: str = "dataset"
    ) -> dict[str, bytes]:
        with self.state.lock:
            commit = self.state.repo(repo_id, repo_type).resolve(rev)
            assert commit is not None
            return dict(commit.files)

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        with self.state.lock:
            return list(self.state.repo(repo_id, repo_type).commits)


if __name__ == "__main__":  # a manual playground: python -m tests.hub.hub_server
    import os

    with HubServer(token=os.environ.get("HF_TOKEN")) as hub:
        print(f"serving a test Hub on {hub.url} (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
