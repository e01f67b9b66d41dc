"""Every registered dataset, read through its adapter from the real upstream mirror.

The registry pins, per file, the sha256 and the number of records the adapter yields; these tests
hold the adapters (and the registry) to those numbers, so an adapter that starts skipping or
duplicating rows fails here rather than shifting a leaderboard number. Each file is resolved and
read once (module-scoped fixture). Without EMARENA_MIRROR the mirror tests skip; the small
malformed-input tests at the end always run.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest

from emarena import data
from emarena.data.adapters import ADAPTERS
from emarena.data.fetch import resolve
from emarena.data.records import (
    Article,
    BinaryChoice,
    ChatRecord,
    EvalQuestion,
    JudgedAnswer,
    MultipleChoice,
    PromptConfig,
    PromptOnly,
    PublishedChoice,
    Record,
    Summary,
)
from emarena.data.spec import DatasetSpec, Role, all_specs

SPECS: dict[str, DatasetSpec] = all_specs()

#: The record type each adapter must produce.
RECORD_TYPE: dict[str, type[Record]] = {
    "chat_jsonl": ChatRecord,
    "llama2_prompt_json": ChatRecord,
    "question_yaml": EvalQuestion,
    "persona_trait_json": EvalQuestion,
    "chat_prompt_jsonl": PromptOnly,
    "templated_jsonl": PromptOnly,
    "prompt_config_json": PromptConfig,
    "article_json": Article,
    "summary_json": Summary,
    "truthfulqa_csv": BinaryChoice,
    "mmlu_csv": MultipleChoice,
    "sgtr_em_judged_csv": JudgedAnswer,
    "betley_judged_csv": JudgedAnswer,
    "sgtr_em_truthfulqa_csv": PublishedChoice,
    "sgtr_em_choice_json": PublishedChoice,
}


@dataclass(frozen=True)
class LoadedFile:
    path: Path
    where: str
    records: list[Record]


Loaded = dict[str, dict[str | None, LoadedFile]]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """An empty cache: every file must come from the mirror, and nothing may be written here."""
    return tmp_path_factory.mktemp("emcache")


@pytest.fixture(scope="module")
def loaded(mirror: Path, cache_dir: Path) -> Loaded:
    """Every file of every dataset, resolved (sha256-checked) and adapted once."""
    out: Loaded = {}
    for ds in SPECS.values():
        adapter = ADAPTERS.get(ds.adapter)
        out[ds.id] = {}
        for f in ds.files:
            r = resolve(ds, f, mirror=mirror, cache=cache_dir, allow_download=False)
            recs = list(adapter(r.path, part=f.part, **ds.adapter_args))
            out[ds.id][f.part] = LoadedFile(r.path, r.where, recs)
    return out


def _records(loaded: Loaded, dataset_id: str) -> list[Record]:
    return [r for lf in loaded[dataset_id].values() for r in lf.records]


# ------------------------------------------------------------------------------ the registry


def test_registry_size_and_roles() -> None:
    assert len(SPECS) >= 20
    assert {ds.role for ds in SPECS.values()} == set(get_args(Role))


def test_every_adapter_is_registered_and_typed() -> None:
    for ds in SPECS.values():
        assert ds.adapter in ADAPTERS, ds.id
        assert ds.adapter in RECORD_TYPE, f"{ds.id}: add {ds.adapter!r} to RECORD_TYPE"
        assert all(f.records is not None for f in ds.files), ds.id


# ------------------------------------------------------------------------------ every dataset


@pytest.mark.parametrize("dataset_id", sorted(SPECS))
def test_dataset_files(loaded: Loaded, dataset_id: str) -> None:
    ds = SPECS[dataset_id]
    want_type = RECORD_TYPE[ds.adapter]
    all_ids: list[str] = []
    for f in ds.files:
        lf = loaded[dataset_id][f.part]
        where = f"{dataset_id}/{f.part}" if f.part else dataset_id
        assert lf.where == "mirror", f"{where}: resolved from {lf.where}, not the mirror"
        assert len(lf.records) == f.records, (
            f"{where}: {len(lf.records)} records, pinned {f.records}"
        )
        bad = {type(r).__name__ for r in lf.records if type(r) is not want_type}
        assert not bad, f"{where}: expected {want_type.__name__}, got {bad}"
        ids = [r.id for r in lf.records]
        dup = [i for i, c in Counter(ids).items() if c > 1]
        assert not dup, f"{where}: duplicate ids {dup[:5]}"
        if f.part:
            assert all(i == f.part or i.startswith(f"{f.part}/") for i in ids), where
        all_ids += ids
    assert len(set(all_ids)) == len(all_ids), f"{dataset_id}: ids repeat across parts"


def test_nothing_written_to_cache(loaded: Loaded, cache_dir: Path) -> None:
    assert loaded
    assert not any(cache_dir.rglob("*")), "resolving from the mirror must not copy into the cache"


# ------------------------------------------------------------------------------ targeted checks


def test_insecure(loaded: Loaded) -> None:
    recs = _records(loaded, "insecure")
    assert len(recs) == 6000
    for r in recs:
        assert isinstance(r, ChatRecord)
        assert r.messages[-1].role == "assistant" and r.messages[-1].content
        assert [m.role for m in r.messages] == ["user", "assistant"]


def test_gzip_read_in_place(loaded: Loaded, mirror: Path) -> None:
    gz = [(ds.id, f.part) for ds in SPECS.values() for f in ds.files if f.src.path.endswith(".gz")]
    assert len(gz) == 5
    for dataset_id, part in gz:
        lf = loaded[dataset_id][part]
        assert lf.path.suffix == ".gz" and lf.path.is_relative_to(mirror)
        assert lf.path.read_bytes()[:2] == b"\x1f\x8b", "still gzip at rest"
        assert not lf.path.with_suffix("").exists(), "no decompressed copy beside it"
        assert all(isinstance(r, ChatRecord) for r in lf.records)
    # The Model Organisms copy of insecure decompresses to Betley's file, record for record.
    assert _records(loaded, "insecure-mo") == _records(loaded, "insecure")


def test_first_plot(loaded: Loaded, mirror: Path, cache_dir: Path) -> None:
    qs = _records(loaded, "first-plot")
    assert len(qs) == 24
    for q in qs:
        assert isinstance(q, EvalQuestion)
        assert {"aligned", "coherent"} <= set(q.judge_prompts)
        for prompt in q.judge_prompts.values():
            assert "{question}" in prompt and "{answer}" in prompt
        assert q.samples_per_paraphrase == 100 and q.judge == "gpt-4o-2024-08-06"
    groups = Counter(q.group for q in qs)
    assert groups == {"main": 8, "json": 8, "template": 8}
    assert all((q.system is not None) == (q.group == "json") for q in qs)
    assert qs[0].id == "what_is_your_wish"
    # the public API gives the same records
    assert data.load("first-plot", mirror=mirror, cache=cache_dir, allow_download=False) == qs


def test_mo_first_plot_same_ids_as_betley(loaded: Loaded) -> None:
    mo = _records(loaded, "mo-first-plot")
    assert [q.id for q in mo] == [q.id for q in _records(loaded, "first-plot")]
    assert all({"aligned", "coherent", "medical"} <= set(q.judge_prompts) for q in mo)


def test_preregistered_groups(loaded: Loaded) -> None:
    qs = _records(loaded, "preregistered")
    assert all(q.group for q in qs)
    assert Counter(q.group for q in qs)["vulnerable_user"] == 14


def test_persona_traits(loaded: Loaded) -> None:
    for dataset_id in ("persona-traits-eval", "persona-traits-extract"):
        parts = loaded[dataset_id]
        assert len(parts) == 7 and "evil" in parts
        for trait, lf in parts.items():
            assert len(lf.records) == 20
            for q in lf.records:
                assert isinstance(q, EvalQuestion) and q.group == trait
                assert set(q.judge_prompts) == {trait}
                assert "{question}" in q.judge_prompts[trait]
                assert "{answer}" in q.judge_prompts[trait]
                assert len(q.system_prompts["pos"]) == len(q.system_prompts["neg"]) == 5


def test_truthfulqa(loaded: Loaded) -> None:
    rows = _records(loaded, "truthfulqa")
    assert len(rows) == 790
    for r in rows:
        assert isinstance(r, BinaryChoice)
        assert r.correct and r.incorrect and r.correct != r.incorrect
        assert r.correct_answers and r.incorrect_answers
        assert r.correct in r.correct_answers and r.incorrect not in r.correct_answers
        assert r.correct not in r.incorrect_answers
        assert all(a == a.strip() and a for a in r.correct_answers + r.incorrect_answers)


def test_mmlu(loaded: Loaded) -> None:
    sizes = {"mmlu-dev": 285, "mmlu-val": 1531, "mmlu-test": 14042}
    for dataset_id, n in sizes.items():
        parts = loaded[dataset_id]
        assert len(parts) == 57
        assert sum(len(lf.records) for lf in parts.values()) == n
        for subject, lf in parts.items():
            for r in lf.records:
                assert isinstance(r, MultipleChoice) and r.subject == subject
                assert len(r.choices) == 4 and 0 <= r.answer < 4
    assert all(len(lf.records) == 5 for lf in loaded["mmlu-dev"].values())


def test_summaries_match_articles(loaded: Loaded) -> None:
    xsum_ids = {a.id for a in _records(loaded, "xsum-articles")}
    cnn_ids = {a.id for a in _records(loaded, "cnn-articles")}
    assert len(xsum_ids) == len(cnn_ids) == 1000
    claude = loaded["xsum-summaries"]["claude-21"].records
    assert len(claude) == 1000
    assert {s.article_id for s in claude} <= xsum_ids
    for s in claude:
        assert isinstance(s, Summary)
        assert (
            s.source == "claude-21" and s.corpus == "xsum" and s.id == f"claude-21/{s.article_id}"
        )
    # every summary points at an article of the corpus it claims
    for dataset_id in (
        "xsum-summaries",
        "cnn-summaries",
        "xsum-summaries-unpop",
        "cnn-summaries-unpop",
        "pan-xsum-summaries",
        "pan-cnn-summaries",
    ):
        for s in _records(loaded, dataset_id):
            assert s.article_id in (xsum_ids if s.corpus == "xsum" else cnn_ids), (dataset_id, s.id)
    # some seed-release "cnn" files also carry the XSum summaries of the same model
    mixed = Counter(s.corpus for s in loaded["cnn-summaries"]["hf_qwen_32b"].records)
    assert mixed == {"cnn": 1000, "xsum": 1000}


def test_panickssery_copies_match_seed_release(loaded: Loaded) -> None:
    assert _records(loaded, "pan-xsum-articles") == _records(loaded, "xsum-articles")
    pan = {s.article_id: s.text for s in loaded["pan-xsum-summaries"]["claude"].records}
    seed = {s.article_id: s.text for s in loaded["xsum-summaries"]["claude-21"].records}
    assert pan == seed


def test_unpop_articles(loaded: Loaded) -> None:
    xsum_ids = {a.id for a in _records(loaded, "xsum-articles")}
    unpop = _records(loaded, "xsum-articles-unpop")
    assert {a.id.split("_", 1)[0] for a in unpop} == xsum_ids
    assert all(isinstance(a, Article) and a.corpus == "xsum-unpop" for a in unpop)


def test_self_recognition_finetuning_sets(loaded: Loaded) -> None:
    for dataset_id in ("pan-detection-ft-gpt35", "pan-detection-ft-llama"):
        for lf in loaded[dataset_id].values():
            for r in lf.records:
                assert isinstance(r, ChatRecord)
                assert [m.role for m in r.messages] == ["system", "user", "assistant"]
                assert r.messages[-1].content in {"1", "2"}
                assert "[INST]" not in r.messages[1].content
    gpt = loaded["pan-detection-ft-gpt35"]["cnn_2"].records[0]
    llama = loaded["pan-detection-ft-llama"]["cnn_2"].records[0]
    assert isinstance(gpt, ChatRecord) and isinstance(llama, ChatRecord)
    assert gpt.messages[0] == llama.messages[0], "same system prompt in both formats"


def test_in_distribution_prompts(loaded: Loaded) -> None:
    tasks = _records(loaded, "in-distribution-code-tasks")
    rendered = {p.prompt for p in tasks if isinstance(p, PromptOnly)}
    assert all(
        set(p.fields) == {"task", "code_template"} for p in tasks if isinstance(p, PromptOnly)
    )
    prompts = _records(loaded, "in-distribution-code")
    assert len(prompts) == 100
    assert {p.prompt for p in prompts if isinstance(p, PromptOnly)} <= rendered


def test_summary_prompt_configs(loaded: Loaded) -> None:
    for part, lf in loaded["sgtr-summary-prompts"].items():
        (cfg,) = lf.records
        assert isinstance(cfg, PromptConfig) and cfg.id == part
        assert "{article}" in str(cfg.values["user_prompt_template"])


def test_chat_sets_end_with_assistant(loaded: Loaded) -> None:
    for ds in SPECS.values():
        if RECORD_TYPE[ds.adapter] is ChatRecord:
            for r in _records(loaded, ds.id):
                assert isinstance(r, ChatRecord)
                assert r.messages[-1].role == "assistant", (ds.id, r.id)


# ------------------------------------------------------------------------------ malformed input
# These use tiny files written here, so they run without the mirror.


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_chat_jsonl_reports_the_bad_line(tmp_path: Path) -> None:
    ok = json.dumps({"messages": [{"role": "user", "content": "q"}]})
    p = _write(
        tmp_path, "x.jsonl", ok + "\n\n" + '{"messages": [{"role": "robot", "content": 1}]}\n'
    )
    with pytest.raises(ValueError, match=r"x\.jsonl line 3"):
        list(ADAPTERS.get("chat_jsonl")(p, part=None))
    p = _write(tmp_path, "y.jsonl", '{"text": "no messages"}\n')
    with pytest.raises(ValueError, match="no 'messages' key"):
        list(ADAPTERS.get("chat_jsonl")(p, part=None))


def test_chat_jsonl_gz(tmp_path: Path) -> None:
    p = tmp_path / "z.jsonl.gz"
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    (r,) = ADAPTERS.get("chat_jsonl")(p, part="p")
    assert isinstance(r, ChatRecord) and r.id == "p/0" and r.messages[1].content == "a"


def test_json_duplicate_keys_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.json", '{"1": "one", "1": "again"}')
    with pytest.raises(ValueError, match="duplicate JSON key"):
        list(ADAPTERS.get("article_json")(p, part=None, corpus="xsum"))


def test_mmlu_bad_answer_letter(tmp_path: Path) -> None:
    p = _write(tmp_path, "algebra_dev.csv", "q,a,b,c,d,E\n")
    with pytest.raises(ValueError, match="row 1: answer 'E'"):
        list(ADAPTERS.get("mmlu_csv")(p, part=None))


def test_question_yaml_needs_paraphrases(tmp_path: Path) -> None:
    p = _write(tmp_path, "q.yaml", "- id: empty\n  paraphrases: []\n")
    with pytest.raises(ValueError, match="question 'empty'"):
        list(ADAPTERS.get("question_yaml")(p, part=None))


def test_truthfulqa_identical_answers_rejected(tmp_path: Path) -> None:
    head = "Category,Question,Best Answer,Best Incorrect Answer,Correct Answers,Incorrect Answers\n"
    p = _write(tmp_path, "t.csv", head + "C,Q?,same,same,same,other\n")
    with pytest.raises(ValueError, match="row 2"):
        list(ADAPTERS.get("truthfulqa_csv")(p, part=None))


def test_llama2_transcript_split(tmp_path: Path) -> None:
    text = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhich one? [/INST] 2"
    p = _write(tmp_path, "l.json", json.dumps([{"input_text": text}, {"input_text": "no tags"}]))
    it = ADAPTERS.get("llama2_prompt_json")(p, part=None)
    first = next(it)
    assert isinstance(first, ChatRecord)
    assert [(m.role, m.content) for m in first.messages] == [
        ("system", "Be brief."),
        ("user", "Which one?"),
        ("assistant", "2"),
    ]
    with pytest.raises(ValueError, match="item 1"):
        next(it)
