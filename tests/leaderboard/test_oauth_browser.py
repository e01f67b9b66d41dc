"""Submitting with a Hugging Face login, in Chromium, through Gradio's own OAuth mechanism.

Outside a Space, Gradio mocks its OAuth routes (`gradio/oauth.py`, `_add_mocked_oauth_routes`):
"Sign in with Hugging Face" logs the visitor in as the account of the local token, asked of the
Hub's `whoami-v2`. Here the token is a test token and the Hub is the test Hub on 127.0.0.1
(tests/hub/hub_server.py), which answers whoami for it with the account `test-researcher`: the
real login button, the real session cookie, the real `gr.OAuthProfile` in the handlers.

Logged out, Submit is disabled with a sentence saying why; logged in, the request is made under
the account (nobody types a name), the duplicate check and the per-account daily limit hold.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from emarena.leaderboard.synthetic import write_synthetic_results
from tests.hub.hub_server import HubServer
from tests.leaderboard.conftest import ARTIFACTS, CHROMIUM, REPO, AppServer

SCREENSHOTS = REPO / "docs" / "screenshots"
TOKEN = "hf_EMARENAoauthTEST0123456789abcdef"
ACCOUNT = "test-researcher"
TIMEOUT_MS = 30_000
README = "# A defense\n\nWhat it does, where it comes from, its params.\n"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing: "
                       "`apt-get update && apt-get install -y chromium`"),
]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("oauth-site")
    write_synthetic_results(root / "results", 30)
    with HubServer(token=TOKEN) as hub:
        hub.state.users[TOKEN] = ACCOUNT
        server = AppServer(
            root / "results", root / "requests", ARTIFACTS / "app-oauth.log",
            extra_args=["--oauth", "--submissions-per-day", "1"],
            env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
                 "HF_HOME": str(root / "hf_home")},
        ).wait()
        yield {"server": server, "requests": root / "requests", "hub": hub}
        server.stop()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, SCREENSHOTS / f"{name}.png")


def test_login_submit_and_limit(chromium, site):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        # localhost: a secure context over http, where Chromium keeps the Secure session cookie
        # Gradio sets (127.0.0.1 is not one for cookies)
        page.goto(site["server"].url.replace("127.0.0.1", "localhost"))
        page.get_by_role("tab", name="Submit").click()
        note, button = page.locator("#submit-note"), page.locator("#submit-btn")
        expect(note).to_contain_text("Log in with Hugging Face to submit")
        expect(button).to_be_disabled()
        expect(page.locator("#submitter")).to_have_count(0)  # nobody types a name here
        page.click("#validate-btn")  # validating needs no login
        expect(page.locator("#submit-result")).to_contain_text("Valid")
        shot(page, "submit-logged-out")

        # Gradio's mocked OAuth: /login/huggingface -> /login/callback -> back, logged in
        with page.expect_navigation(url=re.compile(r"/$"), timeout=TIMEOUT_MS):
            page.locator("#login").click()
        page.wait_for_selector("#lb tbody tr[data-row]")
        page.get_by_role("tab", name="Submit").click()
        expect(page.locator("#login")).to_contain_text(ACCOUNT, timeout=TIMEOUT_MS)
        expect(note).to_contain_text(f"Submitting as {ACCOUNT}", timeout=TIMEOUT_MS)
        expect(note).to_contain_text("0 of 1 requests")
        expect(button).to_be_enabled()
        sgtr = (REPO / "submissions" / "sgtr" / "defense.yaml").read_text()
        page.fill("#yaml-box textarea", sgtr)
        page.fill("#readme-box textarea", README)
        button.click()
        result = page.locator("#submit-result")
        expect(result).to_contain_text("Queued")
        request_id = re.search(r"requests/[0-9a-f]{16}\.json", result.inner_text()).group(0)
        data = json.loads((site["requests"] / request_id).read_text())
        assert data["submitter"] == ACCOUNT and data["status"] == "PENDING"
        assert data["history"][0]["note"] == f"submitted by {ACCOUNT}"
        expect(note).to_contain_text("1 of 1 requests")
        shot(page, "submit-logged-in")

        # the same configuration again: the duplicate check; another one: the daily limit
        button.click()
        expect(result).to_contain_text("Already in the queue")
        wc = (REPO / "submissions" / "word-counting" / "defense.yaml").read_text()
        page.fill("#yaml-box textarea", wc)
        button.click()
        expect(result).to_contain_text("limit is 1 a day")
        assert len(list((site["requests"] / "requests").glob("*.json"))) == 1
    finally:
        ctx.close()
    # the login asked the Hub who the token belongs to, with the token as a header only
    assert ("GET", "/api/whoami-v2") in site["hub"].state.requests
    assert TOKEN not in site["server"].output()
