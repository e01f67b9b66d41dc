"""`emarena score` and `emarena status`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def score(
    submission: Path = typer.Argument(..., help="Submission folder (or its defense.yaml)."),
    model: str = typer.Option(
        None, "--model", help="Model registry id (default: the embedded model)."
    ),
    em_dataset: str = typer.Option("insecure", "--em-dataset", help="EM-induction dataset id."),
    regimes: list[str] = typer.Option(
        None,
        "--regimes",
        help="Defense regimes (defense, reversal, prevention); repeatable. "
        "Default: those the submission lists.",
    ),
    seeds: list[int] = typer.Option(None, "--seeds", help="Seeds; repeatable (default: 0)."),
    preset: str = typer.Option(
        "paper", "--preset", help="Preset from recipe.yaml (paper, cpu-demo)."
    ),
    run: Path = typer.Option(
        None, "--run", help="Run folder (default: runs/<submission>__<model>__<em>__<preset>)."
    ),
    judge: str = typer.Option(
        None,
        "--judge",
        help="openai[:MODEL[@BASE_URL]], openai-text[:MODEL[@BASE_URL]] (the seed release's "
        "text mode) or hf[:MODEL]. Default: the reference "
        "API judge when OPENAI_API_KEY is set, else a local hf judge (said plainly: unofficial).",
    ),
    backend: str = typer.Option("transformers", "--backend", help="transformers or vllm."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Train only; write no results."),
    store: Path = typer.Option(
        None, "--store", help="The store of stages, generations, judgements and metrics "
        "(default: EMARENA_STORE, else <cache>/store); shared by every run."),
    suite: str = typer.Option(
        None, "--suite", help="Benchmark suite version (benchmark/suites/<v>/; default: the "
        "newest, v2). `--suite v1` scores by the earlier protocol (benchmark/CHANGELOG.md)."),
    em_system_turn: str = typer.Option(
        "default", "--em-system-turn", help="default: the EM finetune renders its data as the "
        "chat template does (the identity prompt in, for Qwen); none: with no system turn (the "
        "seed release's em_*_nosys models)."),
) -> None:
    """Train and evaluate a defense in each regime, plus the base and em controls (resumable;
    anything already in the store, from any run, is reused)."""
    from emarena import settings
    from emarena.protocol.score import score as run_score

    regs: list[str] = []
    for r in regimes or []:
        regs.extend(x for x in r.split(",") if x)
    run_score(
        submission,
        model_id=model,
        em_dataset=em_dataset,
        regimes=regs or None,
        seeds=list(seeds) if seeds else None,
        preset_name=preset,
        run_dir=run,
        judge=judge,
        backend=backend,
        evaluate=not no_eval,
        store=store,
        suite=suite or settings.DEFAULT_SUITE,
        em_system_turn=em_system_turn,
        echo=lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True),
    )


def report(
    run: Path = typer.Argument(..., help="Run folder."),
    condition: str = typer.Option(
        "headline", "--condition", help="headline (each cell's own: suite v2's default-system "
        "for a model with an identity prompt, else no-system), default-system, no-system, or "
        "all (both pooled, only on request)."),
) -> None:
    """Write RUN/report.md (a table per regime, plots) from the cells' result.json files."""
    from emarena.errors import EmArenaError
    from emarena.eval.report import load_results, write_report

    found = load_results(run)
    if not found.results:
        what = (f"{len(found.pending)} cell(s) pending" if found.pending else "no cells")
        if found.problems:
            what += f", {len(found.problems)} unreadable result(s)"
        raise EmArenaError(
            f"{run}: no cell has a result yet ({what}); nothing to report",
            where=str(run / "cells"),
            fix=f"finish the run (rerun its `emarena score` command) and check it with "
            f"`emarena status {run}`",
        )

    path = write_report(
        run, condition=condition,
        echo=lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True),
    )
    console.print(f"report: {path}", highlight=False)


def rejudge(
    run: Path = typer.Argument(..., help="Run folder."),
    judge: str = typer.Option(None, "--judge", help="openai[:MODEL[@BASE_URL]], "
                              "openai-text[:MODEL[@BASE_URL]] (the seed release's text mode) or "
                              "hf[:MODEL]."),
) -> None:
    """Re-score a run's existing generations with a judge (cached judgements are free)."""
    from emarena.protocol.evaluate import rejudge as run_rejudge

    run_rejudge(
        run, judge, echo=lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True)
    )


def status(run: Path = typer.Argument(..., help="Run folder.")) -> None:
    """Each cell of a run and its stages: done, running, interrupted, failed (why), pending."""
    from emarena.errors import EmArenaError
    from emarena.protocol.run import Run

    r = Run(run)
    cells = r.read_cells()
    if not cells:
        raise EmArenaError(
            f"{run}: no cells found", where=str(run / "cells"), fix="run `emarena score` first"
        )
    store = r.store()
    table = Table(title=f"run {run} (store {store.root})")
    for col in ("cell", "regime", "defense", "em dataset", "seed", "stage 1", "stage 2",
                "result"):
        table.add_column(col)
    colors = {
        "done": "green",
        "running": "cyan",
        "interrupted": "yellow",
        "failed": "red",
        "pending": "dim",
    }
    errors = []
    for c in cells:
        cell = c["cell"]
        cols = []
        for key in c["stages"]:
            state, detail = r.stage_status(key, store)
            cols.append(f"[{colors[state]}]{state}[/] {key}")
            if state in ("failed", "interrupted"):
                errors.append(f"{key}: {state}: {detail}")
        cols += ["-"] * (2 - len(cols))
        result = run / "cells" / c["id"] / "metrics" / "result.json"
        cols.append("[green]done[/]" if result.is_file() else "[dim]pending[/]")
        d = cell.get("defense") or {}
        table.add_row(
            c["id"][:12],
            cell["regime"],
            d.get("name", "-"),
            cell["em_dataset"],
            str(cell["seed"]),
            *cols,
        )
    console.print(table)
    for e in dict.fromkeys(errors):
        console.print(f"[red]{e}[/]", highlight=False)
