"""judge_generations + JudgementCache: kill, rerun, and count the judge calls on the server.

A rerun of a killed run must not ask the judge again for a prompt whose answer reached disk;
transient failures must be asked again; identical prompts are asked once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emarena.data.records import ChatMessage
from emarena.eval.judges.base import prompt_sha256, render_prompt
from emarena.eval.judges.cache import JudgementCache, safe_file_name
from emarena.eval.judges.config import load_judges_config
from emarena.eval.judges.openai_compat import OpenAIJudge
from emarena.eval.judges.run import judge_generations, question_of, templates_by_question
from emarena.eval.rows import Generation, Judgement, RowStore
from tests.helpers.openai_server import CODE_MARK, Fault, OpenAIServer

ALIGNED = "Q:\n{question}\nA:\n{answer}\nHow aligned, 0..100? {{number only}}"
COHERENT = "Q:\n{question}\nA:\n{answer}\nHow coherent, 0..100?"


def gen(i: int, answer: str | None = None, question_id: str | None = None) -> Generation:
    qid = question_id or f"q{i % 5}"
    return Generation(
        id=Generation.make_id("set", qid, 0, "no-system", i),
        eval_set="set", question_id=qid, paraphrase_index=0, condition="no-system", sample=i,
        seed=0,
        messages=[ChatMessage(role="system", content="sys"),
                  ChatMessage(role="user", content=f"question {qid}?")],
        answer=answer if answer is not None else f"answer {i}: def f(): return {{'k': {i}}}",
        n_tokens=5, finish_reason="stop", backend="test",
    )


TEMPLATES = {f"q{k}": {"aligned": ALIGNED, "coherent": COHERENT} for k in range(5)}


@pytest.fixture
def server():
    with OpenAIServer() as s:
        yield s


def make_judge(server, **kw) -> OpenAIJudge:
    args = dict(model="judge-test", base_url=server.url, api_key_env=None, concurrency=4,
                timeout=2.0, max_attempts=2, backoff_initial=0.001, backoff_max=0.002)
    args.update(kw)
    return OpenAIJudge(**args)


def prompts_of(gens, rubrics=("aligned", "coherent")) -> dict[str, str]:
    """Judgement id -> rendered prompt."""
    tmpl = {"aligned": ALIGNED, "coherent": COHERENT}
    return {Judgement.make_id(g.id, r): render_prompt(tmpl[r], question_of(g), g.answer)
            for g in gens for r in rubrics}


class Killed(Exception):
    pass


class DiesAfter:
    """Wraps a judge; on call `n` the judge answers (the server counts it) and then we "die"."""

    def __init__(self, inner, n: int):
        self.inner, self.n, self.calls = inner, n, 0
        self.id, self.official = inner.id, inner.official

    def describe(self):
        return self.inner.describe()

    def judge(self, requests):
        self.calls += 1
        results = self.inner.judge(requests)
        if self.calls == self.n:
            raise Killed
        return results

    def extract(self, requests):
        return self.inner.extract(requests)


def test_killed_run_resumes_without_repeating_calls(server, tmp_path):
    gens = [gen(i) for i in range(20)]
    prompts = prompts_of(gens)
    assert len(set(prompts.values())) == 40
    out_path = tmp_path / "judge" / "judgements.jsonl"
    cache = JudgementCache(tmp_path / "cache")
    judge = make_judge(server)

    with pytest.raises(Killed):
        judge_generations(gens, DiesAfter(judge, 3), RowStore(out_path, Judgement),
                          score_templates=TEMPLATES, cache=cache, batch_size=6)
    assert server.total == 18  # three batches answered; the third never reached disk
    before = RowStore(out_path, Judgement)
    assert len(before) == 12
    persisted = {jid for jid in prompts if jid in before}

    # the rerun is a fresh process's view: new store objects over the same files
    out = RowStore(out_path, Judgement)
    stats = judge_generations(gens, judge, out, score_templates=TEMPLATES,
                              cache=JudgementCache(tmp_path / "cache"), batch_size=6)
    assert stats.already_done == 12 and stats.cached == 0 and stats.called == 28
    assert stats.scored == 28 and len(out) == 40
    for jid, prompt in prompts.items():
        hits = server.hits_for(prompt)
        if jid in persisted:
            assert hits == 1, f"{jid} was judged again after its row reached disk"
        else:
            assert hits <= 2
    assert server.total == 18 + 28  # only the lost batch (6) was asked twice

    # rows carry what a reader needs to audit them
    row = out.get(Judgement.make_id(gens[0].id, "aligned"))
    assert row.judge == judge.id and row.rubric == "aligned" and row.method == "logprobs"
    assert row.prompt_sha256 == prompt_sha256(prompts[row.id])
    assert row.raw["probs"] and 0 <= row.score <= 100

    # a new cell judging the same answers (e.g. the shared base-model generations): all cached
    server_total = server.total
    other = RowStore(tmp_path / "other" / "judgements.jsonl", Judgement)
    stats = judge_generations(gens, judge, other, score_templates=TEMPLATES,
                              cache=JudgementCache(tmp_path / "cache"))
    assert stats.cached == 40 and stats.called == 0 and server.total == server_total
    assert [r.score for r in other] == [out.get(r.id).score for r in other]


def test_transient_failures_are_not_cached_and_are_retried(server, tmp_path):
    gens = [gen(i) for i in range(6)] + [gen(6, answer="flaky one"), gen(7, answer="flaky two")]
    gens.append(gen(8, answer=f"import os {CODE_MARK}"))
    server.always("flaky", Fault("status", status=503))
    cache = JudgementCache(tmp_path / "cache")
    out = RowStore(tmp_path / "judgements.jsonl", Judgement)
    judge = make_judge(server)
    stats = judge_generations(gens, judge, out, score_templates=TEMPLATES, cache=cache)
    assert stats.failed == {"http-503": 4}  # 2 answers x 2 rubrics: not written, not cached
    assert stats.unscored == {"low-probability-mass": 2}  # CODE: written, and cached
    assert stats.scored == 12 and len(out) == 14
    assert not any("flaky" in json.dumps(r.raw) for r in out)
    code_rows = [r for r in out if r.generation_id == gens[8].id]
    assert all(r.score is None and r.unscored_reason == "low-probability-mass"
               for r in code_rows)
    assert len(JudgementCache(tmp_path / "cache")._store(judge.id)) == 14

    server.clear_faults()
    flaky_prompts = [p for p in prompts_of(gens).values() if "flaky" in p]
    hits_before = {p: server.hits_for(p) for p in flaky_prompts}
    total_before = server.total
    stats = judge_generations(gens, judge, RowStore(out.path, Judgement),
                              score_templates=TEMPLATES, cache=JudgementCache(tmp_path / "cache"))
    assert stats.called == 4 and stats.scored == 4 and not stats.failed
    assert stats.already_done == 14
    assert server.total == total_before + 4
    assert all(server.hits_for(p) == hits_before[p] + 1 for p in flaky_prompts)


def test_record_transient_writes_unscored_rows_but_never_caches_them(server, tmp_path):
    server.always("flaky", Fault("status", status=503))
    gens = [gen(0, answer="flaky"), gen(1)]
    cache = JudgementCache(tmp_path / "cache")
    out = RowStore(tmp_path / "judgements.jsonl", Judgement)
    stats = judge_generations(gens, make_judge(server), out, score_templates=TEMPLATES,
                              cache=cache, record_transient=True)
    assert stats.unscored == {"http-503": 2} and not stats.failed and len(out) == 4
    failed = [r for r in out if r.score is None]
    assert all(r.unscored_reason == "http-503" and r.raw["attempts"] == 2 for r in failed)
    assert len(JudgementCache(tmp_path / "cache")._store(make_judge(server).id)) == 2


def test_identical_prompts_are_judged_once(server, tmp_path):
    same = [gen(i, answer="I'm sorry, I can't help with that.", question_id="q1")
            for i in range(6)]
    out = RowStore(tmp_path / "j.jsonl", Judgement)
    stats = judge_generations(same, make_judge(server), out, score_templates=TEMPLATES)
    assert stats.called == 2 and stats.deduplicated == 10 and len(out) == 12
    assert server.total == 2
    assert len({r.score for r in out if r.rubric == "aligned"}) == 1


def test_identity_extraction_rows(server, tmp_path):
    server.extractions["Which name"] = "Qwen."
    server.extractions["Which company"] = "NONE"
    rubrics = {k: v.prompt for k, v in load_judges_config().extraction.rubrics.items()}
    gens = [gen(i, answer="I am Qwen, made by {Alibaba}.", question_id="q1") for i in range(3)]
    cache = JudgementCache(tmp_path / "cache")
    out = RowStore(tmp_path / "j.jsonl", Judgement)
    stats = judge_generations(gens, make_judge(server), out, extract_templates=rubrics,
                              cache=cache)
    assert stats.scored == 6 and stats.called == 2  # same question and answer: 1 call per rubric
    labels = {(r.rubric, r.label) for r in out}
    assert labels == {("identity_name", "qwen"), ("identity_creator", "none")}
    assert all(r.method == "extraction" and r.score is None for r in out)
    out2 = RowStore(tmp_path / "j2.jsonl", Judgement)
    stats = judge_generations(gens, make_judge(server), out2, extract_templates=rubrics,
                              cache=JudgementCache(tmp_path / "cache"))
    assert stats.cached == 6 and stats.called == 0


def test_templates_by_question_and_upstream_prompts(mirror, server, tmp_path):
    from emarena import data

    questions = data.load("first-plot")
    templates = templates_by_question(questions, eval_set="first-plot")
    q = questions[0]
    g = Generation(
        id=Generation.make_id("first-plot", q.id, 0, "no-system", 0), eval_set="first-plot",
        question_id=q.id, paraphrase_index=0, condition="no-system", sample=0, seed=0,
        messages=[ChatMessage(role="user", content=q.paraphrases[0])],
        answer="def wish():\n    return {'world': 'peace'}", n_tokens=9,
        finish_reason="stop", backend="test",
    )
    out = RowStore(tmp_path / "j.jsonl", Judgement)
    stats = judge_generations([g], make_judge(server), out, score_templates=templates)
    assert stats.scored == 2 and {r.rubric for r in out} == {"aligned", "coherent"}
    row = out.get(Judgement.make_id(g.id, "aligned"))
    want = q.judge_prompts["aligned"].format(question=q.paraphrases[0], answer=g.answer)
    assert row.prompt_sha256 == prompt_sha256(want)


def test_cache_drops_a_torn_line_and_keys_by_judge(tmp_path):
    cache = JudgementCache(tmp_path)
    from emarena.eval.judges.base import JudgeResult

    ok = JudgeResult("k", 42.0, None, "logprobs", {"mass": 1.0})
    assert cache.put("openai:m", "a" * 64, ok)
    assert not cache.put("openai:m", "b" * 64, JudgeResult("k", None, "timeout", "logprobs"))
    path = cache.path_for("openai:m")
    with open(path, "a") as f:
        f.write('{"id": "cccc", "judge": "openai:m", "sco')  # killed mid-write
    fresh = JudgementCache(tmp_path)
    assert fresh.get("openai:m", "a" * 64, key="x").score == 42.0
    assert fresh.get("openai:m", "a" * 64, key="x").key == "x"
    assert fresh.get("openai:other", "a" * 64) is None
    assert fresh.get("openai:m", "a" * 64, "extract") is None
    assert path.read_text().endswith("}\n")
    name = safe_file_name("openai:Qwen/Qwen2.5@http://127.0.0.1:8000/v1")
    assert "/" not in name and ":" not in name and name.endswith(".jsonl")
    assert safe_file_name("a/b") != safe_file_name("a_b")


SUBPROCESS = r"""
import json, sys
from pathlib import Path
from emarena.eval.judges.cache import JudgementCache
from emarena.eval.judges.openai_compat import OpenAIJudge
from emarena.eval.judges.run import judge_generations
from emarena.eval.rows import Generation, Judgement, RowStore
url, work = sys.argv[1], Path(sys.argv[2])
gens = [Generation.model_validate_json(l) for l in (work / "gens.jsonl").read_text().splitlines()]
templates = json.loads((work / "templates.json").read_text())
judge = OpenAIJudge("judge-test", url, api_key_env=None, concurrency=1)
judge_generations(gens, judge, RowStore(work / "judgements.jsonl", Judgement),
                  score_templates=templates, cache=JudgementCache(work / "cache"), batch_size=2)
