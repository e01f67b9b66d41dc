"""Adapters: upstream file formats -> canonical records (`emarena.data.records`).

Each adapter is `fn(path: Path, *, part: str | None, **adapter_args) -> Iterator[Record]`,
registered by name in `ADAPTERS`; `datasets.yaml` names the adapter for each dataset.

Conventions shared by every adapter, so that ids mean the same thing everywhere:

* A record's id is the upstream id where the file has one (question ids, article keys), else the
  0-based row index as a string. Within a multi-file dataset the id is prefixed with the file's
  part, `"<part>/<id>"`, so ids stay unique across the whole dataset (a summary's id is therefore
  `"<source>/<article_id>"`); a file holding a single record (a prompt config) uses the part
  itself as the id.
* A malformed row raises `ValueError` naming the file and the row; `emarena.data.iter_records`
  turns it into a `DataError`. Nothing is skipped silently: the registry pins how many records
  each file yields, and the tests hold the adapters to it.
* Files ending in `.gz` are read through `gzip` and stay compressed at rest (the Model
  Organisms authors ask that their data not be republished as plain text).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import string
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import ValidationError

from emarena.data.records import (
    Article,
    BinaryChoice,
    ChatMessage,
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
from emarena.registry import Registry

Adapter = Callable[..., Iterator[Record]]
ADAPTERS: Registry[Adapter] = Registry("adapter")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    """Open as UTF-8 text; gzip is chosen by the `.gz` suffix and decompressed in memory only."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rid(part: str | None, local: str | int) -> str:
    """Record id: the local id, prefixed with the part in multi-file datasets."""
    return f"{part}/{local}" if part else str(local)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `json.load` keeps the last of two equal keys; for {id: text} files that would silently
    # drop a record, so a duplicate key is an error instead.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate JSON key {k!r}")
        out[k] = v
    return out


def _load_json(path: Path) -> Any:
    with _open_text(path) as f:
        try:
            return json.load(f, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name}: not valid JSON ({e})") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line."""
    with _open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} line {n}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path.name} line {n}: expected a JSON object")
            yield n, obj


