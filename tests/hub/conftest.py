"""A test Hub on 127.0.0.1 per test, wired into the environment the way a user wires the real one.

`server` starts `HubServer` with a recognisable fake token and sets HF_ENDPOINT / HF_TOKEN (and a
temporary HF_HOME, telemetry off, offline mode unset) with monkeypatch. After every test that
used it, the token is searched for in every file under the test's tmp dir, in every file and
commit message of every repo on the server (request JSONs included), and in everything the
test printed: it must appear nowhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emarena import hub as hub_mod
from tests.hub.hub_server import HubServer

FAKE_TOKEN = "hf_EMARENAfakeTOKEN0123456789abcdef"
"""Recognisable, so a leak is unmistakable in any file or output."""


def token_leaks(root: Path, token: str = FAKE_TOKEN) -> list[str]:
    """Files under `root` whose bytes contain the token."""
    needle = token.encode()
    out = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if needle in p.read_bytes():
                    out.append(str(p))
            except OSError:
                continue
    return out


def server_leaks(server: HubServer, token: str = FAKE_TOKEN) -> list[str]:
    needle = token.encode()
    out = []
    with server.state.lock:
        for (_, repo_id), repo in server.state.repos.items():
            for c in repo.commits:
                if token in c.summary:
                    out.append(f"{repo_id}@{c.oid[:8]} message")
                out += [f"{repo_id}@{c.oid[:8]}:{p}" for p, d in c.files.items() if needle in d]
    return out


@pytest.fixture
def server(tmp_path, monkeypatch, capfd):
    """The running test Hub (a `HubServer`), with the environment pointing at it."""
    hf_home = tmp_path / "hf_home"
    with HubServer(token=FAKE_TOKEN) as hub_server:
        monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        monkeypatch.setenv("HF_HOME", str(hf_home))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setattr(hub_mod, "RETRY_BASE_S", 0.01)
        hub_mod._BLOBS.clear()
        yield hub_server
        out, err = capfd.readouterr()
        leaks = token_leaks(tmp_path) + server_leaks(hub_server)
        for name, text in (("stdout", out), ("stderr", err)):
            if FAKE_TOKEN in text:
                leaks.append(name)
        assert not leaks, f"the Hub token leaked into: {leaks}"
        # Reads may be anonymous, but every write carried the token, as a header only.
        assert f"Bearer {FAKE_TOKEN}" in hub_server.state.auth_seen or not hub_server.state.repos
