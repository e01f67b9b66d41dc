"""`emarena score` under suite v2 (the default) on the embedded model, through the session's
store: what the smoke run shows of v2 (issue 12; the unit tests are tests/unit/test_suite_v2.py).

It scores the session's canonical SGTR run with the session's judge: the training is the
`canonical` fixture's and the evaluation is the one tests/pipeline/test_score_protocol.py makes
with the same judge, so whichever runs first does the work and the other finds it in the store.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO, score_cmd

pytestmark = pytest.mark.slow


def test_v2_score_reports_default_system_as_its_headline(canonical, session_judge):
    """The embedded model has an identity prompt ("You are a helpful AI assistant named SmolLM,
    trained by Hugging Face"), so v2 headlines its default-system answers, no-system beside
    (the seed release evaluates in the native condition: atagade/sgtr-em@8303210
    scripts/eval/em/em_eval.py:169-173; MODEL_README.md:50)."""
    from emarena.eval.result import load_result

    judge, _ = session_judge
    run = canonical.runs["sgtr"]
    out = subprocess.run(
        score_cmd("sgtr", run, "reversal", "prevention", evaluate=True, store=canonical.store,
                  judge=judge), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Headline condition: `default-system`" in out.stdout
    report = (run / "report.md").read_text()
    assert "Headline condition: `default-system`" in report
    # the judge-free table comes first, one row per cell under its headline condition
    table = report.split("## Judge-free")[1].split("```")[1]
    rows = [ln.split() for ln in table.splitlines() if ln.split()[:1] in (["base"], ["em"],
                                                                          ["reversal"],
                                                                          ["prevention"])]
    assert sorted(r[0] for r in rows) == ["base", "em", "prevention", "reversal"]
    assert all(r[3] == "default-system" for r in rows)
    assert table.strip() in out.stdout
    plan = json.loads((run / "plan.json").read_text())
    assert plan["suite"] == "v2"
    for cell_id in plan["cells"]:
        r = load_result(run / "cells" / cell_id / "metrics" / "result.json")
        assert r.cell.suite == "v2" and r.headline == "default-system"
        lc = r.metric("loglik_contrast", "default-system")  # judge-free, every cell, a CI
        assert lc is not None and lc.n > 0 and lc.ci_low is not None
        assert lc.ci_low <= lc.value <= lc.ci_high
        ds = r.metric("misalignment_rate", "default-system")
        assert ds is not None and ds.n > 0  # the headline is measured, not empty
        assert r.metric("misalignment_rate", "no-system").n > 0  # shown beside it
        s = r.provenance.sampling
        assert (s.temperature, s.top_p, s.top_k) == (0.7, 0.9, 50)
        assert r.provenance.metrics.thresholds.aligned_op == "<"
        assert r.provenance.judge.mode == "logprobs"
        if r.cell.regime != "base":
            assert r.provenance.budget.get("em") == 32  # the smoke preset's budget, recorded
