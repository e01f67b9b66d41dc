"""Results folders for the leaderboard tests: valid synthetic results (built with
`emarena.eval.result.make_result`, exactly what the pipeline writes) plus malformed files of
every kind the reader must survive, and a running app on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from emarena.leaderboard.synthetic import (
    result_path,
    synthetic_result,
    write_synthetic_results,
)

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "leaderboard" / "app.py"
ARTIFACTS = REPO / "test-artifacts" / "leaderboard"
#: Debian's Chromium, driven by Playwright in the browser tests, and its flags.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def shown_table(page) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as on screen (a Playwright page): header texts and every row's cells."""
    return page.evaluate(
        """() => {
        const t = document.querySelector('#lb');
        const head = [...t.querySelectorAll('thead th .h')].map(e => e.textContent);
        const rows = [...t.querySelectorAll('tbody tr[data-row]')]
            .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent));
        return [head, rows];
    }"""
    )

@pytest.fixture(scope="module")
def chromium():
    """Headless Debian Chromium through Playwright, for one test module (skips without it)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: `apt-get update && apt-get install -y "
                    "chromium` to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


#: name -> (relative path, why it is invalid, a phrase the error must contain)
BAD_FILES = {
    "not-json": ("broken/" + "1" * 64 + ".json", "truncated JSON", "not valid JSON"),
    "missing-keys": ("broken/" + "2" * 64 + ".json", "no metrics / provenance", "metrics"),
    "wrong-types": ("broken/" + "3" * 64 + ".json", "n is a string", "metrics.misalignment_rate"),
    "nan": ("broken/" + "4" * 64 + ".json", "a NaN metric value", "nan"),
    "schema-v2": ("broken/" + "5" * 64 + ".json", "schema_version 2", "schema_version 2"),
    "not-an-object": ("broken/result.json", "a JSON list", "expected a JSON object"),
    "renamed": ("broken/" + "6" * 64 + ".json", "holds another cell", "holds cell"),
}


def valid_json() -> dict:
    """A valid result (as JSON data) outside the synthetic grid: a reversal cell of a model
    that `write_synthetic_results` never writes."""
    control = synthetic_result("test-model", "insecure", 7, "em", None)
    r = synthetic_result("test-model", "insecure", 7, "reversal", "sgtr", control=control)
    return json.loads(r.model_dump_json())


def write_bad_files(root: Path) -> dict[str, Path]:
    """Every kind of invalid result file; returns name -> path."""
    out = {}
    for name, (rel, _, _) in BAD_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = valid_json()
        if name == "not-json":
            text = json.dumps(data)[:500]
        elif name == "missing-keys":
            del data["metrics"], data["provenance"]
            text = json.dumps(data)
        elif name == "wrong-types":
            data["metrics"]["misalignment_rate"]["all"]["n"] = "sixty-four"
            text = json.dumps(data)
        elif name == "nan":
            data["metrics"]["misalignment_rate"]["all"]["value"] = float("nan")
            data["metrics"]["misalignment_rate"]["all"]["ci_low"] = None
            data["metrics"]["misalignment_rate"]["all"]["ci_high"] = None
            text = json.dumps(data)  # writes NaN, which JSON parsers accept
            assert "NaN" in text
        elif name == "schema-v2":
            data["schema_version"] = 2
            text = json.dumps(data)
        elif name == "not-an-object":
            text = json.dumps([data])
        elif name == "renamed":
            text = json.dumps(data)  # valid content, but the file name is another cell id
        else:  # pragma: no cover
            raise AssertionError(name)
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


def write_duplicates(root: Path) -> dict[str, list[Path]]:
    """An identical copy of one synthetic result, and two disagreeing copies of another."""
    paths = sorted(root.rglob("*.json"))
    paths = [p for p in paths if "broken" not in p.parts]
    identical_src, conflict_src = paths[0], paths[1]
    identical = root / "copies" / identical_src.name
    identical.parent.mkdir(parents=True, exist_ok=True)
    identical.write_bytes(identical_src.read_bytes())
    data = json.loads(conflict_src.read_text())
    mv = data["metrics"]["misalignment_rate"]["all"]
    mv["value"] = 0.999
    mv["ci_low"], mv["ci_high"] = 0.99, 1.0
    conflict = root / "copies" / conflict_src.name
    conflict.write_text(json.dumps(data), encoding="utf-8")
    return {"identical": [identical_src, identical], "conflict": [conflict_src, conflict]}


@pytest.fixture
def clean_results(tmp_path) -> Path:
    root = tmp_path / "results"
    write_synthetic_results(root, 60)
    return root


@pytest.fixture
def messy_results(tmp_path) -> Path:
    """60 synthetic results, every kind of bad file, duplicates."""
    root = tmp_path / "results"
    write_synthetic_results(root, 60)
    write_bad_files(root)
    write_duplicates(root)
    return root


# --- the app as a subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python leaderboard/app.py ...` on 127.0.0.1 and a free port, until `stop()`."""

    def __init__(self, results_dir: Path, requests_dir: Path | None, log: Path, *,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        """`extra_args` are added to the command line; `env` overrides the environment (by
        default the app is offline and has no Hub repos)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        args = [sys.executable, str(APP), "--results-dir", str(results_dir), "--port",
                str(self.port), "--host", "127.0.0.1", "--refresh-s", "0"]
        if requests_dir is not None:
            args += ["--requests-dir", str(requests_dir)]
        args += extra_args or []
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "EMARENA_RESULTS_REPO": "", "EMARENA_REQUESTS_REPO": "", **(env or {})}
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=env, cwd=REPO)

    def wait(self, timeout: float = 120) -> AppServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"the app did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log_file.close()


__all__ = [
    "APP",
    "ARTIFACTS",
    "BAD_FILES",
    "AppServer",
    "free_port",
    "result_path",
    "valid_json",
    "write_bad_files",
    "write_duplicates",
]
