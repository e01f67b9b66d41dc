"""Shared fixtures. Tests run against real parts: files on disk, servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
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


# --------------------------------------------------------------------------------------------
# One store for the whole session: work done once is shared by every test that needs it.
#
# The engine keeps every stage, generation, judgement and metric in a content-addressed store
# (emarena.protocol.store), so tests that need the same trained stage find it there instead of
# training it again (the point of the store, and what keeps `make test` inside its budget).
# Every subprocess inherits EMARENA_STORE (set below) unless a test gives it a fresh store;
# tests that must train something themselves start from a store seeded with only what they
# may reuse (`seed_store`).

#: The EM dataset of the pipeline tests: the seed paper's (unpopular aesthetic preferences);
#: its conversations are short, so a smoke stage trains in seconds, not minutes.
TEST_EM = "aesthetic-unpopular"


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> Iterator[Path]:
    """The session's store (EMARENA_STORE for every command the tests run). With
    EMARENA_TEST_STORE set, that folder, kept after the session: `make test-heavy` after
    `make test` (as .ci/run does) then finds the canonical stages trained."""
    keep = os.environ.get("EMARENA_TEST_STORE")
    with (contextlib.nullcontext(Path(keep)) if keep
          else scratch_dir(tmp_path_factory, "store")) as root:
        store = root / "store"
        old = os.environ.get("EMARENA_STORE")
        os.environ["EMARENA_STORE"] = str(store)
        try:
            yield store
        finally:
            if old is None:
                os.environ.pop("EMARENA_STORE", None)
            else:
                os.environ["EMARENA_STORE"] = old


def seed_store(src: Path, dst: Path, names: list[str]) -> None:
    """Copy store entries (`stages/<key>`, ...) from `src` into `dst` as hard links (instant,
    no extra disk; entries are never modified in place once done)."""
    for name in names:
        target = dst / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / name, target, copy_function=os.link)


@pytest.fixture(scope="session")
def session_judge() -> Iterator[tuple[str, object]]:
    """One deterministic OpenAI-compatible judge on 127.0.0.1 for the whole session: its id
    (which holds its URL) is the same in every test, so judgements are shared through the store."""
    from tests.helpers.openai_server import OpenAIServer

    old = os.environ.get("EMARENA_JUDGE_API_KEY")
    os.environ["EMARENA_JUDGE_API_KEY"] = "sk-test-not-a-secret"
    with OpenAIServer() as server:
        yield f"openai:test-judge@{server.url}", server
    if old is None:
        os.environ.pop("EMARENA_JUDGE_API_KEY", None)
    else:
        os.environ["EMARENA_JUDGE_API_KEY"] = old


def score_cmd(submission: str, run: Path, *regimes: str, evaluate: bool = False,
              store: Path | None = None, judge: str | None = None, preset: str = "smoke",
              em: str = TEST_EM) -> list[str]:
    """`python -m emarena score` of a reference submission on the embedded model."""
    import sys

    cmd = [sys.executable, "-m", "emarena", "score", str(REPO / "submissions" / submission),
           "--preset", preset, "--em-dataset", em, "--run", str(run)]
    for r in regimes:
        cmd += ["--regimes", r]
    if store is not None:
        cmd += ["--store", str(store)]
    if judge is not None:
        cmd += ["--judge", judge]
    return cmd if evaluate else [*cmd, "--no-eval"]


@dataclass
class Canonical:
    """The session's smoke training, done once: SGTR (prevention and reversal) and word counting
    (reversal) on the embedded model and TEST_EM, trained by two `emarena score` processes
    started together on one fresh store (so they race for the shared EM stage)."""

    store: Path
    runs: dict[str, Path]
    logs: dict[str, str]
    seconds: float


@pytest.fixture(scope="session")
def canonical(shared_store, mirror, tmp_path_factory) -> Iterator[Canonical]:
    import subprocess
    import time

    from emarena import models

    models.pull("smollm2-135m-q4")
    with scratch_dir(tmp_path_factory, "canonical") as root:
        runs = {"sgtr": root / "sgtr", "word-counting": root / "word-counting"}
        regimes = {"sgtr": ("reversal", "prevention"), "word-counting": ("reversal",)}
        t0 = time.monotonic()
        procs = {
            name: subprocess.Popen(
                score_cmd(name, run, *regimes[name], store=shared_store), cwd=REPO,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name, run in runs.items()
        }
        logs = {name: p.communicate(timeout=3600)[0] for name, p in procs.items()}
        for name, p in procs.items():
            assert p.returncode == 0, f"score {name} failed:\n{logs[name][-4000:]}"
        yield Canonical(shared_store, runs, logs, time.monotonic() - t0)


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
