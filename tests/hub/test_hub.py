"""emarena.hub, emarena.queue and `emarena publish | submit | worker` against a real HTTP Hub.

The server (tests/hub/hub_server.py) runs on 127.0.0.1 and the client is the installed
huggingface_hub, unmodified: these tests exercise the same requests the real Hub gets.
The worker tests inject a quick scoring function (tests/hub/scorers.py) that writes real,
schema-valid results; the worker driving the real `score` on the embedded model is tested in
tests/pipeline/, not here. Every test also checks (conftest.py) that the token leaked nowhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from emarena import hub, queue
from emarena.cli.main import main
from emarena.errors import ConfigError
from emarena.eval.result import load_result
from emarena.protocol.plan import cells_for
from emarena.submission import SubmissionError, load_submission
from tests.hub import scorers
from tests.hub.conftest import FAKE_TOKEN, token_leaks
from tests.hub.hub_server import CommitFault

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = "emarena/results"
REQUESTS = "emarena/requests"


def copy_submission(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "subs" / name
    shutil.copytree(REPO_ROOT / "submissions" / name, dst)
    return dst


def make_run(
    tmp_path: Path,
    *,
    name: str = "sgtr",
    preset: str = "paper",
    official_judge: bool = True,
    regimes: tuple[str, ...] = ("reversal",),
) -> tuple[Path, list]:
    """A run folder with every planned cell finished (synthetic, schema-valid results)."""
    sub = load_submission(copy_submission(tmp_path, name))
    cells = cells_for(
        submission=sub,
        model=scorers.MODEL,
        em_dataset="insecure",
        regimes=list(regimes),
        seeds=[0],
        preset=preset,
        suite="v1",
    )
    run = tmp_path / "runs" / f"{name}__{preset}__{official_judge}"
    for c in cells:
        scorers.write_cell(run, c, official_judge=official_judge)
    return run, cells


def n_commits(server, repo: str = RESULTS) -> int:
    return len(server.commits(repo))


def cfg_for(tmp_path: Path, **kw) -> queue.WorkerConfig:
    kw.setdefault("scorer", scorers.quick_score)
    return queue.WorkerConfig(
        requests_repo=REQUESTS,
        results_repo=RESULTS,
        run_root=tmp_path / "worker",
        **kw,
    )


def request_on_server(server, config_hash: str) -> dict:
    files = server.files(REQUESTS)
    return json.loads(files[queue.request_path(config_hash)])


# --- the client: repos, one-commit uploads, reads -------------------------------------------


def test_create_upload_list_download_snapshot(server, tmp_path):
    url = hub.ensure_repo(RESULTS)
    assert url.endswith(f"/datasets/{RESULTS}")
    assert hub.ensure_repo(RESULTS) == url  # exist_ok
    local = tmp_path / "local.json"
    local.write_text('{"x": 1}\n')
    before = n_commits(server)
    res = hub.upload_files(
        RESULTS,
        {"a/b/one.json": local, "a/two.txt": b"two\n", "README.md": b"# card\n"},
        "three files",
    )
    assert n_commits(server) == before + 1  # one commit for all three
    assert res.commit == server.commits(RESULTS)[-1].oid
    assert res.paths == ["README.md", "a/b/one.json", "a/two.txt"]
    assert server.commits(RESULTS)[-1].summary == "three files"

    assert hub.list_files(RESULTS) == ["README.md", "a/b/one.json", "a/two.txt"]
    assert hub.list_files(RESULTS, "a/") == ["a/b/one.json", "a/two.txt"]
    assert hub.list_files(RESULTS, "a/b") == ["a/b/one.json"]
    assert hub.list_files(RESULTS, "nothing-here") == []
    assert hub.download(RESULTS, "a/b/one.json") == b'{"x": 1}\n'
    assert hub.download(RESULTS, "a/two.txt", revision=res.commit) == b"two\n"
    with pytest.raises(hub.HubError) as e:
        hub.download(RESULTS, "a/missing.json")
    assert "no such file" in str(e.value)

    snap = hub.snapshot(RESULTS, tmp_path / "snap")
    assert (snap / "a" / "b" / "one.json").read_text() == '{"x": 1}\n'
    assert (snap / "README.md").read_bytes() == b"# card\n"

    # History is real: the previous commit still reads as it was.
    hub.upload_files(RESULTS, {"a/two.txt": b"TWO\n"}, "change two")
    assert hub.download(RESULTS, "a/two.txt") == b"TWO\n"
    assert hub.download(RESULTS, "a/two.txt", revision=res.commit) == b"two\n"


def test_listing_follows_pages(server):
    server.state.tree_page_size = 3  # the Hub pages tree listings; the client follows Link
    hub.ensure_repo(RESULTS)
    files = {f"d/f{i:02d}.json": f"{i}".encode() for i in range(8)}
    hub.upload_files(RESULTS, files, "eight files")
    server.state.requests.clear()
    assert hub.list_files(RESULTS, "d") == sorted(files)
    pages = [
        r for r in server.state.requests if r == ("GET", f"/api/datasets/{RESULTS}/tree/main/d")
    ]
    assert len(pages) == 3  # 8 entries, 3 per page


def test_identical_upload_makes_no_commit(server):
    hub.ensure_repo(RESULTS)
    first = hub.upload_files(RESULTS, {"x.json": b"{}", "y.json": b"[]"}, "first")
    count = n_commits(server)
    again = hub.upload_files(RESULTS, {"x.json": b"{}", "y.json": b"[]"}, "again")
    assert again.commit is None and again.paths == [] and not again.changed
    assert n_commits(server) == count
    partly = hub.upload_files(RESULTS, {"x.json": b"{}", "y.json": b"[1]"}, "one changed")
    assert partly.paths == ["y.json"] and partly.commit != first.commit
    assert n_commits(server) == count + 1


def test_conflict_with_another_writer_is_retried_and_applied_once(server):
    hub.ensure_repo(RESULTS)
    hub.upload_files(RESULTS, {"shared.json": b"1"}, "base")

    def other_writer(state):  # lands between our read of the head and our commit
        state.commit_direct(RESULTS, {"theirs.json": b"theirs"}, "another writer")

    server.state.before_commit = other_writer
    before = n_commits(server)
    res = hub.upload_files(RESULTS, {"ours.json": b"ours"}, "ours")
    commits = server.commits(RESULTS)
    assert len(commits) == before + 2  # theirs, then ours exactly once
    assert [c.summary for c in commits[-2:]] == ["another writer", "ours"]
    assert commits[-1].parent == commits[-2].oid  # rebased on the moved head
    assert res.attempts == 2 and res.commit == commits[-1].oid
    files = server.files(RESULTS)
    assert files["theirs.json"] == b"theirs" and files["ours.json"] == b"ours"


def test_forced_conflicts_then_success_and_exhaustion(server):
    hub.ensure_repo(RESULTS)
    server.state.commit_faults = [CommitFault(412), CommitFault(412)]
    before = n_commits(server)
    res = hub.upload_files(RESULTS, {"a.json": b"a"}, "after two conflicts")
    assert res.attempts == 3 and n_commits(server) == before + 1

    server.state.commit_faults = [CommitFault(412)] * hub.ATTEMPTS
    with pytest.raises(hub.HubError) as e:
        hub.upload_files(RESULTS, {"b.json": b"b"}, "never lands")
    msg = e.value.render()
    assert f"was not applied after {hub.ATTEMPTS} attempts" in msg
    assert "412" in msg and "nothing was written" in msg
    assert "b.json" not in server.files(RESULTS) and n_commits(server) == before + 1


def test_server_errors_are_retried_and_applied_once(server):
    hub.ensure_repo(RESULTS)
    server.state.commit_faults = [CommitFault(500), CommitFault(503)]
    before = n_commits(server)
    res = hub.upload_files(RESULTS, {"a.json": b"a", "b.json": b"b"}, "after two 5xx")
    assert res.attempts == 3 and not res.recovered
    assert n_commits(server) == before + 1
    assert server.commits(RESULTS)[-1].summary == "after two 5xx"


def test_lost_answer_is_recognised_not_repeated(server):
    """The commit lands but the client gets a 500: the retry sees it and commits nothing."""
    hub.ensure_repo(RESULTS)
    server.state.commit_faults = [CommitFault(500, apply=True)]
    before = n_commits(server)
    res = hub.upload_files(RESULTS, {"a.json": b"a"}, "answer lost")
    assert res.recovered and res.commit == server.commits(RESULTS)[-1].oid
    assert n_commits(server) == before + 1
    assert server.state.commit_requests == 1


def test_persistent_server_errors_are_reported(server):
    hub.ensure_repo(RESULTS)
    server.state.commit_faults = [CommitFault(500)] * (hub.ATTEMPTS + 2)
    before = n_commits(server)
    with pytest.raises(hub.HubError) as e:
        hub.upload_files(RESULTS, {"a.json": b"a"}, "hub down")
    assert "was not applied" in str(e.value) and "500" in str(e.value)
    assert n_commits(server) == before and server.state.commit_requests == hub.ATTEMPTS
    # the last answer may have been lost: then the final read-back finds it
    server.state.commit_faults = [CommitFault(500)] * (hub.ATTEMPTS - 1) + [
        CommitFault(500, apply=True)
    ]
    res = hub.upload_files(RESULTS, {"a.json": b"a"}, "landed on the last try")
    assert res.recovered and n_commits(server) == before + 1


def test_bad_repo_id_is_a_clear_error(server):
    with pytest.raises(hub.HubError, match="is not a Hub repo id"):
        hub.upload_files("no-namespace", {"a": b"a"}, "x")
    assert not server.state.requests  # refused before any request


def test_bad_token_is_a_clear_error_without_the_token(server, monkeypatch):
    wrong = "hf_WRONGwrongWRONG0000"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(hub.HubError) as e:
        hub.ensure_repo(RESULTS)
    msg = e.value.render()
    assert "401" in msg and "HF_TOKEN" in msg
    assert wrong not in msg and FAKE_TOKEN not in msg
    assert hub.scrub(f"Authorization: Bearer {wrong} and {wrong}") == (
        "Authorization: Bearer *** and ***"
    )


# --- publish -----------------------------------------------------------------------------------


def test_publish_official_run_layout_card_and_idempotency(server, tmp_path):
    run, cells = make_run(tmp_path)
    rep = hub_publish(run)
    assert rep.commit is not None and sorted(rep.cells) == sorted(c.id for c in cells)
    files = server.files(RESULTS)
    assert n_commits(server) == 2  # the repo's initial commit, then one publish commit
    for c in cells:
        sub = c.defense.name if c.defense else "_controls"
        base = f"smollm2-135m-q4/insecure/{sub}/{c.id}"
        local = run / "cells" / c.id / "metrics"
        assert files[f"{base}.json"] == (local / "result.json").read_bytes()
        assert files[f"{base}.samples.jsonl"] == (local / "samples.jsonl").read_bytes()
        assert json.loads(files[f"{base}.json"])["official"] is True
    assert {c.regime for c in cells} == {"base", "em", "reversal"}
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "Result schema version: 1" in card
    assert "| `insecure` | em | MIT |" in card  # datasets with their licences
    assert "misalignment_rate" in card  # metric definitions
    assert rep.paths == sorted(p for p in files if p != "README.md")

    again = hub_publish(run)  # identical content: no new commit
    assert again.commit is None and again.changed == [] and n_commits(server) == 2


def hub_publish(run: Path, **kw):
    return hub.publish_run(run, RESULTS, **kw)


def test_publish_refuses_unofficial_unless_asked(server, tmp_path):
    run, cells = make_run(tmp_path, preset="cpu-demo", official_judge=False)
    with pytest.raises(hub.HubError) as e:
        hub_publish(run)
    msg = e.value.render()
    assert f"{len(cells)} of {len(cells)} cell(s) are not official" in msg
    assert "preset 'cpu-demo'" in msg and "--unofficial" in msg and "nothing was uploaded" in msg
    assert not server.state.repos  # not even the repo was created

    rep = hub_publish(run, unofficial=True)
    assert sorted(rep.unofficial) == sorted(c.id for c in cells)
    files = server.files(RESULTS)
    for c in cells:
        sub = c.defense.name if c.defense else "_controls"
        data = json.loads(files[f"smollm2-135m-q4/insecure/{sub}/{c.id}.json"])
        assert data["official"] is False and data["cell"]["preset"] == "cpu-demo"
    assert "unofficial" in server.commits(RESULTS)[-1].summary


def test_publish_refuses_paper_preset_with_unofficial_judge(server, tmp_path):
    run, _ = make_run(tmp_path, preset="paper", official_judge=False)
    with pytest.raises(hub.HubError, match="judge 'hf:smollm2-135m-q4' \\(unofficial\\)"):
        hub_publish(run)


def test_publish_nothing_finished_is_clear(server, tmp_path):
    (tmp_path / "empty-run" / "cells").mkdir(parents=True)
    with pytest.raises(hub.HubError, match="no finished cell to publish"):
        hub_publish(tmp_path / "empty-run")


def test_publish_cli(server, tmp_path, capfd):
    run, cells = make_run(tmp_path, preset="cpu-demo", official_judge=False)
    assert main(["publish", str(run), "--results", RESULTS]) == 2
    out, err = capfd.readouterr()
    assert "not official results" in err and "Traceback" not in err
    assert main(["publish", str(run), "--results", RESULTS, "--unofficial"]) == 0
    assert main(["publish", str(run), "--results", RESULTS, "--unofficial"]) == 0
    out, err = capfd.readouterr()
    assert f"published {len(cells)} cell(s) ({len(cells)} marked unofficial)" in out
    assert "already published" in out and "no change" in out
    assert n_commits(server) == 2
    assert FAKE_TOKEN not in out + err


# --- submit ------------------------------------------------------------------------------------


def test_submit_valid_is_pending(server, tmp_path):
    path = copy_submission(tmp_path, "sgtr")
    sub = load_submission(path)
    out = queue.submit(path, REQUESTS, "alice")
    assert out.created and "PENDING" in out.message
    data = request_on_server(server, sub.config_hash)
    assert data["status"] == "PENDING" and data["name"] == "sgtr"
    assert data["config_hash"] == sub.config_hash and data["submitter"] == "alice"
    assert data["yaml"] == (path / "defense.yaml").read_text()
    assert data["readme"] == (path / "README.md").read_text()
    assert [h["status"] for h in data["history"]] == ["PENDING"]
    assert data["history"][0]["note"] == "submitted by alice"
    assert data["error"] is None and data["heartbeat"] is None
    assert queue.Request.model_validate(data).path == f"requests/{sub.config_hash[:16]}.json"


def test_submit_invalid_is_clear_and_writes_nothing(server, tmp_path, capfd):
    path = copy_submission(tmp_path, "sgtr")
    text = (path / "defense.yaml").read_text().replace("division: closed", "division: closd")
    (path / "defense.yaml").write_text(text + "budget: 5\n")
    with pytest.raises(SubmissionError) as e:
        queue.submit(path, REQUESTS, "alice")
    assert isinstance(e.value, ConfigError)
    assert any("division" in line for line in e.value.lines)
    assert any("budget" in line for line in e.value.lines)
    assert not server.state.repos  # nothing written, not even the repo
    assert main(["submit", str(path), "--requests", REQUESTS]) == 2
    _, err = capfd.readouterr()
    assert "division" in err and "budget" in err and "Traceback" not in err
    assert not server.state.repos


def test_submit_duplicate_is_deduped(server, tmp_path, capfd):
    path = copy_submission(tmp_path, "sgtr")
    assert queue.submit(path, REQUESTS, "alice").created
    count = n_commits(server, REQUESTS)
    dup = queue.submit(path, REQUESTS, "bob")
    assert not dup.created and "already PENDING" in dup.message and "alice" in dup.message
    assert n_commits(server, REQUESTS) == count
    # the same configuration written differently (comments, key order) is the same config
    text = (path / "defense.yaml").read_text()
    (path / "defense.yaml").write_text("# a comment\n" + text)
    assert not queue.submit(path, REQUESTS, "carol").created
    assert main(["submit", str(path), "--requests", REQUESTS, "--submitter", "dan"]) == 0
    out, _ = capfd.readouterr()
    assert "not queued again" in out
    assert len(server.state.repo(REQUESTS).head.files) == 1


def test_submit_again_after_failed(server, tmp_path):
    path = copy_submission(tmp_path, "sgtr")
    queue.submit(path, REQUESTS, "alice")
    req = queue.claim_next(REQUESTS, "w1")
    assert queue.fail(REQUESTS, req, "boom", None)
    again = queue.submit(path, REQUESTS, "alice")
    assert again.created and again.request.status == "PENDING"
    statuses = [h.status for h in again.request.history]
    assert statuses == ["PENDING", "RUNNING", "FAILED", "PENDING"]
    assert again.request.error is None and again.request.attempts == 0


# --- the queue: claims, heartbeats, dead workers ---------------------------------------------


def submit_three(tmp_path) -> list[str]:
    names = ["word-counting", "sgtr", "correct-domain"]
    for name in names:
        queue.submit(copy_submission(tmp_path, name), REQUESTS, "alice")
        time.sleep(0.01)  # distinct submission times
    return names


def test_claims_oldest_first(server, tmp_path):
    names = submit_three(tmp_path)
    claimed = [queue.claim_next(REQUESTS, f"w{i}") for i in range(3)]
    assert [r.name for r in claimed] == names
    assert queue.claim_next(REQUESTS, "w9") is None
    for i, r in enumerate(claimed):
        assert r.status == "RUNNING" and r.worker == f"w{i}" and r.attempts == 1
        data = request_on_server(server, r.config_hash)
        assert data["status"] == "RUNNING" and data["claim_id"] == r.claim_id
        assert data["history"][-1]["worker"] == f"w{i}"


def test_concurrent_workers_never_share_a_request(server, tmp_path):
    submit_three(tmp_path)
    got: list = []
    barrier = threading.Barrier(4)

    def claim(i: int) -> None:
        barrier.wait()
        got.append(queue.claim_next(REQUESTS, f"w{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [r for r in got if r is not None]
    assert len(got) == 4 and len(claimed) == 3  # one worker found the queue empty
    assert len({r.config_hash for r in claimed}) == 3
    assert {r.worker for r in claimed} == {
        request_on_server(server, r.config_hash)["worker"] for r in claimed
    }


def test_lost_claim_answer_is_not_a_second_claim(server, tmp_path):
    submit_three(tmp_path)
    server.state.commit_faults = [CommitFault(500, apply=True)]
    r = queue.claim_next(REQUESTS, "w1")
    assert r is not None and r.name == "word-counting"
    running = [
        json.loads(d)["name"]
        for d in server.files(REQUESTS).values()
        if json.loads(d)["status"] == "RUNNING"
    ]
    assert running == ["word-counting"]


def test_heartbeat_keeps_a_long_run_alive(server, tmp_path):
    """While the scorer runs, the heartbeat thread keeps the claim fresh: nobody re-queues it."""
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")
    seen = {}

    def slow_score(submission_path, **kw):
        time.sleep(2.5)  # far longer than stale_after_s
        seen["other"] = queue.claim_next(REQUESTS, "other", stale_after_s=1.5)
        return scorers.quick_score(submission_path, **kw)

    cfg = cfg_for(tmp_path, scorer=slow_score, heartbeat_s=0.1, stale_after_s=1.5)
    [outcome] = queue.work(cfg, once=True, echo=lambda s: None)
    assert seen["other"] is None  # the running request was not taken away
    assert outcome.status == "FINISHED"
    req = queue.list_requests(REQUESTS)[0]
    assert [h.status for h in req.history] == ["PENDING", "RUNNING", "FINISHED"]
    assert req.heartbeat > req.history[1].time


def test_dead_worker_request_is_requeued_and_finished(server, tmp_path):
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")
    dead = queue.claim_next(REQUESTS, "dead-worker", stale_after_s=0.3)
    assert dead is not None
    time.sleep(0.5)  # no heartbeat: the worker died
    cfg = cfg_for(tmp_path, worker_id="w2", stale_after_s=0.3)
    [outcome] = queue.work(cfg, once=True, echo=lambda s: None)
    assert outcome.status == "FINISHED"
    req = queue.list_requests(REQUESTS)[0]
    assert [(h.status, h.worker) for h in req.history] == [
        ("PENDING", None),
        ("RUNNING", "dead-worker"),
        ("PENDING", "w2"),
        ("RUNNING", "w2"),
        ("FINISHED", "w2"),
    ]
    assert "no heartbeat since" in req.history[2].note and "re-queued" in req.history[2].note
    assert req.attempts == 2 and req.status == "FINISHED"
    # the dead worker's late finish is refused: the claim is no longer its own
    assert not queue.finish(REQUESTS, dead, [])
    # the results are on the Hub, one file per planned cell plus samples
    assert req.results and all(p in server.files(RESULTS) for p in req.results)


def test_dead_worker_request_fails_after_max_attempts(server, tmp_path):
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")
    kw = dict(stale_after_s=0.2, max_attempts=2)
    assert queue.claim_next(REQUESTS, "dead-1", **kw).attempts == 1
    time.sleep(0.3)
    assert queue.claim_next(REQUESTS, "dead-2", **kw).attempts == 2  # re-queued, claimed
    time.sleep(0.3)
    assert queue.claim_next(REQUESTS, "w3", **kw) is None  # nothing left to run
    req = queue.list_requests(REQUESTS)[0]
    assert req.status == "FAILED"
    assert "gave up after 2 attempt(s)" in req.error and "dead-2" in req.error
    assert [h.status for h in req.history] == ["PENDING", "RUNNING", "PENDING", "RUNNING", "FAILED"]


def test_interrupted_worker_hands_the_request_back(server, tmp_path):
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")

    def interrupted(submission_path, **kw):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        queue.work(cfg_for(tmp_path, scorer=interrupted, worker_id="w1"), once=True, echo=print)
    req = queue.list_requests(REQUESTS)[0]
    assert req.status == "PENDING" and req.claim_id is None
    assert req.history[-1].note == "worker interrupted; re-queued"
    [o] = queue.work(cfg_for(tmp_path, worker_id="w2"), once=True, echo=lambda s: None)
    assert o.status == "FINISHED"


def test_a_damaged_request_file_does_not_block_the_queue(server, tmp_path):
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")
    server.state.commit_direct(REQUESTS, {"requests/0000000000000000.json": b"{not json"}, "oops")
    req = queue.claim_next(REQUESTS, "w1")
    assert req is not None and req.name == "sgtr"


def test_failing_request_is_marked_failed_and_the_loop_goes_on(server, tmp_path):
    queue.submit(copy_submission(tmp_path, "word-counting"), REQUESTS, "alice")
    time.sleep(0.01)
    queue.submit(copy_submission(tmp_path, "sgtr"), REQUESTS, "alice")
    calls = []

    def first_fails(submission_path, **kw):
        calls.append(Path(submission_path).name)
        if len(calls) == 1:
            return scorers.failing_score(submission_path, **kw)
        return scorers.quick_score(submission_path, **kw)

    cfg = cfg_for(tmp_path, scorer=first_fails, poll_s=0.01)
    outcomes = queue.work(cfg, max_requests=2, echo=lambda s: None)
    assert [o.status for o in outcomes] == ["FAILED", "FINISHED"]
    assert calls == ["word-counting", "sgtr"]
    failed = outcomes[0].request
    data = request_on_server(server, failed.config_hash)
    assert data["status"] == "FAILED"
    assert "RuntimeError: training diverged" in data["error"]
    assert FAKE_TOKEN not in data["error"] and "Bearer ***" in data["error"]
    assert data["log"].endswith("worker.log") and cfg.worker_id in data["log"]
    log = outcomes[0].log.read_text()
    assert "training diverged" in log and "Traceback" in log and FAKE_TOKEN not in log


def test_worker_writes_the_submission_and_fails_incomplete_runs(server, tmp_path):
    sub = load_submission(copy_submission(tmp_path, "sgtr"))
    queue.submit(copy_submission(tmp_path / "x", "sgtr"), REQUESTS, "alice")
    cfg = cfg_for(tmp_path, scorer=scorers.incomplete_score)
    [o] = queue.work(cfg, once=True, echo=lambda s: None)
    folder = cfg.run_root / "requests" / sub.config_hash[:16] / "sgtr"
    assert load_submission(folder).config_hash == sub.config_hash  # defense.yaml + README.md
    assert o.status == "FAILED"
    data = request_on_server(server, sub.config_hash)
    assert "have no result.json" in data["error"]


def test_worker_cli_once_publishes_and_finishes(server, tmp_path, capfd):
    path = copy_submission(tmp_path, "sgtr")
    assert main(["submit", str(path), "--requests", REQUESTS, "--submitter", "alice"]) == 0
    argv = [
        "worker", "--requests", REQUESTS, "--results", RESULTS, "--once",
        "--preset", "cpu-demo", "--run-root", str(tmp_path / "wr"),
        "--scorer", "tests.hub.scorers:quick_score", "--worker-id", "cli-worker",
    ]  # fmt: skip
    assert main(argv) == 2  # cpu-demo results are unofficial: refused before any work
    _, err = capfd.readouterr()
    assert "--preset cpu-demo gives unofficial results" in err and "--unofficial" in err
    assert queue.list_requests(REQUESTS)[0].status == "PENDING"  # untouched
    assert main([*argv, "--unofficial"]) == 0
    out, _ = capfd.readouterr()
    assert "FINISHED" in out
    req = queue.list_requests(REQUESTS)[0]
    assert req.status == "FINISHED"
    results = [json.loads(server.files(RESULTS)[p]) for p in req.results if p.endswith(".json")]
    assert results and all(not r["official"] for r in results)
    assert main([*argv, "--unofficial"]) == 0  # empty queue
    assert "queue empty" in capfd.readouterr().out


def test_killed_worker_subprocess_is_recovered(server, tmp_path):
    """SIGKILL a real `emarena worker` mid-request; the next worker re-queues and finishes it."""
    path = copy_submission(tmp_path, "sgtr")
    sub = load_submission(path)
    queue.submit(path, REQUESTS, "alice")
    marker = tmp_path / "started"
    env = {**os.environ, scorers.ENV_MARKER: str(marker), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "emarena", "worker", "--requests", REQUESTS,
            "--results", RESULTS, "--once", "--run-root", str(tmp_path / "wr1"),
            "--scorer", "tests.hub.scorers:hanging_score", "--worker-id", "doomed",
            "--heartbeat-s", "0.2", "--stale-after-s", "1.5",
        ],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.stdout.read().decode() if proc.poll() is not None else ""
        while time.time() < deadline:  # wait for a heartbeat after the claim
            running = request_on_server(server, sub.config_hash)
            if beat_after_claim(running):
                break
            time.sleep(0.05)
        assert running["status"] == "RUNNING" and running["worker"] == "doomed"
        assert beat_after_claim(running)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = proc.stdout.read().decode()
    proc.stdout.close()
    assert FAKE_TOKEN not in output
    # still RUNNING: nobody can tell a dead worker from a slow one until the heartbeat is stale
    cfg = cfg_for(tmp_path, worker_id="rescuer", stale_after_s=1.5, preset="paper")
    assert queue.work(cfg, once=True, echo=lambda s: None) == []  # not stale yet: left alone
    time.sleep(1.6)
    [o] = queue.work(cfg, once=True, echo=lambda s: None)
    assert o.status == "FINISHED"
    data = request_on_server(server, sub.config_hash)
    assert [(h["status"], h["worker"]) for h in data["history"]] == [
        ("PENDING", None),
        ("RUNNING", "doomed"),
        ("PENDING", "rescuer"),
        ("RUNNING", "rescuer"),
        ("FINISHED", "rescuer"),
    ]
    published = [load_result(_write(tmp_path / "r.json", server.files(RESULTS)[p]))
                 for p in data["results"] if p.endswith(".json")]  # fmt: skip
    assert published and all(r.official for r in published)
    assert token_leaks(tmp_path) == []


def beat_after_claim(request: dict) -> bool:
    beat = request["heartbeat"]
    return beat is not None and datetime.fromisoformat(beat) > datetime.fromisoformat(
        request["history"][-1]["time"]
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_requests_are_served_in_queue_order_by_the_loop(server, tmp_path):
    names = submit_three(tmp_path)
    cfg = cfg_for(tmp_path, poll_s=0.01)
    outcomes = queue.work(cfg, max_requests=3, echo=lambda s: None)
    assert [o.request.name for o in outcomes] == names
    assert all(o.status == "FINISHED" for o in outcomes)
    assert [r.status for r in queue.list_requests(REQUESTS)] == ["FINISHED"] * 3
    # each publish made at most one commit; controls are shared, so later ones add less
    files = server.files(RESULTS)
    controls = [p for p in files if "/_controls/" in p]
    assert len(controls) == 4  # base + em of seed 0: .json + .samples.jsonl each
    assert files["README.md"] == hub.results_card().encode()
