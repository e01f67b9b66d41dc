"""Judge calibration: the arithmetic on hand-checked examples, and a judge that answers with the
published scores agreeing perfectly (kappa = 1, Spearman = 1) through the real path: the
OpenAI-compatible judge against a server on 127.0.0.1 (tests/helpers/openai_server.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from emarena import data
from emarena.cli.main import main
from emarena.eval.judges import resolve_judge
from emarena.eval.judges.base import render_prompt
from emarena.eval.judges.calibration import (
    ENV_CALIBRATION,
    CalibrationRecord,
    Item,
    agreement,
    agreement_cell,
    agreement_note,
    calibrate,
    judge_prompts,
    label_stats,
    load_items,
    rankdata,
    record_file_name,
    schema_markdown,
    spearman,
    stratified_sample,
    write_record,
)
from emarena.eval.metrics.value import load_thresholds
from tests.conftest import REPO
from tests.helpers.openai_server import OpenAIServer

T = load_thresholds()  # the default suite's rule: what `emarena judge calibrate` samples with


# --- arithmetic ----------------------------------------------------------------------------------


def test_ranks_and_spearman_by_hand():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    # ranks of y: 1, 2, 3.5, 5, 3.5 -> sum(dx*dy) = 8, sum dx^2 = 10, sum dy^2 = 9.5
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    assert rankdata(x).tolist() == pd.Series(x).rank(method="average").tolist()
    want = np.corrcoef(pd.Series(x).rank(), pd.Series(y).rank())[0, 1]
    assert spearman(x, y) == pytest.approx(want)


def test_label_stats_on_a_known_table():
    # both 20, judge only 5, reference only 10, neither 15 (Cohen's textbook layout):
    # po = 0.7, pe = 0.6 * 0.5 + 0.4 * 0.5 = 0.5, kappa = 0.4
    ref = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    judge = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    s = label_stats(np.array(ref), np.array(judge))
    assert s["kappa"] == pytest.approx(0.4)
    assert s["precision"] == pytest.approx(20 / 25)
    assert s["recall"] == pytest.approx(20 / 30)
    assert s["f1"] == pytest.approx(40 / 55)
    never = label_stats(np.array(ref), np.zeros(50, bool))
    assert never["kappa"] == 0 and math.isnan(never["precision"]) and never["recall"] == 0


def test_agreement_counts_unscored_as_the_suite_does():
    items = [Item(f"x/{i}", "x", "q", "Q", f"a{i}", a, c) for i, (a, c) in
             enumerate([(10, 90), (90, 90), (20, 80), (None, 70), (95, 10)])]
    judged = {"x/0": (15.0, 85.0), "x/1": (80.0, 95.0), "x/2": (None, 80.0), "x/3": (10.0, 90.0),
              "x/4": (90.0, None)}
    aligned, coherent, label, share = agreement(items, judged, T, n_resamples=50)
    # the judge missed x/2 (unscored: not misaligned) and called x/3 misaligned where the
    # reference has no aligned score (not misaligned)
    assert label.confusion == {"both": 1, "judge_only": 1, "reference_only": 1, "neither": 2}
    assert share.value == pytest.approx(2 / 5)
    assert aligned.n_judge_unscored == 1 and aligned.n_reference_unscored == 1
    assert aligned.mae.n == 3 and aligned.mae.value == pytest.approx((5 + 10 + 5) / 3)
    assert coherent.spearman.n == 4


# --- the published answers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def population(mirror):
    return load_items(mirror=mirror, allow_download=False)


def test_sample_is_seeded_stratified_and_deduplicated(population):
    items, _ = population
    assert len({(i.question, i.answer) for i in items}) == len(items) > 15_000
    a, strata = stratified_sample(items, 200, 7, T)
    b, _ = stratified_sample(items, 200, 7, T)
    c, _ = stratified_sample(items, 200, 8, T)
    assert [i.id for i in a] == [i.id for i in b] != [i.id for i in c]
    assert len(a) == sum(strata.values()) == 200
    share = sum(i.label(T) == "misaligned" for i in items) / len(items)
    got = sum(i.label(T) == "misaligned" for i in a) / 200
    assert abs(got - share) < 0.02  # in proportion


def _published_server(items: list[Item]) -> OpenAIServer:
    """A judge server that answers each rendered prompt with GPT-4o's published answer: the
    text-mode number (or REFUSAL) as a one-token certainty, Betley's top-20 probabilities as
    published."""
    probs = {f"betley-judged-answers/{r.id}": r.judge_probs
             for r in data.load("betley-judged-answers")}
    templates = judge_prompts()
    server = OpenAIServer()
    for it in items:
        for rubric in ("aligned", "coherent"):
            prompt = render_prompt(templates[it.question_id][rubric], it.question, it.answer)
            score = getattr(it, rubric)
            if it.id in probs:
                dist = probs[it.id][rubric]
            elif score is None:
                dist = {"REFUSAL": 1.0}
            else:
                assert float(score).is_integer()
                dist = {str(int(score)): 1.0}
            server.distributions[prompt] = dist
    return server


def test_a_judge_answering_the_published_scores_agrees_perfectly(population, tmp_cache):
    items, hashes = population
    betley = [i for i in items if i.dataset == "betley-judged-answers"]
    release, _ = stratified_sample([i for i in items if i.dataset != "betley-judged-answers"],
                                   50, 0, T)
    refused = [i for i in items if (i.aligned is None or i.coherent is None)
               and i.dataset != "betley-judged-answers"]
    pool = release + betley + refused[:2]
    with _published_server(pool) as server:
        judge, _ = resolve_judge(f"openai:gpt-4o-published@{server.url}")
        record, rows = calibrate(judge, n=None, population=(pool, hashes), n_resamples=100)
    assert record.sample.n == len(pool) == len(rows)
    assert record.misaligned.kappa.value == pytest.approx(1.0)
    assert record.misaligned.confusion["both"] >= 60  # Betley's examples are mostly misaligned
    for rubric in ("aligned", "coherent"):
        a = getattr(record, rubric)
        assert a.spearman.value == pytest.approx(1.0)
        assert a.mae.value == pytest.approx(0.0, abs=1e-6)
        assert a.n_judge_unscored == a.n_reference_unscored
    assert record.aligned.n_reference_unscored + record.coherent.n_reference_unscored >= 2
    ref_unscored = sum(i.aligned is None or i.coherent is None for i in pool) / len(pool)
    assert record.unscored_share.value == pytest.approx(ref_unscored)


def test_cli_writes_the_record_and_the_note_finds_it(population, tmp_cache, tmp_path,
                                                     monkeypatch, capsys):
    items, _ = population
    sample, _ = stratified_sample(items, 40, 0, T)
    with _published_server(sample) as server:
        spec = f"openai:gpt-4o-published@{server.url}"
        out = tmp_path / "cal" / "rec.json"
        assert main(["judge", "calibrate", "--judge", spec, "--n", "40", "--resamples", "50",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Cohen κ" in printed and "1.00" in printed
    record = CalibrationRecord.model_validate_json(out.read_text())
    assert record.sample.n == 40 and record.misaligned.kappa.value == pytest.approx(1.0)
    lines = out.with_name("rec.items.jsonl").read_text().splitlines()
    assert len(lines) == 40 and json.loads(lines[0])["judge"]["aligned"] is not None
    judge_id = record.judge.id
    monkeypatch.setenv(ENV_CALIBRATION, str(out.parent))
    note = agreement_note(judge_id)
    assert note.startswith(f"judge {judge_id}: agreement with GPT-4o: kappa=1.00")
    assert "n=40" in note and str(out) in note
    assert agreement_cell(judge_id).startswith("κ=1.00")


def test_no_record_says_so(tmp_cache, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_CALIBRATION, str(tmp_path))
    assert "no calibration record for this judge" in agreement_note("hf:nobody")
    assert agreement_cell("hf:nobody") == "no calibration record"
    assert "reference" in agreement_cell("openai:gpt-4o-2024-08-06")


def test_write_and_find_by_judge_id(tmp_path, monkeypatch):
    rec = CalibrationRecord.model_validate_json(
        (REPO / "benchmark" / "suites" / "v1" / "calibration" /
         record_file_name("hf:smollm2-135m-q4")).read_text())
    path = write_record(tmp_path / "renamed.json", rec)
    monkeypatch.setenv(ENV_CALIBRATION, str(tmp_path))
    assert agreement_note(rec.judge.id).endswith(f"calibration record {path})")


def test_schema_doc_is_up_to_date():
    assert (REPO / "docs" / "calibration_schema.md").read_text() == schema_markdown()
