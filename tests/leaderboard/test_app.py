"""leaderboard/app.py without a browser: it serves a folder full of bad files, reads the Hub
through emarena.hub when repos are configured, and takes its settings from flags and env."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.leaderboard.conftest import APP, ARTIFACTS, BAD_FILES, AppServer


@pytest.fixture(scope="module")
def app_module():
    from emarena.leaderboard import app

    return app


def test_launcher_is_the_package_app():
    """leaderboard/app.py only starts `emarena.leaderboard.app` (no sys.path patching)."""
    text = APP.read_text()
    assert "from emarena.leaderboard.app import main" in text and "sys.path" not in text


def test_app_serves_a_messy_folder(messy_results, tmp_path):
    server = AppServer(messy_results, tmp_path / "requests", ARTIFACTS / "app-smoke.log").wait()
    try:
        page = httpx.get(server.url, timeout=30)
        assert page.status_code == 200
        config = httpx.get(server.url + "config", timeout=30).json()
        text = json.dumps(config)
        n_invalid = len(BAD_FILES) + 3  # + one identical copy, two conflicting copies
        assert f"Invalid results ({n_invalid})" in text
        assert "not valid JSON" in text and "schema_version 2 is not supported" in text
        assert '<tr data-row=\\"0\\"' in text  # the first page holds the table already
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_parse_args_env_and_defaults(app_module, monkeypatch, tmp_path):
    monkeypatch.setenv("EMARENA_RESULTS_REPO", "org/results")
    monkeypatch.setenv("EMARENA_REQUESTS_REPO", "org/requests")
    monkeypatch.setenv("EMARENA_CACHE", str(tmp_path))
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    cfg = app_module.parse_args([])
    assert cfg.results_repo == "org/results" and cfg.requests_repo == "org/requests"
    assert cfg.results_dir == tmp_path / "leaderboard" / "results" / "org__results"
    assert cfg.requests_dir == tmp_path / "leaderboard" / "requests" / "org__requests"
    assert (cfg.host, cfg.port) == ("127.0.0.1", 7860)
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert app_module.parse_args([]).host == "0.0.0.0"
    monkeypatch.delenv("EMARENA_RESULTS_REPO")
    monkeypatch.delenv("EMARENA_REQUESTS_REPO")
    local = app_module.parse_args(["--results-dir", str(tmp_path), "--port", "9999"])
    assert local.results_repo is None and local.requests_dir is None and local.port == 9999
    nothing = app_module.parse_args([])  # a page that says so, not an exit
    assert nothing.results_dir is None and not nothing.oauth
    monkeypatch.setenv("OAUTH_CLIENT_ID", "x")  # what a Space with hf_oauth: true sets
    monkeypatch.setenv("EMARENA_SUBMISSIONS_PER_DAY", "5")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    spaced = app_module.parse_args(["--results-repo", "org/r", "--requests-repo", "org/q"])
    assert spaced.oauth and spaced.per_day == 5
    assert not spaced.can_write  # a requests repo without a token: submit is disabled
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert app_module.parse_args(["--requests-repo", "org/q"]).can_write


def test_hub_mode_uses_emarena_hub(app_module, monkeypatch, clean_results, tmp_path):
    """With --results-repo the app snapshots results (json only) and fetches samples lazily,
    both through emarena.hub; a failing snapshot keeps the previous data on screen."""
    import emarena.hub as hub
    from emarena.errors import EmArenaError

    calls: list[tuple] = []
    state = {"fail": False}

    def fake_snapshot(repo_id, local_dir, *, allow_patterns=None):
        calls.append(("snapshot", repo_id, tuple(allow_patterns or ())))
        if state["fail"]:
            raise hub.HubError("the Hub is down")
        for p in clean_results.rglob("*.json"):
            dest = Path(local_dir) / p.relative_to(clean_results)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest)
        return Path(local_dir)

    def fake_download(repo_id, path, *, revision=None):
        calls.append(("download", repo_id, path))
        src = clean_results / path
        if not src.exists():
            raise EmArenaError("no such file")
        return src.read_bytes()

    monkeypatch.setattr(hub, "snapshot", fake_snapshot)
    monkeypatch.setattr(hub, "download", fake_download)
    cfg = app_module.Config(tmp_path / "mirror", None, "org/results", None, "127.0.0.1", 0, 0)
    backend = app_module.Backend(cfg)
    rs = backend.results.get()
    assert calls[0] == ("snapshot", "org/results", ("*.json",))
    assert len(rs.cells) == 60 and rs.invalid == []
    cid = next(iter(rs.cells))
    assert rs.samples_file(cid) is None  # not downloaded with the snapshot
    path = backend.samples_path(rs, cid)
    assert path is not None and path.is_file()
    assert calls[-1][0] == "download" and calls[-1][2].endswith(f"{cid}.samples.jsonl")
    choices = backend.item_path(rs, cid, "choices")
    assert choices is not None and calls[-1][2].endswith(f"{cid}.choices.jsonl")
    state["fail"] = True
    again = backend.results.refresh()
    assert len(again.cells) == 60
    assert "the Hub is down" in (backend.results.sync_error or "")
    md = app_module.status_markdown(again, backend.results.sync_error, cfg,
                                    backend.results.last_sync)
    assert "The Hub could not be reached" in md and "showing the results downloaded" in md
    assert "the Hub is down" in md


def test_requests_repo_is_snapshotted_for_the_queue(app_module, monkeypatch, tmp_path):
    import emarena.hub as hub

    seen = {}

    def fake_snapshot(repo_id, local_dir, *, allow_patterns=None):
        seen.update(repo=repo_id, dir=Path(local_dir), patterns=allow_patterns)
        return Path(local_dir)

    monkeypatch.setattr(hub, "snapshot", fake_snapshot)
    cfg = app_module.Config(tmp_path, tmp_path / "req", None, "org/requests", "127.0.0.1", 0, 0)
    assert app_module.Backend(cfg).sync_requests() is None
    assert seen == {"repo": "org/requests", "dir": tmp_path / "req",
                    "patterns": ["requests/*.json"]}


def test_exports_are_named_and_reused(app_module, clean_results, tmp_path):
    from emarena.leaderboard import display, views

    backend = app_module.Backend(app_module.Config(clean_results, None, None, None, "h", 0, 0))
    view = views.View(group_by="regime")
    rows = views.apply_view(backend.results.get().table(), view)
    cols = display.columns_for(view, rows)
    a = backend.exports(rows, cols)
    assert Path(a["csv"]).name == "emarena-leaderboard.csv"
    assert Path(a["jsonl"]).name == "emarena-leaderboard.jsonl"
    assert backend.exports(rows, cols) == a
    assert backend.exports(rows.head(3), cols)["csv"] != a["csv"]


def test_the_app_never_imports_torch(clean_results):
    """Building the whole page, validating a submission and drawing a plot import no torch,
    transformers or vLLM (a fresh interpreter, so no other test's imports can hide one)."""
    import subprocess

    probe = f"""
import importlib.util, json, sys
from emarena.leaderboard import app as m
b = m.Backend(m.parse_args(["--results-dir", {str(clean_results)!r}, "--refresh-s", "0"]))
m.build_app(b)
from emarena.leaderboard import plots, submit, views
rows = views.apply_view(b.results.get().table(), views.View())
plots.prevention_vs_reversal(rows, "t")
submit.validate_text(open({str(APP.parents[1] / "submissions/sgtr/defense.yaml")!r}).read(), "x")
heavy = [k for k in ("torch", "transformers", "vllm", "peft", "trl") if k in sys.modules]
print("@@" + json.dumps(heavy))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, out.stderr[-3000:]
    assert json.loads(line[-1][2:]) == []
