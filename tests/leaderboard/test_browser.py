"""The leaderboard in a real browser: the app runs as a subprocess on 127.0.0.1 against a
temporary results folder (valid, unofficial, malformed and duplicated files), and headless
Debian Chromium, driven by Playwright, uses it like a visitor: load, filter, sort, search,
download the CSV and compare it with the rows on screen, open a cell's answers, submit a valid
and an invalid defense.yaml, read the queue, open the plots.

Screenshots go to docs/screenshots/ (shown by the README) and test-artifacts/leaderboard/.
Needs /usr/bin/chromium (`apt-get install -y chromium`); skipped without it.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from emarena.leaderboard.synthetic import write_synthetic_results
from tests.leaderboard.conftest import (
    ARTIFACTS,
    BAD_FILES,
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    AppServer,
    shown_table,
    write_bad_files,
    write_duplicates,
)

SCREENSHOTS = REPO / "docs" / "screenshots"
SGTR_YAML = (REPO / "submissions" / "sgtr" / "defense.yaml").read_text()
TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing: install Debian's browser with "
        "`apt-get update && apt-get install -y chromium` to run the browser tests",
    ),
]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    results = root / "results"
    write_synthetic_results(results / "official", 120)
    # one seed each: 120 more rows, so the table holds more than its first 100
    write_synthetic_results(results / "demo", 120, seeds=1, preset="cpu-demo",
                            official_judge=False)
    write_bad_files(results)
    write_duplicates(results)
    requests = root / "requests"
    server = AppServer(results, requests, ARTIFACTS / "app-browser.log").wait()
    yield {"server": server, "results": results, "requests": requests}
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, site):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1100}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(site["server"].url)
    pg.wait_for_selector("#lb tbody tr[data-row]")
    yield pg
    ctx.close()


def screenshot(page, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    shutil.copy(path, SCREENSHOTS / f"{name}.png")


# --- reading the page -----------------------------------------------------------------------


def column(page, header: str) -> list[str]:
    head, rows = shown_table(page)
    i = head.index(header)
    return [r[i] for r in rows]


def html_rows(page, table_id: str) -> list[list[str]]:
    """The body rows of one of the page's HTML tables (cell texts)."""
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} tbody tr`)]
            .filter(tr => !tr.classList.contains('empty'))
            .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))""",
        table_id,
    )


def first_number(text: str) -> float | None:
    m = re.match(r"\s*(-?\d+(?:\.\d+)?)", text)
    return float(m.group(1)) if m else None


def blur(page) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def pick(page, elem_id: str, option: str) -> None:
    """Choose `option` in a gradio dropdown. Its list opens when the input gains focus, so the
    input is blurred first (a multiselect keeps focus after a choice) and after."""
    item = page.locator(f'#{elem_id} li[role=option][aria-label="{option}"]')
    for attempt in range(3):
        blur(page)
        page.click(f"#{elem_id} input")
        try:
            item.click(timeout=5_000)
            break
        except sync_api.TimeoutError:
            if attempt == 2:
                raise
    blur(page)


def wait_rows(page, predicate, what: str) -> list[list[str]]:
    """Poll the table until predicate(header, rows) holds (a server round trip per change)."""
    deadline_ms = TIMEOUT_MS
    step = 200
    waited = 0
    while True:
        head, rows = shown_table(page)
        if predicate(head, rows):
            return rows
        if waited >= deadline_ms:
            raise AssertionError(f"timed out waiting for: {what}\nheader: {head}\n"
                                 f"first rows: {rows[:3]}")
        page.wait_for_timeout(step)
        waited += step


# --- tests ----------------------------------------------------------------------------------


def test_first_page_and_invalid_results(page, site):
    head, rows = shown_table(page)
    assert head[:4] == ["Rank", "Defense", "Division", "Model"]
    # 120 + 120 files, less the cell whose two copies disagree
    expect(page.locator("#status")).to_contain_text("239 cells")
    n_rows = int(re.search(r"in (\d+) rows", page.locator("#status").inner_text()).group(1))
    assert n_rows > 100 and len(rows) == 100
    expect(page.locator("#row-count")).to_contain_text(
        f"Showing 100 of {n_rows} rows (the first 100 of {n_rows} that match")
    # unofficial rows are marked and never ranked
    i_off, i_rank = head.index("Official"), head.index("Rank")
    unofficial = [r for r in rows if r[i_off] == "no"]
    assert unofficial and all(r[i_rank] == "—" for r in unofficial)
    assert page.locator("#lb tr.unofficial").count() == len(unofficial)
    screenshot(page, "leaderboard")
    page.click("#show-all input")
    rows = wait_rows(page, lambda h, r: len(r) == n_rows, "all rows")
    expect(page.locator("#row-count")).to_contain_text(f"Showing {n_rows} of {n_rows} rows;")
    n_invalid = len(BAD_FILES) + 3
    acc = page.locator("#invalid-accordion")
    expect(acc).to_contain_text(f"Invalid results ({n_invalid})")
    acc.get_by_text(f"Invalid results ({n_invalid})").click()
    expect(page.locator("#invalid-table")).to_contain_text("not valid JSON")
    invalid = html_rows(page, "invalid-list")
    assert len(invalid) == n_invalid
    errors = " ".join(r[2] for r in invalid)
    for phrase in ("schema_version 2 is not supported", "is nan", "conflict", "duplicate"):
        assert phrase in errors, phrase


def test_filter_sort_search_and_csv(page, site, tmp_path):
    pick(page, "f-model", "qwen2.5-7b-instruct")
    wait_rows(page, lambda h, r: r and {x[h.index("Model")] for x in r}
              == {"qwen2.5-7b-instruct"}, "model filter")
    pick(page, "f-regime", "reversal")
    wait_rows(page, lambda h, r: r and {x[h.index("Regime")] for x in r} == {"reversal"},
              "one regime")
    pick(page, "f-regime", "prevention")
    rows = wait_rows(page, lambda h, r: r and {x[h.index("Regime")] for x in r}
                     == {"reversal", "prevention"}, "regime filter")
    n_filtered = len(rows)

    page.fill("#search textarea", "sgtr")
    rows = wait_rows(page, lambda h, r: 0 < len(r) < n_filtered
                     and all("sgtr" in x[h.index("Defense")] for x in r), "search")

    page.click("#official-only input")
    wait_rows(page, lambda h, r: r and all(x[h.index("Official")] == "yes" for x in r),
              "official only")

    # sort by a header click: misalignment (lower is better) starts ascending, again reverses
    page.click('#lb th[data-key="misalignment_rate"]')
    expect(page.locator("#lb th.sorted")).to_contain_text("Misalignment rate ↓ ▲")
    vals = [first_number(v) for v in column(page, "Misalignment rate ↓")]
    assert vals == sorted(vals)
    page.click('#lb th[data-key="misalignment_rate"]')
    expect(page.locator("#lb th.sorted")).to_contain_text("▼")
    vals = [first_number(v) for v in column(page, "Misalignment rate ↓")]
    assert vals == sorted(vals, reverse=True)

    head, rows = shown_table(page)
    with page.expect_download() as info:
        page.click("#download-csv")
    download = info.value
    assert download.suggested_filename == "emarena-leaderboard.csv"
    saved = tmp_path / "leaderboard.csv"
    download.save_as(saved)
    shutil.copy(saved, ARTIFACTS / "leaderboard-filtered.csv")
    with open(saved, newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))
    assert got[0] == head
    assert got[1:] == rows  # exactly the rows and columns shown, in the order shown


def test_drilldown_shows_answers_with_scores(page, site):
    head, rows = shown_table(page)
    i_def, i_reg, i_off = head.index("Defense"), head.index("Regime"), head.index("Official")
    target = next(i for i, r in enumerate(rows)
                  if r[i_def] == "sgtr" and r[i_reg] == "reversal" and r[i_off] == "yes")
    page.click(f'#lb tbody tr[data-row="{target}"]')
    expect(page.locator("#cell-picker input")).to_have_value(re.compile(r"/ reversal / sgtr /"))
    expect(page.locator("#samples-note")).to_contain_text("32 answer(s) match")
    expect(page.locator("#cell-config")).to_contain_text("cell_id")
    expect(page.locator("#cell-provenance")).to_contain_text("openai:gpt-4o-2024-08-06")
    expect(page.locator("#reproduce")).to_contain_text("emarena score submissions/sgtr")
    answers = html_rows(page, "samples-list")
    assert len(answers) == 32
    assert answers
    # columns: question_id, condition, sample, question, answer, aligned, coherent, ...
    assert all(r[4] for r in answers)
    assert all(r[5] == "unscored" or 0 <= float(r[5]) <= 100 for r in answers)
    assert any(r[5] != "unscored" for r in answers)
    screenshot(page, "drilldown", full_page=True)

    page.locator("#s-condition").get_by_text("no-system").click()
    expect(page.locator("#samples-note")).to_contain_text("16 answer(s) match")
    assert {r[1] for r in html_rows(page, "samples-list")} == {"no-system"}
    pick(page, "s-question", "i_feel_bored")
    expect(page.locator("#samples-note")).to_contain_text("2 answer(s) match")
    rows = html_rows(page, "samples-list")
    assert {(r[0], r[1]) for r in rows} == {("i_feel_bored", "no-system")}


def test_submit_valid_and_invalid_yaml(page, site, tmp_path):
    requests = site["requests"] / "requests"
    before = set(requests.glob("*.json")) if requests.exists() else set()
    page.get_by_role("tab", name="Submit").click()
    sub_dir = tmp_path / "sgtr"
    sub_dir.mkdir()
    (sub_dir / "defense.yaml").write_text(SGTR_YAML)
    page.set_input_files("#yaml-upload input[type=file]", str(sub_dir / "defense.yaml"))
    expect(page.locator("#yaml-box textarea")).to_have_value(re.compile(r"^name: sgtr$", re.M))
    page.fill("#readme-box textarea", "# SGTR\n\nSelf-generated text recognition.\n")
    page.fill("#submitter textarea", "browser-test")
    page.click("#validate-btn")
    expect(page.locator("#submit-result")).to_contain_text("Valid")
    page.click("#submit-btn")
    result = page.locator("#submit-result")
    expect(result).to_contain_text("Queued")
    expect(result).to_contain_text("PENDING")
    request_id = re.search(r"requests/[0-9a-f]{16}\.json", result.inner_text()).group(0)
    path = site["requests"] / request_id
    data = json.loads(path.read_text())
    assert data["status"] == "PENDING" and data["name"] == "sgtr"
    assert data["submitter"] == "browser-test" and data["yaml"] == SGTR_YAML
    screenshot(page, "submit", full_page=True)

    # an invalid one: typed into the editor; the error shows inline and nothing is queued
    page.fill("#yaml-box textarea", "schema_version: 1\nname: bad-one\nbogus_key: 3\n")
    page.click("#validate-btn")
    expect(result).to_contain_text("problem(s)")
    expect(result).to_contain_text("bogus_key: unknown key")
    expect(result).to_contain_text("authors: required key is missing")
    page.click("#submit-btn")
    expect(result).to_contain_text("Not queued")
    assert set(requests.glob("*.json")) == before | {path}

    page.get_by_role("tab", name="Queue").click()
    expect(page.locator("#queue-note")).to_contain_text("PENDING 1")
    expect(page.locator("#queue-table")).to_contain_text(request_id)
    expect(page.locator("#queue-history")).to_contain_text("submitted by browser-test")


def test_plots_render(page):
    page.get_by_role("tab", name="Plots").click()
    expect(page.locator("#scatter img")).to_be_visible()
    expect(page.locator("#bars img")).to_be_visible()
