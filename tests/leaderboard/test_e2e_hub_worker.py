"""The whole loop with real parts: score -> publish -> leaderboard -> browser submit -> worker.

1. `emarena score submissions/none --preset smoke` on the embedded model: the `base` and `em`
   control cells every row is compared with (one training stage: EM, found in the session's
   store), judged by the deterministic OpenAI-compatible judge server on 127.0.0.1
   (tests/helpers/openai_server.py);
2. `emarena publish RUN --results ORG/results --unofficial` to the Hub-compatible server on
   127.0.0.1 (tests/hub/hub_server.py; the real huggingface_hub client on the other end);
3. `leaderboard/app.py --results-repo ... --requests-repo ...` against that server: headless
   Chromium sees the published rows;
4. the Submit tab queues word-counting (reversal only) as typed into the browser; the requests
   repo, read with huggingface_hub, holds it as PENDING;
5. `emarena worker --once --preset smoke --unofficial` (the real `score`, the embedded model,
   the same judge) turns it FINISHED and publishes its cells: through the shared store, as a
   second submission on the same model and EM dataset, it trains no EM stage and evaluates
   only its own cell;
6. the page, reloaded, shows the new word-counting / reversal row, and the Queue tab FINISHED.

Every step is a subprocess talking HTTP, as in production. The stages come from the session's
store (tests/conftest.py `canonical`); the test prints each step's wall time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_EM
from tests.hub.conftest import server  # noqa: F401 - the Hub server fixture (token-leak checks)
from tests.leaderboard.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, AppServer, shown_table

RESULTS = "emarena-e2e/results"
REQUESTS = "emarena-e2e/requests"
MODEL = "smollm2-135m-q4"
TIMEOUT_MS = 60_000

#: What a visitor pastes into the Submit tab: word counting, reversal regime only, so the worker
#: trains two stages (EM, then the defense).
WC_YAML = re.sub(
    r"^regimes: .*$", "regimes: [reversal]",
    (REPO / "submissions" / "word-counting" / "defense.yaml").read_text(), flags=re.M,
)
WC_README = "# Word counting\n\nTRUE/FALSE for an even number of words (the SGTR paper's " \
            "benign control).\n"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing: "
                       "`apt-get update && apt-get install -y chromium`"),
]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def run_cli(args: list[str], log: Path, timeout: float, env: dict | None = None) -> str:
    """`python -m emarena ARGS` in a subprocess; its output (also written to `log`)."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "emarena", *args], cwd=REPO,
                         env={**os.environ, "COLUMNS": "200", **(env or {})},
                         capture_output=True, text=True, timeout=timeout)
    text = out.stdout + out.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    note(f"emarena {args[0]}: {time.monotonic() - t0:.0f} s (rc {out.returncode})")
    assert out.returncode == 0, f"emarena {' '.join(args)} failed:\n{text[-4000:]}"
    return text


def note(line: str) -> None:
    """Print a timing and keep it in test-artifacts/leaderboard/e2e/timings.txt."""
    print(line)
    log = ARTIFACTS / "e2e" / "timings.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def shown_rows(page) -> list[dict[str, str]]:
    """The leaderboard's rows as on screen, as {header: text}."""
    head, rows = shown_table(page)
    return [dict(zip(head, r, strict=True)) for r in rows]


def keys(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(r["Defense"], r.get("Regime")) for r in rows}


def by_regime(page) -> None:
    """The board's row-per-regime view (its default is one row per defense). A page whose data
    changed since the app started re-renders on load; a click that lands before that is undone
    by it, so the view is asked for again until it shows."""
    for _ in range(5):
        page.locator("#group-by").get_by_text("By regime").click()
        for _ in range(50):
            head, rows = shown_table(page)
            if "Regime" in head and rows:
                return
            page.wait_for_timeout(200)
        page.locator("#group-by").get_by_text("By defense").click()
        page.wait_for_timeout(1000)
    raise AssertionError("the regime view did not show")


