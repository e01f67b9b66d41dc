"""Datasets: the registry (`spec`), resolution (`fetch`), adapters and typed records.

Public API::

    from emarena import data
    rows = data.load("insecure")                 # list[ChatRecord]
    summaries = data.load("xsum-summaries", parts=["claude-21"])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from emarena.data.adapters import ADAPTERS
from emarena.data.fetch import Resolved, locate, resolve
from emarena.data.records import (
    AnyRecord,
    Article,
    BinaryChoice,
    ChatMessage,
    ChatRecord,
    EvalQuestion,
    MultipleChoice,
    PromptConfig,
    PromptOnly,
    Record,
    Summary,
)
from emarena.data.spec import DatasetSpec, FileSpec, Source, all_specs, get_spec
from emarena.errors import DataError

__all__ = [
    "ADAPTERS",
    "AnyRecord",
    "Article",
    "BinaryChoice",
    "ChatMessage",
    "ChatRecord",
    "DatasetSpec",
    "EvalQuestion",
    "FileSpec",
    "MultipleChoice",
    "PromptConfig",
    "PromptOnly",
    "Record",
    "Resolved",
    "Source",
    "Summary",
    "all_specs",
    "get_spec",
    "iter_records",
    "load",
    "locate",
    "resolve",
]


def _select(ds: DatasetSpec, parts: Iterable[str] | None) -> list[FileSpec]:
    if parts is None:
        return list(ds.files)
    return [ds.file(p) for p in parts]


def iter_records(
    dataset_id: str,
    *,
    parts: Iterable[str] | None = None,
    mirror: Path | None = None,
    cache: Path | None = None,
    allow_download: bool = True,
) -> Iterator[Record]:
    """Yield canonical records of `dataset_id` (optionally only some `parts`)."""
    ds = get_spec(dataset_id)
    adapter = ADAPTERS.get(ds.adapter)
    for f in _select(ds, parts):
        r = resolve(ds, f, mirror=mirror, cache=cache, allow_download=allow_download)
        try:
            yield from adapter(r.path, part=f.part, **ds.adapter_args)
        except DataError:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise DataError(
                f"dataset {ds.id!r}: adapter {ds.adapter!r} could not read {r.path}: {e}",
                where=str(r.path),
                fix="the file matches its sha256, so this is an adapter bug: please report it",
            ) from e


def load(
    dataset_id: str,
    *,
    parts: Iterable[str] | None = None,
    mirror: Path | None = None,
    cache: Path | None = None,
    allow_download: bool = True,
) -> list[Record]:
    """All canonical records of `dataset_id` as a list (see `iter_records`)."""
    return list(
        iter_records(
            dataset_id, parts=parts, mirror=mirror, cache=cache, allow_download=allow_download
        )
    )
