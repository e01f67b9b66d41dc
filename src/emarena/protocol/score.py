"""`emarena score`: plan a submission's cells, train every missing stage, then evaluate.

The same command, run again, resumes: finished stages are skipped (DONE.json with matching
inputs), an interrupted stage is redone from its last durable point (e.g. SGTR's own summaries
are kept row by row), and stages shared between cells are trained once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from emarena import settings
from emarena.errors import ConfigError
from emarena.protocol.cell import DEFENSE_REGIMES, Cell, DefenseRef, ModelRef, Regime
from emarena.protocol.run import Run
from emarena.protocol.stages import (
    StageContext,
    StageSpec,
    is_done,
    run_stage,
    stages_for,
    training_sha256,
    write_json_atomic,
)


@dataclass
class ScoreReport:
    run: Path
    cells: list[Cell]
    stages: list[StageSpec]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def default_run_dir(submission: str, model: str, em_dataset: str, preset: str) -> Path:
    """Deterministic, so re-running the same command resumes the same run."""
    return Path("runs") / f"{submission}__{model}__{em_dataset}__{preset}"


def plan_cells(
    *,
    submission,
    model: ModelRef,
    em_dataset: str,
    regimes: list[Regime],
    seeds: list[int],
    preset: str,
    suite: str = settings.DEFAULT_SUITE,
) -> list[Cell]:
    """The defense's cells in each requested regime, plus the `base` and `em` controls."""
    from emarena.defenses import DEFENSES

    kind = DEFENSES.get(submission.defense.kind)
    params = kind.params.model_validate(submission.defense.params).model_dump(mode="json")
    ref = DefenseRef(
        name=submission.name,
        kind=submission.defense.kind,
        params=params,
        division=submission.division,
        training=dict(submission.training or {}),
        config_hash=submission.config_hash,
    )
    cells: list[Cell] = []
    for seed in seeds:
        common = dict(suite=suite, model=model, em_dataset=em_dataset, seed=seed, preset=preset)
        cells.append(Cell(regime="base", **common))
        cells.append(Cell(regime="em", **common))
        if ref.kind == "none":
            continue  # the control: its numbers are the em / base cells
        for r in regimes:
            cells.append(Cell(regime=r, defense=ref, **common))
    return cells


def check_em_dataset(em_dataset: str, *, field: str) -> None:
    """`em_dataset` must be a registered EM-induction dataset (`field` names where it came from)."""
    from emarena import data

    ds = data.get_spec(em_dataset)
    if ds.role != "em":
        ems = ", ".join(i for i, d in data.all_specs().items() if d.role == "em")
        raise ConfigError(
            f"{field} {em_dataset!r} has role {ds.role!r}, not 'em'",
            fix=f"use an EM-induction dataset: {ems}",
        )


def check_regimes(sub, wanted: list[str], *, where: str, field: str = "--regimes") -> list[str]:
    """Every requested regime must be a defense regime that the submission supports."""
    for r in wanted:
        if r not in DEFENSE_REGIMES:
            raise ConfigError(
                f"{field}: {r!r} is not a defense regime",
                fix=f"use any of {', '.join(DEFENSE_REGIMES)} "
                "(the base and em controls are always run)",
            )
        if sub.regimes and r not in sub.regimes:
            raise ConfigError(
                f"{where}: the submission does not support regime {r!r}",
                fix=f"its regimes are {', '.join(sub.regimes)}; request one of those",
            )
    return wanted


def plan_stages(
    run: Run | None, cells: list[Cell], recipe_sha256: str
) -> tuple[dict[str, StageSpec], dict[str, list[str]]]:
    """Write every cell's cell.json (and stage links) into `run` (nothing with None: a dry
    plan); return the unique stages in dependency order (a stage's parent always comes first)
    and each cell's stage keys.

    Stages are content-addressed, so cells that need the same training (the `em` control and
    every reversal cell of a model, EM dataset and seed) get one stage."""
    ordered: dict[str, StageSpec] = {}
    stages_of: dict[str, list[str]] = {}
    for cell in cells:
        stages = stages_for(cell, recipe_sha256)
        stages_of[cell.id] = [s.key for s in stages]
        if run is not None:
            run.write_cell(cell, stages)
        for s in stages:
            ordered.setdefault(s.key, s)
    return ordered, stages_of


