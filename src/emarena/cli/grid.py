"""`emarena grid`: run every cell of a grid file, on this machine or on a Ray cluster.

Import-light: ray and torch are imported only when a grid runs.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console()


def grid(
    grid_file: Path = typer.Argument(
        ..., help="Grid file (e.g. benchmark/suites/v1/grids/paper.yaml)."
    ),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="local: every task in a process of its own on this machine. ray: each training "
        "stage and evaluation job as a task on an existing Ray cluster (judging and metrics in "
        "this process).",
    ),
    address: str = typer.Option(
        None, "--address", help="Ray cluster address HOST:PORT (default: RAY_ADDRESS or auto)."
    ),
    run_root: Path = typer.Option(
        Path("runs"), "--run-root", help="Folder for run folders: the grid runs in "
        "RUN_ROOT/grid__<name>."
    ),
    judge: str = typer.Option(
        None,
        "--judge",
        help="openai, openai:MODEL, openai:MODEL@BASE_URL, hf or hf:MODEL. Default: the "
        "reference API judge when OPENAI_API_KEY is set, else a local hf judge (unofficial).",
    ),
    no_eval: bool = typer.Option(False, "--no-eval", help="Train only; write no results."),
    plan_only: bool = typer.Option(
        False, "--plan", help="Print the cells and unique stages, run nothing."
    ),
    estimate: bool = typer.Option(
        False, "--estimate", help="With --plan: GPU-hours, disk and memory peaks of the grid on "
        "one GPU, against the compute floor (see --gpu)."
    ),
    gpu: str = typer.Option("h200", "--gpu", help="With --estimate: h200, h100 or a100."),
    store: Path = typer.Option(
        None, "--store", help="The shared store (default: EMARENA_STORE, else <cache>/store)."
    ),
) -> None:
    """Train and evaluate every cell of a grid (models x EM datasets x defenses x regimes x
    seeds); anything already in the store is reused. Rerun the same command to resume."""
    from emarena.protocol.grid import load_grid, run_grid

    g = load_grid(grid_file)

    def echo(s: str) -> None:
        console.print(s, highlight=False, markup=False, soft_wrap=True)

    if plan_only or estimate:
        from emarena.protocol.plan import make_plan
        from emarena.protocol.store import Store

        p = make_plan(g, store=Store(Path(store) if store else _default_store()))
        echo(f"grid {g.name}: {len(p.cells)} cells, {len(p.stages)} unique training stages, "
             f"{len(p.summaries)} summary generations, {len(p.evals)} evaluations")
        if not estimate:
            for c in p.cells:
                echo(f"  cell {c.short_id}  {c.model.id}  {c.label}")
            for key, s in p.stages.items():
                echo(f"  stage {key}  {s.kind}" + (f" after {s.parent}" if s.parent else ""))
            return
        from emarena.protocol.estimate import estimate_plan, render_estimate

        echo(render_estimate(estimate_plan(p, gpu=gpu)))
        return
    run_grid(
        g,
        executor=executor,
        run_root=run_root,
        address=address,
        judge=judge,
        evaluate=not no_eval,
        store=store,
        echo=echo,
    )


def _default_store() -> Path:
    from emarena.protocol.store import store_dir

    return store_dir()
