"""OpenAIJudge against a real OpenAI-compatible server on 127.0.0.1 that misbehaves on cue.

Every test checks the contract: one result per request, in order, scored or unscored with a
reason; and the API key (a recognisable fake) never shows up anywhere but the wire.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import pytest

from emarena.errors import EmArenaError
from emarena.eval.judges import JUDGES, resolve_judge
from emarena.eval.judges.aggregate import aggregate_0_100
from emarena.eval.judges.base import JudgeRequest, JudgeResult
from emarena.eval.judges.config import load_judges_config
from emarena.eval.judges.openai_compat import OpenAIJudge
from tests.helpers.openai_server import CODE_MARK, Fault, OpenAIServer, distribution_for

SECRET = "sk-emarena-FAKE-KEY-0123456789abcdef"
KEY_ENV = "EMARENA_TEST_JUDGE_KEY"
TRANSIENT = {"timeout", "connection-error", "malformed-response"}


@pytest.fixture
def server():
    with OpenAIServer() as s:
        yield s


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def make_judge(server, **kw) -> OpenAIJudge:
    args = dict(model="judge-test", base_url=server.url, api_key_env=KEY_ENV, concurrency=8,
                timeout=2.0, max_attempts=6, backoff_initial=0.01, backoff_max=0.05)
    args.update(kw)
    return OpenAIJudge(**args)


def reqs(*prompts: str) -> list[JudgeRequest]:
    return [JudgeRequest(key=f"k{i}", prompt=p) for i, p in enumerate(prompts)]


def expected(prompt: str) -> tuple[float | None, float]:
    return aggregate_0_100(distribution_for(prompt))


def assert_contract(requests: list[JudgeRequest], results: list[JudgeResult]) -> None:
    assert [r.key for r in results] == [r.key for r in requests], "order or keys differ"
    counts = Counter(r.key for r in results)
    assert all(c == 1 for c in counts.values()), f"duplicated: {counts.most_common(3)}"
    for r in results:
        if r.score is None and r.label is None:
            assert r.unscored_reason, f"{r.key}: unscored without a reason"
        else:
            assert r.unscored_reason is None
        if r.score is not None:
            assert 0 <= r.score <= 100


def test_scores_match_betley_rule_and_request_is_upstream_shaped(server, key):
    prompts = [f"judge this answer number {i}: {{braces}} }}" for i in range(12)]
    prompts.append(f"an answer that is just code {CODE_MARK}")
    judge = make_judge(server)
    rq = reqs(*prompts)
    results = judge.judge(rq)
    assert_contract(rq, results)
    for p, r in zip(prompts[:-1], results[:-1], strict=True):
        want, mass = expected(p)
        assert r.method == "logprobs" and r.score == pytest.approx(want, abs=1e-9)
        assert r.raw["mass"] == pytest.approx(mass) and r.raw["attempts"] == 1
        assert r.raw["probs"] and r.raw["model"] == "judge-test"
    code = results[-1]
    assert code.score is None and code.unscored_reason == "low-probability-mass"
    assert code.raw["mass"] == pytest.approx(0.05) and code.raw["content"] == "CODE"
    assert code.cacheable  # deterministic: the same prompt would be unscored again
    for entry in server.log:
        assert entry["params"] == {"model": "judge-test", "max_tokens": 1, "temperature": 0,
                                   "logprobs": True, "top_logprobs": 20, "seed": 0}
        assert entry["n_messages"] == 1 and entry["role"] == "user"
        assert entry["authorization"] == f"Bearer {SECRET}"  # the key is sent, on the wire only
    assert sum(server.hits.values()) == len(prompts)


def test_429_bursts_honour_retry_after(server, key):
    server.on("rate-limited", *[Fault("status", status=429, retry_after="0.2")] * 3)
    # and a burst: the first 8 requests of the run are all rate limited
    server.faults_by_number.update({n: Fault("status", status=429, retry_after="0.1")
                                    for n in range(1, 9)})
    prompts = ["rate-limited prompt"] + [f"burst {i}" for i in range(7)]
    judge = make_judge(server, backoff_initial=0.001, backoff_max=0.002)
    rq = reqs(*prompts)
    t0 = time.monotonic()
    results = judge.judge(rq)
    elapsed = time.monotonic() - t0
    assert_contract(rq, results)
    assert all(r.score is not None for r in results)
    # "rate-limited prompt": burst 429, then its own three 429s -> at least 0.1 + 3 * 0.2 s
    assert results[0].raw["attempts"] >= 4
    assert elapsed >= 0.65, f"Retry-After was not honoured ({elapsed:.2f} s)"
    assert all(r.raw["attempts"] >= 2 for r in results)


def test_retry_after_is_capped(server, key):
    server.on("p", Fault("status", status=429, retry_after="3600"))
    judge = make_judge(server, max_retry_after=0.05)
    t0 = time.monotonic()
    (r,) = judge.judge(reqs("p"))
    assert r.score is not None and r.raw["attempts"] == 2 and time.monotonic() - t0 < 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_then_success(server, key, status):
    server.on("flaky", *[Fault("status", status=status)] * 3)
    judge = make_judge(server)
    (r,) = judge.judge(reqs("a flaky prompt"))
    assert r.score == pytest.approx(expected("a flaky prompt")[0])
    assert r.raw["attempts"] == 4


def test_timeouts_retried_then_unscored(server, key):
    server.on("slow once", Fault("sleep", seconds=3))
    server.always("always slow", Fault("sleep", seconds=3))
    judge = make_judge(server, timeout=0.5, max_attempts=2)
    rq = reqs("slow once", "always slow", "quick")
    results = judge.judge(rq)
    assert_contract(rq, results)
    assert results[0].score is not None and results[0].raw["attempts"] == 2
    assert results[1].score is None and results[1].unscored_reason == "timeout"
    assert results[1].raw["attempts"] == 2 and not results[1].cacheable
    assert results[2].score is not None and results[2].raw["attempts"] == 1


def test_malformed_bodies_retried_then_unscored(server, key):
    server.on("bad once", Fault("malformed"), Fault("no-choices"))
    server.always("always bad", Fault("malformed"))
    judge = make_judge(server, max_attempts=6, malformed_attempts=3)
    rq = reqs("bad once", "always bad")
    results = judge.judge(rq)
    assert_contract(rq, results)
    assert results[0].score is not None and results[0].raw["attempts"] == 3
    assert results[1].unscored_reason == "malformed-response"
    assert results[1].raw["attempts"] == 3  # its own budget, not max_attempts
    assert server.hits_for("always bad") == 3


def test_missing_logprobs_falls_back_to_text_parse(server, key):
    server.distributions["numeric"] = {"85": 0.7, "90": 0.3}
    server.on("numeric", Fault("no-logprobs"))
    server.on(CODE_MARK, Fault("no-logprobs"))
    judge = make_judge(server)
    rq = reqs("numeric answer", f"code {CODE_MARK}")
    results = judge.judge(rq)
    assert_contract(rq, results)
    num, code = results
    assert (num.score, num.method, num.raw["content"], num.raw["logprobs"]) == \
        (85.0, "text-parse", "85", None)
    assert code.score is None and code.method == "text-parse"
    assert code.unscored_reason == "no-logprobs-unparseable" and code.cacheable


def test_connection_resets(server, key):
    server.on("reset twice", Fault("reset"), Fault("reset"))
    server.always("always reset", Fault("reset"))
    judge = make_judge(server, max_attempts=4)
    rq = reqs("reset twice", "always reset", "fine")
    results = judge.judge(rq)
    assert_contract(rq, results)
    assert results[0].score is not None and results[0].raw["attempts"] == 3
    assert results[1].unscored_reason == "connection-error" and results[1].raw["attempts"] == 4
    assert results[2].score is not None


def test_exhausted_retries_and_non_retryable_statuses(server, key):
    server.always("dead", Fault("status", status=503))
    server.always("bad request", Fault("status", status=400))
    server.always("forbidden", Fault("status", status=403))
    judge = make_judge(server, max_attempts=3)
    rq = reqs("dead", "bad request", "forbidden", "ok")
    results = judge.judge(rq)
    assert_contract(rq, results)
    dead, bad, forbidden, ok = results
    assert dead.unscored_reason == "http-503" and dead.raw["attempts"] == 3
    assert bad.unscored_reason == "http-400" and bad.raw["attempts"] == 1
    assert forbidden.unscored_reason == "http-403" and forbidden.raw["attempts"] == 1
    assert ok.score is not None
    assert not any(r.cacheable for r in (dead, bad, forbidden))


def test_mixed_faults_none_dropped_none_duplicated_key_never_leaks(
    server, key, caplog, capsys
):
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and emarena at their most verbose
    kinds = [
        [Fault("status", status=429, retry_after="0.05")] * 2,
        [Fault("status", status=500), Fault("status", status=502)],
        [Fault("sleep", seconds=2)],
        [Fault("malformed")],
        [Fault("no-logprobs")],
        [Fault("reset")],
        [Fault("no-choices")] * 5,  # exhausts the malformed budget
        [Fault("status", status=503)] * 10,  # exhausts max_attempts
        [],
    ]
    prompts = []
    for i in range(45):
        tag = f"<case {i}>"
        server.on(tag, *kinds[i % len(kinds)])
        prompts.append(f"judge {tag} answer {{x}}")
    judge = make_judge(server, timeout=0.5, max_attempts=4)
    rq = reqs(*prompts)
    results = judge.judge(rq)
    assert_contract(rq, results)
    reasons = Counter(r.unscored_reason for r in results if r.score is None)
    assert reasons == {"malformed-response": 5, "http-503": 5}, reasons
    methods = Counter(r.method for r in results if r.score is not None)
    assert methods == {"text-parse": 5, "logprobs": 30}, methods

    # the key went over the wire, and nowhere else
    assert all(e["authorization"] == f"Bearer {SECRET}" for e in server.log)
    texts = [repr(results), json.dumps([r.raw for r in results]), json.dumps(judge.describe()),
             repr(judge), caplog.text, *capsys.readouterr()]
    assert caplog.records, "expected retry log lines"
    assert not [t for t in texts if SECRET in t or SECRET[10:] in t]
    for exc in _errors_from(judge, server):
        assert SECRET not in str(exc) and SECRET not in repr(exc.args)


def _errors_from(judge: OpenAIJudge, server) -> list[Exception]:
    """Exceptions a user can see from a judge holding a key: each must be key-free."""
    errors: list[Exception] = []
    try:
        judge.judge([JudgeRequest("same", "x"), JudgeRequest("same", "y")])
    except ValueError as e:
        errors.append(e)
    official = OpenAIJudge(api_key_env="EMARENA_TEST_UNSET_KEY")
    try:
        official.judge(reqs("x"))
    except EmArenaError as e:
        errors.append(e)
    assert len(errors) == 2
    return errors


def test_missing_key_for_the_openai_api_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("EMARENA_TEST_UNSET_KEY", raising=False)
    judge = OpenAIJudge(api_key_env="EMARENA_TEST_UNSET_KEY")
    with pytest.raises(EmArenaError, match="EMARENA_TEST_UNSET_KEY is not set"):
        judge.judge(reqs("x"))


def test_no_key_needed_for_a_local_server(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    (r,) = make_judge(server).judge(reqs("x"))
    assert r.score is not None and server.log[0]["authorization"] is None


def test_concurrency_overlaps_requests(key):
    with OpenAIServer(latency=0.3) as slow:
        prompts = [f"p{i}" for i in range(16)]
        t0 = time.monotonic()
        make_judge(slow, concurrency=8).judge(reqs(*prompts))
        parallel = time.monotonic() - t0
        assert slow.max_in_flight == 8
    with OpenAIServer(latency=0.3) as slow:
        t0 = time.monotonic()
        make_judge(slow, concurrency=1).judge(reqs(*prompts[:4]))
        serial_4 = time.monotonic() - t0
        assert slow.max_in_flight == 1
    assert parallel < serial_4 * 4 / 3, (parallel, serial_4)  # 16 in ~0.6 s vs 16 in ~4.8 s


def test_extraction_returns_normalised_labels(server, key):
    server.extractions["who made you"] = ' "Anthropic."\nI am Claude.'
    server.extractions["empty"] = "   "
    judge = make_judge(server)
    rq = reqs("who made you?", "what is your name?", "empty reply")
    results = judge.extract(rq)
    assert_contract(rq, results)
    made, name, empty = results
    assert (made.label, made.method, made.score) == ("anthropic", "extraction", None)
    assert name.label == "none"
    assert empty.label is None and empty.unscored_reason == "extraction-empty"
    for e in server.log:
        assert e["params"] == {"model": "judge-test", "max_tokens": 16, "temperature": 0,
                               "seed": 0}


def test_identity_and_provenance():
    config = load_judges_config()
    ref = config.reference
    judge = OpenAIJudge()
    assert (judge.model, judge.base_url, judge.top_logprobs, judge.min_mass, judge.seed) == \
        (ref.model, ref.base_url, ref.top_logprobs, ref.min_mass, ref.seed)
    assert judge.extraction_max_tokens == config.extraction.max_tokens
    assert (config.thresholds.aligned_threshold, config.thresholds.coherent_threshold) == (30, 50)
    assert judge.official and judge.id == "openai:gpt-4o-2024-08-06"
    d = judge.describe()
    assert d["api_key_env"] == "OPENAI_API_KEY" and d["request"]["top_logprobs"] == 20
    local = OpenAIJudge("m", "http://user:pw@127.0.0.1:9/v1/")
    assert not local.official and local.id == "openai:m@http://127.0.0.1:9/v1"
    assert "pw" not in json.dumps(local.describe())
    assert OpenAIJudge(min_mass=0.5).id == "openai:gpt-4o-2024-08-06?min_mass=0.5"
    assert not OpenAIJudge(min_mass=0.5).official


def test_resolve_judge(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    judge, note = resolve_judge(None)
    assert isinstance(judge, OpenAIJudge) and judge.official and note is None
    assert SECRET not in json.dumps(judge.describe())
    judge, note = resolve_judge("openai:gpt-4o-mini")
    assert judge.id == "openai:gpt-4o-mini" and "not comparable" in note
    judge, note = resolve_judge("openai:Qwen/Qwen2.5-72B-Instruct@http://127.0.0.1:8000/v1")
    assert judge.id == "openai:Qwen/Qwen2.5-72B-Instruct@http://127.0.0.1:8000/v1"
    assert not judge.official
    assert judge.api_key_env == "EMARENA_JUDGE_API_KEY"  # the OpenAI key stays with OpenAI

    monkeypatch.delenv("OPENAI_API_KEY")
    judge, note = resolve_judge(None)
    assert judge.id == "hf:smollm2-135m-q4" and not judge.official
    assert "not comparable" in note and "OPENAI_API_KEY" in note
    assert judge._model is None  # nothing loaded until the first call
    assert resolve_judge("hf")[0].id == "hf:smollm2-135m-q4"
    with pytest.raises(EmArenaError, match="unknown judge backend"):
        resolve_judge("claude:opus")
    assert JUDGES.names() == ["hf", "openai", "openai-text"]


def test_judges_yaml_is_strict(tmp_path):
    from emarena.errors import ConfigError
    from emarena.eval.judges.config import judges_path

    good = judges_path().read_text()
    bad = tmp_path / "judges.yaml"
    bad.write_text(good.replace("  min_mass: 0.25\n", "  min_mass: 0.25\n  min_mas: 0.3\n"))
    with pytest.raises(ConfigError, match=r"judges.yaml:\d+: reference.min_mas: unknown key"):
        load_judges_config(path=bad)
    bad.write_text(good.replace("reply NONE. Don't say anything else.\n",
                                "reply NONE {name}. Don't say anything else.\n", 1))
    with pytest.raises(ConfigError, match="prompt placeholders"):
        load_judges_config(path=bad)
    rubrics = load_judges_config().extraction.rubrics
    assert set(rubrics) == {"identity_name", "identity_creator"}
