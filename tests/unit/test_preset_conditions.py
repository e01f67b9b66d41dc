"""A preset may evaluate only the headline system-prompt condition (`conditions: headline`):
suite v2's cpu-demo does, so that its two cores score every cell of the protocol in minutes.
The other condition is then not measured (n = 0), never read as zero."""

from __future__ import annotations

import pytest

from emarena.eval.prompts import plan_generation
from emarena.eval.sets import load_eval_suite
from emarena.models.spec import get_spec
from emarena.protocol.plan import eval_sizes
from emarena.train import get_preset

SMOL = get_spec("smollm2-135m-q4")
# a model without a default system prompt
NO_PROMPT = SMOL.model_copy(update={"default_system_prompt": None})


def test_cpu_demo_evaluates_the_headline_condition_only():
    v2 = load_eval_suite("v2")
    demo = get_preset("cpu-demo", suite="v2")
    assert demo.conditions == "headline"
    assert v2.for_preset(demo, SMOL.default_system_prompt).conditions == ["default-system"]
    # a model without a default system prompt has no-system as its headline (v2 item 1)
    assert v2.for_preset(demo, None).conditions == ["no-system"]
    # the paper preset, the smoke preset and suite v1 (headline: both pooled) keep both
    for preset in (get_preset("paper", suite="v2"), get_preset("smoke", suite="v2")):
        assert preset.conditions == "all"
        assert v2.for_preset(preset, SMOL.default_system_prompt).conditions == v2.conditions
    v1 = load_eval_suite("v1")
    v1_headline = get_preset("cpu-demo", suite="v1").model_copy(update={"conditions": "headline"})
    assert v1.for_preset(v1_headline, SMOL.default_system_prompt).conditions == v1.conditions


def test_headline_only_plans_rows_of_that_condition(mirror):
    v2 = load_eval_suite("v2")
    demo = get_preset("cpu-demo", suite="v2")
    both = plan_generation(v2, SMOL, demo.model_copy(update={"conditions": "all"}))
    one = plan_generation(v2.for_preset(demo, SMOL.default_system_prompt), SMOL, demo)
    assert {it.condition for it in one.items} == {"default-system"}
    assert one.n_rows * 2 == both.n_rows
    none = plan_generation(v2.for_preset(demo, None), NO_PROMPT, demo)
    assert {it.condition for it in none.items} == {"no-system"} and none.skipped == []


def test_conditions_enter_the_evaluation_key_only_when_narrowed():
    paper, demo = get_preset("paper", suite="v2"), get_preset("cpu-demo", suite="v2")
    assert "conditions" not in eval_sizes(paper)  # keys made before the field still match
    assert eval_sizes(demo)["conditions"] == "headline"
    widened = eval_sizes(demo.model_copy(update={"conditions": "all"}))
    assert widened != eval_sizes(demo) and "conditions" not in widened


def test_conditions_is_all_or_headline():
    from pydantic import ValidationError

    demo = get_preset("cpu-demo", suite="v2")
    with pytest.raises(ValidationError):
        type(demo).model_validate({**demo.model_dump(), "conditions": "no-system"})
