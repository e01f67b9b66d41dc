"""Shared fixtures. Tests run against real parts: files on disk, servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def scratch_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A module- or session-scoped working folder, removed when its fixture is torn down.

    Training stages write their merged weights (about 540 MB each for the embedded model), so
    the suite would otherwise leave 15 GB or more behind in the temp folder until the session
    ends, and fill a small disk midway. Function-scoped `tmp_path`s are handled by pytest's
    retention policy (pyproject: only failed tests keep theirs). Set EMARENA_KEEP_TEST_DIRS=1
    to keep these folders for debugging."""
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        if os.environ.get("EMARENA_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """An empty EMARENA_CACHE for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMARENA_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The upstream mirror (EMARENA_MIRROR); tests that need the real datasets skip without it."""
    m = os.environ.get("EMARENA_MIRROR")
    if not m or not Path(m).is_dir():
        pytest.skip("EMARENA_MIRROR is not set to a mirror folder")
    return Path(m)


@pytest.fixture(scope="session")
def published_sgtr_em(mirror, tmp_path_factory):
    """`emarena published import sgtr-em` from the mirror, both misalignment rules, 50 bootstrap
    resamples (the tests check counts and values, not intervals): (folder, ImportSummary).
    Built once for the unit tests and the leaderboard's browser test."""
    from emarena.published import import_source

    with scratch_dir(tmp_path_factory, "published-sgtr-em") as root:
        summary = import_source("sgtr-em", root / "records", rules=("suite", "release-plot"),
                                mirror=mirror, cache=root / "cache", allow_download=False,
                                n_resamples=50)
        yield root / "records", summary
