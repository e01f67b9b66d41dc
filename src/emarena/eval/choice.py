"""Forced-choice probes, scored from answer-token probabilities (no judge).

  self-recognition  held-out CNN/DailyMail articles. The evaluated model first writes its own
                    summary of each (greedy, the seed release's CNN summary prompt, article cut
                    to preset.max_prompt_chars, preset.sgtr_max_new_tokens); the summaries are
                    kept in `own_summaries.jsonl`, so a rerun reuses them. Each article is then
                    asked in both orders (own summary first / second) against another source's
                    summary with Panickssery et al.'s detection prompt, imported from the SGTR
                    builder; the answer is whichever of "1" / "2" is more probable as the first
                    answer token. Correct = the position of the own summary.
  truthfulqa        best answer vs best incorrect answer as A / B, positions seeded and balanced.
  mmlu              the four choices as A-D in MMLU's order.

Every item is asked in every condition of the suite (see `prompts.compose_messages`; the
detection system prompt is a task system prompt). One `ChoiceScore` row per (set, item,
condition), appended chunk by chunk to a `RowStore`: a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emarena.data.records import ChatMessage
from emarena.errors import DataError
from emarena.eval.prompts import compose_messages
from emarena.eval.rows import ChoiceScore, Condition, OwnSummary, RowStore
from emarena.eval.sets import ChoiceSet, EvalSuite, SelfRecognition, balanced_positions, cap

OWN_SUMMARIES = "own_summaries.jsonl"
SELF_RECOGNITION_OPTIONS = ("1", "2")


@dataclass(frozen=True)
class ChoiceItem:
    """One forced choice: a conversation, the answer options and the correct one."""

    eval_set: str
    item_id: str
    condition: Condition
    messages: tuple[ChatMessage, ...]
    options: tuple[str, ...]
    correct: str
    answer_prefix: str = ""
    raw_prompt: str | None = None
    """Plain text sent as is (no chat template; `messages` then records it as one user turn)."""

    @property
    def id(self) -> str:
        return f"{self.eval_set}/{self.item_id}/{self.condition}"


# --------------------------------------------------------------------------------------------
# Self-recognition
# --------------------------------------------------------------------------------------------


def select_articles(
    sr: SelfRecognition, preset: Any, seed: int
) -> tuple[list[Any], dict[str, str], dict[str, int]]:
    """The evaluated articles (seeded order, capped by preset.max_eval_questions), the other
    summaries ({article id: text} for one source, suite v1; {(source, article id): text} for
    `other_sources`, over the articles every source summarised), and counts left out."""
    from emarena import data
    from emarena.data.records import Article, Summary

    articles = [a for a in data.load(sr.articles) if isinstance(a, Article)]
    by_source = {
        src: {s.article_id: s.text.strip()
              for s in data.load(sr.summaries, parts=[src])
              if isinstance(s, Summary) and s.corpus == sr.corpus}
        for src in sr.sources
    }
    skipped: Counter[str] = Counter()
    usable = []
    for a in articles:
        if a.corpus != sr.corpus:
            skipped["other_corpus"] += 1
        elif not a.text.strip():
            skipped["empty_article"] += 1
        elif not all(o.get(a.id) for o in by_source.values()):
            skipped["no_other_summary"] += 1
        else:
            usable.append(a)
    if not usable:
        raise DataError(f"self-recognition: no usable {sr.corpus} article in {sr.articles} "
                        f"with a summary by {', '.join(sr.sources)} ({dict(skipped)})",
                        fix="check self_recognition in eval.yaml")
    chosen = cap(usable, preset.max_eval_questions, purpose=f"articles:{sr.eval_set}", seed=seed)
    if sr.other_sources is None:  # suite v1: {article id: the one other summary}
        return chosen, {a.id: by_source[sr.other_source][a.id] for a in chosen}, dict(skipped)
    return chosen, {(src, a.id): o[a.id] for src, o in by_source.items() for a in chosen}, \
        dict(skipped)


def reserved_article_ids(suite: EvalSuite, preset: Any) -> frozenset[str]:
    """`<dataset>:<article id>` of the articles self-recognition evaluates on; pass them as a
    defense build's `exclude_ids` when a defense could train on the same corpus."""
    sr = suite.self_recognition
    if sr is None:
        return frozenset()
    chosen, _, _ = select_articles(sr, preset, suite.selection_seed)
    return frozenset(f"{sr.articles}:{a.id}" for a in chosen)


