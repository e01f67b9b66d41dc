"""Fixtures of the reliability suite (`pytest -m reliability`, or `python bench/reliability.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.figures import ENV, Ledger


@pytest.fixture(scope="session")
def ledger_path(tmp_path_factory) -> Path:
    env = os.environ.get(ENV)
    return Path(env) if env else tmp_path_factory.mktemp("reliability") / "figures.jsonl"


@pytest.fixture
def figures(ledger_path, request) -> Ledger:
    """`figures.record(area, item, tried=..., handled=..., lost=0, duplicated=0)` after checking."""
    return Ledger(ledger_path, test=request.node.nodeid)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.reliability)
