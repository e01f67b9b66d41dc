"""Grids: every cell of models x EM datasets x defenses x regimes x seeds, run as one.

    grid = load_grid(Path("benchmark/suites/v1/grids/smoke.yaml"))
    run_grid(grid, executor="local", run_root=Path("runs"))            # in this process
    run_grid(grid, executor="ray", address="HOST:PORT", ...)            # on a Ray cluster

A grid is one run folder, `<run-root>/grid__<name>/`, laid out like an `emarena score` run
(plan.json, events.jsonl, cells/, stages/, evals/, report.md). All of its cells share one
`stages/` folder, and stages are content-addressed, so a stage needed by several cells (the EM
stage of a model, EM dataset and seed: the `em` control and every defense's reversal cell) is
trained once; the `base` and `em` control cells of all defenses are the same cells and are
evaluated once.

Executors:
  local  trains every missing stage in dependency order, then evaluates every cell, all in this
         process.
  ray    connects to an existing cluster (`ray.init(address=...)`) and submits each missing
         training stage as a Ray task with the grid's resource request for the preset's device
         (`resources.cuda` for GPU presets, `resources.cpu` otherwise); a stage's task takes its
         parent stage's task as an argument, so Ray starts it only once the parent is done. The
         generation of each evaluation (the model-heavy part) is a task too, chained after the
         stage whose weights it evaluates. Judging and metrics run in the driver: they are API
         calls and arithmetic, and the judge's key then never leaves the driver's environment.
         Every node must see the run folder and the model cache at the same paths (a shared
         file system); workers read their own environment (EMARENA_MIRROR, EMARENA_CACHE, ...).

Both executors set torch's thread count to the same explicit number for every stage and
generation (`resources.<device>.num_cpus`, which is also the Ray task's CPU request; Ray would
otherwise set OMP_NUM_THREADS per task, and CPU float results depend on the thread count), and
log it (`grid_task` events), so results are identical between executors for the same seeds.

Resume: rerunning the same command does only what is missing. A stage is skipped when its
DONE.json records the same inputs (emarena.protocol.stages); generation, judging and metrics
resume the same way (emarena.protocol.evaluate).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emarena import settings
from emarena.errors import ConfigError, EmArenaError
from emarena.protocol.cell import DEFENSE_REGIMES, Cell, ModelRef
from emarena.protocol.run import Run
from emarena.yamlio import invalid

Executor = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "ray")


# --------------------------------------------------------------------------------------------
# The grid file


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class TaskResources(_Strict):
    """What one training stage or generation asks of a Ray node, and its torch threads."""

    num_cpus: int = Field(ge=1, le=512)
    """CPU cores per task. It is also torch's thread count for every stage and generation, in
    every executor (so `local` and `ray` compute the same floats)."""
    num_gpus: float = Field(default=0, ge=0, le=64)
    """GPUs per task (0 for CPU presets)."""


class Resources(_Strict):
    cpu: TaskResources = TaskResources(num_cpus=2)
    """For presets whose `device` is cpu."""
    cuda: TaskResources = TaskResources(num_cpus=8, num_gpus=1)
    """For presets whose `device` is cuda."""


def _known(kind: str, value: str, known: list[str], fix: str):
    from difflib import get_close_matches

    close = get_close_matches(value, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return invalid(f"unknown {kind} {value!r}", f"{hint}{fix}: {', '.join(known)}")


class GridSpec(_Strict):
    """A grid file (benchmark/suites/<suite>/grids/*.yaml)."""

    schema_version: Literal[1] = 1
    """Version of the grid format."""
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    """The grid's name: its run folder is `<run-root>/grid__<name>`."""
    description: str = ""
    preset: str
    """Preset from recipe.yaml for every cell."""
    models: list[str] = Field(min_length=1)
    """Model registry ids (`emarena models list`)."""
    em_datasets: list[str] = Field(min_length=1)
    """EM-induction dataset ids (`emarena data list`, role em)."""
    defenses: list[str] = Field(min_length=1)
    """Submission folders. A relative path is looked up in the current folder, then in the
    checkout that holds the suite (so `submissions/sgtr` works from anywhere in it)."""
    regimes: list[str] = Field(min_length=1)
    """Defense regimes (defense, reversal, prevention); the base and em controls always run."""
    seeds: list[int] = Field(default=[0], min_length=1)
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation backend for evaluation."""
    resources: Resources = Resources()
    """Per-task resources by preset device (Ray requests; torch threads in both executors)."""

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str) -> str:
        from emarena.train.recipe import load_recipe

        names = list(load_recipe().presets)
        if v not in names:
            raise _known("preset", v, names, "use a preset of recipe.yaml")
        return v

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        from emarena import models

        ids = list(models.all_specs())
        for m in v:
            if m not in ids:
                raise _known("model", m, ids, "use a model registry id (`emarena models list`)")
        return _unique(v, "model")

    @field_validator("em_datasets")
    @classmethod
    def _em_datasets(cls, v: list[str]) -> list[str]:
        from emarena import data

        specs = data.all_specs()
        ems = [i for i, d in specs.items() if d.role == "em"]
        for d in v:
            if d not in ems:
                if d in specs:
                    raise invalid(
                        f"{d!r} has role {specs[d].role!r}, not 'em'",
                        f"use an EM-induction dataset: {', '.join(ems)}",
                    )
                raise _known("EM dataset", d, ems, "use an EM-induction dataset")
        return _unique(v, "EM dataset")

    @field_validator("defenses")
    @classmethod
    def _defenses(cls, v: list[str]) -> list[str]:
        return _unique(v, "defense")

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, v: list[str]) -> list[str]:
        for r in v:
            if r not in DEFENSE_REGIMES:
                raise invalid(
                    f"{r!r} is not a defense regime",
                    f"use any of {', '.join(DEFENSE_REGIMES)} "
                    "(the base and em controls are always run)",
                )
        return _unique(v, "regime")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise invalid("seeds must be >= 0", "use non-negative integers")
        return _unique(v, "seed")


def _unique(v: list, what: str) -> list:
    dup = sorted({str(x) for x in v if v.count(x) > 1})
    if dup:
        raise invalid(f"{what} listed twice: {', '.join(dup)}", "list each once")
    return v


@dataclass(frozen=True)
class Grid:
    spec: GridSpec
    path: Path
    defense_dirs: list[Path]
    """The submission folder of each entry of `spec.defenses`, resolved."""

    @property
    def name(self) -> str:
        return self.spec.name


def grids_dir(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / "grids"


def resolve_defense(entry: str, grid_path: Path) -> Path:
    """A grid's `defenses` entry -> the submission folder (see GridSpec.defenses)."""
    p = Path(entry).expanduser()
    tried = [p] if p.is_absolute() else [Path.cwd() / p, settings.benchmark_root().parent / p]
    for t in tried:
        if (t / "defense.yaml").is_file():
            return t
    raise ConfigError(
        f"{grid_path}: defenses: {entry!r} is not a submission folder (no defense.yaml)",
        where=[str(t) for t in tried],
        fix="list submission folders such as submissions/sgtr (`emarena validate` checks them)",
    )


def load_grid(path: Path) -> Grid:
    """Read and validate a grid file; every problem names the file, the line, the key and the
    fix. Each defense is resolved and validated as a submission, and must support every regime
    the grid asks for."""
    from emarena.protocol.score import check_regimes
    from emarena.submission import load_submission
    from emarena.yamlio import load_model

    path = Path(path)
    spec = load_model(path, GridSpec)
    dirs = [resolve_defense(d, path) for d in spec.defenses]
    names: dict[str, str] = {}
    for entry, d in zip(spec.defenses, dirs, strict=True):
        sub = load_submission(d)
        if sub.name in names:
            raise ConfigError(
                f"{path}: defenses: {entry!r} and {names[sub.name]!r} are both submission "
                f"{sub.name!r}",
                fix="list each submission once",
            )
        names[sub.name] = entry
        check_regimes(sub, list(spec.regimes), where=f"{path}: defenses: {entry!r}",
                      field=f"{path}: regimes")
    return Grid(spec=spec, path=path, defense_dirs=dirs)


# --------------------------------------------------------------------------------------------
# Planning


@dataclass
class GridPlan:
    grid: Grid
    run: Run
    cells: list[Cell]
    """Every cell once (the controls are shared by all defenses), in plan order."""
    stages: dict[str, Any]
    """Unique StageSpecs by key, parents before children."""
    stages_of: dict[str, list[str]]
    device: str
    resources: TaskResources

    @property
    def threads(self) -> int:
        return self.resources.num_cpus


def plan_grid(grid: Grid, run_dir: Path, *, write: bool = True) -> GridPlan:
    """Every cell of every (model, EM dataset, defense), deduplicated, and the unique stages.

    With `write`, the cells (cell.json, stage links) and plan.json are written into `run_dir`.
    """
    from emarena import models
    from emarena.protocol.score import plan_cells, plan_stages
    from emarena.protocol.stages import training_sha256, write_json_atomic
    from emarena.submission import load_submission
    from emarena.train import get_preset, load_recipe

    spec = grid.spec
    recipe = load_recipe()
    preset = get_preset(spec.preset)
    rsha = training_sha256(recipe, preset)
    subs = [load_submission(d) for d in grid.defense_dirs]
    cells: dict[str, Cell] = {}
    for name in spec.models:
        mspec = models.get_spec(name)  # a registry id, or a registered model's Hub repo id
        model_id = mspec.id
        ref = ModelRef(id=model_id, revision=mspec.revision)
        for em in spec.em_datasets:
            for sub in subs:
                for c in plan_cells(
                    submission=sub,
                    model=ref,
                    em_dataset=em,
                    regimes=list(spec.regimes),
                    seeds=list(spec.seeds),
                    preset=spec.preset,
                ):
                    cells.setdefault(c.id, c)
    cell_list = list(cells.values())
    run = Run(Path(run_dir).absolute())
    if write:
        run.root.mkdir(parents=True, exist_ok=True)
    ordered, stages_of = plan_stages(run if write else None, cell_list, rsha)
    if write:
        write_json_atomic(
            run.root / "plan.json",
            {
                "schema_version": 1,
                "grid": spec.name,
                "grid_file": str(grid.path),
                "grid_spec": spec.model_dump(mode="json"),
                "preset": spec.preset,
                "backend": spec.backend,
                "cells": [c.id for c in cell_list],
                "stages": list(ordered),
            },
        )
    device = "cuda" if preset.device.startswith("cuda") else "cpu"
    return GridPlan(
        grid=grid,
        run=run,
        cells=cell_list,
        stages=ordered,
        stages_of=stages_of,
        device=device,
        resources=getattr(spec.resources, device),
    )


def default_run_dir(run_root: Path, grid: Grid) -> Path:
    return Path(run_root) / f"grid__{grid.name}"


# --------------------------------------------------------------------------------------------
# Work units, the same in both executors (a Ray task calls these in a worker)


def set_threads(n: int) -> int:
    """Set torch's intra-op thread count to `n` explicitly; return what torch reports."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's OpenMP starts
    import torch

    torch.set_num_threads(n)
    return torch.get_num_threads()


def train_stage_unit(
    run_root: str, stage: dict, preset_name: str, threads: int, executor: str, *parents: Any
) -> dict:
    """Train one stage (skipped if done). `parents` are only there so Ray orders tasks."""
    from emarena import models
    from emarena.protocol.stages import StageContext, StageSpec, is_done, run_stage
    from emarena.train import get_preset, load_recipe

    got = set_threads(threads)
    run = Run(Path(run_root))
    spec = StageSpec.model_validate(stage)
    ctx = StageContext(
        stages_dir=run.stages_dir, base_model_dir=models.pull(spec.model.id), log=run.log
    )
    run.log("grid_task", task="train", stage=spec.key, executor=executor, torch_threads=got)
    if is_done(ctx, spec):
        return {"stage": spec.key, "trained": False}
    t0 = time.time()
    run_stage(ctx, spec, recipe=load_recipe(), preset=get_preset(preset_name))
    return {"stage": spec.key, "trained": True, "seconds": round(time.time() - t0, 3)}


def generate_unit(
    run_root: str,
    cells: list[dict],
    stages_of: dict[str, list[str]],
    preset_name: str,
    backend: str,
    threads: int,
    executor: str,
    *parents: Any,
) -> dict:
    """Generate the answers of one evaluation (the cells that share its weights)."""
    from emarena import models
    from emarena.protocol.evaluate import plan_evals, run_generate
    from emarena.train import get_preset

    got = set_threads(threads)
    run = Run(Path(run_root))
    cs = [Cell.model_validate(c) for c in cells]
    (job,) = plan_evals(run, cs, stages_of, models.pull(cs[0].model.id), backend)
    run.log("grid_task", task="generate", eval=job.key, executor=executor, torch_threads=got)
    run_generate(run, job, preset=get_preset(preset_name), backend=backend, echo=lambda s: None)
    return {"eval": job.key}


# --------------------------------------------------------------------------------------------
# Running a grid


@dataclass
class GridReport:
    run: Path
    cells: list[Cell]
    stages: list[str]
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _eval_groups(plan: GridPlan) -> list[list[Cell]]:
    """Cells grouped by evaluation (same weights, seed, preset, backend), in plan order."""
    from emarena.protocol.evaluate import eval_key

    groups: dict[str, list[Cell]] = {}
    for c in plan.cells:
        k = eval_key(c, plan.stages_of[c.id], backend=plan.grid.spec.backend)
        groups.setdefault(k, []).append(c)
    return list(groups.values())


def run_grid(
    grid: Grid,
    *,
    executor: str = "local",
    run_dir: Path | None = None,
    run_root: Path = Path("runs"),
    address: str | None = None,
    judge: str | None = None,
    evaluate: bool = True,
    echo=print,
) -> GridReport:
    """Plan, train what is missing, evaluate every cell and write the report (resumable)."""
    from emarena import models
    from emarena.protocol.stages import StageContext, is_done

    if executor not in EXECUTORS:
        raise ConfigError(
            f"--executor {executor!r} is not an executor", fix=f"use {' or '.join(EXECUTORS)}"
        )
    if executor == "local" and address:
        raise ConfigError(
            "--address is only for --executor ray", fix="drop --address or add --executor ray"
        )
    if executor == "ray" and address and address.count(":") == 1 and "://" not in address:
        _check_reachable(address)  # ray.init retries an unreachable address for minutes
    t0 = time.time()
    plan = plan_grid(grid, run_dir or default_run_dir(run_root, grid))
    run = plan.run
    spec = grid.spec
    run.log(
        "grid_start",
        grid=spec.name,
        executor=executor,
        cells=len(plan.cells),
        stages=len(plan.stages),
        torch_threads=plan.threads,
    )
    echo(
        f"grid {spec.name} ({grid.path}): {len(plan.cells)} cells, {len(plan.stages)} training "
        f"stages, executor {executor}, {plan.threads} torch threads per task"
    )
    # Pull every model once, before any task, so no two tasks convert or download it at once.
    base_dirs = {m: models.pull(m) for m in spec.models}
    report = GridReport(run=run.root, cells=plan.cells, stages=list(plan.stages))
    ordered = list(plan.stages.values())
    ctxs = {
        m: StageContext(stages_dir=run.stages_dir, base_model_dir=d, log=run.log)
        for m, d in base_dirs.items()
    }
    todo = [s for s in ordered if not is_done(ctxs[s.model.id], s)]
    report.skipped = [s.key for s in ordered if s not in todo]
    for key in report.skipped:
        echo(f"  {key}: done, skipped")
    groups = _eval_groups(plan) if evaluate else []

    if executor == "local":
        from emarena.protocol.score import describe_stage

        for i, s in enumerate(todo, start=1):
            echo(f"[{i}/{len(todo)}] {describe_stage(s)}: training")
            train_stage_unit(
                str(run.root), s.model_dump(mode="json"), spec.preset, plan.threads, executor
            )
            report.trained.append(s.key)
        for g in groups:
            _generate_local(plan, g, executor)
    else:
        report.trained = _run_on_ray(plan, todo, groups, address=address, echo=echo)
    run.log("grid_trained", trained=report.trained, skipped=report.skipped)
    echo(f"training complete: {len(report.trained)} stage(s) trained, {len(report.skipped)} reused")

    if evaluate:
        report.results = _judge_and_score(plan, base_dirs, judge=judge, echo=echo)
    else:
        echo("evaluation skipped (--no-eval): no result records were written")
    report.seconds = time.time() - t0
    run.log("grid_done", seconds=round(report.seconds, 3), results=len(report.results))
    echo(f"done in {report.seconds:.0f} s; `emarena status {run.root}` shows every cell.")
    return report


def _unit_args(plan: GridPlan, group: list[Cell]) -> tuple:
    return (
        str(plan.run.root),
        [c.model_dump(mode="json") for c in group],
        {c.id: plan.stages_of[c.id] for c in group},
        plan.grid.spec.preset,
        plan.grid.spec.backend,
        plan.threads,
    )


def _generate_local(plan: GridPlan, group: list[Cell], executor: str) -> None:
    generate_unit(*_unit_args(plan, group), executor)


def _judge_and_score(plan: GridPlan, base_dirs: dict[str, Path], *, judge, echo) -> list[Path]:
    """Judge and score every cell in this process (generation is done by then: skipped)."""
    from emarena.eval.report import write_report
    from emarena.protocol.evaluate import evaluate as run_evaluate
    from emarena.train import get_preset

    set_threads(plan.threads)
    preset = get_preset(plan.grid.spec.preset)
    paths: list[Path] = []
    for model_id, base_dir in base_dirs.items():
        cells = [c for c in plan.cells if c.model.id == model_id]
        paths += run_evaluate(
            plan.run,
            cells,
            plan.stages_of,
            base_dir=base_dir,
            preset=preset,
            judge_spec=judge,
            backend=plan.grid.spec.backend,
            echo=echo,
        )
    write_report(plan.run.root, echo=echo)
    echo(f"report: {plan.run.root / 'report.md'}")
    return paths


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise EmArenaError(
            f"--address {address}: no Ray cluster answers there ({e})",
            fix="start one (`ray start --head --port=PORT`) and pass HOST:PORT of its head node",
        ) from None


def _run_on_ray(plan: GridPlan, todo: list, groups: list[list[Cell]], *, address, echo) -> list:
    """Submit the missing stages and the generations as Ray tasks; wait for all of them."""
    try:
        import ray
    except ImportError:
        raise EmArenaError(
            "--executor ray needs the `ray` package, which is not installed",
            fix="pip install 'emarena[ray]'",
        ) from None
    from emarena.protocol.evaluate import GENERATE, eval_key
    from emarena.protocol.stages import read_done

    res = plan.resources
    opts = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": 1}
    try:
        ray.init(address=address or "auto", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EmArenaError(
            f"cannot connect to a Ray cluster at {address or 'auto'}: {e}",
            fix="start one (`ray start --head`) and pass its address with --address HOST:PORT",
        ) from None
    try:
        total = ray.cluster_resources()
        if total.get("CPU", 0) < res.num_cpus or total.get("GPU", 0) < res.num_gpus:
            raise EmArenaError(
                f"the Ray cluster has {total.get('CPU', 0):g} CPU / {total.get('GPU', 0):g} GPU, "
                f"but each task asks for {res.num_cpus} CPU / {res.num_gpus:g} GPU "
                f"({plan.device} preset)",
                where=str(plan.grid.path),
                fix=f"lower resources.{plan.device} in the grid file or add nodes",
            )
        train = ray.remote(train_stage_unit)
        gen = ray.remote(generate_unit)
        refs: dict[str, Any] = {}
        what: dict[Any, str] = {}
        for s in todo:
            parents = [refs[s.parent]] if s.parent in refs else []
            ref = train.options(name=f"train:{s.key}", **opts).remote(
                str(plan.run.root), s.model_dump(mode="json"), plan.grid.spec.preset,
                plan.threads, "ray", *parents,
            )
            refs[s.key] = ref
            what[ref] = f"stage {s.key}"
            echo(f"submitted {s.key} ({s.kind}" + (f" after {s.parent})" if s.parent else ")"))
        for g in groups:
            stages = plan.stages_of[g[0].id]
            key = eval_key(g[0], stages, backend=plan.grid.spec.backend)
            if read_done(plan.run.root / "evals" / key / GENERATE) is not None:
                continue
            parents = [refs[stages[-1]]] if stages and stages[-1] in refs else []
            ref = gen.options(name=f"generate:{key}", **opts).remote(
                *_unit_args(plan, g), "ray", *parents
            )
            what[ref] = f"generation {key} ({', '.join(c.label for c in g)})"
        trained, failed = [], []
        pending = list(what)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                out = ray.get(ready[0])
            except Exception as e:  # a task's error (RayTaskError), reported below
                failed.append(f"{what[ready[0]]}: {type(e).__name__}: {str(e).splitlines()[0]}")
                echo(f"failed: {failed[-1]}")
                continue
            if out.get("trained"):
                trained.append(out["stage"])
            echo(f"finished {what[ready[0]]}")
        if failed:
            raise EmArenaError(
                f"{len(failed)} Ray task(s) failed; finished stages are kept:\n  "
                + "\n  ".join(failed),
                where=str(plan.run.root / "events.jsonl"),
                fix=f"see `emarena status {plan.run.root}`, fix the cause, rerun the same "
                "command (it resumes)",
            )
        order = list(plan.stages)
        return sorted(trained, key=order.index)
    finally:
        ray.shutdown()
