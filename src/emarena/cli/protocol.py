"""`emarena score` and `emarena status`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def score(
    submission: Path = typer.Argument(..., help="Submission folder (or its defense.yaml)."),
    model: str = typer.Option(None, "--model", help="Model registry id (default: the embedded model)."),
    em_dataset: str = typer.Option("insecure", "--em-dataset", help="EM-induction dataset id."),
    regimes: list[str] = typer.Option(
        None, "--regimes", help="Defense regimes (defense, reversal, prevention); repeatable. "
        "Default: those the submission lists."
    ),
    seeds: list[int] = typer.Option(None, "--seeds", help="Seeds; repeatable (default: 0)."),
    preset: str = typer.Option("paper", "--preset", help="Preset from recipe.yaml (paper, cpu-demo)."),
    run: Path = typer.Option(
        None, "--run", help="Run folder (default: runs/<submission>__<model>__<em>__<preset>)."
    ),
) -> None:
    """Train a defense in every requested regime plus the base and em controls (resumable)."""
    from emarena.protocol.score import score as run_score

    regs: list[str] = []
    for r in regimes or []:
        regs.extend(x for x in r.split(",") if x)
    run_score(
        submission, model_id=model, em_dataset=em_dataset, regimes=regs or None,
        seeds=list(seeds) if seeds else None, preset_name=preset, run_dir=run,
        echo=lambda s: console.print(s, highlight=False, markup=False),
    )


def status(run: Path = typer.Argument(..., help="Run folder.")) -> None:
    """Each cell of a run and its stages: done, running, interrupted, failed (with the error), pending."""
    from emarena.errors import EmArenaError
    from emarena.protocol.run import Run

    r = Run(run)
    cells = r.read_cells()
    if not cells:
        raise EmArenaError(f"{run}: no cells found", where=str(run / "cells"), fix="run `emarena score` first")
    table = Table(title=f"run {run}")
    for col in ("cell", "regime", "defense", "em dataset", "seed", "stage 1", "stage 2"):
        table.add_column(col)
    colors = {"done": "green", "running": "cyan", "interrupted": "yellow", "failed": "red", "pending": "dim"}
    errors = []
    for c in cells:
        cell = c["cell"]
        cols = []
        for key in c["stages"]:
            state, detail = r.stage_status(key)
            cols.append(f"[{colors[state]}]{state}[/] {key}")
            if state in ("failed", "interrupted"):
                errors.append(f"{key}: {state}: {detail}")
        cols += ["-"] * (2 - len(cols))
        d = cell.get("defense") or {}
        table.add_row(c["id"][:12], cell["regime"], d.get("name", "-"), cell["em_dataset"], str(cell["seed"]), *cols)
    console.print(table)
    for e in dict.fromkeys(errors):
        console.print(f"[red]{e}[/]", highlight=False)