def describe_stage(spec: StageSpec) -> str:
    what = spec.em_dataset if spec.kind == "em" else spec.defense.kind  # type: ignore[union-attr]
    after = f" after {spec.parent}" if spec.parent else ""
    return f"{spec.key} ({spec.kind}: {what}{after})"


def train_stages(
    ctx: StageContext, stages: list[StageSpec], *, recipe, preset, report, echo=print
) -> None:
    """Train, in order, every stage of `stages` that is not done (parents come first);
    record each key in `report.trained` or `report.skipped`."""
    for i, spec in enumerate(stages, start=1):
        if is_done(ctx, spec):
            echo(f"[{i}/{len(stages)}] {describe_stage(spec)}: done, skipped")
            report.skipped.append(spec.key)
            continue
        echo(f"[{i}/{len(stages)}] {describe_stage(spec)}: training")
        run_stage(ctx, spec, recipe=recipe, preset=preset)
        report.trained.append(spec.key)


def score(
    submission_path: Path,
    *,
    model_id: str | None = None,
    em_dataset: str = "insecure",
    regimes: list[str] | None = None,
    seeds: list[int] | None = None,
    preset_name: str = "paper",
    run_dir: Path | None = None,
    judge: str | None = None,
    backend: str = "transformers",
    evaluate: bool = True,
    echo=print,
) -> ScoreReport:
    from emarena import models
    from emarena.submission import load_submission
    from emarena.train import get_preset, load_recipe

    t0 = time.time()
    sub = load_submission(submission_path)
    model_id = model_id or models.default_model_id()
    mspec = models.get_spec(model_id)
    model_id = mspec.id  # a Hub repo id (Qwen/Qwen2.5-7B-Instruct) names its registry entry
    check_em_dataset(em_dataset, field="--em-dataset")
    wanted = check_regimes(
        sub, list(regimes or sub.regimes or DEFENSE_REGIMES), where=str(submission_path)
    )
    recipe = load_recipe()
    preset = get_preset(preset_name)
    seeds = seeds or [0]
    ref = ModelRef(id=model_id, revision=mspec.revision)
    cells = plan_cells(
        submission=sub,
        model=ref,
        em_dataset=em_dataset,
        regimes=wanted,
        seeds=seeds,
        preset=preset_name,
    )
    run = Run(Path(run_dir or default_run_dir(sub.name, model_id, em_dataset, preset_name)))
    run.root.mkdir(parents=True, exist_ok=True)
    rsha = training_sha256(recipe, preset)

    ordered, stages_of = plan_stages(run, cells, rsha)
    write_json_atomic(
        run.root / "plan.json",
        {
            "schema_version": 1,
            "submission": str(submission_path),
            "submission_name": sub.name,
            "config_hash": sub.config_hash,
            "model": ref.model_dump(),
            "em_dataset": em_dataset,
            "regimes": wanted,
            "seeds": seeds,
            "preset": preset_name,
            "backend": backend,
            "cells": [c.id for c in cells],
            "stages": list(ordered),
        },
    )
    run.log("score_start", cells=len(cells), stages=len(ordered))
    echo(f"run {run.root}: {len(cells)} cells, {len(ordered)} training stages")
    for c in cells:
        echo(f"  cell {c.short_id}  {c.label}")

    base_dir = models.pull(model_id)
    ctx = StageContext(stages_dir=run.stages_dir, base_model_dir=base_dir, log=run.log)
    report = ScoreReport(run=run.root, cells=cells, stages=list(ordered.values()))
    train_stages(
        ctx, list(ordered.values()), recipe=recipe, preset=preset, report=report, echo=echo
    )
    run.log("score_trained", trained=report.trained, skipped=report.skipped)
    echo(f"training complete: {len(report.trained)} stage(s) trained, {len(report.skipped)} reused")
    if evaluate:
        from emarena.eval.report import write_report
        from emarena.protocol.evaluate import evaluate as run_evaluate

        report.results = run_evaluate(
            run,
            cells,
            stages_of,
            base_dir=base_dir,
            preset=preset,
            judge_spec=judge,
            backend=backend,
            echo=echo,
        )
        write_report(run.root, echo=echo)
        echo(f"report: {run.root / 'report.md'}")
    else:
        echo("evaluation skipped (--no-eval): no result records were written")
    report.seconds = time.time() - t0
    echo(f"done in {report.seconds:.0f} s; `emarena status {run.root}` shows every cell.")
    return report
