"""`emarena score`: a grid of one defense, through the one planner and executor.

The same command, run again, resumes: the store remembers every finished stage, generation,
judgement and metric (by content, so also those made by other runs: a second defense on the same
model and EM dataset trains only its own stages and evaluates only its own cells), an
interrupted step is redone from its last durable point (a stage from its start, generations and
judgements row by row).
"""

from __future__ import annotations

from pathlib import Path

from emarena import settings
from emarena.errors import ConfigError
from emarena.protocol.cell import DEFENSE_REGIMES
from emarena.protocol.execute import RunReport

#: Kept for callers of the old name: `score` returns the one report type.
ScoreReport = RunReport


def default_run_dir(submission: str, model: str, em_dataset: str, preset: str) -> Path:
    """Deterministic, so re-running the same command resumes the same run."""
    return Path("runs") / f"{submission}__{model}__{em_dataset}__{preset}"


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
                "(the base and em controls are always run); repeat the flag for several: "
                "--regimes reversal --regimes prevention",
            )
        if sub.regimes and r not in sub.regimes:
            raise ConfigError(
                f"{where}: the submission does not support regime {r!r}",
                fix=f"its regimes are {', '.join(sub.regimes)}; request one of those",
            )
    return wanted


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
    suite: str = settings.DEFAULT_SUITE,
    store: str | Path | None = None,
    executor: str = "local",
    address: str | None = None,
    em_system_turn: str = "default",
    echo=print,
) -> RunReport:
    """Score one submission: its cells in each regime plus the base and em controls."""
    from emarena import models
    from emarena.protocol.grid import grid_of_one, run_grid
    from emarena.submission import load_submission
    from emarena.train import get_preset

    sub = load_submission(submission_path)
    mspec = models.get_spec(model_id or models.default_model_id())
    model_id = mspec.id  # a Hub repo id (Qwen/Qwen2.5-7B-Instruct) names its registry entry
    check_em_dataset(em_dataset, field="--em-dataset")
    from emarena.protocol.grid import suites

    if suite not in suites():
        raise ConfigError(f"--suite: unknown suite {suite!r}",
                          fix=f"use one of: {', '.join(suites())} (benchmark/suites/)")
    if em_system_turn not in ("default", "none"):
        raise ConfigError(f"--em-system-turn: {em_system_turn!r} is not default or none",
                          fix="use default (as the chat template renders) or none (no system "
                          "turn in the EM finetune)")
    get_preset(preset_name, suite=suite)
    wanted = check_regimes(
        sub, list(regimes or sub.regimes or DEFENSE_REGIMES), where=str(submission_path)
    )
    seeds = list(seeds or [0])
    grid = grid_of_one(Path(submission_path), model=model_id, em_dataset=em_dataset,
                       regimes=wanted, seeds=seeds, preset=preset_name, backend=backend,
                       suite=suite, em_system_turn=em_system_turn)
    request = {
        "kind": "score",
        "submission": str(submission_path),
        "submission_name": sub.name,
        "config_hash": sub.config_hash,
        "model": {"id": model_id, "revision": mspec.revision},
        "em_dataset": em_dataset,
        "regimes": wanted,
        "seeds": seeds,
        "grid": grid.spec.model_dump(mode="json"),
    }
    run = Path(run_dir or default_run_dir(sub.name, model_id, em_dataset, preset_name))
    return run_grid(grid, executor=executor, run_dir=run, address=address, judge=judge,
                    evaluate=evaluate, store=store, request=request, echo=echo)
