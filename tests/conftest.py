"""Shared fixtures. Tests run against real parts: files on disk, servers on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
