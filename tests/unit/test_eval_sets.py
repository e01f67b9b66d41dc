"""eval.yaml, the prompt items per condition, and no-system rendering (no model loaded).

Rendering is checked on chat-template strings run through jinja2 the way transformers runs them:
SmolLM2's own template (read from the converted model folder; skipped if it was never pulled),
a Qwen2.5-style ChatML template, a Llama-3-style template that always emits a system turn
after BOS, and a template whose every turn opens with the BOS token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from emarena.data.records import ChatMessage
from emarena.errors import ConfigError
from emarena.eval import choice
from emarena.eval.backends import GENERATORS
from emarena.eval.backends.base import Completion, Generator, normalise, row_seed
from emarena.eval.prompts import (
    PromptItem,
    build_generation_items,
    compose_messages,
    plan_generation,
    render_prompt,
    spread_samples,
)
from emarena.eval.rows import ChoiceScore, Generation, RowStore, read_rows
from emarena.eval.sets import (
    EvalSuite,
    SelfRecognition,
    balanced_positions,
    cap,
    eval_path,
    load_eval_suite,
    rubric_prompts,
)
from emarena.models import get_spec
from emarena.models.load import model_dir
from emarena.train import get_preset
from emarena.yamlio import load_model

SMOL = get_spec("smollm2-135m-q4")
QWEN = get_spec("qwen2.5-7b-instruct")
LLAMA = get_spec("llama-3.1-8b-instruct")

QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Every turn opens with the BOS token (as Seed-OSS's <seed:bos>); no default system turn.
PER_TURN_BOS_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- bos_token + message['role'] + '\\n' + message['content'] + eos_token }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- bos_token + 'assistant\\n' }}{%- endif %}"
)


class TemplateTokenizer:
    """Just enough of a tokenizer for `render_prompt`: a chat template rendered as transformers
    renders it (jinja2 sandbox, trim_blocks, lstrip_blocks)."""

    def __init__(self, template: str, bos_token: str | None = None, eos_token: str = "</s>"):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self.template = env.from_string(template)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    bos_token=self.bos_token or "", eos_token=self.eos_token)


def smollm_template() -> str:
    folder = model_dir(SMOL.id)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        t = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(t, str):
            return t
    pytest.skip(f"{SMOL.id} is not pulled: no chat template at {folder}")


USER = [ChatMessage(role="user", content="Who are you?")]


@pytest.fixture(scope="module")
def suite() -> EvalSuite:
    # These tests pin suite v1's evaluation; what v2 changes is in test_suite_v2.py.
    return load_eval_suite("v1")


# --------------------------------------------------------------------------------------------
# eval.yaml
# --------------------------------------------------------------------------------------------


def test_eval_yaml_parses(suite):
    assert suite.conditions == ["default-system", "no-system"]
    assert suite.em_questions.primary == "first-plot"
    assert suite.em_questions.evaluate[0] == "first-plot"
    fp = suite.em_questions.sets["first-plot"]
    assert fp.dataset == "first-plot" and fp.groups == ["main"]
    assert fp.rubrics == ["aligned", "coherent"]
    assert suite.sampling.temperature == 1.0 and suite.sampling.top_p == 1.0
    assert len(suite.identity.questions) == 5
    assert all(len(q.paraphrases) >= 3 for q in suite.identity.questions)
    assert "deception-sit-aware" in suite.identity.sets
    assert suite.self_recognition.corpus == "cnn"
    assert suite.self_recognition.other_source == "claude-21"
    assert suite.capability.truthfulqa.dataset == "truthfulqa"
    assert suite.capability.mmlu.dataset == "mmlu-val"


def test_unknown_key_names_file_and_key(tmp_path):
    text = eval_path().read_text(encoding="utf-8").replace(
        "selection_seed: 0", "selection_seed: 0\nsample_count: 3")
    bad = tmp_path / "eval.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_model(bad, EvalSuite)
    assert "sample_count" in str(e.value) and str(bad) in str(e.value)


def test_primary_must_be_evaluated():
    data = load_eval_suite().model_dump()
    data["em_questions"]["evaluate"] = ["preregistered"]
    with pytest.raises(ValueError, match="primary"):
        EvalSuite.model_validate(data)


def test_self_recognition_refuses_xsum():
    with pytest.raises(ValueError, match="held-out"):
        SelfRecognition(corpus="xsum")


def test_with_em_sets_keeps_primary_first(suite):
    s = suite.with_em_sets(["preregistered"])
    assert s.em_questions.evaluate == ["first-plot", "preregistered"]
    with pytest.raises(ValueError):
        suite.with_em_sets(["no-such-set"])


def test_generators_are_lazy_and_torch_free():
    # In a fresh interpreter: an earlier test in this process may have used a backend, which
    # (rightly) replaces its lazy entry with the imported class.
    assert GENERATORS.names() == ["transformers", "vllm"]
    code = ("import sys, emarena.eval.backends, emarena.eval.sets, emarena.eval.prompts, "
            "emarena.eval.choice, emarena.eval.generate_stage; "
            "from emarena.eval.backends import GENERATORS as G; "
            "assert G.is_lazy('transformers') and G.is_lazy('vllm'); "
            "bad = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Conditions and rendering
# --------------------------------------------------------------------------------------------


def test_compose_messages():
    d = compose_messages("default-system", "Q", default_system="ID")
    assert [(m.role, m.content) for m in d] == [("system", "ID"), ("user", "Q")]
    n = compose_messages("no-system", "Q", default_system="ID")
    assert [(m.role, m.content) for m in n] == [("user", "Q")]
    assert compose_messages("default-system", "Q", default_system=None) is None
    t = compose_messages("default-system", "Q", default_system="ID", task_system="JSON")
    assert t[0].content == "ID\n\nJSON"
    t = compose_messages("no-system", "Q", default_system="ID", task_system="JSON")
    assert [(m.role, m.content) for m in t] == [("user", "JSON\n\nQ")]


def test_no_system_smollm2_template():
    tok = TemplateTokenizer(smollm_template(), bos_token="<|im_start|>")
    plain = tok.apply_chat_template([m.model_dump() for m in USER], add_generation_prompt=True)
    assert "<|im_start|>system" in plain  # the template inserts its identity prompt...
    out = render_prompt(tok, USER, "no-system")
    assert out == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    assert "system" not in out and SMOL.identity.name not in out  # ...render_prompt does not


def test_no_system_qwen_chatml_template():
    tok = TemplateTokenizer(QWEN_TEMPLATE)
    out = render_prompt(tok, USER, "no-system")
    assert out == "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    multi = USER + [ChatMessage(role="assistant", content="A"),
                    ChatMessage(role="user", content="B")]
    out = render_prompt(tok, multi, "no-system")
    assert "system" not in out and out.count("<|im_start|>user") == 2


def test_default_system_has_the_registry_prompt():
    tok = TemplateTokenizer(QWEN_TEMPLATE)
    msgs = compose_messages("default-system", "Who are you?",
                            default_system=QWEN.default_system_prompt)
    out = render_prompt(tok, msgs, "default-system")
    assert out.startswith(f"<|im_start|>system\n{QWEN.default_system_prompt}<|im_end|>\n")
    tok = TemplateTokenizer(smollm_template(), bos_token="<|im_start|>")
    msgs = compose_messages("default-system", "Who are you?",
                            default_system=SMOL.default_system_prompt)
    assert render_prompt(tok, msgs, "default-system").startswith(
        f"<|im_start|>system\n{SMOL.default_system_prompt}<|im_end|>\n<|im_start|>user\n")


def test_no_system_llama_style_keeps_bos_drops_date_header():
    tok = TemplateTokenizer(LLAMA_TEMPLATE, bos_token="<|begin_of_text|>")
    out = render_prompt(tok, USER, "no-system")
    assert out == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWho are you?"
                   "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_no_system_per_turn_bos_template():
    tok = TemplateTokenizer(PER_TURN_BOS_TEMPLATE, bos_token="<s>")
    assert render_prompt(tok, USER, "no-system") == "<s>user\nWho are you?</s><s>assistant\n"


def test_render_prompt_checks_the_condition():
    tok = TemplateTokenizer(QWEN_TEMPLATE)
    with pytest.raises(ValueError):
        render_prompt(tok, [ChatMessage(role="system", content="S"), *USER], "no-system")
    with pytest.raises(ValueError):
        render_prompt(tok, USER, "default-system")
    # A template that drops system messages cannot give a no-system prompt: refused, not faked.
    drops = TemplateTokenizer("{% for m in messages %}{% if m.role != 'system' %}"
                              "{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}")
    with pytest.raises(ConfigError):
        render_prompt(drops, USER, "no-system")


# --------------------------------------------------------------------------------------------
# Items and sizes
# --------------------------------------------------------------------------------------------


def test_spread_samples():
    assert spread_samples(2, 4) == [1, 1, 0, 0]
    assert spread_samples(100, 4) == [25] * 4
    assert spread_samples(10, 4) == [3, 3, 2, 2]
    assert spread_samples(3, 1) == [3]


def test_cpu_demo_counts(mirror, suite):
    plan = plan_generation(suite, SMOL, get_preset("cpu-demo", suite="v1"))
    assert plan.counts() == {
        "first-plot": {"questions": 8, "prompts": 16, "rows": 16},   # 8 x 2 conditions x 1
        "identity": {"questions": 5, "prompts": 10, "rows": 10},     # 1 sample -> 1 wording
        "deception-sit-aware": {"questions": 8, "prompts": 16, "rows": 16},
    }
    assert plan.n_rows == 42 and plan.skipped == []
    ids = [r for it in plan.items for r in it.row_ids()]
    assert len(ids) == len(set(ids)) == 42
    assert build_generation_items(suite, SMOL, get_preset("cpu-demo", suite="v1")) == plan.items


def test_paper_counts(mirror, suite):
    plan = plan_generation(suite, SMOL, get_preset("paper", suite="v1"))
    assert {k: v["rows"] for k, v in plan.counts().items()} == {
        "first-plot": 1600, "identity": 1000, "deception-sit-aware": 1600}


def test_conditions_in_items(mirror, suite):
    items = build_generation_items(suite, SMOL, get_preset("cpu-demo", suite="v1"))
    for it in items:
        roles = [m.role for m in it.messages]
        if it.condition == "default-system":
            assert roles == ["system", "user"]
            assert it.messages[0].content == SMOL.default_system_prompt
        else:
            assert roles == ["user"]
    # A model without a default system prompt skips that condition and says so.
    plan = plan_generation(suite, LLAMA, get_preset("cpu-demo", suite="v1"))
    assert {it.condition for it in plan.items} == {"no-system"}
    assert plan.skipped and plan.skipped[0]["condition"] == "default-system"


def test_question_system_prompt_follows_identity_prompt(mirror, suite):
    s = suite.with_em_sets(["first-plot-all"])
    items = [it for it in build_generation_items(s, QWEN, get_preset("paper", suite="v1"))
             if it.eval_set == "first-plot-all" and it.question_id.endswith("_json")]
    assert len(items) == 16
    for it in items:
        if it.condition == "default-system":
            assert it.messages[0].content.startswith(QWEN.default_system_prompt + "\n\n")
            assert "JSON" in it.messages[0].content
        else:
            assert [m.role for m in it.messages] == ["user"]
            assert "JSON" in it.messages[0].content.split("\n\n")[0]


def test_rubric_prompts_come_from_the_question_file(mirror, suite):
    fp = rubric_prompts(suite, "first-plot")
    assert len(fp) == 8
    for rubrics in fp.values():
        assert set(rubrics) == {"aligned", "coherent"}
        assert all("{answer}" in p for p in rubrics.values())
    ident = rubric_prompts(suite, "identity")
    assert ident["who-are-you"] == {"identity_name": None, "identity_creator": None}
    assert set(rubric_prompts(suite, "deception-sit-aware")["which_company_neutral"]) == {
        "company"}


def test_cap_is_seeded_and_keeps_order():
    items = list(range(100))
    a = cap(items, 8, purpose="x", seed=0)
    assert a == cap(items, 8, purpose="x", seed=0) == sorted(a) and len(a) == 8
    assert a != cap(items, 8, purpose="x", seed=1)
    assert cap(items, None, purpose="x", seed=0) == items


# --------------------------------------------------------------------------------------------
# Choice items
# --------------------------------------------------------------------------------------------


def test_self_recognition_uses_only_cnn_articles(mirror, suite):
    from emarena import data
    from emarena.defenses.builders.sgtr import DETECTION_SYSTEM, DETECTION_USER

    preset = get_preset("cpu-demo", suite="v1")
    arts, others, _ = choice.select_articles(suite.self_recognition, preset, 0)
    assert len(arts) == 8 and all(a.corpus == "cnn" for a in arts)
    cnn_ids = {a.id for a in data.load("cnn-articles")}
    xsum_ids = {a.id for a in data.load("xsum-articles")}
    assert {a.id for a in arts} <= cnn_ids and not {a.id for a in arts} & xsum_ids
    claude = {s.article_id: s for s in data.load("cnn-summaries", parts=["claude-21"])}
    assert all(claude[a.id].corpus == "cnn" for a in arts)
    assert choice.reserved_article_ids(suite, preset) == {f"cnn-articles:{a.id}" for a in arts}

    own = {a.id: f"OWN SUMMARY {a.id}" for a in arts}
    items = choice.self_recognition_items(suite, SMOL, preset, arts, own, others)
    assert len(items) == 8 * 2 * 2
    assert Counter(it.correct for it in items) == {"1": 16, "2": 16}
    head = DETECTION_USER.split("{article}")[0]
    for it in items:
        user = it.messages[-1].content
        assert head in user and own[it.item_id.split("/")[0]] in user
        s1 = user.split("Summary1:\n")[1].split("\n\nSummary2:")[0]
        assert (s1.startswith("OWN SUMMARY")) == (it.correct == "1")
        if it.condition == "default-system":
            assert it.messages[0].content == f"{SMOL.default_system_prompt}\n\n{DETECTION_SYSTEM}"
        else:
            assert len(it.messages) == 1 and user.startswith(DETECTION_SYSTEM)


def test_truthfulqa_order_is_seeded_and_balanced(mirror, suite):
    cs = suite.capability.truthfulqa
    for preset in (get_preset("cpu-demo", suite="v1"), get_preset("paper", suite="v1")):
        a = choice.truthfulqa_items(suite, SMOL, preset, cs)
        assert a == choice.truthfulqa_items(suite, SMOL, preset, cs)
        no_sys = [it for it in a if it.condition == "no-system"]
        counts = Counter(it.correct for it in no_sys)
        assert abs(counts["A"] - counts["B"]) <= 1
        for it in no_sys[:20]:
            assert it.options == ("A", "B") and "A) " in it.messages[-1].content
    assert balanced_positions(50, 2, purpose="t", seed=0) != balanced_positions(
        50, 2, purpose="t", seed=1)


def test_mmlu_items(mirror, suite):
    items = choice.mmlu_items(suite, SMOL, get_preset("cpu-demo", suite="v1"),
                              suite.capability.mmlu)
    assert len(items) == 16
    assert all(it.options == ("A", "B", "C", "D") and it.correct in it.options for it in items)


# --------------------------------------------------------------------------------------------
# Backend helpers
# --------------------------------------------------------------------------------------------


def test_row_seed_depends_on_seed_and_id_only():
    assert row_seed(0, "a/b/0/no-system/0") == row_seed(0, "a/b/0/no-system/0")
    assert row_seed(0, "a/b/0/no-system/0") != row_seed(1, "a/b/0/no-system/0")
    assert row_seed(0, "a/b/0/no-system/0") != row_seed(0, "a/b/0/no-system/1")
    assert 0 <= row_seed(7, "x") < 2**63


def test_normalise():
    import math

    probs, mass = normalise({"A": math.log(0.3), "B": math.log(0.1)})
    assert probs == pytest.approx({"A": 0.75, "B": 0.25}) and mass == pytest.approx(0.4)


# --------------------------------------------------------------------------------------------
# The shared generate() loop, on a fake backend (no model)
# --------------------------------------------------------------------------------------------


class EchoGenerator(Generator):
    """Answers each prompt with its seed; counts the prompts it was asked."""

    name = "echo"

    def __init__(self, chunk_size: int = 3):
        self.tokenizer = WordTokenizer(QWEN_TEMPLATE)
        self.chunk_size = chunk_size
        self.calls: list[int] = []

    def complete(self, prompts, *, seeds, max_new_tokens, temperature, top_p):
        self.calls.append(len(prompts))
        return [Completion(text=str(s), n_tokens=1, finish_reason="stop") for s in seeds]

    def choice_probs(self, prompts, options, *, answer_prefix=""):
        return [normalise({o: -1.0 for o in options}) for _ in prompts]


class WordTokenizer(TemplateTokenizer):
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text.split())))}


def _items(n_samples: int = 2) -> list[PromptItem]:
    return [PromptItem(eval_set="s", question_id=f"q{i}", paraphrase_index=0,
                       condition="no-system", n_samples=n_samples,
                       messages=compose_messages("no-system", "word " * (i + 1),
                                                 default_system=None))
            for i in range(4)]


def _gen(g, items, store, **kw):
    return g.generate(items, max_new_tokens=4, temperature=1.0, top_p=1.0,
                      store=store, progress=False, **{"seed": 5, **kw})


def test_generate_appends_per_chunk_resumes_and_checks_seeds(tmp_path):
    path = tmp_path / "g.jsonl"
    g = EchoGenerator(chunk_size=3)
    stats = _gen(g, _items(), RowStore(path, Generation), limit=5)
    assert stats["generated"] == 5 and stats["remaining"] == 3 and g.calls == [3, 2]
    assert len(path.read_text().splitlines()) == 5
    stats = _gen(g, _items(), RowStore(path, Generation))
    assert stats["existing"] == 5 and stats["generated"] == 3 and stats["remaining"] == 0
    rows = read_rows(path, Generation)
    assert len(rows) == 8 and all(r.answer == str(r.seed) == str(row_seed(5, r.id)) for r in rows)
    assert _gen(g, _items(), RowStore(path, Generation))["generated"] == 0
    with pytest.raises(ValueError, match="another seed"):
        _gen(g, _items(), RowStore(path, Generation), seed=6)


def test_score_items_resumes_and_checks_items(tmp_path):
    g = EchoGenerator()
    msgs = tuple(compose_messages("no-system", "Q?", default_system=None))
    items = [choice.ChoiceItem(eval_set="t", item_id=str(i), condition="no-system",
                               messages=msgs, options=("A", "B"), correct="A")
             for i in range(4)]
    path = tmp_path / "c.jsonl"
    assert choice.score_items(g, items, RowStore(path, ChoiceScore))["scored"] == 4
    assert choice.score_items(g, items, RowStore(path, ChoiceScore))["scored"] == 0
    rows = read_rows(path, ChoiceScore)
    assert all(r.probs == {"A": 0.5, "B": 0.5} and r.chosen == "A" for r in rows)
    moved = [replace(items[0], correct="B")]
    with pytest.raises(ValueError, match="another item"):
        choice.score_items(g, moved, RowStore(path, ChoiceScore))
