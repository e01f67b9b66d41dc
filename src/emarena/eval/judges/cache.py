"""The judgement cache: a judge's answer to a prompt, kept across runs and cells.

Keyed by (judge id, sha256 of the rendered prompt): the same answer judged by the same judge
under the same rubric is the same prompt, so the base model's generations (shared by every
cell) and identical answers are judged once. Stored as one append-only JSONL file per judge
id under `<cache>/judgements/`, through `RowStore`, so a killed run loses at most the line it
was writing (a torn line is dropped when the file is next opened).

Only results a second call would reproduce are kept: scores, extraction labels, and the
deterministic unscored reasons (`low-probability-mass`, `no-logprobs-unparseable`,
`extraction-empty`). Transient failures (HTTP errors, timeouts, connection errors, malformed
bodies) are never cached, so a rerun asks the judge again.

Several processes may append to the same file: each line is one `write`, a duplicate line is
ignored on load (first wins), and a process does not see another's new lines until it reopens
the cache (the worst case is a repeated call, never a wrong answer).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from emarena import settings
from emarena.eval.judges.base import JudgeResult, Method
from emarena.eval.rows import Row, RowStore

Kind = Literal["score", "extract"]


class CachedJudgement(Row):
    """One cached judge answer. id = prompt sha256, suffixed "#extract" for extraction calls."""

    judge: str
    score: float | None
    label: str | None = None
    unscored_reason: str | None = None
    method: Method
    raw: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def make_id(prompt_sha256: str, kind: Kind) -> str:
        return prompt_sha256 if kind == "score" else f"{prompt_sha256}#extract"


def safe_file_name(judge_id: str) -> str:
    """A file name for `judge_id`: readable, filesystem-safe, and unique (a hash suffix)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", judge_id).strip("._")[:80] or "judge"
    return f"{slug}-{hashlib.sha256(judge_id.encode('utf-8')).hexdigest()[:12]}.jsonl"


class JudgementCache:
    """Persistent (judge id, prompt sha256) -> result; see the module docstring."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else settings.cache_dir() / "judgements"
        self._stores: dict[str, RowStore[CachedJudgement]] = {}

    def path_for(self, judge_id: str) -> Path:
        return self.root / safe_file_name(judge_id)

    def _store(self, judge_id: str) -> RowStore[CachedJudgement]:
        store = self._stores.get(judge_id)
        if store is None:
            store = self._stores[judge_id] = RowStore(self.path_for(judge_id), CachedJudgement)
        return store

    def get(
        self, judge_id: str, prompt_sha256: str, kind: Kind = "score", *, key: str = ""
    ) -> JudgeResult | None:
        """The cached result (with `key` as its key), or None on a miss."""
        row = self._store(judge_id).get(CachedJudgement.make_id(prompt_sha256, kind))
        if row is None or row.judge != judge_id:
            return None
        return JudgeResult(key, row.score, row.unscored_reason, row.method, dict(row.raw),
                           label=row.label)

    def put_many(
        self, judge_id: str, items: list[tuple[str, JudgeResult]], kind: Kind = "score"
    ) -> int:
        """Store `(prompt_sha256, result)` pairs whose result is cacheable; return how many."""
        rows = [
            CachedJudgement(
                id=CachedJudgement.make_id(sha, kind), judge=judge_id, score=r.score,
                label=r.label, unscored_reason=r.unscored_reason, method=r.method, raw=r.raw,
            )
            for sha, r in items
            if r.cacheable
        ]
        return self._store(judge_id).append(rows) if rows else 0

    def put(self, judge_id: str, prompt_sha256: str, result: JudgeResult,
            kind: Kind = "score") -> bool:
        return self.put_many(judge_id, [(prompt_sha256, result)], kind) == 1

    def __len__(self) -> int:
        return sum(len(s) for s in self._stores.values())
