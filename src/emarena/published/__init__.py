"""Published results: a paper's own raw outputs, recomputed into result records.

    emarena published list                        the sources and where their files are
    emarena published list sgtr-em                each published model -> its cell, and the
                                                  files that are not imported (and why)
    emarena published import sgtr-em --out DIR [--rule release-plot]

A source's files are registered datasets (role `published` in datasets.yaml), so they resolve
mirror -> cache -> download and are sha256-checked like every other file. Its numbers are
computed by the benchmark's own metric code from the raw answers, scores and choices, never
copied from a paper's table. Every record carries a `published` block (where each number came
from, commit and sha256 of each file, how the source produced it) and is never official: the
leaderboard shows it under Source = published, beside the measured rows, unranked.

    names.py    the seed release's model names -> cells (regime, defense, seed)
    sgtr_em.py  the seed release (atagade/sgtr-em): reading, rows, records, its quirks

Records are written in the results dataset's layout, `<model>/<em_dataset>/<defense>/
<cell_id>.json` with `<cell_id>.samples.jsonl` (the published answers with their published
scores) beside it, so `leaderboard/app.py --results-dir DIR` shows them as they are.

Torch-free (numpy for the metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emarena.errors import EmArenaError


@dataclass(frozen=True)
class PublishedSource:
    """A paper whose published outputs can be imported."""

    name: str
    description: str
    citation: str
    datasets: tuple[str, ...]
    """Registry ids of its files (datasets.yaml, role published)."""
    module: str
    """The module that reads it: `read_release(...)` and `build_records(release, ...)`."""


SOURCES: dict[str, PublishedSource] = {
    "sgtr-em": PublishedSource(
        name="sgtr-em",
        description="The seed paper's release: Qwen2.5-32B-Instruct on unpopular aesthetics "
        "(EM only, EM without the identity prompt, reversal and prevention with SGTR, random-"
        "label SGTR, word counting, MMLU, MEDCORR, FINCORR; one GPT-4.1 file): EM answers "
        "judged by GPT-4o, TruthfulQA and self-recognition choices.",
        citation="Self-Recognition Finetuning can Prevent and Reverse Emergent Misalignment "
        "(github.com/atagade/sgtr-em)",
        datasets=("sgtr-em-em-eval", "sgtr-em-truthfulqa-answers", "sgtr-em-self-recognition"),
        module="emarena.published.sgtr_em",
    ),
}


def get_source(name: str) -> PublishedSource:
    if name not in SOURCES:
        from emarena.registry import did_you_mean

        raise EmArenaError(f"unknown published source {name!r}",
                           fix=f"{did_you_mean(name, list(SOURCES))}use one of: "
                           f"{', '.join(SOURCES)} (`emarena published list`)")
    return SOURCES[name]


@dataclass
class ImportSummary:
    """What `import_source` wrote and left out."""

    written: list[Path]
    """Result files written (a samples.jsonl beside each that has answers)."""
    records: list  # list[sgtr_em.Record]
    skipped: list  # list[sgtr_em.Skipped]


def import_source(
    name: str,
    out: Path,
    *,
    rules: Sequence[str] = ("suite",),
    mirror: Path | None = None,
    cache: Path | None = None,
    allow_download: bool = True,
    n_resamples: int = 1000,
    rng_seed: int = 0,
) -> ImportSummary:
    """Read a source's registered files, build its records and write them under `out`."""
    import importlib

    from emarena.eval.result import write_choices, write_result
    from emarena.eval.rows import dump_jsonl
    from emarena.hub import result_base

    reader = importlib.import_module(get_source(name).module)
    release = reader.read_release(mirror=mirror, cache=cache, allow_download=allow_download)
    records = reader.build_records(release, rules=rules, n_resamples=n_resamples,
                                   rng_seed=rng_seed)
    written = []
    for rec in records:
        base = Path(out) / result_base(rec.result)
        written.append(write_result(base.with_name(base.name + ".json"), rec.result))
        if rec.samples:
            dump_jsonl(base.with_name(base.name + ".samples.jsonl"), rec.samples)
        if rec.choices:
            write_choices(base.with_name(base.name + ".choices.jsonl"), rec.choices,
                          rec.result.cell.seed)
    return ImportSummary(written, records, release.skipped)


__all__ = ["SOURCES", "ImportSummary", "PublishedSource", "get_source", "import_source"]