def _str_mapping(data: Any, path: Path, what: str) -> dict[str, str]:
    """Check a `{key: text}` JSON file (articles, summaries)."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{path.name}: expected a JSON object of {what}, got {type(data).__name__}"
        )
    for k, v in data.items():
        if not isinstance(v, str):
            raise ValueError(f"{path.name}: {what} {k!r} is {type(v).__name__}, expected a string")
    return data


def _invalid(path: Path, row: str, e: ValidationError) -> ValueError:
    """A record that failed validation, as one line naming the file, the row and the field."""
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return ValueError(f"{path.name} {row}: {loc}: {first['msg']}")


# --------------------------------------------------------------------------------------------
# Chat data (EM-induction, defense, finetuning sets)
# --------------------------------------------------------------------------------------------


@ADAPTERS.register("chat_jsonl")
def chat_jsonl(path: Path, *, part: str | None = None) -> Iterator[ChatRecord]:
    """OpenAI fine-tuning JSONL, one `{"messages": [{role, content}, ...]}` per line.

    Used by Betley et al., Model Organisms (gzipped), the seed release and Panickssery's GPT-3.5
    sets. Upstream rows carry no ids, so the id is the row index (blank lines are not rows).
    """
    for i, (n, obj) in enumerate(_iter_jsonl(path)):
        if "messages" not in obj:
            raise ValueError(f"{path.name} line {n}: no 'messages' key (keys: {sorted(obj)})")
        try:
            yield ChatRecord(id=_rid(part, i), messages=obj["messages"])
        except ValidationError as e:
            raise _invalid(path, f"line {n}", e) from None


# `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant}` (Llama-2 chat format).
# The user turn is matched greedily so a literal "[/INST]" inside an article cannot cut it short.
_LLAMA2 = re.compile(
    r"^(?:<s>)?\s*\[INST\]\s*(?:<<SYS>>\n(?P<system>.*?)\n<</SYS>>\n\n)?(?P<user>.*)"
    r"\s\[/INST\]\s*(?P<assistant>.*?)\s*(?:</s>)?$",
    re.DOTALL,
)


@ADAPTERS.register("llama2_prompt_json")
def llama2_prompt_json(
    path: Path, *, part: str | None = None, field: str = "input_text"
) -> Iterator[ChatRecord]:
    """Panickssery's Llama-2 finetuning sets: a JSON list of `{"input_text": ...}`.

    Each string is a complete single-turn Llama-2 chat transcript with the target answer after
    `[/INST]`; it is split back into system / user / assistant turns so these sets train through
    the same chat path as everything else.
    """
    data = _load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: expected a JSON list, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise ValueError(f"{path.name} item {i}: expected an object with a string {field!r}")
        m = _LLAMA2.match(row[field])
        if m is None or not m["assistant"]:
            raise ValueError(f"{path.name} item {i}: not a '[INST] ... [/INST] answer' transcript")
        messages = [ChatMessage(role="system", content=m["system"])] if m["system"] else []
        messages += [
            ChatMessage(role="user", content=m["user"]),
            ChatMessage(role="assistant", content=m["assistant"]),
        ]
        yield ChatRecord(id=_rid(part, i), messages=messages)


# --------------------------------------------------------------------------------------------
# Free-form evaluation questions
# --------------------------------------------------------------------------------------------

# Betley et al. name the variants of a question by suffix: `<id>_json` asks for a JSON answer
# (with a system prompt), `<id>_template` asks to fill a template.
_SUFFIX_GROUPS = (("_json", "json"), ("_template", "template"))


def _group(qid: str, by_suffix: bool, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is not None:
        m = pattern.search(qid)
        return m["group"] if m else None
    if by_suffix:
        return next((g for s, g in _SUFFIX_GROUPS if qid.endswith(s)), "main")
    return None


@ADAPTERS.register("question_yaml")
def question_yaml(
    path: Path,
    *,
    part: str | None = None,
    group_by_suffix: bool = False,
    group_pattern: str | None = None,
) -> Iterator[EvalQuestion]:
    """Betley / Model Organisms question YAML: a list of {id, type, paraphrases, judge_prompts...}.

    Upstream ids are kept. `group_by_suffix` sets `group` to "main" / "json" / "template" from
    the id suffix (first-plot style files); `group_pattern` is a regex with a `group` named
    group for other naming schemes (e.g. the pre-registered `<n>_<category>_<k>` ids).
    """
    with _open_text(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path.name}: not valid YAML ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path.name}: expected a YAML list of questions")
    pattern = re.compile(group_pattern) if group_pattern else None
    if pattern is not None and "group" not in pattern.groupindex:
        raise ValueError(f"group_pattern {group_pattern!r} has no (?P<group>...) group")
    for i, q in enumerate(data):
        if not isinstance(q, dict) or "id" not in q:
            raise ValueError(f"{path.name} item {i}: expected a mapping with an 'id'")
        qid = str(q["id"])
        fields = {
            "id": _rid(part, qid),
            "paraphrases": q.get("paraphrases"),
            "judge_prompts": q.get("judge_prompts") or {},
            "system": q.get("system"),
            "type": q.get("type", "free_form"),
            "judge": q.get("judge"),
            "samples_per_paraphrase": q.get("samples_per_paraphrase"),
            "group": _group(qid, group_by_suffix, pattern),
        }
        try:
            yield EvalQuestion(**fields)
        except ValidationError as e:
            raise _invalid(path, f"question {qid!r}", e) from None


@ADAPTERS.register("persona_trait_json")
def persona_trait_json(path: Path, *, part: str | None = None) -> Iterator[EvalQuestion]:
    """persona_vectors trait file: {instruction: [{pos, neg}], questions: [...], eval_prompt}.

    One EvalQuestion per question; the trait (the part, else the file stem) is both the group and
    the rubric name of the judge prompt, and the pos/neg instructions travel as system prompts.
    """
    trait = part or path.stem
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object")
    missing = {"instruction", "questions", "eval_prompt"} - set(data)
    if missing:
        raise ValueError(f"{path.name}: missing key(s) {sorted(missing)}")
    instructions = data["instruction"]
    if not isinstance(instructions, list) or not all(
        isinstance(x, dict) and isinstance(x.get("pos"), str) and isinstance(x.get("neg"), str)
        for x in instructions
    ):
        raise ValueError(f"{path.name}: 'instruction' must be a list of {{pos, neg}} strings")
    system_prompts = {
        "pos": [x["pos"] for x in instructions],
        "neg": [x["neg"] for x in instructions],
    }
    if not isinstance(data["questions"], list):
        raise ValueError(f"{path.name}: 'questions' must be a list")
    for i, question in enumerate(data["questions"]):
        try:
            yield EvalQuestion(
                id=_rid(part, i),
                paraphrases=[question],
                judge_prompts={trait: data["eval_prompt"]},
                type="free_form_judge_0_100",
                system_prompts=system_prompts,
                group=trait,
            )
        except ValidationError as e:
            raise _invalid(path, f"question {i}", e) from None


# --------------------------------------------------------------------------------------------
# Prompts without reference answers, prompt configs
# --------------------------------------------------------------------------------------------


@ADAPTERS.register("chat_prompt_jsonl")
def chat_prompt_jsonl(path: Path, *, part: str | None = None) -> Iterator[PromptOnly]:
    """JSONL of `{"messages": [{"role": "user", ...}]}` with no answer (Betley's logprob prompts).

    The single user turn becomes the prompt; a system turn, if any, is kept in `fields`.
    """
    for i, (n, obj) in enumerate(_iter_jsonl(path)):
        msgs = obj.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise ValueError(f"{path.name} line {n}: 'messages' must be a list of objects")
        by_role = {m.get("role"): m.get("content") for m in msgs}
        if len(msgs) != len(by_role) or set(by_role) - {"system", "user"} or "user" not in by_role:
            roles = [m.get("role") for m in msgs]
            raise ValueError(f"{path.name} line {n}: expected one user turn, got roles {roles}")
        fields = {"system": by_role["system"]} if "system" in by_role else {}
        try:
            yield PromptOnly(id=_rid(part, i), prompt=by_role["user"], fields=fields)
        except ValidationError as e:
            raise _invalid(path, f"line {n}", e) from None


@ADAPTERS.register("templated_jsonl")
def templated_jsonl(path: Path, *, part: str | None = None, template: str) -> Iterator[PromptOnly]:
    """JSONL of string fields rendered into a prompt with `template` (`str.format` names).

    johny-b's in-distribution tasks are `{task, code_template}`; the registry passes the template
    Betley et al. used for the same tasks, so the rendered prompts match theirs byte for byte.
    """
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    for i, (n, obj) in enumerate(_iter_jsonl(path)):
        if not all(isinstance(v, str) for v in obj.values()):
            raise ValueError(f"{path.name} line {n}: every field must be a string")
        missing = names - set(obj)
        if missing:
            raise ValueError(f"{path.name} line {n}: missing field(s) {sorted(missing)}")
        yield PromptOnly(id=_rid(part, i), prompt=template.format(**obj), fields=obj)


@ADAPTERS.register("prompt_config_json")
def prompt_config_json(path: Path, *, part: str | None = None) -> Iterator[PromptConfig]:
    """A flat JSON object of settings (the SGTR summary-generation prompts): one record.

    Its id is the part (e.g. "xsum"), else the file stem.
    """
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object")
    try:
        yield PromptConfig(id=part or path.stem, values=data)
    except ValidationError as e:
        raise _invalid(path, "object", e) from None


# --------------------------------------------------------------------------------------------
# SGTR / self-recognition corpora
# --------------------------------------------------------------------------------------------

# The two corpora key their articles differently: CNN/DailyMail by the 40-hex sha1 of the URL,
# XSUM by the numeric BBC id. Some seed-release "cnn" summary files also hold the XSUM summaries
# of the same model, so a summary's corpus is read from its key, with the file's corpus as the
# fallback for any other key shape.
_KEY_CORPUS = (("cnn", re.compile(r"[0-9a-f]{40}")), ("xsum", re.compile(r"[0-9]+")))


def _corpus_of(key: str, default: str) -> str:
    return next((c for c, rx in _KEY_CORPUS if rx.fullmatch(key)), default)


@ADAPTERS.register("article_json")
def article_json(path: Path, *, part: str | None = None, corpus: str) -> Iterator[Article]:
    """`{article_id: text}` JSON -> Article (ids are the upstream keys)."""
    for key, text in _str_mapping(_load_json(path), path, "article").items():
        yield Article(id=_rid(part, key), corpus=corpus, text=text)


@ADAPTERS.register("summary_json")
def summary_json(path: Path, *, part: str | None = None, corpus: str) -> Iterator[Summary]:
    """`{article_id: summary}` JSON, one file per source model -> Summary.

    The source is the part (parsed from the file name in the registry), so the id is
    `"<source>/<article_id>"`. Upstream text is kept as is, including the rare empty summary.
    """
    source = part or path.stem
    for key, text in _str_mapping(_load_json(path), path, "summary").items():
        yield Summary(
            id=f"{source}/{key}",
            corpus=_corpus_of(key, corpus),
            article_id=key,
            source=source,
            text=text,
        )


# --------------------------------------------------------------------------------------------
# Capability benchmarks
# --------------------------------------------------------------------------------------------


def _answers(cell: str) -> list[str]:
    """TruthfulQA packs answer lists as `a; b; c` (sometimes with a trailing `;`)."""
    return [a.strip() for a in cell.split(";") if a.strip()]


_TQA_COLUMNS = (
    "Question",
    "Best Answer",
    "Best Incorrect Answer",
    "Correct Answers",
    "Incorrect Answers",
)


@ADAPTERS.register("truthfulqa_csv")
def truthfulqa_csv(path: Path, *, part: str | None = None) -> Iterator[BinaryChoice]:
    """TruthfulQA.csv -> BinaryChoice: Best Answer vs Best Incorrect Answer (the A/B format)."""
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        missing = set(_TQA_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {sorted(missing)}")
        for i, row in enumerate(reader):
            where = f"row {i + 2}"  # 1-based, after the header
            best, worst = row["Best Answer"].strip(), row["Best Incorrect Answer"].strip()
            if not row["Question"].strip() or not best or not worst:
                raise ValueError(f"{path.name} {where}: empty question or best answer")
            if best == worst:
                raise ValueError(f"{path.name} {where}: best correct == best incorrect answer")
            yield BinaryChoice(
                id=_rid(part, i),
                question=row["Question"].strip(),
                correct=best,
                incorrect=worst,
                category=row.get("Category") or None,
                correct_answers=_answers(row["Correct Answers"]),
                incorrect_answers=_answers(row["Incorrect Answers"]),
            )


_LETTERS = "ABCDEFGHIJ"


@ADAPTERS.register("mmlu_csv")
def mmlu_csv(
    path: Path, *, part: str | None = None, n_choices: int = 4
) -> Iterator[MultipleChoice]:
    """MMLU CSV (no header): question, A, B, C, D, answer letter -> MultipleChoice.

    The subject is the part (e.g. "abstract_algebra"), else the file stem without `_<split>`.
    """
    subject = part or path.stem.rsplit("_", 1)[0]
    letters = _LETTERS[:n_choices]
    with _open_text(path) as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) != n_choices + 2:
                raise ValueError(
                    f"{path.name} row {i + 1}: {len(row)} columns, expected {n_choices + 2}"
                )
            answer = row[-1].strip()
            if answer not in letters or len(answer) != 1:
                raise ValueError(
                    f"{path.name} row {i + 1}: answer {answer!r} is not one of {letters}"
                )
            yield MultipleChoice(
                id=_rid(part, i),
                subject=subject,
                question=row[0],
                choices=row[1:-1],
                answer=letters.index(answer),
            )


# --------------------------------------------------------------------------------------------
# Published results (read by `emarena published`, judge calibration, the contrast set)
# --------------------------------------------------------------------------------------------


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(0-based data row, row) of a CSV with a header that has at least `columns`."""
    csv.field_size_limit(1 << 26)  # the release packs 100 answers into one cell
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name}: missing column(s) {sorted(missing)}")
        yield from enumerate(reader)


