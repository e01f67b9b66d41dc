"""The seed paper's published rows on the board, in a real browser: the app on 127.0.0.1 reads
a folder of records written by `emarena published import sgtr-em` (from the mirror) beside
synthetic measured rows; headless Chromium filters by Source, finds the published rows of
Qwen2.5-32B / unpopular aesthetics with their badge, opens one in the drill-down (the published
answers with their published scores, the files and the citation) and saves the screenshot the
README shows (docs/screenshots/published.png)."""

from __future__ import annotations

import re
import shutil

import pytest

from emarena.leaderboard.synthetic import write_synthetic_results
from tests.leaderboard.conftest import ARTIFACTS, REPO, AppServer, shown_table

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def site(tmp_path_factory, published_sgtr_em):
    results = tmp_path_factory.mktemp("published-site") / "results"
    shutil.copytree(published_sgtr_em[0], results / "published")  # tests/conftest.py
    write_synthetic_results(results / "measured", 40)
    server = AppServer(results, None, ARTIFACTS / "app-published.log").wait()
    yield server
    server.stop()


@pytest.fixture
def page(chromium, site):
    ctx = chromium.new_context(viewport={"width": 1600, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(site.url)
    pg.wait_for_selector("#lb tbody tr[data-row]")
    yield pg
    ctx.close()


def _pick(page, elem_id: str, option: str) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.click(f"#{elem_id} input")
    page.locator(f'#{elem_id} li[role=option][aria-label="{option}"]').click()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def _wait_rows(page, predicate, what: str):
    for _ in range(150):
        head, rows = shown_table(page)
        if rows and predicate(head, rows):
            return head, rows
        page.wait_for_timeout(200)
    raise AssertionError(f"timed out waiting for {what}: {shown_table(page)[1][:3]}")


def test_published_rows_source_filter_and_drilldown(page, site):
    _pick(page, "f-model", "qwen2.5-32b-instruct")
    _pick(page, "f-em", "aesthetic-unpopular")
    head, rows = _wait_rows(page, lambda h, r: "Source" in h and all(
        x[h.index("Source")].startswith("published") for x in r), "the published rows")
    i_src, i_def, i_rank = head.index("Source"), head.index("Defense"), head.index("Rank")
    assert all(r[head.index("Official")] == "no" and r[i_rank] == "—" for r in rows)
    assert page.locator("#lb .badge-published").count() == len(rows) >= 10
    target = next(i for i, r in enumerate(rows)
                  if r[i_src].endswith("sgtr-em/em_unpop_sgtr_fixed_qwensys")
                  and r[i_def] == "sgtr")
    assert rows[target][head.index("Seeds")] == "5"
    reduction = rows[target][head.index("Reversal · EM reduction")]
    assert re.match(r"[+-]\d\.\d\d ± \d\.\d\d", reduction), reduction
    path = ARTIFACTS / "published.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    shutil.copy(path, REPO / "docs" / "screenshots" / "published.png")

    page.click(f'#lb tbody tr[data-row="{target}"]')
    expect(page.locator("#cell-picker input")).to_have_value(re.compile(r"reversal · seed"))
    expect(page.locator("#samples-note")).to_contain_text("240 answer(s) match")
    reproduce = page.locator("#reproduce")
    expect(reproduce).to_contain_text("Published, not measured here")
    expect(reproduce).to_contain_text("github.com/atagade/sgtr-em")
    expect(reproduce).to_contain_text("em_eval_hf_qwen_32b_em_unpop_sgtr_fixed_qwensys_")
    expect(reproduce).to_contain_text("sha256")
    expect(page.locator("#choices-note")).to_contain_text("item(s) match")
    answers = page.evaluate("""() => [...document.querySelectorAll('#samples-list tbody tr')]
        .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))""")
    assert len(answers) == 240
    assert all(r[6] and 0 <= float(r[3]) <= 100 and 0 <= float(r[4]) <= 100 for r in answers)
    assert {r[8] for r in answers} == {"not recorded"}

    # the Source filter: measured rows only (here: the synthetic ones), no badge
    page.get_by_role("tab", name="Leaderboard").click()
    page.locator("#filters").get_by_text("Filters, search, sort and columns").click()
    _pick(page, "f-source", "measured")
    _pick(page, "f-model", "qwen2.5-7b-instruct")
    _pick(page, "f-em", "insecure")
    _wait_rows(page, lambda h, r: len(r) > 3 and "Source" not in h, "measured rows only")
    assert page.locator("#lb .badge-published").count() == 0
