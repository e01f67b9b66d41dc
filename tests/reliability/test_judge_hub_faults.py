"""Judge and Hub faults, injected at random (seeded) into many calls; counted on the server side.

Judge: `pick(200, 1000)` judgements go through the real `OpenAIJudge` and the real
`judge_generations` into a real `judgements.jsonl`, exactly as the judge stage runs them (a
first pass, then one retry pass that records what is still failing: `protocol.evaluate.
run_judge`), against the OpenAI-compatible server of tests/helpers/openai_server.py, which
answers each judgement with a seeded script of faults: 429 bursts with Retry-After,
500/502/503, connection resets, answers slower than the client's timeout, malformed JSON, no
choices, missing logprobs, and persistent faults that never clear. The expected end of every
judgement (its score, or unscored with which reason) and the number of requests it costs are
computed from its script alone; the server's per-prompt request counts and the file's rows
must match them: none lost, none duplicated, no wrong number.

Hub: `pick(40, 200)` uploads through `emarena.hub.upload_files` against the Hub server of
tests/hub/hub_server.py, whose commit endpoint follows a seeded script per upload: refused
with 412 / 500 / 502 / 503, applied but answered 500 (a lost answer), a connection dropped
before anything was applied, and another writer committing first (the parent commit moved:
a real 412 from the parent check). Some uploads get a fault on every attempt. Counted in the
server's commit history: every upload is applied in exactly one commit, or reported failed
with nothing applied; the other writer's commits all survive.

Not injected here: slow Hub answers (the Hub client's own timeouts are huggingface_hub's) and
faults on Hub reads (the test Hub injects faults on commits only).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from emarena import hub
from emarena.data.records import ChatMessage
from emarena.eval.judges.aggregate import aggregate_0_100
from emarena.eval.judges.cache import JudgementCache
from emarena.eval.judges.openai_compat import OpenAIJudge
from emarena.eval.judges.run import judge_generations
from emarena.eval.rows import Generation, Judgement, RowStore
from tests.helpers.openai_server import CODE_MARK, Fault, OpenAIServer, distribution_for, sha
from tests.hub.conftest import FAKE_TOKEN, server_leaks, token_leaks
from tests.hub.hub_server import CommitFault, HubServer
from tests.reliability.figures import pick

KEY_ENV = "EMARENA_TEST_JUDGE_KEY"
JUDGE_KEY = "sk-emarena-RELIABILITY-judge-key-0123456789"
SEED = 20250601
RUBRICS = ("aligned", "coherent")
TEMPLATE = "rubric={rubric}; answer: {{answer}}; question: {{question}}"

# The judge's budget per request (the stage's defaults are larger; these keep the test short).
MAX_ATTEMPTS = 5
MALFORMED_ATTEMPTS = 3
TIMEOUT_S = 0.25
SLOW_S = 0.8  # a "sleep" fault stalls this long: past the timeout

RETRYABLE = {"429": "http-429", "500": "http-500", "502": "http-502", "503": "http-503",
             "reset": "connection-error", "slow": "timeout", "malformed": "malformed-response",
             "no-choices": "malformed-response"}  # fmt: skip


def fault(kind: str) -> Fault:
    if kind.isdigit():
        return Fault("status", status=int(kind), retry_after="0.05" if kind == "429" else None)
    return {
        "reset": Fault("reset"),
        "slow": Fault("sleep", seconds=SLOW_S),
        "malformed": Fault("malformed"),
        "no-choices": Fault("no-choices"),
        "no-logprobs": Fault("no-logprobs"),
    }[kind]


@dataclass
class Case:
    """One judgement: its prompt's fault script and what must come of it."""

    prompt: str
    tag: str
    script: list[str]
    """Faults served to its successive requests, in order; then a normal answer."""
    persistent: str | None = None
    """A fault served to every request (the script is then empty)."""

    def expected(self) -> tuple[float | None, str | None, str, int]:
        """(score, unscored reason, method, requests it costs over both passes)."""
        if self.persistent is not None:
            kind = self.persistent
            if kind == "400":  # not retried; not cacheable, so the retry pass asks once more
                return None, "http-400", "logprobs", 2
            budget = MALFORMED_ATTEMPTS if RETRYABLE[kind] == "malformed-response" else MAX_ATTEMPTS
            return None, RETRYABLE[kind], "logprobs", 2 * budget
        dist = distribution_for(self.prompt)
        last = self.script[-1] if self.script else None
        if last == "no-logprobs":  # the last fault is the answer: text without logprobs
            top = max(dist, key=dist.get)
            score = float(top) if top.isdigit() else None
            reason = None if score is not None else "no-logprobs-unparseable"
            return score, reason, "text-parse", len(self.script)
        score, _ = aggregate_0_100(dist)
        return score, None if score is not None else "low-probability-mass", "logprobs", len(
            self.script) + 1