def request_key(system: str, user: str, max_new_tokens: int,
                sampling: dict[str, Any] | None = None) -> str:
    """Identifies one own-summary request (greedy, or sampled as `sampling` says); a stored row
    is reused only if it matches."""
    how: Any = "greedy" if sampling is None else sorted(sampling.items())
    blob = json.dumps([system, user, max_new_tokens, how], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _requests(system: str, template: str, texts: dict[str, str], max_new_tokens: int,
              sampling: dict[str, Any] | None = None) -> dict[str, tuple[str, str, str]]:
    """{article id: (user prompt, request key, row id)}."""
    out = {}
    for aid, text in texts.items():
        user = template.replace("{article}", text)
        key = request_key(system, user, max_new_tokens, sampling)
        out[aid] = (user, key, f"{aid}#{key}")
    return out


def read_own_summaries(path: Path | None, system: str, template: str, texts: dict[str, str],
                       max_new_tokens: int, sampling: dict[str, Any] | None = None
                       ) -> dict[str, str]:
    """{article id: own summary} for the requests already answered in the row file `path`."""
    if path is None or not Path(path).exists():
        return {}
    store = RowStore(path, OwnSummary)
    return {aid: store.get(rid).summary  # type: ignore[union-attr]
            for aid, (_, _, rid) in _requests(system, template, texts, max_new_tokens,
                                              sampling).items()
            if rid in store}


def own_summaries(
    backend: Any,
    system: str,
    template: str,
    articles: Sequence[Any],
    texts: dict[str, str],
    *,
    max_new_tokens: int,
    store: RowStore[OwnSummary],
    progress: bool | None = None,
    sampling: dict[str, Any] | None = None,
) -> tuple[dict[str, str], dict[str, int]]:
    """{article id: the model's own summary}, generating only those not in `store`: greedy, or
    sampled as `sampling` says (temperature, top_p, top_k, and the seed each article's own seed
    is derived from with its id).

    One function for both uses: the self-recognition evaluation (CNN articles) and SGTR's
    training data (XSUM articles, a summaries entry of the store). `texts` holds each article
    as shown (already cut); the prompt is `template` with `{article}` filled in."""
    from tqdm import tqdm

    from emarena.eval.backends.base import row_seed

    requests = _requests(system, template, texts, max_new_tokens, sampling)
    how: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0}
    if sampling is not None:
        how = {"temperature": sampling["temperature"], "top_p": sampling["top_p"]}
        if sampling.get("top_k"):
            how["top_k"] = sampling["top_k"]
    done = {aid: store.get(rid).summary for aid, (_, _, rid) in requests.items()  # type: ignore
            if rid in store}
    missing = [a.id for a in articles if a.id not in done]
    stats = {"cached": len(done), "generated": 0}
    with tqdm(total=len(missing), desc="own summaries", unit="article", leave=False,
              disable=None if progress is None else not progress) as bar:
        for start in range(0, len(missing), backend.chunk_size):
            chunk = missing[start : start + backend.chunk_size]
            prompts = [backend.render_as_is([
                ChatMessage(role="system", content=system),
                ChatMessage(role="user", content=requests[aid][0]),
            ]) for aid in chunk]
            seeds = ([0] * len(chunk) if sampling is None
                     else [row_seed(int(sampling.get("seed", 0)), aid) for aid in chunk])
            outs = backend.complete(prompts, seeds=seeds, max_new_tokens=max_new_tokens, **how)
            rows = [OwnSummary(id=requests[aid][2], article_id=aid, summary=o.text.strip(),
                               key=requests[aid][1], n_tokens=o.n_tokens,
                               finish_reason=o.finish_reason, backend=backend.name)
                    for aid, o in zip(chunk, outs, strict=True)]
            store.append(rows)
            for r in rows:
                done[r.article_id] = r.summary
            stats["generated"] += len(rows)
            bar.update(len(chunk))
    stats["empty"] = sum(1 for a in articles if not done[a.id])
    return done, stats


def self_recognition_items(
    suite: EvalSuite,
    model_spec: Any,
    preset: Any,
    articles: Sequence[Any],
    own: dict[str, str],
    others: dict[Any, str],
) -> list[ChoiceItem]:
    """Two items per article (own summary first, second) in every condition."""
    from emarena.defenses.builders.sgtr import DETECTION_SYSTEM, DETECTION_USER, ORDERS

    sr = suite.self_recognition
    assert sr is not None
    items = []
    several = sr.other_sources is not None
    for a in articles:
        text = a.text[: preset.max_prompt_chars]
        for src in sr.sources:
            other = others[(src, a.id)] if several else others[a.id]
            for order in ORDERS:
                own_pos = "1" if order == "own-first" else "2"
                s1, s2 = (own[a.id], other) if own_pos == "1" else (other, own[a.id])
                user = DETECTION_USER.format(article=text, summary1=s1, summary2=s2)
                item_id = f"{a.id}/{src}/{order}" if several else f"{a.id}/{order}"
                for cond in suite.conditions:
                    msgs = compose_messages(cond, user,
                                            default_system=model_spec.default_system_prompt,
                                            task_system=DETECTION_SYSTEM)
                    if msgs is None:
                        continue
                    items.append(ChoiceItem(eval_set=sr.eval_set, item_id=item_id,
                                            condition=cond, messages=tuple(msgs),
                                            options=SELF_RECOGNITION_OPTIONS, correct=own_pos))
    return items


