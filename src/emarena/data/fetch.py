"""Find a pinned upstream file: mirror, then cache, then download. Always sha256-verified.

Resolution order (ARCHITECTURE.md):
  1. a mirror folder laid out `<owner>__<repo>/<path>` (`--mirror` or `EMARENA_MIRROR`),
  2. the local cache (`EMARENA_CACHE`, default `~/.cache/emarena`), under `data/`,
  3. the upstream download (GitHub raw or the HF Hub), unless `EMARENA_OFFLINE=1`.

A file in the mirror is used in place (never copied); a downloaded file is written to a temp
file beside its cache entry, hashed while it streams, and renamed into place only when the
sha256 matches, so a killed download never leaves a half-written cache entry. A cache entry
whose hash no longer matches is moved aside (`*.corrupt`) and fetched again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from emarena import settings
from emarena.data.spec import DatasetSpec, FileSpec
from emarena.errors import DataError

Where = Literal["mirror", "cache", "download"]
CHUNK = 1 << 20


@dataclass(frozen=True)
class Resolved:
    path: Path
    where: Where


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _matches(path: Path, spec: FileSpec, *, full: bool = True) -> bool:
    if not path.is_file() or path.stat().st_size != spec.bytes:
        return False
    return sha256_file(path) == spec.sha256 if full else True


def locate(
    spec: FileSpec, *, mirror: Path | None = None, cache: Path | None = None, verify: bool = True
) -> Resolved | None:
    """Where the file is available locally (mirror first, then cache), or None."""
    mirror = mirror if mirror is not None else settings.mirror_dir()
    cache = cache if cache is not None else settings.cache_dir()
    src = spec.src
    if mirror is not None:
        p = mirror / src.mirror_relpath
        if _matches(p, spec, full=verify):
            return Resolved(p, "mirror")
    p = cache / "data" / src.cache_relpath
    if _matches(p, spec, full=verify):
        return Resolved(p, "cache")
    return None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return False


def download(
    spec: FileSpec, dest: Path, *, progress=None, timeout: float = 60.0, attempts: int = 4
) -> None:
    """Stream `spec` to `dest` atomically; raise DataError on a hash mismatch or failure."""
    url = spec.src.url()
    dest.parent.mkdir(parents=True, exist_ok=True)

    @retry(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def _once() -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            h = hashlib.sha256()
            with (
                os.fdopen(fd, "wb") as out,
                httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r,
            ):
                r.raise_for_status()
                for chunk in r.iter_bytes():  # as received: no buffering
                    out.write(chunk)
                    h.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            got = h.hexdigest()
            if got != spec.sha256:
                raise DataError(
                    f"sha256 mismatch for {spec.src}: expected {spec.sha256}, got {got}",
                    where=url,
                    fix="upstream changed or the download was tampered with; the registry pins "
                    "the old content, so use a mirror that has it (EMARENA_MIRROR) or update "
                    "datasets.yaml in a new suite version",
                )
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    _once()


def resolve(
    ds: DatasetSpec,
    spec: FileSpec,
    *,
    mirror: Path | None = None,
    cache: Path | None = None,
    allow_download: bool = True,
    progress=None,
) -> Resolved:
    """Return a verified local path for one file of `ds`, downloading it if needed."""
    mirror = mirror if mirror is not None else settings.mirror_dir()
    cache = cache if cache is not None else settings.cache_dir()
    src = spec.src
    tried: list[str] = []

    if mirror is not None:
        p = mirror / src.mirror_relpath
        if p.is_file():
            got = sha256_file(p)
            if got == spec.sha256:
                return Resolved(p, "mirror")
            tried.append(f"mirror {p} (sha256 {got[:12]}…, expected {spec.sha256[:12]}…)")
        else:
            tried.append(f"mirror {p} (absent)")
    else:
        tried.append(f"mirror (none: set {settings.ENV_MIRROR} or pass --mirror)")

    cp = cache / "data" / src.cache_relpath
    if cp.is_file():
        if _matches(cp, spec):
            return Resolved(cp, "cache")
        # A corrupt cache entry is moved aside (kept for inspection), then refetched.
        os.replace(cp, cp.with_name(cp.name + ".corrupt"))
        tried.append(f"cache {cp} (corrupt: moved to {cp.name}.corrupt)")
    else:
        tried.append(f"cache {cp} (absent)")

    if not allow_download or settings.offline():
        why = "offline (EMARENA_OFFLINE=1)" if settings.offline() else "download not allowed"
        tried.append(f"upstream {src.url()} ({why})")
        raise DataError(
            f"dataset {ds.id!r}: file {src.path} not found locally",
            where=tried,
            fix=f"set {settings.ENV_MIRROR} to a mirror folder, or run "
            f"`emarena data pull {ds.id}` with network",
        )
    try:
        download(spec, cp, progress=progress)
    except DataError as e:
        raise DataError(f"dataset {ds.id!r}: {e.what}", where=tried + e.where, fix=e.fix) from None
    except (httpx.HTTPError, OSError) as e:
        tried.append(f"upstream {src.url()} ({type(e).__name__}: {e})")
        raise DataError(
            f"dataset {ds.id!r}: could not get {src.path}",
            where=tried,
            fix=f"check the network, or set {settings.ENV_MIRROR} to a mirror folder "
            f"and rerun `emarena data pull {ds.id}`",
        ) from None
    return Resolved(cp, "download")
