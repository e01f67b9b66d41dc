"""The data builders of the defense kinds, on the real upstream data, without a model.

- The prompts are upstream's, byte for byte: the SGTR detection prompt against Panickssery et
  al.'s released finetuning rows, the word-counting prompt against the seed release's WC set.
- Every builder returns exactly the budget, in a seeded order, never an excluded id, and writes
  build.json; labels are computed (word parity, MMLU answer letter, SGTR target position).
- SGTR is built here from an own-summary cache written by the test (so no model is needed); the
  generation itself is covered by tests/pipeline/test_sgtr_builder.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from emarena import data
from emarena.data.records import Article, ChatRecord, MultipleChoice
from emarena.data.spec import all_specs
from emarena.defenses.base import BuildContext
from emarena.defenses.builders import is_excluded, seeded_rng, sgtr, simple
from emarena.defenses.params import (
    CorrectDomainParams,
    GeneralKnowledgeParams,
    SgtrCorruptedParams,
    SgtrParams,
    WordCountingParams,
)
from emarena.errors import ConfigError, ModelError


def ctx_for(tmp_path: Path, em: str = "insecure", n: int = 40, seed: int = 0,
            **kw) -> BuildContext:
    kw.setdefault("summaries_dir", tmp_path / f"summaries-{em}-{n}-{seed}")
    return BuildContext(em_dataset=em, n_examples=n, seed=seed, model_id="smollm2-135m-q4",
                        model_dir=None, work_dir=tmp_path / f"work-{em}-{n}-{seed}", **kw)


def build_json(ctx: BuildContext) -> dict:
    return json.loads((Path(ctx.work_dir) / "build.json").read_text(encoding="utf-8"))


def messages(rec: ChatRecord) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in rec.messages]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def test_exclusion_forms():
    ex = frozenset({"7", "truthfulqa:12"})
    assert is_excluded("insecure", "7", ex)
    assert is_excluded("truthfulqa", "12", ex)
    assert not is_excluded("insecure", "12", ex)


def test_seeded_rng_is_stable_across_processes():
    # A str seed is hashed with sha512 by `random`, not with the per-process str hash.
    assert seeded_rng("x", 3).random() == seeded_rng("x", 3).random()
    assert seeded_rng("x", 3).random() != seeded_rng("x", 4).random()


# --------------------------------------------------------------------------------------------
# defenses.yaml
# --------------------------------------------------------------------------------------------


def test_counterparts_are_registered_em_and_defense_datasets():
    cfg = simple.load_defenses()
    specs = all_specs()
    assert cfg.correct_counterparts == {
        "insecure": "secure", "insecure-mo": "secure",
        "bad-medical-advice": "good-medical-advice",
    }
    for em, good in cfg.correct_counterparts.items():
        assert specs[em].role == "em", em
        assert specs[good].role == "defense", good


# --------------------------------------------------------------------------------------------
# correct-domain
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("em", "counterpart"), [
    ("insecure", "secure"), ("insecure-mo", "secure"),
    ("bad-medical-advice", "good-medical-advice"),
])
def test_correct_domain_takes_the_counterpart(mirror, tmp_path, em, counterpart):
    ctx = ctx_for(tmp_path, em=em, n=25, exclude_ids=frozenset({f"{counterpart}:0", "1"}))
    recs = simple.build_correct_domain(CorrectDomainParams(), ctx)
    assert len(recs) == 25
    source = {r.id: r for r in data.load(counterpart)}
    for r in recs:
        prefix, ds, rid = r.id.split("/", 2)
        assert (prefix, ds) == ("correct-domain", counterpart)
        assert rid not in {"0", "1"}
        assert r.messages == source[rid].messages
    assert len({r.id for r in recs}) == 25
    info = build_json(ctx)
    assert info["counterpart"] == counterpart and info["n_examples"] == 25
    assert info["excluded"] == 2


def test_correct_domain_is_seeded(mirror, tmp_path):
    a = simple.build_correct_domain(CorrectDomainParams(), ctx_for(tmp_path, seed=1))
    b = simple.build_correct_domain(CorrectDomainParams(), ctx_for(tmp_path, seed=1))
    c = simple.build_correct_domain(CorrectDomainParams(), ctx_for(tmp_path, seed=2))
    assert a == b
    assert [r.id for r in a] != [r.id for r in c]


def test_correct_domain_without_counterpart_is_a_clear_error(mirror, tmp_path):
    with pytest.raises(ConfigError) as e:
        simple.build_correct_domain(CorrectDomainParams(), ctx_for(tmp_path, em="extreme-sports"))
    msg = str(e.value)
    assert "'extreme-sports'" in msg
    assert "defenses.yaml" in msg and "correct_counterparts" in msg
    assert "choose an EM dataset with a counterpart (bad-medical-advice, insecure, insecure-mo)" \
        in msg
    assert "defense.params.counterpart" in msg


def test_correct_domain_counterpart_override(mirror, tmp_path):
    ctx = ctx_for(tmp_path, em="extreme-sports", n=10)
    recs = simple.build_correct_domain(CorrectDomainParams(counterpart="good-medical-advice"), ctx)
    assert len(recs) == 10
    assert all(r.id.startswith("correct-domain/good-medical-advice/") for r in recs)


def test_budget_larger_than_the_pool_is_refused(mirror, tmp_path):
    with pytest.raises(ConfigError, match="only 6000 usable records"):
        simple.build_correct_domain(CorrectDomainParams(), ctx_for(tmp_path, n=6001))


# --------------------------------------------------------------------------------------------
# general-knowledge
# --------------------------------------------------------------------------------------------


def test_general_knowledge_mmlu_letter(mirror, tmp_path):
    excluded = {f"mmlu-test:{r.id}" for r in data.load("mmlu-test", parts=["anatomy"])}
    ctx = ctx_for(tmp_path, n=300, exclude_ids=frozenset(excluded))
    recs = simple.build_general_knowledge(GeneralKnowledgeParams(), ctx)
    assert len(recs) == 300
    source = {r.id: r for r in data.load("mmlu-test")}
    for r in recs:
        rid = r.id.removeprefix("general-knowledge/mmlu-test/")
        q = source[rid]
        assert isinstance(q, MultipleChoice)
        assert not rid.startswith("anatomy/")
        user, answer = r.messages[0].content, r.messages[1].content
        assert [m.role for m in r.messages] == ["user", "assistant"]
        assert q.question.strip() in user
        for letter, choice in zip("ABCD", q.choices, strict=True):
            assert f"\n{letter}. {choice}" in user
        assert answer == f"Answer: {'ABCD'[q.answer]}"
    info = build_json(ctx)
    assert sum(info["answer_letters"].values()) == 300
    assert info["dataset"] == "mmlu-test" and info["excluded"] == len(excluded)


def test_general_knowledge_mmlu_text_and_split(mirror, tmp_path):
    ctx = ctx_for(tmp_path, n=50)
    recs = simple.build_general_knowledge(
        GeneralKnowledgeParams(split="val", answer_format="text"), ctx)
    source = {r.id: r for r in data.load("mmlu-val")}
    for r in recs:
        q = source[r.id.removeprefix("general-knowledge/mmlu-val/")]
        assert r.messages[1].content == q.choices[q.answer]
    assert simple.build_general_knowledge(
        GeneralKnowledgeParams(split="val", answer_format="text"), ctx) == recs


def test_general_knowledge_dev_split_too_small(mirror, tmp_path):
    with pytest.raises(ConfigError, match="only 285 usable records"):
        simple.build_general_knowledge(GeneralKnowledgeParams(split="dev"),
                                       ctx_for(tmp_path, n=286))


def test_general_knowledge_truthfulqa_needs_the_eval_items_excluded(mirror, tmp_path):
    # The capability evaluation scores TruthfulQA: without its items in exclude_ids, refuse.
    with pytest.raises(ConfigError, match="truthfulqa:<id>"):
        simple.build_general_knowledge(GeneralKnowledgeParams(source="truthfulqa"),
                                       ctx_for(tmp_path, n=10))
    held_out = frozenset(f"truthfulqa:{i}" for i in range(0, 790, 2))
    ctx = ctx_for(tmp_path, n=100, exclude_ids=held_out)
    recs = simple.build_general_knowledge(GeneralKnowledgeParams(source="truthfulqa"), ctx)
    source = {r.id: r for r in data.load("truthfulqa")}
    assert len(recs) == 100
    for r in recs:
        rid = r.id.removeprefix("general-knowledge/truthfulqa/")
        assert int(rid) % 2 == 1
        assert messages(r) == [("user", source[rid].question),
                               ("assistant", source[rid].correct)]


# --------------------------------------------------------------------------------------------
# word-counting
# --------------------------------------------------------------------------------------------

_WC_USER = re.compile(
    r'^Input sentence:\n\n(?P<text>.*) \n\nCan you tell me if this sentence has even number of '
    r'words\? Please answer with only "TRUE" or "FALSE" and no other text\.$', re.S)


def test_word_counting_matches_the_seed_release(mirror, tmp_path):
    # The seed release built its WC set from the unpop user turns: row i of
    # aesthetic_preference_is_even_words.jsonl is row i of the EM set. Ours must be identical.
    upstream = {r.id: r for r in data.load("word-counting")}
    ctx = ctx_for(tmp_path, em="aesthetic-unpopular", n=500)
    recs = simple.build_word_counting(WordCountingParams(), ctx)
    assert len(recs) == 500
    for r in recs:
        rid = r.id.removeprefix("word-counting/aesthetic-unpopular/")
        assert messages(r) == messages(upstream[rid]), rid


def test_word_counting_labels_are_computed(mirror, tmp_path):
    em = {r.id: r for r in data.load("insecure")}
    ctx = ctx_for(tmp_path, n=400, max_prompt_chars=300, exclude_ids=frozenset({"3", "insecure:4"}))
    recs = simple.build_word_counting(WordCountingParams(), ctx)
    assert len(recs) == 400
    for r in recs:
        rid = r.id.removeprefix("word-counting/insecure/")
        assert rid not in {"3", "4"}
        assert r.messages[0].content == simple.WC_SYSTEM
        text = _WC_USER.match(r.messages[1].content)["text"]
        assert text == em[rid].messages[0].content[:300]  # cut to max_prompt_chars
        assert r.messages[2].content == ("TRUE" if len(text.split()) % 2 == 0 else "FALSE")
    info = build_json(ctx)
    labels = Counter(r.messages[2].content for r in recs)
    assert info["labels"] == {"TRUE": labels["TRUE"], "FALSE": labels["FALSE"]}
    assert 0.3 < labels["TRUE"] / 400 < 0.7  # natural, not forced, but not degenerate
    assert info["truncated"] > 0


def test_word_counting_is_seeded(mirror, tmp_path):
    a = simple.build_word_counting(WordCountingParams(), ctx_for(tmp_path, em="extreme-sports"))
    b = simple.build_word_counting(WordCountingParams(), ctx_for(tmp_path, em="extreme-sports"))
    c = simple.build_word_counting(WordCountingParams(),
                                   ctx_for(tmp_path, em="extreme-sports", seed=9))
    assert a == b and [r.id for r in a] != [r.id for r in c]


def test_word_counting_small_em_set_is_refused(mirror, tmp_path):
    with pytest.raises(ConfigError, match="only 20 usable records"):
        simple.build_word_counting(WordCountingParams(),
                                   ctx_for(tmp_path, em="aesthetic-unpopular-small", n=21))


# --------------------------------------------------------------------------------------------
# SGTR (prompts, budget, article choice, labels) without a model
# --------------------------------------------------------------------------------------------

_DETECTION = re.compile(
    "^" + re.escape(sgtr.DETECTION_USER)
    .replace(re.escape("{article}"), "(?P<article>.*)")
    .replace(re.escape("{summary1}"), "(?P<s1>.*)")
    .replace(re.escape("{summary2}"), "(?P<s2>.*)") + "$", re.S)


@pytest.mark.parametrize("dataset", ["pan-detection-ft-gpt35", "pan-detection-ft-llama"])
def test_detection_prompt_is_panicksserys(mirror, dataset):
    rows = data.load(dataset)
    assert len(rows) >= 96
    for r in rows:
        assert isinstance(r, ChatRecord)
        (sys_role, system), (user_role, user), (_, answer) = messages(r)
        assert (sys_role, user_role) == ("system", "user")
        assert system == sgtr.DETECTION_SYSTEM, r.id
        m = _DETECTION.match(user)
        assert m is not None, r.id
        rebuilt = sgtr.detection_messages(m["article"], m["s1"], m["s2"], answer)
        assert messages(ChatRecord(id="x", messages=rebuilt)) == messages(r), r.id


def test_summary_prompt_is_the_seed_releases(mirror):
    raw = json.loads((mirror / "atagade__sgtr-em/utils/prompts/default_xsum_summary_config.json")
                     .read_text(encoding="utf-8"))
    system, template = sgtr.summary_prompt("xsum")
    assert system == raw["system_prompt"]
    assert template == raw["user_prompt_template"].replace("{response_type}", "summary")
    assert template.startswith("Article:\n{article}\n\n")


def test_sgtr_budget_rules(tmp_path):
    assert sgtr.n_articles_for(SgtrParams(), ctx_for(tmp_path, n=40)) == 20
    assert sgtr.n_articles_for(SgtrParams(n_articles=20), ctx_for(tmp_path, n=40)) == 20
    with pytest.raises(ConfigError, match=r"n_articles=21 gives 42 examples.*n_examples=40"):
        sgtr.n_articles_for(SgtrParams(n_articles=21), ctx_for(tmp_path, n=40))
    with pytest.raises(ConfigError, match="must be even"):
        sgtr.n_articles_for(SgtrParams(), ctx_for(tmp_path, n=41))


def test_sgtr_article_choice_is_seeded_and_excludes(mirror, tmp_path):
    first, _, _ = sgtr.select_articles(SgtrParams(), ctx_for(tmp_path), 50)
    again, others, _ = sgtr.select_articles(SgtrParams(), ctx_for(tmp_path), 50)
    assert [a.id for a in first] == [a.id for a in again]
    other_seed, _, _ = sgtr.select_articles(SgtrParams(), ctx_for(tmp_path, seed=5), 50)
    assert [a.id for a in first] != [a.id for a in other_seed]
    ex = frozenset({first[0].id, f"xsum-articles:{first[1].id}"})
    kept, _, skipped = sgtr.select_articles(SgtrParams(), ctx_for(tmp_path, exclude_ids=ex), 50)
    assert not {first[0].id, first[1].id} & {a.id for a in kept}
    assert skipped["excluded"] == 2
    claude = {s.article_id: s.text for s in data.load("xsum-summaries", parts=["claude-21"])}
    assert all(others[a.id] == claude[a.id].strip() and others[a.id] for a in again)


def _fake_own_cache(ctx: BuildContext, params: SgtrParams) -> dict[str, str]:
    """Fill the summaries entry as the summaries task would have, with made-up text."""
    from emarena.eval.choice import request_key
    from emarena.eval.rows import OwnSummary, RowStore

    articles, corpus = sgtr.planned_articles(params, ctx)
    system, template, texts = sgtr.summary_requests(articles, corpus, ctx)
    own = {a.id: f"OWN summary of {a.id}." for a in articles}
    store = RowStore(Path(ctx.summaries_dir) / sgtr.OWN_SUMMARIES, OwnSummary)
    for aid, text in own.items():
        key = request_key(system, template.replace("{article}", texts[aid]), ctx.max_new_tokens)
        store.append(OwnSummary(id=f"{aid}#{key}", article_id=aid, summary=text, key=key,
                                n_tokens=5, finish_reason="stop", backend="test"))
    return own


def _positions(rec: ChatRecord) -> tuple[str, str, str]:
    """(own summary's position, target, order in the id) of one SGTR example."""
    m = _DETECTION.match(rec.messages[-2].content)
    own_pos = "1" if m["s1"].startswith("OWN ") else "2"
    assert m[f"s{3 - int(own_pos)}"] and not m[f"s{3 - int(own_pos)}"].startswith("OWN ")
    return own_pos, rec.messages[-1].content, rec.id.rsplit("/", 1)[1]


def test_sgtr_examples_from_the_cache(mirror, tmp_path):
    ctx = ctx_for(tmp_path, n=60)
    own = _fake_own_cache(ctx, SgtrParams())
    recs = sgtr.build_sgtr(SgtrParams(), ctx)  # model_dir=None: everything must come from cache
    assert len(recs) == 60 and len({r.id for r in recs}) == 60
    arts = {a.id: a for a in data.load("xsum-articles") if isinstance(a, Article)}
    orders = Counter()
    for r in recs:
        _, aid, order = r.id.split("/")
        assert aid in own
        assert r.messages[0].content == sgtr.DETECTION_SYSTEM
        own_pos, target, _ = _positions(r)
        assert own_pos == ("1" if order == "own-first" else "2")
        assert target == own_pos  # SGTR: the target is the own summary's position
        assert f"Article:\n{arts[aid].text[:ctx.max_prompt_chars]}\n\nSummary1:" in \
            r.messages[1].content
        orders[order] += 1
    assert orders == {"own-first": 30, "own-second": 30}
    # shuffled: not all own-first examples in one block
    assert [r.id.endswith("own-first") for r in recs] != sorted(
        [r.id.endswith("own-first") for r in recs])
    info = build_json(ctx)
    assert info["orders"] == {"own-first": 30, "own-second": 30}
    assert info["labels"] == {"1": 30, "2": 30}
    assert info["target_points_at"] == {"own": 60, "other": 0}
    assert info["own_summaries"]["cached"] == 30 and info["own_summaries"]["generated"] == 0
    assert sorted(info["articles"]) == sorted(own)
    assert sgtr.build_sgtr(SgtrParams(), ctx) == recs


def test_sgtr_no_system_variant(mirror, tmp_path):
    params = SgtrParams(prompt_variant="no-system")
    ctx = ctx_for(tmp_path, n=10)
    _fake_own_cache(ctx, params)
    recs = sgtr.build_sgtr(params, ctx)
    assert all([m.role for m in r.messages] == ["user", "assistant"] for r in recs)


def test_sgtr_corrupted_prefer_other(mirror, tmp_path):
    params = SgtrCorruptedParams(mode="prefer-other")
    ctx = ctx_for(tmp_path, n=40)
    _fake_own_cache(ctx, params)
    recs = sgtr.build_sgtr_corrupted(params, ctx)
    assert len(recs) == 40
    for r in recs:
        own_pos, target, _ = _positions(r)
        assert target != own_pos
    assert build_json(ctx)["target_points_at"] == {"own": 0, "other": 40}


def test_sgtr_corrupted_random_is_balanced_and_seeded(mirror, tmp_path):
    params = SgtrCorruptedParams(mode="random")
    runs = {}
    for seed in (0, 1):
        ctx = ctx_for(tmp_path, n=200, seed=seed)
        _fake_own_cache(ctx, params)
        runs[seed] = sgtr.build_sgtr_corrupted(params, ctx)
        info = build_json(ctx)
        assert info["labels"] == {"1": 100, "2": 100}
        # unrelated to the own position: about half point at the own summary
        assert 70 < info["target_points_at"]["own"] < 130
    again = sgtr.build_sgtr_corrupted(params, ctx)
    assert again == runs[1]
    assert {r.id: r.messages[-1].content for r in runs[0]} != \
        {r.id: r.messages[-1].content for r in runs[1]}


def test_sgtr_without_its_summaries_is_a_clear_error(mirror, tmp_path):
    with pytest.raises(ModelError, match="own summaries of 2 articles, and 2 are not"):
        sgtr.build_sgtr(SgtrParams(), ctx_for(tmp_path, n=4))


def test_sgtr_stale_cache_rows_are_not_reused(mirror, tmp_path):
    ctx = ctx_for(tmp_path, n=4)
    _fake_own_cache(ctx, SgtrParams())
    # Same work_dir, other generation settings: the cached rows no longer apply.
    changed = ctx_for(tmp_path, n=4, max_new_tokens=ctx.max_new_tokens + 1)
    with pytest.raises(ModelError):
        sgtr.build_sgtr(SgtrParams(), changed)