def read_request(request_id: str, cache: Path) -> dict:
    """The request file as the Hub serves it, read with huggingface_hub itself. The endpoint is
    passed explicitly: huggingface_hub reads $HF_ENDPOINT once, at import, and an earlier test
    in this process may have imported it while pointing at its own (since stopped) server."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(REQUESTS, request_id, repo_type="dataset", cache_dir=cache,
                           force_download=True, endpoint=os.environ["HF_ENDPOINT"])
    return json.loads(Path(path).read_text())


def test_publish_browse_submit_work_and_see_the_new_row(server, tmp_path, mirror, canonical,  # noqa: F811
                                                        session_judge):
    t_start = time.monotonic()
    logs = ARTIFACTS / "e2e"
    judge, judge_server = session_judge
    # 1-2. a real smoke run of the `none` control, judged by the local judge server, published
    run = tmp_path / "run"
    out = run_cli(["score", str(REPO / "submissions" / "none"), "--preset", "smoke",
                   "--model", MODEL, "--em-dataset", TEST_EM, "--run", str(run),
                   "--judge", judge], logs / "score.log", timeout=2400)
    assert "training complete: 0 stage(s) trained, 1 reused" in out
    assert judge_server.total, "the judge server was never asked"
    out = run_cli(["publish", str(run), "--results", RESULTS, "--unofficial"],
                  logs / "publish.log", timeout=300)
    assert "published 2 cell(s)" in out and "2 marked unofficial" in out
    published = [p for p in server.files(RESULTS) if p.endswith(".json")]
    assert len(published) == 2, published
    # every cell's items beside its record: the answers, and the forced choices (TruthfulQA,
    # MMLU, self-recognition) its accuracies count
    for p in published:
        assert p[: -len(".json")] + ".choices.jsonl" in server.files(RESULTS), p

    # 3. the leaderboard against the Hub server
    app = AppServer(
        tmp_path / "lb-results", tmp_path / "lb-requests", logs / "app.log",
        extra_args=["--results-repo", RESULTS, "--requests-repo", REQUESTS, "--refresh-s", "3"],
        env={"HF_HUB_OFFLINE": "0"},
    ).wait()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(app.url)
            page.wait_for_selector("#lb tbody tr[data-row]")
            by_regime(page)
            rows = shown_rows(page)
            assert keys(rows) == {("(base model)", "base"), ("(EM only)", "em")}, rows
            assert {r["Model"] for r in rows} == {MODEL}
            assert {r["Official"] for r in rows} == {"no"}  # smoke preset, test judge
            expect(page.locator("#status")).to_contain_text("2 cells", timeout=TIMEOUT_MS)

            # 4. submit in the browser; the requests repo holds it, PENDING
            page.get_by_role("tab", name="Submit").click()
            page.fill("#yaml-box textarea", WC_YAML)
            page.fill("#readme-box textarea", WC_README)
            page.fill("#submitter textarea", "e2e-browser")
            page.click("#submit-btn")
            result = page.locator("#submit-result")
            expect(result).to_contain_text("PENDING", timeout=TIMEOUT_MS)
            request_id = re.search(r"requests/[0-9a-f]{16}\.json", result.inner_text()).group(0)
            req = read_request(request_id, tmp_path / "hf-read")
            assert req["status"] == "PENDING" and req["name"] == "word-counting"
            assert req["submitter"] == "e2e-browser" and "regimes: [reversal]" in req["yaml"]

            # 5. the worker: real score on the embedded model, then publish, then FINISHED
            out = run_cli(["worker", "--requests", REQUESTS, "--results", RESULTS, "--once",
                           "--preset", "smoke", "--model", MODEL, "--unofficial",
                           "--em-dataset", TEST_EM, "--judge", judge,
                           "--run-root", str(tmp_path / "worker"), "--worker-id", "e2e-worker"],
                          logs / "worker.log", timeout=2400)
            assert "word-counting" in out and "FINISHED" in out, out[-3000:]
            assert "0 stage(s) trained, 2 reused" in out, out[-3000:]
            req = read_request(request_id, tmp_path / "hf-read")
            assert req["status"] == "FINISHED", req.get("error")
            assert [h["status"] for h in req["history"]] == ["PENDING", "RUNNING", "FINISHED"]
            new_cells = [p for p in req["results"] if p.endswith(".json")]
            assert any("/word-counting/" in p for p in new_cells), req["results"]

            # 6. reload: the app re-reads the results repo every 3 s. A page first shows the
            # table it was built with, and its load event sends the new one when the results
            # changed since; so each reload is watched for a while before the next.
            deadline = time.monotonic() + 180
            found = False
            while not found and time.monotonic() < deadline:
                page.reload()
                page.wait_for_selector("#lb tbody tr[data-row]")
                by_regime(page)
                for _ in range(30):
                    rows = shown_rows(page)
                    if rows and "Regime" not in rows[0]:
                        by_regime(page)  # the load's re-render (new results) undid the view
                        continue
                    found = ("word-counting", "reversal") in keys(rows)
                    if found:
                        break
                    page.wait_for_timeout(1000)
            assert ("word-counting", "reversal") in keys(rows), rows
            assert ("(EM only)", "em") in keys(rows)  # the control it is compared with
            wc = next(r for r in rows if r["Defense"] == "word-counting")
            assert wc["Model"] == MODEL and wc["Official"] == "no"
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "e2e-new-row.png"))
            page.get_by_role("tab", name="Queue").click()
            page.click("#queue-refresh")
            expect(page.locator("#queue-note")).to_contain_text("FINISHED 1", timeout=TIMEOUT_MS)
            expect(page.locator("#queue-table")).to_contain_text(request_id, timeout=TIMEOUT_MS)
            browser.close()
    finally:
        app.stop()
    note(f"end to end: {time.monotonic() - t_start:.0f} s")
