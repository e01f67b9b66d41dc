"""`emarena space build` and `push`: a Space folder that deploys as is.

The fast test checks the folder (front matter, requirements naming the wheel, app.py) and
pushes it to the test Hub on 127.0.0.1, whose resolve URL then serves the very wheel the
requirements name. The slow one installs the folder's requirements into a fresh venv (pip, as
the Spaces builder does), starts its app.py there and drives it in Chromium: with no results
repo (a page saying so), with the results repo on the test Hub (the board), and with the Hub
gone (the results it downloaded last, and a sentence saying the Hub could not be reached).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from emarena.leaderboard import space
from emarena.leaderboard.synthetic import write_synthetic_results
from tests.hub.hub_server import HubServer
from tests.leaderboard.conftest import ARTIFACTS, CHROMIUM

TOKEN = "hf_EMARENAspaceTEST0123456789abcdef"
RESULTS = "emarena-space/results"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return space.build_wheel(tmp_path_factory.mktemp("wheel"), echo=lambda _: None)


def test_build_writes_a_ready_folder_and_push_serves_its_wheel(wheel, tmp_path, monkeypatch):
    out = space.build(tmp_path / "space", wheel=wheel, echo=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "requirements.txt",
                                                     "wheels"]
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    from importlib import metadata

    assert meta["sdk"] == "gradio" and meta["sdk_version"] == metadata.version("gradio")
    assert meta["app_file"] == "app.py" and meta["hf_oauth"] is True
    assert meta["python_version"] == "3.11"
    reqs = [ln for ln in (out / "requirements.txt").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert reqs == [f"./wheels/{wheel.name}[leaderboard]",
                    f"gradio[oauth]=={meta['sdk_version']}"]
    assert "from emarena.leaderboard.app import main" in (out / "app.py").read_text()
    assert "sys.path" not in (out / "app.py").read_text()
    with pytest.raises(Exception, match="not empty"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "x").write_text("mine")
        space.build(tmp_path / "busy", wheel=wheel, echo=lambda _: None)

    with HubServer(token=TOKEN) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        space.push("emarena-space/board", out, echo=lambda _: None)
        files = hub.state.repo("emarena-space/board", "space").head.files
        assert {"README.md", "app.py", "requirements.txt", f"wheels/{wheel.name}"} <= set(files)
        line = next(ln for ln in files["requirements.txt"].decode().splitlines()
                    if ln.startswith("emarena"))
        url = f"{hub.url}/spaces/emarena-space/board/resolve/main/wheels/{wheel.name}"
        assert line == f"emarena[leaderboard] @ {url}"
        assert httpx.get(url, timeout=30).content == wheel.read_bytes()


# --- the folder, installed and served ---------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SpaceApp:
    """`python app.py` of the Space folder, in the fresh venv, until stopped."""

    def __init__(self, python: Path, folder: Path, env: dict[str, str], log: Path):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self._f = open(log, "w")  # noqa: SIM115 - closed in stop()
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("EMARENA_", "HF_", "VIRTUAL_ENV", "PYTHON"))}
        self.proc = subprocess.Popen(
            [str(python), "app.py"], cwd=folder, stdout=self._f, stderr=subprocess.STDOUT,
            env={**clean, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                 "GRADIO_ANALYTICS_ENABLED": "False", **env})

    def wait(self, timeout: float = 180) -> SpaceApp:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the Space app did not answer:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._f.close()


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.browser
@pytest.mark.timeout(900)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing")
def test_the_space_installs_in_a_fresh_venv_and_serves_the_board(wheel, tmp_path, chromium):
    from emarena import hub as hub_mod

    out = space.build(tmp_path / "space", wheel=wheel, echo=lambda _: None)
    venv = tmp_path / "venv"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                          "requirements.txt"], cwd=out, capture_output=True, text=True,
                         timeout=600)
    assert pip.returncode == 0, pip.stderr[-4000:]
    installed = subprocess.run([str(python), "-c", "import emarena, sys; print(emarena.__file__);"
                                " print('torch' in sys.modules)"], capture_output=True,
                               text=True, timeout=60)
    assert str(venv) in installed.stdout and installed.stdout.split()[-1] == "False"
    print(f"fresh venv with the Space's requirements: {time.monotonic() - t0:.0f} s")
    logs = ARTIFACTS / "space"
    logs.mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "space-cache"
    page = chromium.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    try:
        # 1. no results repo configured: a page that says what to set, no exit
        app = SpaceApp(python, out, {"EMARENA_CACHE": str(cache)}, logs / "no-repo.log").wait()
        try:
            page.goto(app.url)
            page.wait_for_selector("#no-results")
            assert "No results source is configured" in page.inner_text("#no-results")
            assert "EMARENA_RESULTS_REPO" in page.inner_text("#no-results")
            assert app.proc.poll() is None
        finally:
            app.stop()
        # 2. the results repo on the (test) Hub: the board
        results = tmp_path / "results"
        write_synthetic_results(results, 60)
        with HubServer(token=TOKEN) as hub:
            env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                hub_mod.ensure_repo(RESULTS)
                hub_mod.upload_files(RESULTS, {str(p.relative_to(results)): p.read_bytes()
                                               for p in results.rglob("*.json*")}, "results")
            finally:
                for k, v in old.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            env = {**env, "EMARENA_CACHE": str(cache), "EMARENA_RESULTS_REPO": RESULTS}
            app = SpaceApp(python, out, env, logs / "hub.log").wait()
            try:
                page.goto(app.url)
                page.wait_for_selector("#lb tbody tr[data-row]")
                assert "60 cells" in page.inner_text("#status")
                n_rows = page.locator("#lb tbody tr[data-row]").count()
                assert n_rows >= 5
            finally:
                app.stop()
        # 3. the Hub gone: the results downloaded last, and a sentence saying so
        app = SpaceApp(python, out, env, logs / "hub-gone.log").wait()
        try:
            page.goto(app.url)
            page.wait_for_selector("#lb tbody tr[data-row]")
            status = page.inner_text("#status")
            assert "The Hub could not be reached" in status and "showing the results" in status
            assert "60 cells" in status
            assert page.locator("#lb tbody tr[data-row]").count() == n_rows
            page.screenshot(path=str(logs / "hub-gone.png"))
        finally:
            app.stop()
    finally:
        page.close()
    assert "Traceback" not in (logs / "hub-gone.log").read_text()
