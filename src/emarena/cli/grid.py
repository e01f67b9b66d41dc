"""`emarena grid`: run every cell of a grid file, in this process or on a Ray cluster.

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
        help="local: everything in this process. ray: each training stage and generation as a "
        "task on an existing Ray cluster (judging and metrics in this process).",
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
) -> None:
    """Train and evaluate every cell of a grid (models x EM datasets x defenses x regimes x
    seeds); shared stages are trained once. Rerun the same command to resume."""
    from emarena.protocol.grid import default_run_dir, load_grid, plan_grid, run_grid

    g = load_grid(grid_file)

    def echo(s: str) -> None:
        console.print(s, highlight=False, markup=False, soft_wrap=True)

    if plan_only:
        p = plan_grid(g, default_run_dir(run_root, g), write=False)
        echo(f"grid {g.name}: {len(p.cells)} cells, {len(p.stages)} unique training stages")
        for c in p.cells:
            echo(f"  cell {c.short_id}  {c.model.id}  {c.label}")
        for key, s in p.stages.items():
            echo(f"  stage {key}  {s.kind}" + (f" after {s.parent}" if s.parent else ""))
        return
    run_grid(
        g,
        executor=executor,
        run_root=run_root,
        address=address,
        judge=judge,
        evaluate=not no_eval,
        echo=echo,
    )