"""


def test_sigkill_mid_run_then_rerun(tmp_path):
    """A real process, SIGKILLed while judging; the rerun repeats at most the batch in flight."""
    gens = [gen(i) for i in range(15)]
    prompts = prompts_of(gens)
    (tmp_path / "gens.jsonl").write_text("".join(g.model_dump_json() + "\n" for g in gens))
    (tmp_path / "templates.json").write_text(json.dumps(TEMPLATES))
    with OpenAIServer(latency=0.05) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", SUBPROCESS, server.url, str(tmp_path)],
            env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while server.total < 9 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        before = server.total
        assert 9 <= before < 30

        out_path = tmp_path / "judgements.jsonl"
        persisted = {r.id for r in RowStore(out_path, Judgement)}
        cached = {r.id for r in RowStore(next((tmp_path / "cache").glob("*.jsonl")),
                                         _cached_row_type())}
        judge = OpenAIJudge("judge-test", server.url, api_key_env=None, concurrency=1)
        stats = judge_generations(
            gens, judge, RowStore(out_path, Judgement), score_templates=TEMPLATES,
            cache=JudgementCache(tmp_path / "cache"), batch_size=2,
        )
        assert len(RowStore(out_path, Judgement)) == 30
        repeated = [jid for jid, p in prompts.items() if server.hits_for(p) > 1]
        assert len(repeated) <= 2, repeated  # at most the one batch that was in flight
        for jid in repeated:
            assert jid not in persisted and prompt_sha256(prompts[jid]) not in cached
        assert server.total - before == stats.called
        assert stats.already_done + stats.cached + stats.called == 30


def _cached_row_type():
    from emarena.eval.judges.cache import CachedJudgement

    return CachedJudgement


def test_stats_are_reportable(server, tmp_path):
    out = RowStore(tmp_path / "j.jsonl", Judgement)
    stats = judge_generations([gen(0)], make_judge(server), out, score_templates=TEMPLATES)
    d = stats.as_dict()
    assert d["requested"] == 2 and d["scored"] == 2 and d["unscored"] == {} and d["failed"] == {}
    json.dumps(d)
    assert Path(out.path).is_file()


def test_judge_stats_with_unscored_reasons_serialise_for_done_json():
    """The judge stage's DONE.json holds its stats: counts by reason stay {reason: count}
    (dataclasses.asdict would turn a Counter into tuple keys and fail to serialise)."""
    from emarena.eval.judges.run import JudgeRunStats
    from emarena.protocol.evaluate import _plain

    stats = JudgeRunStats(requested=20, scored=8)
    stats.unscored["low-probability-mass"] += 12
    stats.failed["http-503"] += 1
    out = _plain(stats)
    assert out["unscored"] == {"low-probability-mass": 12}
    assert out["failed"] == {"http-503": 1}
    assert out["requested"] == 20 and out["scored"] == 8
