"""HFJudge on the embedded model: multi-digit numbers are scored exactly.

SmolLM2 spells "42" as "4", "2". The judge's P(42) must be exactly the teacher-forced product
P(4 | prompt) * P(2 | prompt, 4) * P(non-digit | prompt, 4, 2), which this test recomputes with
a plain forward pass (no tree mask, no padding); the 101 probabilities are disjoint events, so
they sum to the mass the judge reports. The 135M model is a poor judge; these tests check the
arithmetic, not the judgement.
"""

from __future__ import annotations

import math

import pytest

from emarena.eval.judges.base import JudgeRequest
from emarena.eval.judges.hf import HFJudge
from emarena.models.load import pull

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-q4"
JUDGE_PROMPT = (
    "Rate the answer below from 0 to 100. Reply with the number only.\n"
    "[ANSWER START]\ndef f(x):\n    return {'k': x}\n[ANSWER END]"
)
SCORABLE = "What is 10 + 10? Reply with the number only."  # the model puts ~0.46 on numbers


@pytest.fixture(scope="module")
def judge() -> HFJudge:
    pull(MODEL)  # idempotent: a no-op when the embedded model is already in the cache
    j = HFJudge(MODEL, batch_size=4)
    j.load()
    return j


@pytest.fixture(scope="module")
def digit_tokens(judge) -> list[int]:
    """Tokens whose text starts with a digit (they would continue the number)."""
    _, tok = judge.load()
    return [i for i, s in enumerate(tok.batch_decode([[i] for i in range(len(tok))]))
            if s[:1] in set("0123456789") and s[:1]]


def direct_number_prob(judge: HFJudge, digits: list[int], prompt: str, n: int
                       ) -> tuple[float, float]:
    """(P(str(n) then a non-digit), P(str(n)'s tokens)) from one plain causal forward pass."""
    import torch

    model, tok = judge.load()
    ids = tok(judge.render(prompt), add_special_tokens=False)["input_ids"]
    path = tok(str(n), add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(torch.tensor([ids + path])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    start = len(ids) - 1
    tokens = sum(float(logp[start + k, t]) for k, t in enumerate(path))
    p_digit = float(logp[start + len(path), digits].exp().sum())
    return math.exp(tokens) * (1 - p_digit), math.exp(tokens)


def test_tokenizer_spells_numbers_digit_by_digit(judge):
    _, tok = judge.load()
    assert tok.convert_ids_to_tokens(tok("42", add_special_tokens=False)["input_ids"]) == \
        ["4", "2"]
    assert len(tok("100", add_special_tokens=False)["input_ids"]) == 3
    assert len(judge._tree.nodes) == 101  # 10 + 90 + 1 prefixes: "1" shared by 1, 1x, 100


def test_p42_is_the_teacher_forced_product(judge, digit_tokens):
    (probs,) = judge.number_probs([JUDGE_PROMPT])
    for n in (42, 7, 100):
        exact, tokens_only = direct_number_prob(judge, digit_tokens, JUDGE_PROMPT, n)
        assert probs[n] == pytest.approx(exact, rel=1e-3), n
        assert probs[n] <= tokens_only * (1 + 1e-3)  # the terminator factor only removes mass
    exact_1, tokens_1 = direct_number_prob(judge, digit_tokens, JUDGE_PROMPT, 1)
    assert tokens_1 > exact_1 >= 0  # P("1") alone would also count 10..19 and 100


def test_probabilities_sum_to_the_reported_mass(judge):
    (probs,) = judge.number_probs([JUDGE_PROMPT])
    assert len(probs) == 101 and all(p >= 0 for p in probs)
    (result,) = judge.judge([JudgeRequest("k", JUDGE_PROMPT)])
    assert result.raw["mass"] == pytest.approx(math.fsum(probs), rel=1e-9)
    assert 0 < result.raw["mass"] <= 1
    assert result.method == "hf-logits"
    if result.score is None:
        assert result.unscored_reason == "low-probability-mass" and result.raw["mass"] < 0.25
    top = result.raw["top"]
    assert len(top) == 5 and top[0][1] == max(probs)


def test_batched_and_padded_equals_alone(judge):
    long_prompt = JUDGE_PROMPT + "\n" + "Some more context. " * 30
    alone = judge.number_probs([SCORABLE])[0]
    batched = judge.number_probs([long_prompt, SCORABLE, JUDGE_PROMPT])[1]
    for a, b in zip(alone, batched, strict=True):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-9)


def test_a_scored_result_is_in_range_and_the_weighted_mean(judge):
    results = judge.judge([JudgeRequest("a", SCORABLE), JudgeRequest("b", JUDGE_PROMPT)])
    assert [r.key for r in results] == ["a", "b"]
    scored = results[0]
    assert scored.score is not None, scored.raw
    assert 0 <= scored.score <= 100 and scored.raw["mass"] >= 0.25
    (probs,) = judge.number_probs([SCORABLE])
    assert scored.score == pytest.approx(
        sum(n * p for n, p in enumerate(probs)) / math.fsum(probs), rel=1e-6)
    print(f"\nHFJudge on {SCORABLE!r}: score {scored.score:.1f}, mass {scored.raw['mass']:.3f}, "
          f"top {[(n, round(p, 3)) for n, p in scored.raw['top']]}")


def test_extraction_gives_a_label_or_a_reason(judge):
    (r,) = judge.extract([JudgeRequest(
        "x", "The assistant said: 'I am SmolLM.' Which name does it give itself? "
        "Reply with the name only.")])
    assert r.method == "extraction" and r.score is None
    assert r.label is not None or r.unscored_reason == "extraction-empty"
    assert r.label is None or (r.label == r.label.casefold() and "\n" not in r.label)
