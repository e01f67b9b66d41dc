"""The leaderboard in a real browser: the app runs as a subprocess on 127.0.0.1 against a
temporary results folder (valid, unofficial, malformed and duplicated files), and headless
Debian Chromium, driven by Playwright, uses it like a visitor at 1440 and at 390 px wide: the
default view (one row per defense, prevention and reversal side by side, ranks 1..k), the
regime view with filters, sort, search and the CSV, a row's drill-down (its seeds, answers,
choice items, reproduce command), the plots, a valid and an invalid defense.yaml, the queue.

Screenshots go to docs/screenshots/ (shown by the README) and test-artifacts/leaderboard/.
Needs /usr/bin/chromium (`apt-get install -y chromium`); skipped without it. One app and one
browser serve the whole module.
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
    REPO,
    AppServer,
    shown_table,
    write_bad_files,
    write_duplicates,
)

SCREENSHOTS = REPO / "docs" / "screenshots"
SGTR_YAML = (REPO / "submissions" / "sgtr" / "defense.yaml").read_text()
TIMEOUT_MS = 30_000
WIDE, NARROW = {"width": 1440, "height": 900}, {"width": 390, "height": 844}
NUMBER = re.compile(r"^([+-]?\d+\.\d+ ± \d+\.\d+|[+-]?\d+\.\d+|—)(p[<=][\d.]+)?$")

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
    write_synthetic_results(results / "official", 240)
    # one seed each: more rows, unofficial ones among them
    write_synthetic_results(results / "demo", 120, seeds=1, preset="cpu-demo",
                            official_judge=False)
    write_bad_files(results)
    write_duplicates(results)
    requests = root / "requests"
    server = AppServer(results, requests, ARTIFACTS / "app-browser.log").wait()
    yield {"server": server, "results": results, "requests": requests}
    server.stop()


def open_page(chromium, site, viewport=WIDE):
    ctx = chromium.new_context(viewport=viewport, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(site["server"].url)
    pg.wait_for_selector("#lb tbody tr[data-row]")
    return ctx, pg


@pytest.fixture
def page(chromium, site):
    ctx, pg = open_page(chromium, site)
    yield pg
    ctx.close()


def screenshot(page, name: str, *, full_page: bool = False, height: int | None = None) -> None:
    """The page (or its top `height` pixels) into test-artifacts/ and docs/screenshots/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    clip = None
    if height is not None:
        clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height}
    page.screenshot(path=str(path), full_page=full_page or clip is not None, clip=clip)
    shutil.copy(path, SCREENSHOTS / f"{name}.png")


# --- reading the page -----------------------------------------------------------------------


def html_rows(page, table_id: str) -> list[list[str]]:
    """The body rows of one of the page's HTML tables (cell texts)."""
    return page.evaluate(
        """(id) => [...document.querySelectorAll(`#${id} tbody tr`)]
            .filter(tr => !tr.classList.contains('empty'))
            .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))""",
        table_id,
    )


def first_number(text: str) -> float | None:
    m = re.match(r"\s*([+-]?\d+(?:\.\d+)?)", text)
    return float(m.group(1)) if m else None


def blur(page) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def pick(page, elem_id: str, option: str) -> None:
    """Choose `option` in a gradio dropdown (its list opens when the input gains focus)."""
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
    waited = 0
    while True:
        head, rows = shown_table(page)
        if predicate(head, rows):
            return rows
        if waited >= TIMEOUT_MS:
            raise AssertionError(f"timed out waiting for: {what}\nheader: {head}\n"
                                 f"first rows: {rows[:3]}")
        page.wait_for_timeout(200)
        waited += 200


def open_filters(page) -> None:
    acc = page.locator("#filters")
    if not acc.locator("#search").is_visible():
        acc.get_by_text("Filters, search, sort and columns").click()
    expect(page.locator("#search textarea")).to_be_visible()


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["1440px", "390px"])
def test_default_view_is_one_row_per_defense(chromium, site, viewport):
    ctx, page = open_page(chromium, site, viewport)
    try:
        head, rows = shown_table(page)
        assert head[:2] == ["Rank", "Defense"]
        groups = {h.split(" · ")[0] for h in head if " · " in h}
        assert {"Prevention", "Reversal"} <= groups  # side by side, one row
        i_def, i_rank, i_off = head.index("Defense"), head.index("Rank"), head.index("Official")
        i_red = head.index("Reversal · EM reduction")
        official = [r for r in rows if r[i_off] == "yes" and not r[i_def].startswith("(")]
        assert len(official) == 7 and len({r[i_def] for r in official}) == 7
        assert [r[i_rank] for r in official] == [str(i) for i in range(1, 8)]
        reductions = [first_number(r[i_red]) for r in official]
        assert reductions == sorted(reductions, reverse=True)  # ranked by the sorted column
        assert [r[i_def] for r in rows[-2:]] == ["(EM only)", "(base model)"]
        assert all(r[i_rank] == "—" for r in rows if r not in official)
        metric_cols = [i for i, h in enumerate(head) if " · " in h]
        for r in rows:
            for i in metric_cols:
                assert NUMBER.match(r[i].strip()), (head[i], r[i])
        # tooltips: the interval and its counts on a number, the definition on a header
        tip = page.locator("#lb tbody tr[data-row='0'] td.metric").first.get_attribute("title")
        assert "95% interval" in tip and "n = " in tip and "unscored" in tip
        th = page.locator('#lb th[data-key="reversal:misalignment_rate"]').get_attribute("title")
        assert "misalignment_rate" in th and "ALL answers" in th
        # the first screen shows the table
        box = page.locator("#lb tbody tr[data-row='0']").bounding_box()
        assert box["y"] + box["height"] < viewport["height"], box
        if viewport is NARROW:
            wrap = page.locator(".emarena-lb-wrap").first
            assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")  # scrolls sideways
            wrap.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
            page.wait_for_timeout(100)
            cell = page.locator("#lb tbody tr[data-row='0'] td").nth(1).bounding_box()
            assert 0 <= cell["x"] < viewport["width"] / 2  # the Defense column stays put
            wrap.evaluate("e => { e.scrollLeft = 0; }")
        screenshot(page, f"board-{viewport['width']}")
    finally:
        ctx.close()