# --------------------------------------------------------------------------------------------
# Capability
# --------------------------------------------------------------------------------------------

LETTERS = ("A", "B", "C", "D")


def truthfulqa_items(
    suite: EvalSuite, model_spec: Any, preset: Any, cs: ChoiceSet
) -> list[ChoiceItem]:
    """TruthfulQA as A/B: the correct answer's position is seeded and balanced over the items."""
    from emarena import data
    from emarena.data.records import BinaryChoice

    recs = [r for r in data.load(cs.dataset) if isinstance(r, BinaryChoice)]
    recs = cap(recs, preset.max_eval_questions, purpose=f"items:{cs.eval_set}",
               seed=suite.selection_seed)
    positions = balanced_positions(len(recs), 2, purpose=cs.eval_set, seed=suite.selection_seed)
    items = []
    for r, pos in zip(recs, positions, strict=True):
        a, b = (r.correct, r.incorrect) if pos == 0 else (r.incorrect, r.correct)
        user = cs.prompt.format(question=r.question, A=a, B=b)
        for cond in suite.conditions:
            msgs = compose_messages(cond, user, default_system=model_spec.default_system_prompt)
            if msgs is None:
                continue
            items.append(ChoiceItem(eval_set=cs.eval_set, item_id=r.id, condition=cond,
                                    messages=tuple(msgs), options=LETTERS[:2],
                                    correct=LETTERS[pos]))
    return items


def mmlu_fewshot_prompt(cs: ChoiceSet, rec: Any, shots: Sequence[Any]) -> str:
    """lm-evaluation-harness's MMLU prompt as plain text: the subject's description, the solved
    examples (each question + " " + its answer letter), "\n\n" between them, then the question
    ending in "Answer:" (its default `mmlu` task config)."""
    def text(r: Any) -> str:
        return cs.prompt.format(question=r.question.strip(),
                                **dict(zip(LETTERS, r.choices, strict=True)))

    solved = [f"{text(s)} {LETTERS[s.answer]}" for s in shots]
    return (cs.description.format(subject=rec.subject.replace("_", " "))
            + "\n\n".join([*solved, text(rec)]))