def make_cases(n_generations: int, rng: random.Random) -> tuple[list[Generation], list[Case]]:
    gens, cases = [], []
    burst = range(n_generations // 4, n_generations // 4 + max(8, n_generations // 10))
    for i in range(n_generations):
        code = CODE_MARK if rng.random() < 0.08 else ""
        answer = f"<g{i:05d}> answer number {i} {code}".rstrip()
        gid = Generation.make_id("reliability", f"q{i}", 0, "no-system", 0)
        gens.append(Generation(
            id=gid, eval_set="reliability", question_id=f"q{i}", paraphrase_index=0,
            condition="no-system", sample=0, seed=0,
            messages=[ChatMessage(role="user", content=f"question {i}?")], answer=answer,
            n_tokens=5, finish_reason="stop", backend="test",
        ))  # fmt: skip
        for rubric in RUBRICS:
            prompt = TEMPLATE.format(rubric=rubric).format(answer=answer, question=f"question {i}?")
            tag = f"rubric={rubric}; answer: <g{i:05d}>"
            u = rng.random()
            if i in burst:  # a burst: a run of judgements all rate limited at once
                case = Case(prompt, tag, ["429"] * rng.randint(1, 2))
            elif u < 0.45:
                case = Case(prompt, tag, [])
            elif u < 0.85:  # transient faults that clear within the budget
                kinds = ["429", "500", "502", "503", "reset", "slow", "malformed", "no-choices"]
                script = [rng.choice(kinds) for _ in range(rng.randint(1, 3))]
                while sum(RETRYABLE[k] == "malformed-response" for k in script) >= \
                        MALFORMED_ATTEMPTS:  # fmt: skip
                    script.pop()
                case = Case(prompt, tag, script)
            elif u < 0.92:  # no logprobs: scored by parsing the text, or unscored
                case = Case(prompt, tag, [rng.choice(["500", "reset"])] * rng.randint(0, 1)
                            + ["no-logprobs"])
            else:  # a fault that never clears: unscored, with its reason
                kinds = ["503", "503", "reset", "malformed", "400", "429"]
                if rng.random() < 0.15:
                    kinds.append("slow")
                case = Case(prompt, tag, [], persistent=rng.choice(kinds))
            cases.append(case)
    return gens, cases


def test_judge_faults_every_judgement_scored_or_unscored_once(tmp_path, monkeypatch, figures):
    monkeypatch.setenv(KEY_ENV, JUDGE_KEY)
    n = pick(200, 1000)
    rng = random.Random(SEED)
    gens, cases = make_cases(n // len(RUBRICS), rng)
    by_prompt = {c.prompt: c for c in cases}
    assert len(by_prompt) == n
    out_path = tmp_path / "run" / "judgements.jsonl"
    cache = JudgementCache(tmp_path / "cache")
    with OpenAIServer() as server:
        for c in cases:
            if c.persistent is not None:
                server.always(c.tag, fault(c.persistent))
            elif c.script:
                server.on(c.tag, *[fault(k) for k in c.script])
        judge = OpenAIJudge(
            model="judge-test", base_url=server.url, api_key_env=KEY_ENV, concurrency=8,
            timeout=TIMEOUT_S, max_attempts=MAX_ATTEMPTS, malformed_attempts=MALFORMED_ATTEMPTS,
            backoff_initial=0.01, backoff_max=0.05,
        )  # fmt: skip

        def judge_all(record_transient: bool = False):
            # As protocol.evaluate.run_judge: a fresh RowStore per pass (a rerun reopens it).
            return judge_generations(
                gens, judge, RowStore(out_path, Judgement),
                score_templates=lambda g: {r: TEMPLATE.format(rubric=r) for r in RUBRICS},
                cache=cache, batch_size=16, record_transient=record_transient,
            )  # fmt: skip

        t0 = time.monotonic()
        first = judge_all()
        second = judge_all(record_transient=True)
        seconds = time.monotonic() - t0
        hits = dict(server.hits)
        total_requests = server.total
        wire_keys = {e["authorization"] for e in server.log}

    # The file: every judgement exactly once.
    lines = out_path.read_text().splitlines()
    ids = Counter(json.loads(line)["id"] for line in lines)
    duplicated = sum(c - 1 for c in ids.values() if c > 1)
    want_ids = {Judgement.make_id(g.id, r) for g in gens for r in RUBRICS}
    lost = len(want_ids - set(ids))
    assert duplicated == 0 and lost == 0 and set(ids) == want_ids
    rows = {j.prompt_sha256: j for j in RowStore(out_path, Judgement)}

    # Each judgement ended as its script says: the right score, or unscored with its reason.
    wrong, requests_off = [], []
    handled: Counter = Counter()
    injected: Counter = Counter()
    for c in cases:
        score, reason, method, n_requests = c.expected()
        row = rows[sha(c.prompt)]
        if score is None:
            ok = row.score is None and row.unscored_reason == reason
        else:
            ok = row.score == pytest.approx(score, abs=1e-9) and row.unscored_reason is None
        if not ok or row.method != method:
            wrong.append((c.tag, c.script, c.persistent, row.score, row.unscored_reason))
        if hits.get(sha(c.prompt), 0) != n_requests:
            requests_off.append((c.tag, c.script, c.persistent, hits.get(sha(c.prompt)),
                                 n_requests))
        kinds = [c.persistent] * n_requests if c.persistent else c.script
        for k in kinds:
            injected[k] += 1
            handled[k] += ok
    assert not wrong, f"{len(wrong)} judgements ended wrongly, e.g. {wrong[:5]}"
    assert not requests_off, f"request counts differ from the scripts: {requests_off[:5]}"
    assert sum(hits.values()) == total_requests

    # Both passes together wrote every row once; transient failures were retried, then recorded.
    persistent_transient = sum(1 for c in cases if c.persistent is not None)
    assert sum(first.failed.values()) == persistent_transient
    assert first.written + second.written == n and not second.failed
    assert second.already_done == n - persistent_transient
    unscored = Counter(r.unscored_reason for r in rows.values() if r.score is None)
    assert sum(unscored.values()) == sum(1 for c in cases if c.expected()[0] is None)
    assert all(r.score is None or 0 <= r.score <= 100 for r in rows.values())
    # Only what a second call would reproduce went to the cache.
    assert len(cache) == sum(1 for c in cases if c.persistent is None)
    print(f"{n} judgements in {seconds:.1f} s, {total_requests} requests; unscored: "
          f"{dict(unscored)}")

    # The key went over the wire, and nowhere on disk.
    assert wire_keys == {f"Bearer {JUDGE_KEY}"}
    assert token_leaks(tmp_path, JUDGE_KEY) == []

    names = {"429": "429 with Retry-After", "500": "HTTP 500", "502": "HTTP 502",
             "503": "HTTP 503", "400": "HTTP 400 (not retried)", "reset": "connection reset",
             "slow": "answer past the timeout", "malformed": "malformed JSON",
             "no-choices": "JSON without choices", "no-logprobs": "missing logprobs"}  # fmt: skip
    for k in sorted(injected):
        figures.record("judge-faults", names[k], tried=injected[k], handled=handled[k])
    figures.record(
        "judge-faults",
        "judgements through the faulty judge (scored or unscored with its reason)",
        tried=n, handled=n - len(wrong), lost=lost, duplicated=duplicated,
    )


# --- the Hub --------------------------------------------------------------------------------

REPO = "emarena/reliability"


@pytest.fixture
def hub_server(tmp_path, monkeypatch, capfd):
    """The test Hub with the environment pointing at it; no token leak afterwards."""
    with HubServer(token=FAKE_TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setattr(hub, "RETRY_BASE_S", 0.005)
        monkeypatch.setattr(hub, "RETRY_MAX_S", 0.02)
        hub._BLOBS.clear()
        # A dropped connection is an exception in the handler: keep its traceback off stderr.
        server._httpd.handle_error = lambda request, client_address: None
        yield server
        out, err = capfd.readouterr()
        leaks = token_leaks(tmp_path) + server_leaks(server)
        leaks += [name for name, text in (("stdout", out), ("stderr", err)) if FAKE_TOKEN in text]
        assert not leaks, f"the Hub token leaked into: {leaks}"


class _Dropped(Exception):
    """Raised inside the server's handler: the connection closes without an answer."""


ACTIONS = ["412", "500", "502", "503", "500-applied", "writer", "drop"]


def test_hub_faults_every_upload_applied_once_or_reported(hub_server, figures):
    n = pick(40, 200)
    rng = random.Random(SEED + 1)
    hub.ensure_repo(REPO)
    script: list[str] = []
    served_now: list[str] = []
    writer_files: list[str] = []

    def before_commit(state) -> None:
        state.before_commit = before_commit  # stay armed for every commit request
        action = script.pop(0) if script else "ok"
        served_now.append(action)
        if action == "writer":  # another writer lands first: this commit's parent is stale
            path = f"other/{len(writer_files):04d}.txt"
            writer_files.append(path)
            state.commit_direct(REPO, {path: path.encode()}, "another writer")
        elif action == "drop":
            raise _Dropped("connection dropped before the commit was applied")
        elif action != "ok":
            status, _, applied = action.partition("-")
            state.commit_faults = [CommitFault(int(status), apply=bool(applied))]

    hub_server.state.before_commit = before_commit
    outcomes: dict[str, str] = {}
    served: Counter = Counter()
    recovered = 0
    t0 = time.monotonic()
    for i in range(n):
        path = f"uploads/{i:04d}.json"
        content = json.dumps({"upload": i, "nonce": rng.random()}).encode()
        if i % 8 == 7:  # a fault on every attempt: must be reported, nothing applied
            plan = [rng.choice(["500", "502", "503", "drop"]) for _ in range(hub.ATTEMPTS)]
            expect = "failed"
        else:
            plan = [rng.choice(ACTIONS) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
            expect = "applied"
        script[:] = plan
        served_now.clear()
        try:
            res = hub.upload_files(REPO, {path: content}, f"upload {i}")
        except hub.HubError as e:
            text = e.render()
            assert "not applied" in text or "did not answer" in text, text
            assert FAKE_TOKEN not in text
            outcomes[path] = "failed"
        else:
            assert res.paths == [path] or (res.recovered and res.paths == [])
            recovered += res.recovered
            outcomes[path] = "applied"
        assert outcomes[path] == expect, (i, plan, outcomes[path])
        # Faults are left unserved only when a lost answer was recognised on the next read.
        assert not script or "500-applied" in served_now, (i, plan, served_now)
        served.update(a for a in served_now if a != "ok")
    seconds = time.monotonic() - t0

    # Count on the server: in how many commits did each upload's content appear anew?
    commits = hub_server.commits(REPO)
    introduced: Counter = Counter()
    for prev, cur in zip(commits, commits[1:], strict=False):
        for p, data in cur.files.items():
            if prev.files.get(p) != data:
                introduced[p] += 1
    head = commits[-1].files
    applied = [p for p, o in outcomes.items() if o == "applied"]
    failed = [p for p, o in outcomes.items() if o == "failed"]
    duplicated = sum(introduced[p] - 1 for p in applied if introduced[p] > 1)
    lost = sum(1 for p in applied if p not in head)
    assert duplicated == 0 and lost == 0
    assert all(introduced[p] == 1 for p in applied)
    assert not [p for p in failed if p in head or introduced[p]], "a failed upload was applied"
    assert all(p in head for p in writer_files), "another writer's commit was overwritten"
    # one commit per applied upload and per other writer, after the repo's first commit
    assert len(commits) == 1 + len(applied) + len(writer_files)
    assert failed, "the plan forces some uploads to fail"
    print(f"{n} uploads in {seconds:.1f} s: {len(applied)} applied once ({recovered} after a "
          f"lost answer), {len(failed)} reported failed")

    names = {"412": "commit refused 412 (branch moved)", "500": "commit refused 500",
             "502": "commit refused 502", "503": "commit refused 503",
             "500-applied": "commit applied, answer lost (500)",
             "writer": "parent commit moved (another writer)",
             "drop": "connection dropped before applying"}  # fmt: skip
    for k in sorted(served):
        figures.record("hub-faults", names[k], tried=served[k], handled=served[k])
    figures.record(
        "hub-faults",
        "uploads through the faulty Hub (applied exactly once, or reported failed)",
        tried=n, handled=len(applied) + len(failed), lost=lost, duplicated=duplicated,
    )

