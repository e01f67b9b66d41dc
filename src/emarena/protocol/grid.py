"""Grids: every cell of models x EM datasets x defenses x regimes x seeds, run as one.

    grid = load_grid(Path("benchmark/suites/v1/grids/smoke.yaml"))
    run_grid(grid, executor="local", run_root=Path("runs"))            # tasks on this machine
    run_grid(grid, executor="ray", address="HOST:PORT", ...)            # on a Ray cluster

A grid file is the one request format: `emarena score` is a grid of one defense
(`grid_of_one`), and the worker scores each queued submission the same way. The planner
(`emarena.protocol.plan`) and the executor (`emarena.protocol.execute`) are shared by all of
them; a grid's run folder, `<run-root>/grid__<name>/`, is a view of the shared store like any
other run.

Both executors set torch to the same explicit thread count for every task
(`resources.<device>.num_cpus`, also the Ray task's CPU request; Ray would otherwise set
OMP_NUM_THREADS per task, and CPU float results depend on the thread count) and log it
(`task_start` events), so results are identical between executors for the same seeds.

Resume: rerunning the same command does only what is missing (the store remembers everything
done, by any run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from emarena import settings
from emarena.errors import ConfigError
from emarena.protocol.cell import DEFENSE_REGIMES
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
    suite: str = settings.DEFAULT_SUITE
    """Benchmark suite version (benchmark/suites/<suite>/): its recipe, presets, evaluation and
    defense protocol apply to every cell."""
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
    em_system_turn: Literal["default", "none"] = "default"
    """How every EM finetune renders its conversations: `default` as the chat template does (the
    identity prompt in, for a template with a default system prompt); `none` with no system
    turn (the seed release's `em_*_nosys` models). The base cells are the same either way."""
    backend: Literal["transformers", "vllm"] = "transformers"
    """Generation backend for evaluation (and for SGTR's own summaries)."""
    resources: Resources = Resources()
    """Per-task resources by preset device (Ray requests; torch threads in both executors)."""

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        if v not in suites():
            raise _known("suite", v, suites(), "use a suite of benchmark/suites")
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str, info: ValidationInfo) -> str:
        from emarena.train.recipe import load_recipe

        suite = info.data.get("suite", settings.DEFAULT_SUITE)  # validated first (field order)
        names = list(load_recipe(suite).presets)
        if v not in names:
            raise _known("preset", v, names, f"use a preset of suite {suite}'s recipe.yaml")
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


def suites() -> list[str]:
    """The suite versions of this checkout (benchmark/suites/<v>/)."""
    return sorted(p.name for p in (settings.benchmark_root() / "suites").iterdir() if p.is_dir())


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
# score: a grid of one defense


def grid_of_one(
    submission: Path, *, model: str, em_dataset: str, regimes: list[str], seeds: list[int],
    preset: str, backend: str, suite: str = settings.DEFAULT_SUITE, name: str | None = None,
    em_system_turn: str = "default",
) -> Grid:
    """The grid `emarena score SUBMISSION` runs: one defense, one model, one EM dataset."""
    from emarena.submission import load_submission

    sub = load_submission(submission)
    folder = Path(submission)
    if folder.is_file():
        folder = folder.parent
    spec = GridSpec(
        name=name or sub.name, preset=preset, models=[model], em_datasets=[em_dataset],
        defenses=[str(folder)], regimes=regimes, seeds=seeds, backend=backend, suite=suite,
        description=f"emarena score {folder}", em_system_turn=em_system_turn,
    )
    return Grid(spec=spec, path=folder / "defense.yaml", defense_dirs=[folder])


def default_run_dir(run_root: Path, grid: Grid) -> Path:
    return Path(run_root) / f"grid__{grid.name}"


def run_grid(
    grid: Grid,
    *,
    executor: str = "local",
    run_dir: Path | None = None,
    run_root: Path = Path("runs"),
    address: str | None = None,
    judge: str | None = None,
    evaluate: bool = True,
    store: str | Path | None = None,
    request: dict | None = None,
    echo=print,
):
    """Plan, train what is missing, evaluate every cell and write the report (resumable)."""
    from emarena.protocol.execute import check_executor, execute
    from emarena.protocol.plan import make_plan, write_view
    from emarena.protocol.store import Store

    check_executor(executor, address)
    check_preset_device(grid)  # before planning: nothing is hashed, planned or written
    plan = make_plan(grid, store=Store.open(store), request=request)
    check_device(plan)
    run = Run(Path(run_dir or default_run_dir(run_root, grid)).absolute())
    write_view(plan, run)
    return execute(plan, run, executor=executor, address=address, judge_spec=judge,
                   evaluate=evaluate, echo=echo)


def check_preset_device(grid) -> None:
    """`check_device` from the grid's preset alone, before any planning."""
    from emarena.train import get_preset

    class _Device:
        device = get_preset(grid.spec.preset, suite=grid.spec.suite).device
        preset = grid.spec.preset

    check_device(_Device)


def check_device(plan) -> None:
    """A GPU preset on a machine without one fails here, at plan time, not after set-up."""
    if plan.device != "cuda":
        return
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return
    raise ConfigError(
        f"preset {plan.preset!r} trains on a CUDA GPU, and this machine has none",
        fix="use `--preset cpu-demo` (or smoke) here, or run on a machine with a GPU",
    )