def test_invalid_results_are_listed(page):
    expect(page.locator("#status")).to_contain_text("359 cells")  # 360 less one conflict
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


def test_regime_view_filter_sort_search_and_csv(page, tmp_path):
    page.locator("#group-by").get_by_text("By regime").click()
    wait_rows(page, lambda h, r: "Regime" in h and r, "the regime view")
    pick(page, "f-model", "qwen2.5-7b-instruct")
    open_filters(page)
    pick(page, "f-regime", "reversal")
    pick(page, "f-regime", "prevention")
    rows = wait_rows(page, lambda h, r: r and {x[h.index("Regime")] for x in r}
                     == {"reversal", "prevention"}
                     and {x[h.index("Model")] for x in r} == {"qwen2.5-7b-instruct"},
                     "model and regime filters")
    n_filtered = len(rows)
    page.fill("#search textarea", "sgtr")
    wait_rows(page, lambda h, r: 0 < len(r) < n_filtered
              and all("sgtr" in x[h.index("Defense")] for x in r), "search")
    page.click("#official-only input")
    wait_rows(page, lambda h, r: r and all(x[h.index("Official")] == "yes" for x in r),
              "official only")
    # a header click sorts: misalignment (lower is better) ascending first, again reverses
    page.click('#lb th[data-key="misalignment_rate"]')
    expect(page.locator("#lb th.sorted")).to_contain_text("Misalignment ▲")
    head, rows = shown_table(page)
    vals = [first_number(r[head.index("Misalignment")]) for r in rows]
    assert vals == sorted(vals)
    ranks = [r[head.index("Rank")] for r in rows] if "Rank" in head else []
    assert not ranks  # no rank column by default in this view
    page.click('#lb th[data-key="misalignment_rate"]')
    expect(page.locator("#lb th.sorted")).to_contain_text("▼")
    head, rows = shown_table(page)
    with page.expect_download() as info:
        page.click("#download-csv")
    download = info.value
    assert download.suggested_filename == "emarena-leaderboard.csv"
    saved = tmp_path / "leaderboard.csv"
    download.save_as(saved)
    shutil.copy(saved, ARTIFACTS / "leaderboard-filtered.csv")
    with open(saved, newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert all(re.fullmatch(r"[a-z0-9_]+", k) for k in got[0])  # plain headers
    # the rows shown, in the order shown, as numbers
    assert [(g["defense"], g["regime"]) for g in got] == [
        (r[head.index("Defense")], r[head.index("Regime")]) for r in rows]
    for g, r in zip(got, rows, strict=True):
        assert f"{float(g['misalignment_rate']):.2f}" == r[head.index("Misalignment")][:4]
        assert int(float(g["misalignment_rate_n"])) > 0
    with page.expect_download() as info:
        page.click("#download-jsonl")
    lines = info.value.path().read_text().splitlines()
    assert json.loads(lines[0])["metric"] and len(lines) >= len(rows)


def test_drilldown_by_row_and_seed(page):
    head, rows = shown_table(page)
    page.click('#lb tbody tr[data-row="0"]')  # rank 1
    row_note = page.locator("#d-row")
    expect(row_note).to_contain_text("pools 9 cell(s)")
    expect(row_note).to_contain_text("reversal: seed(s) 0, 1, 2")
    expect(page.locator("#cell-picker input")).to_have_value(re.compile(r"reversal · seed 0"))
    reproduce = page.locator("#reproduce")
    expect(reproduce).to_contain_text("--seeds 0 --seeds 1 --seeds 2")
    expect(reproduce).to_contain_text('-v "$PWD/runs:/runs"')
    expect(page.locator("#d-paired")).to_contain_text("EM-only control")
    expect(page.locator("#samples-note")).to_contain_text("32 answer(s) match")
    expect(page.locator("#choices-note")).to_contain_text("120 item(s) match")
    # answers come first: above the cell's JSON
    y = {k: page.locator(k).bounding_box()["y"] for k in ("#reproduce", "#samples-table",
                                                         "#choices-table", "#cell-metrics")}
    assert y["#reproduce"] < y["#samples-table"] < y["#choices-table"] < y["#cell-metrics"]
    answers = html_rows(page, "samples-list")
    assert len(answers) == 32 and all(r[6] for r in answers)  # answer text
    screenshot(page, "drilldown", height=1500)

    pick(page, "s-sort", "aligned, lowest first")
    expect(page.locator("#samples-note")).to_contain_text("32 answer(s) match")
    page.wait_for_timeout(500)
    aligned = [r[3] for r in html_rows(page, "samples-list")]
    scored = [float(a) for a in aligned if a != "unscored"]
    assert scored == sorted(scored) and aligned[: len(scored)] == [f"{x:.1f}" for x in scored]
    page.click("#s-misaligned input")
    page.wait_for_timeout(800)
    for r in html_rows(page, "samples-list"):
        assert float(r[3]) <= 30 and float(r[4]) > 50
    page.locator("#c-set").get_by_text("TruthfulQA").click()
    expect(page.locator("#choices-note")).to_contain_text("40 item(s) match")
    assert {r[0] for r in html_rows(page, "choices-list")} == {"truthfulqa"}
    # another seed of the row
    blur(page)
    page.click("#cell-picker input")
    page.locator('#cell-picker li[role=option][aria-label^="reversal · seed 1"]').click()
    expect(page.locator("#cell-picker input")).to_have_value(re.compile(r"reversal · seed 1"))
    page.get_by_text("Cell configuration and provenance (JSON)").click()
    expect(page.locator("#cell-config")).to_contain_text('"seed": 1')


def test_drilldown_opened_directly_is_not_blank(page):
    page.get_by_role("tab", name="Drill-down").click()
    expect(page.locator("#d-row")).to_contain_text("this row pools")
    expect(page.locator("#samples-note")).to_contain_text("answer(s) match")
    assert html_rows(page, "samples-list")


def test_plots_one_point_per_defense(page):
    page.get_by_role("tab", name="Plots").click()
    expect(page.locator("#plot-prevention-reversal img")).to_be_visible()
    expect(page.locator("#plot-tradeoff img")).to_be_visible()
    page.wait_for_timeout(300)
    screenshot(page, "plots", height=1400)


def test_submit_valid_and_invalid_yaml(page, site, tmp_path):
    requests = site["requests"] / "requests"
    before = set(requests.glob("*.json")) if requests.exists() else set()
    page.get_by_role("tab", name="Submit").click()
    box = page.locator("#yaml-box textarea")
    expect(box).to_have_value(re.compile(r"^name: template$", re.M))  # not an empty editor
    expect(page.locator("#submit-note")).to_contain_text("Admin mode")
    page.fill("#readme-box textarea", "# SGTR\n\nSelf-generated text recognition.\n")
    page.fill("#submitter textarea", "browser-test")
    page.click("#submit-btn")
    result = page.locator("#submit-result")
    expect(result).to_contain_text("is the template's")  # the template is never queued
    sub_dir = tmp_path / "sgtr"
    sub_dir.mkdir()
    (sub_dir / "defense.yaml").write_text(SGTR_YAML)
    page.set_input_files("#yaml-upload input[type=file]", str(sub_dir / "defense.yaml"))
    expect(box).to_have_value(re.compile(r"^name: sgtr$", re.M))
    page.click("#validate-btn")
    expect(result).to_contain_text("Valid")
    page.click("#submit-btn")
    expect(result).to_contain_text("Queued")
    expect(result).to_contain_text("PENDING")
    request_id = re.search(r"requests/[0-9a-f]{16}\.json", result.inner_text()).group(0)
    data = json.loads((site["requests"] / request_id).read_text())
    assert data["status"] == "PENDING" and data["name"] == "sgtr"
    assert data["submitter"] == "browser-test" and data["yaml"] == SGTR_YAML

    # an invalid one: every problem shows inline, wrapped (no "fix:" off to the right)
    page.fill("#yaml-box textarea", "schema_version: 1\nname: bad-one\nbogus_key: 3\n")
    page.click("#validate-btn")
    expect(result).to_contain_text("problem(s)")
    expect(result).to_contain_text("bogus_key: unknown key")
    expect(result).to_contain_text("authors: required key is missing")
    assert result.evaluate("e => [...e.querySelectorAll('pre, code')].every("
                           "c => c.scrollWidth <= c.clientWidth + 1)")
    screenshot(page, "submit", full_page=True)
    page.click("#submit-btn")
    expect(result).to_contain_text("Not queued")
    assert set(requests.glob("*.json")) == before | {site["requests"] / request_id}

    page.get_by_role("tab", name="Queue").click()
    expect(page.locator("#queue-note")).to_contain_text("PENDING 1")
    expect(page.locator("#queue-table")).to_contain_text(request_id)
    expect(page.locator("#queue-history")).to_contain_text("submitted by browser-test")


def test_about_headers_do_not_break_words(page):
    page.get_by_role("tab", name="About").click()
    th = page.locator("#about-md table th").first
    expect(th).to_be_visible()
    assert th.evaluate("e => getComputedStyle(e).wordBreak") == "keep-all"
