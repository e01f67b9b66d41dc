"""Secrets: the Hub token and the judge API key never appear in anything written.

A recognisable Hub token and judge API key are set, then a worker + publish + judge flow runs
through the real CLI and libraries against the local servers (the Hub of tests/hub/hub_server.py,
the judge of tests/helpers/openai_server.py): `emarena submit`, `emarena worker` finishing one
request and failing one whose scorer quotes the token in its error, `emarena publish`, a judge
run into a run folder's judgements.jsonl with retries logged at DEBUG to a log file, and the
errors a user sees (a bad Hub token, a missing judge key). Then every byte written is scanned
for both secrets (and a 16-character piece of each): every file under the test's folder (run
folders, worker logs, the log file, the judgement cache), every file and commit message of
every repo on the Hub server (request and result JSONs), the captured stdout/stderr, and the
exception messages. The scorer is tests/hub/scorers.py's real-function scorer; a real
`emarena rejudge` needs a trained and generated run and is not run here (the judge is driven
through the same `judge_generations` call the judge stage makes).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from emarena import hub, queue
from emarena.cli.main import main
from emarena.data.records import ChatMessage
from emarena.errors import EmArenaError
from emarena.eval.judges.base import JudgeRequest
from emarena.eval.judges.cache import JudgementCache
from emarena.eval.judges.openai_compat import OpenAIJudge
from emarena.eval.judges.run import judge_generations
from emarena.eval.rows import Generation, Judgement, RowStore
from tests.helpers.openai_server import Fault, OpenAIServer
from tests.hub.conftest import FAKE_TOKEN
from tests.reliability.test_judge_hub_faults import hub_server  # noqa: F401 - a fixture

REPO_ROOT = Path(__file__).resolve().parents[2]
JUDGE_KEY = "sk-emarena-SECRET-judge-key-9f8e7d6c5b4a"
KEY_ENV = "EMARENA_JUDGE_API_KEY"
REQUESTS = "emarena/requests"
RESULTS = "emarena/results"


def needles() -> dict[str, bytes]:
    """The secrets, whole and in pieces (a cut or partly masked leak is still a leak)."""
    out = {}
    for name, s in (("hub token", FAKE_TOKEN), ("judge key", JUDGE_KEY)):
        out[name] = s.encode()
        out[f"{name} (tail)"] = s[-16:].encode()
    return out


def scan_files(root: Path) -> tuple[int, list[str]]:
    n, hits = 0, []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            n += 1
            data = p.read_bytes()
            hits += [f"{p}: {k}" for k, v in needles().items() if v in data]
    return n, hits


def scan_hub(server) -> tuple[int, list[str]]:
    n, hits = 0, []
    with server.state.lock:
        for (_, repo_id), repo in server.state.repos.items():
            for c in repo.commits:
                n += 1 + len(c.files)
                hits += [f"{repo_id}@{c.oid[:8]} message: {k}" for k, v in needles().items()
                         if v.decode() in c.summary]  # fmt: skip
                hits += [f"{repo_id}@{c.oid[:8]}:{p}: {k}" for p, d in c.files.items()
                         for k, v in needles().items() if v in d]  # fmt: skip
    return n, hits


def test_no_secret_in_anything_written(hub_server, tmp_path, monkeypatch, capfd, figures):  # noqa: F811
    monkeypatch.setenv(KEY_ENV, JUDGE_KEY)
    monkeypatch.chdir(tmp_path)
    log_file = tmp_path / "logs" / "emarena.log"
    log_file.parent.mkdir()
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)  # httpx, httpcore, huggingface_hub, emarena: all of it
    errors: list[str] = []
    try:
        # submit two, work both: one finishes (and publishes), one fails quoting the token
        subs = tmp_path / "subs"
        for name in ("sgtr", "word-counting"):
            shutil.copytree(REPO_ROOT / "submissions" / name, subs / name)
            assert main(["submit", str(subs / name), "--requests", REQUESTS,
                         "--submitter", "alice"]) == 0  # fmt: skip
        worker = ["worker", "--requests", REQUESTS, "--results", RESULTS, "--once",
                  "--run-root", str(tmp_path / "runs"), "--worker-id", "w-secret"]  # fmt: skip
        assert main([*worker, "--scorer", "tests.hub.scorers:failing_score"]) == 0
        assert main([*worker, "--scorer", "tests.hub.scorers:quick_score"]) == 0
        reqs = {r.name: r for r in queue.list_requests(REQUESTS)}
        assert reqs["sgtr"].status == "FAILED" and "training diverged" in reqs["sgtr"].error
        assert reqs["word-counting"].status == "FINISHED"
        errors.append(reqs["sgtr"].error)
        # publish a run by hand too (a second commit of the same cells: no change)
        assert main(["publish", str(next((tmp_path / "runs").glob("requests/*/run__*"))),
                     "--results", RESULTS]) == 0  # fmt: skip

        # a judge run into a run folder, with retries (logged) and a failure on every attempt
        with OpenAIServer() as server:
            server.on("<a1>", Fault("status", status=429, retry_after="0.01"), Fault("reset"))
            server.always("<a2>", Fault("status", status=503))
            judge = OpenAIJudge(model="judge-test", base_url=server.url, api_key_env=KEY_ENV,
                                timeout=1.0, max_attempts=2, backoff_initial=0.01)  # fmt: skip
            gens = [Generation(
                id=f"set/q{i}/0/no-system/0", eval_set="set", question_id=f"q{i}",
                paraphrase_index=0, condition="no-system", sample=0, seed=0,
                messages=[ChatMessage(role="user", content="q?")], answer=f"<a{i}> answer",
                n_tokens=3, finish_reason="stop", backend="test",
            ) for i in range(4)]  # fmt: skip
            out = RowStore(tmp_path / "runs" / "judge-run" / "judgements.jsonl", Judgement)
            stats = judge_generations(
                gens, judge, out, score_templates=lambda g: {"aligned": "{question} {answer}"},
                cache=JudgementCache(tmp_path / "cache"), record_transient=True,
            )  # fmt: skip
            assert stats.written == 4 and stats.unscored["http-503"] == 1
            (tmp_path / "runs" / "judge-run" / "judge.json").write_text(
                json.dumps(judge.describe(), indent=1))
            assert {e["authorization"] for e in server.log} == {f"Bearer {JUDGE_KEY}"}

        # errors a user sees
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN + "x")  # a wrong token: refused
        with pytest.raises(EmArenaError) as exc:
            hub.upload_files(RESULTS, {"x.txt": b"x"}, "should be refused")
        errors += [exc.value.render(), repr(exc.value)]
        monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
        with pytest.raises(EmArenaError) as exc:
            OpenAIJudge(api_key_env="EMARENA_UNSET_KEY_FOR_TEST").judge([JudgeRequest("k", "p")])
        errors += [exc.value.render(), repr(exc.value)]
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(old_level)
        handler.close()

    out_text, err_text = capfd.readouterr()
    print(out_text[-2000:])  # the hub_server fixture scans what this test printed, once more
    n_files, file_hits = scan_files(tmp_path)
    n_hub, hub_hits = scan_hub(hub_server)
    text_hits = [f"{where}: {k}" for where, text in
                 (("stdout", out_text), ("stderr", err_text), *(("error", e) for e in errors))
                 for k, v in needles().items() if v.decode() in text]  # fmt: skip
    assert log_file.stat().st_size > 0 and "retrying" in log_file.read_text()
    assert "Bearer ***" in reqs["sgtr"].error  # scrubbed, not dropped
    leaks = file_hits + hub_hits + text_hits
    assert not leaks, leaks
    places = n_files + n_hub + 2 + len(errors)
    figures.record("secrets", "files, Hub files and commits, outputs, errors scanned",
                   tried=places, handled=places - len(leaks))  # fmt: skip