def mmlu_items(suite: EvalSuite, model_spec: Any, preset: Any, cs: ChoiceSet) -> list[ChoiceItem]:
    """MMLU as A-D, the choices in MMLU's own order: zero-shot in the chat template (v1), or
    few-shot plain text as lm-evaluation-harness scores it (v2, `chat_template: false`)."""
    from emarena import data
    from emarena.data.records import MultipleChoice

    recs = [r for r in data.load(cs.dataset) if isinstance(r, MultipleChoice)]
    recs = [r for r in recs if len(r.choices) == 4]
    recs = cap(recs, preset.max_eval_questions, purpose=f"items:{cs.eval_set}",
               seed=suite.selection_seed)
    items = []
    if not cs.chat_template:
        shots_by_subject: dict[str, list[Any]] = {}
        if cs.fewshot:
            for s in data.load(cs.fewshot_dataset):  # type: ignore[arg-type]
                if isinstance(s, MultipleChoice) and len(s.choices) == 4:
                    shots_by_subject.setdefault(s.subject, []).append(s)
        options = tuple(cs.option_prefix + letter for letter in LETTERS)
        for r in recs:
            prompt = mmlu_fewshot_prompt(cs, r, shots_by_subject.get(r.subject, [])[: cs.fewshot])
            for cond in suite.conditions:  # one prompt, recorded under every condition
                items.append(ChoiceItem(
                    eval_set=cs.eval_set, item_id=r.id, condition=cond,
                    messages=(ChatMessage(role="user", content=prompt),), options=options,
                    correct=options[r.answer], raw_prompt=prompt))
        return items
    for r in recs:
        user = cs.prompt.format(question=r.question, subject=r.subject.replace("_", " "),
                                **dict(zip(LETTERS, r.choices, strict=True)))
        for cond in suite.conditions:
            msgs = compose_messages(cond, user, default_system=model_spec.default_system_prompt)
            if msgs is None:
                continue
            items.append(ChoiceItem(eval_set=cs.eval_set, item_id=r.id, condition=cond,
                                    messages=tuple(msgs), options=LETTERS,
                                    correct=LETTERS[r.answer]))
    return items


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score_items(
    backend: Any,
    items: Sequence[ChoiceItem],
    store: RowStore[ChoiceScore],
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Score every item not yet in `store` and append one ChoiceScore row each."""
    from tqdm import tqdm

    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("two choice items share an id")
    pending = [it for it in items if it.id not in store]
    existing = len(items) - len(pending)
    for it in items:
        done = store.get(it.id)
        if done is not None and (done.correct != it.correct or done.options != list(it.options)):
            raise ValueError(f"{store.path} already holds {it.id!r} for another item "
                             "(other options or answer); write to a fresh file")
    groups: dict[tuple[tuple[str, ...], str], list[ChoiceItem]] = {}
    for it in pending:
        groups.setdefault((it.options, it.answer_prefix), []).append(it)
    scored = 0
    with tqdm(total=len(pending), desc=f"choices ({backend.name})", unit="item", leave=False,
              disable=None if progress is None else not progress) as bar:
        for (options, prefix), group in groups.items():
            for start in range(0, len(group), backend.chunk_size):
                chunk = group[start : start + backend.chunk_size]
                prompts = [it.raw_prompt if it.raw_prompt is not None
                           else backend.render(it.messages, it.condition) for it in chunk]
                unique = list(dict.fromkeys(prompts))  # a plain-text prompt is scored once
                got = dict(zip(unique, backend.choice_probs(unique, list(options),
                                                            answer_prefix=prefix), strict=True))
                res = [got[p] for p in prompts]
                rows = []
                for it, (probs, mass) in zip(chunk, res, strict=True):
                    chosen = max(options, key=lambda o: probs[o])
                    rows.append(ChoiceScore(
                        id=it.id, eval_set=it.eval_set, item_id=it.item_id,
                        condition=it.condition, options=list(options), correct=it.correct,
                        probs=probs, mass=mass, chosen=chosen,
                    ))
                store.append(rows)
                scored += len(rows)
                bar.update(len(chunk))
    return {"items": len(items), "existing": existing, "scored": scored}


def run_choices(
    backend: Any,
    out_dir: Path,
    suite: EvalSuite,
    model_spec: Any,
    preset: Any,
    *,
    choices_file: str = "choices.jsonl",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Build and score every forced-choice set of the suite into `out_dir/choices.jsonl`."""
    out_dir = Path(out_dir)
    store: RowStore[ChoiceScore] = RowStore(out_dir / choices_file, ChoiceScore)
    items: list[ChoiceItem] = []
    stats: dict[str, Any] = {"sets": {}, "skipped": []}
    sr = suite.self_recognition
    if sr is not None:
        articles, others, left_out = select_articles(sr, preset, suite.selection_seed)
        from emarena.defenses.builders.sgtr import summary_prompt

        system, template = summary_prompt(sr.summary_prompt, sr.response_type)
        own, own_stats = own_summaries(
            backend, system, template, articles,
            {a.id: a.text[: preset.max_prompt_chars] for a in articles},
            max_new_tokens=preset.sgtr_max_new_tokens,
            store=RowStore(out_dir / OWN_SUMMARIES, OwnSummary), progress=progress,
        )
        sr_items = self_recognition_items(suite, model_spec, preset, articles, own, others)
        items += sr_items
        stats["sets"][sr.eval_set] = {"articles": len(articles), "items": len(sr_items),
                                      "articles_left_out": left_out,
                                      "own_summaries": own_stats}
    cap_sets = [(suite.capability.truthfulqa, truthfulqa_items),
                (suite.capability.mmlu, mmlu_items)]
    for cs, build in cap_sets:
        if cs is None:
            continue
        try:
            got = build(suite, model_spec, preset, cs)
        except DataError as e:
            if cs.required:
                raise
            stats["skipped"].append({"eval_set": cs.eval_set, "reason":
                                     f"dataset {cs.dataset!r} unavailable: {e.what}"})
            continue
        items += got
        stats["sets"][cs.eval_set] = {"items": len(got)}
    if not model_spec.default_system_prompt and "default-system" in suite.conditions:
        stats["skipped"].append({"eval_set": "*", "condition": "default-system", "reason":
                                 f"model {model_spec.id!r} has no default system prompt"})
    stats.update(score_items(backend, items, store, progress=progress))
    return stats