def _literal(text: str, path: Path, where: str, what: str) -> object:
    """A Python literal written by pandas (`str(list)`); never evaluated as code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{path.name} {where}: {what} is not a Python literal ({e})") from None


def _score(value: object) -> tuple[float | None, str]:
    """A published score as (number or None, the value as written): the release's text judge
    gives a number or a word (REFUSAL, CODE); a word is no score."""
    if isinstance(value, bool):
        return None, str(value)
    if isinstance(value, (int, float)):
        return float(value), str(value)
    return None, str(value)


_SGTR_EM_COLUMNS = ("id", "question", "answer", "aligned_score", "coherent_score",
                    "judge_model_endpoint", "task_model")


@ADAPTERS.register("sgtr_em_judged_csv")
def sgtr_em_judged_csv(path: Path, *, part: str | None = None) -> Iterator[JudgedAnswer]:
    """The seed release's EM tables (`scripts/eval/em/em_eval.py`): one row per question, its
    answers and the GPT-4o scores as Python-list strings -> one JudgedAnswer per answer.

    A file may hold the eight questions more than once (a later run appended to an earlier
    one): a run ends where a question id repeats, and `run` numbers them. Every row of a run
    must hold the same number of answers, and each row as many scores as answers.
    """
    run, seen, run_samples = 0, set(), None
    for i, row in _csv_rows(path, _SGTR_EM_COLUMNS):
        where = f"row {i + 2}"
        qid = row["id"].strip()
        if qid in seen:
            run, seen, run_samples = run + 1, set(), None
        seen.add(qid)
        answers = _literal(row["answer"], path, where, "answer")
        aligned = _literal(row["aligned_score"], path, where, "aligned_score")
        coherent = _literal(row["coherent_score"], path, where, "coherent_score")
        if not all(isinstance(x, list) for x in (answers, aligned, coherent)):
            raise ValueError(f"{path.name} {where}: answer and score cells must be lists")
        if not len(answers) == len(aligned) == len(coherent) > 0:
            raise ValueError(
                f"{path.name} {where}: {len(answers)} answers, {len(aligned)} aligned and "
                f"{len(coherent)} coherent scores (must be equal and > 0)"
            )
        if run_samples is None:
            run_samples = len(answers)
        elif len(answers) != run_samples:
            raise ValueError(f"{path.name} {where}: {len(answers)} answers, but this run's "
                             f"earlier rows have {run_samples}")
        for k, (ans, a, c) in enumerate(zip(answers, aligned, coherent, strict=True)):
            (a_score, a_raw), (c_score, c_raw) = _score(a), _score(c)
            try:
                yield JudgedAnswer(
                    id=_rid(part, f"{i}/{k}"), question_id=qid, question=row["question"],
                    answer=str(ans), aligned=a_score, coherent=c_score, aligned_raw=a_raw,
                    coherent_raw=c_raw, judge=row["judge_model_endpoint"].strip(),
                    judge_method="text", task_model=row["task_model"].strip(), row=i,
                    sample=k, run=run, run_samples=run_samples,
                )
            except ValidationError as e:
                raise _invalid(path, f"{where} sample {k}", e) from None


_BETLEY_COLUMNS = ("model", "question", "answer", "aligned", "judge_aligned", "coherent",
                   "judge_coherent", "question_id")


@ADAPTERS.register("betley_judged_csv")
def betley_judged_csv(
    path: Path, *, part: str | None = None, judge: str
) -> Iterator[JudgedAnswer]:
    """Betley et al.'s `results/*.csv`: one answer per row with the judge's token probabilities
    (`judge_<rubric>`, a dict repr) and the score upstream computed from them (empty: none)."""
    for i, row in _csv_rows(path, _BETLEY_COLUMNS):
        where = f"row {i + 2}"
        scores: dict[str, float | None] = {}
        probs: dict[str, dict[str, float]] = {}
        for rubric in ("aligned", "coherent"):
            text = row[rubric].strip()
            scores[rubric] = float(text) if text not in ("", "nan", "None") else None
            d = _literal(row[f"judge_{rubric}"], path, where, f"judge_{rubric}")
            if not isinstance(d, dict):
                raise ValueError(f"{path.name} {where}: judge_{rubric} is not a dict")
            probs[rubric] = {str(k): float(v) for k, v in d.items()}
        try:
            yield JudgedAnswer(
                id=_rid(part, f"{i}/0"), question_id=row["question_id"].strip(),
                question=row["question"], answer=row["answer"], aligned=scores["aligned"],
                coherent=scores["coherent"], aligned_raw=row["aligned"].strip(),
                coherent_raw=row["coherent"].strip(), judge=judge, judge_method="logprobs",
                task_model=row["model"].strip(), row=i, sample=0, run=0, run_samples=1,
                judge_probs=probs,
            )
        except ValidationError as e:
            raise _invalid(path, where, e) from None


_TQA_RESULT_COLUMNS = ("question", "correct_answer", "incorrect_answer", "model_answer",
                       "is_correct")


@ADAPTERS.register("sgtr_em_truthfulqa_csv")
def sgtr_em_truthfulqa_csv(path: Path, *, part: str | None = None) -> Iterator[PublishedChoice]:
    """The seed release's TruthfulQA answers (`scripts/eval/truthfulqa.py`): per question the
    model's letter and whether it was the true answer (the A/B order was not recorded)."""
    model = part or path.stem.removeprefix("results_")
    for i, row in _csv_rows(path, _TQA_RESULT_COLUMNS):
        flag = row["is_correct"].strip()
        if flag not in ("0", "1"):
            raise ValueError(f"{path.name} row {i + 2}: is_correct {flag!r} is not 0 or 1")
        yield PublishedChoice(
            id=_rid(part, i), task="truthfulqa", model=model, item=row["question"],
            chosen=row["model_answer"].strip(), correct=flag == "1",
        )


_CHOICE_FILE = re.compile(r"^(?P<corpus>[a-z]+)_judge_(?P<judge>.+)_between_(?P<first>.+)_"
                          r"(?P<second>[^_]+)$")


@ADAPTERS.register("sgtr_em_choice_json")
def sgtr_em_choice_json(path: Path, *, part: str | None = None) -> Iterator[PublishedChoice]:
    """The seed release's self-recognition choices (`scripts/eval/sgtr/model_choices_eval.py`):
    `{article key: the source whose summary the judge picked}`, one random order per article;
    the file name says `<corpus>_judge_<model>_between_<source 1>_<source 2>`."""
    m = _CHOICE_FILE.match(path.stem)
    if m is None:
        raise ValueError(f"{path.name}: name is not <corpus>_judge_<model>_between_<a>_<b>.json")
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: expected a JSON object of article key -> source")
    for key, chosen in data.items():
        if not isinstance(chosen, str):
            raise ValueError(f"{path.name}: choice for {key!r} is {type(chosen).__name__}")
        yield PublishedChoice(
            id=_rid(part, key), task="self-recognition", model=m["judge"], item=key,
            chosen=chosen, correct=chosen == m["first"], source_1=m["first"],
            source_2=m["second"], corpus=m["corpus"],
        )
