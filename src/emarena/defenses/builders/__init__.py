"""Data builders of the defense kinds: (params, BuildContext) -> the defense stage's chat records.

- `sgtr.py`: self-generated text recognition (`build_sgtr`) and its corrupted-label control
  (`build_sgtr_corrupted`); generates with the model entering the defense stage.
- `simple.py`: builders that only read registered datasets: `build_correct_domain`,
  `build_general_knowledge`, `build_word_counting`.

The kinds register these lazily as "emarena.defenses.builders.<module>:<function>", so importing
this package must stay light (no torch): it holds only the helpers every builder shares.

Shared conventions, so every defense is built the same way:

* Budget: a builder returns exactly `ctx.n_examples` records or raises a `ConfigError` that says
  why (pool too small, budget not divisible, ...). Never fewer, never silently.
* Determinism: every random choice draws from `seeded_rng(purpose, ctx.seed)`, a
  `random.Random` seeded with a string (hashed with sha512 by Python, so independent of
  PYTHONHASHSEED and of the process).
* Exclusion: `ctx.exclude_ids` holds ids the evaluation reserves. An id may be qualified with its
  dataset, `"<dataset id>:<record id>"` (e.g. `"truthfulqa:12"`, `"xsum-articles:35232142"`),
  which excludes that record of that dataset only; an unqualified id excludes the record with
  that id in whatever dataset the builder draws from. Prefer the qualified form.
* Provenance: each builder writes `ctx.work_dir/build.json` (what it used, counts, label
  distribution) last, atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from emarena.data.records import ChatRecord
from emarena.errors import ConfigError

T = TypeVar("T")

BUILD_JSON = "build.json"

__all__ = [
    "BUILD_JSON",
    "examples_sha256",
    "is_excluded",
    "params_dict",
    "seeded_rng",
    "take_budget",
    "write_json_atomic",
]


def seeded_rng(purpose: str, seed: int) -> random.Random:
    """A private random stream for one purpose of one build (stable across processes)."""
    return random.Random(f"emarena:{purpose}:{seed}")


def is_excluded(dataset_id: str, record_id: str, exclude_ids: Iterable[str]) -> bool:
    """True if `record_id` of `dataset_id` is reserved (plain or `dataset:id` form)."""
    ex = exclude_ids if isinstance(exclude_ids, (set, frozenset)) else frozenset(exclude_ids)
    return record_id in ex or f"{dataset_id}:{record_id}" in ex


def take_budget(pool: Sequence[T], n: int, *, what: str, fix: str) -> list[T]:
    """The first `n` of `pool` (already in seeded order), or a ConfigError if it is too small."""
    if n < 1:
        raise ConfigError(f"the defense budget n_examples={n} must be at least 1",
                          fix="set a positive n_examples in the preset")
    if len(pool) < n:
        raise ConfigError(
            f"{what}: only {len(pool)} usable records for a budget of n_examples={n}",
            fix=fix,
        )
    return list(pool[:n])


def examples_sha256(records: Sequence[ChatRecord]) -> str:
    """sha256 of the records as canonical JSON lines, in order (recorded in build.json)."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.model_dump(mode="json"), sort_keys=True,
                            ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON via a temp file + rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def params_dict(params: Any) -> dict[str, Any]:
    """The params as JSON-able data (pydantic models; anything else via vars)."""
    dump = getattr(params, "model_dump", None)
    return dump(mode="json") if callable(dump) else dict(vars(params))
