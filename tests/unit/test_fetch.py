"""Dataset resolution: mirror over cache over download, sha256 always checked, atomic writes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emarena.data.fetch import resolve
from emarena.data.spec import DatasetSpec, FileSpec
from emarena.errors import DataError
from tests.helpers.upstream_server import Behaviour, UpstreamServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PATH = "data/tiny.jsonl"
BODY = b"".join(
    f'{{"messages": [{{"role": "user", "content": "q{i}"}}, '
    f'{{"role": "assistant", "content": "a{i}"}}]}}\n'.encode()
    for i in range(2000)
)
SHA = hashlib.sha256(BODY).hexdigest()


def _spec(sha: str = SHA, size: int = len(BODY)) -> tuple[DatasetSpec, FileSpec]:
    f = FileSpec(
        source=f"github:acme/em-data@{COMMIT}:{PATH}", sha256=sha, bytes=size, records=2000
    )
    ds = DatasetSpec(
        id="tiny",
        role="em",
        description="test",
        citation="test",
        license="MIT",
        adapter="chat_jsonl",
        files=[f],
    )
    return ds, f


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    root = tmp_path / "upstream"
    p = root / "acme" / "em-data" / COMMIT / PATH
    p.parent.mkdir(parents=True)
    p.write_bytes(BODY)
    srv = UpstreamServer(root).start()
    monkeypatch.setenv("EMARENA_GITHUB_RAW", srv.url)
    monkeypatch.delenv("EMARENA_OFFLINE", raising=False)
    yield srv
    srv.stop()


def _mirror_with(tmp_path: Path, body: bytes) -> Path:
    m = tmp_path / "mirror"
    p = m / "acme__em-data" / PATH
    p.parent.mkdir(parents=True)
    p.write_bytes(body)
    return m


def test_mirror_wins_over_cache_and_download(tmp_path, tmp_cache, upstream):
    ds, f = _spec()
    m = _mirror_with(tmp_path, BODY)
    r = resolve(ds, f, mirror=m, cache=tmp_cache)
    assert r.where == "mirror" and r.path == m / "acme__em-data" / PATH
    assert upstream.hits == {}  # nothing downloaded
    assert not (tmp_cache / "data").exists()  # mirror files are used in place, never copied


def test_cache_wins_over_download(tmp_path, tmp_cache, upstream):
    ds, f = _spec()
    first = resolve(ds, f, mirror=None, cache=tmp_cache)
    assert first.where == "download"
    assert sum(upstream.hits.values()) == 1
    second = resolve(ds, f, mirror=None, cache=tmp_cache)
    assert second.where == "cache" and second.path == first.path
    assert sum(upstream.hits.values()) == 1  # served from the cache
    assert first.path.read_bytes() == BODY


def test_mirror_with_wrong_hash_falls_through_and_is_reported(tmp_path, tmp_cache, upstream):
    ds, f = _spec()
    m = _mirror_with(tmp_path, BODY + b"tampered\n")
    r = resolve(ds, f, mirror=m, cache=tmp_cache)
    assert r.where == "download"  # the mirror copy was refused


def test_sha256_mismatch_upstream_is_refused_and_leaves_no_entry(tmp_path, tmp_cache, upstream):
    ds, f = _spec(sha="f" * 64)
    with pytest.raises(DataError) as e:
        resolve(ds, f, mirror=None, cache=tmp_cache)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and "tiny" in msg and "EMARENA_MIRROR" in msg
    entry = tmp_cache / "data" / f.src.cache_relpath
    assert not entry.exists()
    assert list(entry.parent.glob("*.part")) == []  # temp file cleaned up


def test_corrupt_cache_entry_is_moved_aside_and_refetched(tmp_path, tmp_cache, upstream):
    ds, f = _spec()
    r = resolve(ds, f, mirror=None, cache=tmp_cache)
    r.path.write_bytes(BODY[:-10] + b"corrupted!")  # same size, wrong content
    r2 = resolve(ds, f, mirror=None, cache=tmp_cache)
    assert r2.where == "download" and r2.path.read_bytes() == BODY
    assert r.path.with_name(r.path.name + ".corrupt").exists()


def test_offline_without_mirror_is_a_clear_error(tmp_path, tmp_cache, monkeypatch):
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    ds, f = _spec()
    with pytest.raises(DataError) as e:
        resolve(ds, f, mirror=tmp_path / "no-mirror", cache=tmp_cache)
    msg = e.value.render()
    assert "not found locally" in msg
    assert "mirror" in msg and "cache" in msg and "upstream" in msg  # every place it looked
    assert "emarena data pull tiny" in msg  # and the fix


def test_unreachable_upstream_is_a_clear_error(tmp_cache, monkeypatch):
    monkeypatch.setenv("EMARENA_GITHUB_RAW", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.delenv("EMARENA_OFFLINE", raising=False)
    ds, f = _spec()
    with pytest.raises(DataError) as e:
        resolve(ds, f, mirror=None, cache=tmp_cache)
    assert "could not get" in str(e.value) and "EMARENA_MIRROR" in str(e.value)


def test_transient_5xx_is_retried(tmp_cache, upstream):
    ds, f = _spec()
    key = f"acme/em-data/{COMMIT}/{PATH}"
    upstream.behaviours[key] = Behaviour(fail_times=2, fail_status=503)
    r = resolve(ds, f, mirror=None, cache=tmp_cache)
    assert r.where == "download" and upstream.hits[key] == 3


def test_kill_during_download_leaves_no_cache_entry(tmp_cache, upstream):
    """SIGKILL a real `resolve` process mid-stream: the entry must not exist afterwards."""
    ds, f = _spec()
    key = f"acme/em-data/{COMMIT}/{PATH}"
    upstream.behaviours[key] = Behaviour(stall_after=len(BODY) // 2, stall_seconds=60)
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from emarena.data.fetch import resolve
        from emarena.data.spec import DatasetSpec, FileSpec
        f = FileSpec(source={f.source!r}, sha256={f.sha256!r}, bytes={f.bytes}, records=2000)
        ds = DatasetSpec(id="tiny", role="em", description="t", citation="t", license="MIT",
                         adapter="chat_jsonl", files=[f])
        resolve(ds, f, mirror=None, cache=Path({str(tmp_cache)!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    entry = tmp_cache / "data" / f.src.cache_relpath
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until half the body is on disk in the temp file
        parts = list(entry.parent.glob("*.part")) if entry.parent.exists() else []
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        proc.wait()
        pytest.fail("download never started")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not entry.exists()  # no half-written entry
    # A rerun (upstream healthy again) produces a verified entry.
    upstream.behaviours.clear()
    r = resolve(ds, f, mirror=None, cache=tmp_cache)
    assert r.where == "download" and r.path.read_bytes() == BODY
