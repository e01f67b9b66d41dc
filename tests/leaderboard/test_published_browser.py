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
    head, rows = shown_table(page)
    assert "Source" in head and "Judge vs GPT-4o" in head
    sources = {r[head.index("Source")].split(":")[0] for r in rows}
    assert sources == {"published", "measured"}

    _pick(page, "f-source", "published")
    head, rows = _wait_rows(page, lambda h, r: all(x[h.index("Source")].startswith("published")
                                                   for x in r), "published rows only")
    _pick(page, "f-model", "qwen2.5-32b-instruct")
    _pick(page, "f-em", "aesthetic-unpopular")
    head, rows = _wait_rows(page, lambda h, r: {x[h.index("Model")] for x in r}
                            == {"qwen2.5-32b-instruct"}, "Qwen2.5-32B")
    i_src, i_def, i_reg = head.index("Source"), head.index("Defense"), head.index("Regime")
    assert {r[head.index("EM dataset")] for r in rows} == {"aesthetic-unpopular"}
    assert all(r[head.index("Official")] == "no" and r[head.index("Rank")] == "—" for r in rows)
    assert all(r[head.index("Judge vs GPT-4o")] == "GPT-4o itself (text replies)" for r in rows)
    assert page.locator("#lb .badge-published").count() == len(rows) >= 40
    target = next(i for i, r in enumerate(rows)
                  if r[i_src].endswith("sgtr-em/em_unpop_sgtr_fixed_qwensys")
                  and r[i_def] == "sgtr" and r[i_reg] == "reversal")
    assert rows[target][head.index("Seeds")] == "5"
    reduction = rows[target][head.index("EM reduction ↑")]
    assert re.match(r"-?\d\.\d\d \[", reduction), reduction
    # the filters above, the published rows below
    page.evaluate("() => document.querySelector('#f-model').scrollIntoView({block: 'start'})")
    path = ARTIFACTS / "published.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    shutil.copy(path, REPO / "docs" / "screenshots" / "published.png")

    page.click(f'#lb tbody tr[data-row="{target}"]')
    expect(page.locator("#cell-picker input")).to_have_value(re.compile(r"/ reversal / sgtr /"))
    expect(page.locator("#samples-note")).to_contain_text("240 answer(s) match")
    reproduce = page.locator("#reproduce")
    expect(reproduce).to_contain_text("Published, not measured here")
    expect(reproduce).to_contain_text("github.com/atagade/sgtr-em")
    expect(reproduce).to_contain_text("em_eval_hf_qwen_32b_em_unpop_sgtr_fixed_qwensys_")
    expect(reproduce).to_contain_text("sha256")
    answers = page.evaluate("""() => [...document.querySelectorAll('#samples-list tbody tr')]
        .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))""")
    assert len(answers) == 240
    assert all(r[4] and 0 <= float(r[5]) <= 100 and 0 <= float(r[6]) <= 100 for r in answers)
    assert {r[8] for r in answers} == {"not recorded"}

    page.reload()
    page.wait_for_selector("#lb tbody tr[data-row]")
    _pick(page, "f-source", "measured")
    _wait_rows(page, lambda h, r: all(x[h.index("Source")] == "measured" for x in r),
               "measured rows only")
