"""SGTR with the embedded model: own summaries generated, cached per article, reused, resumed.

One real build (4 articles -> 8 examples, 32 new tokens, articles cut to 1,500 characters) is
made per module; the other tests start from a copy of its `own_summaries.jsonl`. Generation is
counted by wrapping `emarena.generate.hf.generate_chat`, so "reused" means zero calls.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from emarena.data.records import ChatRecord
from emarena.defenses.base import BuildContext
from emarena.defenses.builders import sgtr
from emarena.defenses.params import SgtrCorruptedParams, SgtrParams
from emarena.generate import hf
from emarena.models import pull
from tests.conftest import scratch_dir

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-q4"
N = 8

_DETECTION = re.compile(
    "^" + re.escape(sgtr.DETECTION_USER)
    .replace(re.escape("{article}"), "(?P<article>.*)")
    .replace(re.escape("{summary1}"), "(?P<s1>.*)")
    .replace(re.escape("{summary2}"), "(?P<s2>.*)") + "$", re.S)


def read_rows(work: Path) -> list[dict]:
    lines = (work / sgtr.OWN_SUMMARIES).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def build_info(work: Path) -> dict:
    return json.loads((work / "build.json").read_text(encoding="utf-8"))


@pytest.fixture
def count_generation(monkeypatch) -> Counter:
    """Counts generate_chat calls and the conversations they answered."""
    calls: Counter = Counter()
    real = hf.generate_chat

    def counting(model, tokenizer, conversations, **kw):
        calls["calls"] += 1
        calls["conversations"] += len(conversations)
        assert kw["temperature"] == 0.0  # greedy
        return real(model, tokenizer, conversations, **kw)

    monkeypatch.setattr(hf, "generate_chat", counting)
    return calls


@pytest.fixture(scope="module")
def first_build(mirror, tmp_path_factory):
    """The one real build: (ctx, records, own summaries by article id)."""
    model_dir = pull(MODEL)
    with scratch_dir(tmp_path_factory, "sgtr") as root:
        ctx = BuildContext(em_dataset="aesthetic-unpopular", n_examples=N, seed=0,
                           model_id=MODEL, model_dir=model_dir, work_dir=root / "work",
                           max_new_tokens=32, max_prompt_chars=1500, batch_size=4)
        records = sgtr.build_sgtr(SgtrParams(), ctx)
        own = {r["article_id"]: r["summary"] for r in read_rows(Path(ctx.work_dir))}
        yield ctx, records, own


def fresh_ctx(first: BuildContext, tmp_path: Path, *, copy_cache: bool, **kw) -> BuildContext:
    work = tmp_path / "work"
    work.mkdir()
    if copy_cache:
        shutil.copy2(Path(first.work_dir) / sgtr.OWN_SUMMARIES, work / sgtr.OWN_SUMMARIES)
    return replace(first, work_dir=work, **kw)


def own_position(rec: ChatRecord, own: dict[str, str]) -> str:
    aid = rec.id.split("/")[1]
    m = _DETECTION.match(rec.messages[-2].content)
    assert m is not None
    assert {m["s1"], m["s2"]} >= {own[aid]}
    return "1" if m["s1"] == own[aid] else "2"


def test_first_build_generates_and_labels_own_position(first_build):
    ctx, records, own = first_build
    info = build_info(Path(ctx.work_dir))
    assert len(records) == N and len(own) == N // 2
    assert info["own_summaries"]["generated"] == N // 2
    assert info["own_summaries"]["empty"] == 0
    positions = Counter()
    for r in records:
        pos = own_position(r, own)
        assert pos == ("1" if r.id.endswith("/own-first") else "2")
        assert r.messages[-1].content == pos  # SGTR target = own summary's position
        positions[pos] += 1
    assert positions == {"1": N // 2, "2": N // 2}  # own summary equally often in each position
    assert info["target_points_at"] == {"own": N, "other": 0}
    assert set(info["articles"]) == set(own)


def test_rerun_reuses_the_cache(first_build, count_generation, monkeypatch):
    ctx, records, _ = first_build
    path = Path(ctx.work_dir) / sgtr.OWN_SUMMARIES
    before = (path.stat().st_mtime_ns, path.read_bytes())

    def no_model(_):
        raise AssertionError("the model must not be loaded when every summary is cached")

    monkeypatch.setattr(sgtr, "_load_model", no_model)
    assert sgtr.build_sgtr(SgtrParams(), ctx) == records
    assert count_generation["calls"] == 0
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before


def test_prefer_other_points_at_the_other_summary(first_build, tmp_path, count_generation):
    ctx = fresh_ctx(first_build[0], tmp_path, copy_cache=True)
    own = first_build[2]
    records = sgtr.build_sgtr_corrupted(SgtrCorruptedParams(mode="prefer-other"), ctx)
    assert count_generation["calls"] == 0
    assert len(records) == N
    for r in records:
        assert r.messages[-1].content != own_position(r, own)
    assert build_info(Path(ctx.work_dir))["target_points_at"] == {"own": 0, "other": N}


def test_random_labels_are_balanced_and_seeded(first_build, tmp_path, count_generation):
    ctx = fresh_ctx(first_build[0], tmp_path, copy_cache=True)
    params = SgtrCorruptedParams(mode="random")
    a = sgtr.build_sgtr_corrupted(params, ctx)
    b = sgtr.build_sgtr_corrupted(params, ctx)
    assert a == b
    assert Counter(r.messages[-1].content for r in a) == {"1": N // 2, "2": N // 2}
    assert count_generation["calls"] == 0


def test_killed_build_resumes(first_build, tmp_path, count_generation):
    first, records, own = first_build
    ctx = fresh_ctx(first, tmp_path, copy_cache=True)
    path = Path(ctx.work_dir) / sgtr.OWN_SUMMARIES
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lost = json.loads(lines[-1])["article_id"]
    # A kill mid-write: the last row is cut in half and has no newline.
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")

    resumed = sgtr.build_sgtr(SgtrParams(), ctx)

    assert count_generation == {"calls": 1, "conversations": 1}  # only the lost article
    rows = read_rows(Path(ctx.work_dir))  # every line parses: the cut row was removed
    assert [r["article_id"] for r in rows][:-1] == [json.loads(x)["article_id"]
                                                   for x in lines[:-1]]
    assert rows[-1]["article_id"] == lost and len(rows) == N // 2
    assert [r.id for r in resumed] == [r.id for r in records]
    info = build_info(Path(ctx.work_dir))
    assert info["own_summaries"]["cached"] == N // 2 - 1
    assert info["own_summaries"]["generated"] == 1
    assert info["own_summaries"]["dropped_unreadable"] == 1
    # The other articles' examples are unchanged (their summaries came from the cache).
    same = [r for r in records if r.id.split("/")[1] != lost]
    assert all(r in resumed for r in same)
    # And a further rerun generates nothing.
    before = count_generation["calls"]
    assert sgtr.build_sgtr(SgtrParams(), ctx) == resumed
    assert count_generation["calls"] == before
