"""Judge a stream of generations into `judgements.jsonl`, resumably and with the cache.

For each generation and each rubric that has a template for it, the judge prompt is rendered
({question} = the last user turn the model answered, {answer} = its answer) and becomes one
`Judgement` row with id "<generation_id>#<rubric>":

  1. a row whose id is already in `out` is skipped (a rerun resumes where a kill stopped it);
  2. a prompt the judgement cache knows is answered from the cache (no call);
  3. the rest is sent to the judge in batches of `batch_size` distinct prompts (identical
     prompts in a batch, e.g. two samples that gave the same answer, are sent once); each
     batch's results go to the cache first, then to `out`, so a kill loses at most one batch.

Unscored is recorded, never zero: a row with `score=None` carries its reason. A *transient*
failure (HTTP error, timeout, connection error, malformed body) is not written by default:
it is counted in `stats.failed` and a rerun of the same command asks again. The stage that
calls this decides when to stop retrying: pass `record_transient=True` on the last attempt to
write those as unscored rows (so they are counted as unscored, not silently missing).

Templates:
  score_templates    0..100 rubrics ("aligned", "coherent"). Either a mapping
                     question key -> {rubric: template}, where the key is looked up as
                     "<eval_set>/<question_id>" first and then "<question_id>"
                     (`templates_by_question` builds it from `EvalQuestion`s), or a callable
                     Generation -> {rubric: template}.
  extract_templates  text rubrics ("identity_name", ...), `Judge.extract`. Either one mapping
                     {rubric: template} applied to every generation passed in, or a callable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from emarena.data.records import EvalQuestion
from emarena.eval.judges.base import Judge, JudgeRequest, JudgeResult, prompt_sha256, render_prompt
from emarena.eval.judges.cache import JudgementCache, Kind
from emarena.eval.rows import Generation, Judgement, RowStore

TemplatesFor = Callable[[Generation], Mapping[str, str]]


@dataclass
class JudgeRunStats:
    """What one `judge_generations` call did. Row counts unless said otherwise."""

    requested: int = 0
    """(generation, rubric) pairs that had a template."""
    already_done: int = 0
    """Skipped: the Judgement id was already in `out` (or repeated in the input)."""
    cached: int = 0
    """Answered from the judgement cache."""
    called: int = 0
    """Distinct prompts sent to the judge (calls, not rows)."""
    prompt_chars: int = 0
    """Characters of the prompts sent (the calls' input size; tokens ~ chars / 3.6)."""
    deduplicated: int = 0
    """Rows answered by another row's call in the same batch (identical prompt)."""
    scored: int = 0
    """Rows written with a score (or an extraction label)."""
    unscored: Counter = field(default_factory=Counter)
    """Rows written with score None, by reason."""
    failed: Counter = field(default_factory=Counter)
    """Rows NOT written: transient failures, by reason (rerun to retry them)."""

    @property
    def written(self) -> int:
        return self.scored + sum(self.unscored.values())

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unscored"] = dict(self.unscored)
        d["failed"] = dict(self.failed)
        return d


def question_of(generation: Generation) -> str:
    """The question the answer answers: the last user turn of the conversation sent."""
    for m in reversed(generation.messages):
        if m.role == "user":
            return m.content
    raise ValueError(f"generation {generation.id!r} has no user turn")


def templates_by_question(
    questions: Iterable[EvalQuestion], *, eval_set: str | None = None,
    rubrics: Iterable[str] | None = None,
) -> dict[str, dict[str, str]]:
    """`{question key: {rubric: template}}` from question records (their `judge_prompts`).

    The key is "<eval_set>/<id>" when `eval_set` is given (needed when generations of several
    sets with overlapping question ids are judged in one call), else the question id.
    """
    keep = set(rubrics) if rubrics is not None else None
    out: dict[str, dict[str, str]] = {}
    for q in questions:
        key = f"{eval_set}/{q.id}" if eval_set else q.id
        out[key] = {r: t for r, t in q.judge_prompts.items() if keep is None or r in keep}
    return out


def _lookup(
    templates: Mapping[str, Mapping[str, str]] | TemplatesFor | None,
    g: Generation,
    *,
    per_question: bool,
) -> Mapping[str, str]:
    if templates is None:
        return {}
    if callable(templates):
        return templates(g)
    if not per_question:
        return templates  # type: ignore[return-value]
    found = templates.get(f"{g.eval_set}/{g.question_id}")
    if found is None:
        found = templates.get(g.question_id)
    return found or {}


@dataclass
class _Pending:
    prompt: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    """(judgement id, generation id, rubric) answered by this prompt."""


def judge_generations(
    generations: Iterable[Generation],
    judge: Judge,
    out: RowStore[Judgement],
    *,
    score_templates: Mapping[str, Mapping[str, str]] | TemplatesFor | None = None,
    extract_templates: Mapping[str, str] | TemplatesFor | None = None,
    cache: JudgementCache | None = None,
    batch_size: int = 64,
    record_transient: bool = False,
    progress: Callable[[JudgeRunStats], None] | None = None,
) -> JudgeRunStats:
    """Judge every (generation, rubric) not yet in `out`; see the module docstring."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    stats = JudgeRunStats()
    pending: dict[tuple[Kind, str], _Pending] = {}
    queued: set[str] = set()

    def write(kind: Kind, sha: str, result: JudgeResult, rows: list[tuple[str, str, str]]) -> None:
        if not result.cacheable and not record_transient:
            stats.failed[result.unscored_reason or "unknown"] += len(rows)
            return
        out.append(
            Judgement(
                id=jid, generation_id=gid, rubric=rubric, judge=judge.id, prompt_sha256=sha,
                score=result.score, label=result.label, unscored_reason=result.unscored_reason,
                method=result.method, raw=result.raw,
            )
            for jid, gid, rubric in rows
        )
        if result.ok:
            stats.scored += len(rows)
        else:
            stats.unscored[result.unscored_reason] += len(rows)

    def flush() -> None:
        kinds: tuple[Kind, ...] = ("score", "extract")
        for kind in kinds:
            batch = [(sha, p) for (k, sha), p in pending.items() if k == kind]
            if not batch:
                continue
            requests = [JudgeRequest(key=sha, prompt=p.prompt) for sha, p in batch]
            call = judge.judge if kind == "score" else judge.extract
            results = call(requests)
            by_key = {r.key: r for r in results}
            if len(results) != len(requests) or set(by_key) != {r.key for r in requests}:
                raise RuntimeError(
                    f"judge {judge.id} broke its contract: {len(requests)} requests, "
                    f"{len(results)} results, {len(by_key)} distinct keys"
                )
            stats.called += len(requests)
            stats.prompt_chars += sum(len(r.prompt) for r in requests)
            if cache is not None:  # the cache first: a kill after this costs no repeated call
                cache.put_many(judge.id, [(sha, by_key[sha]) for sha, _ in batch], kind)
            for sha, p in batch:
                write(kind, sha, by_key[sha], p.rows)
        pending.clear()
        if progress is not None:
            progress(stats)

    passes: tuple[tuple[Kind, bool, Any], ...] = (
        ("score", True, score_templates),
        ("extract", False, extract_templates),
    )
    for g in generations:
        question = None
        for kind, per_question, templates in passes:
            for rubric, template in _lookup(templates, g, per_question=per_question).items():
                stats.requested += 1
                jid = Judgement.make_id(g.id, rubric)
                if jid in out or jid in queued:
                    stats.already_done += 1
                    continue
                if question is None:
                    question = question_of(g)
                try:
                    prompt = render_prompt(template, question, g.answer)
                except ValueError as e:
                    where = f"{g.eval_set}/{g.question_id} rubric {rubric!r}"
                    raise ValueError(f"{where}: {e}") from None
                sha = prompt_sha256(prompt)
                if cache is not None:
                    hit = cache.get(judge.id, sha, kind, key=sha)
                    if hit is not None:
                        stats.cached += 1
                        write(kind, sha, hit, [(jid, g.id, rubric)])
                        continue
                queued.add(jid)
                slot = pending.get((kind, sha))
                if slot is None:
                    slot = pending[(kind, sha)] = _Pending(prompt)
                else:
                    stats.deduplicated += 1
                slot.rows.append((jid, g.id, rubric))
                if len(pending) >= batch_size:
                    flush()
    flush()
    return stats
