"""Reading a source's registered files: each file with its pin and its records.

Shared by the importers (`sgtr_em.py`), judge calibration and the log-likelihood contrast set,
which all read the published judged answers (`JudgedAnswer` records of the datasets in
`JUDGED_ANSWERS`). Resolution is the registry's: mirror -> cache -> download, sha256-checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from emarena.data.records import JudgedAnswer
from emarena.data.spec import FileSpec
from emarena.eval.result import PublishedFile

JUDGED_ANSWERS = ("sgtr-em-em-eval", "betley-judged-answers")
"""Datasets of answers published with GPT-4o's scores: the seed release's EM tables (text
mode) and Betley et al.'s examples (top-20 logprobs)."""


@dataclass
class SourceFile:
    """One registered file and its records."""

    dataset: str
    spec: FileSpec
    records: list[Any]

    @property
    def key(self) -> str:
        """`<dataset>/<part>` (or the dataset id of a one-file dataset)."""
        return f"{self.dataset}/{self.spec.part}" if self.spec.part else self.dataset

    def pin(self, holds: Literal["em-answers", "truthfulqa", "self-recognition"]) -> PublishedFile:
        src = self.spec.src
        return PublishedFile(dataset=self.dataset, part=self.spec.part, repository=src.repo,
                             commit=src.revision, path=src.path, sha256=self.spec.sha256,
                             holds=holds)


def read_dataset(dataset_id: str, *, mirror: Path | None = None, cache: Path | None = None,
                 allow_download: bool = True) -> list[SourceFile]:
    """Every file of a registered dataset, resolved and read through its adapter."""
    from emarena.data import ADAPTERS, get_spec, resolve

    ds = get_spec(dataset_id)
    adapter = ADAPTERS.get(ds.adapter)
    out = []
    for f in ds.files:
        r = resolve(ds, f, mirror=mirror, cache=cache, allow_download=allow_download)
        out.append(SourceFile(ds.id, f, list(adapter(r.path, part=f.part, **ds.adapter_args))))
    return out


def judged_answers(datasets: Sequence[str] = JUDGED_ANSWERS, *, mirror: Path | None = None,
                   cache: Path | None = None, allow_download: bool = True
                   ) -> Iterator[tuple[SourceFile, JudgedAnswer]]:
    """(file, answer) for every published judged answer, in registry order."""
    for dataset in datasets:
        for sf in read_dataset(dataset, mirror=mirror, cache=cache,
                               allow_download=allow_download):
            for r in sf.records:
                if not isinstance(r, JudgedAnswer):
                    raise TypeError(f"{sf.key}: {type(r).__name__} records, not JudgedAnswer")
                yield sf, r
