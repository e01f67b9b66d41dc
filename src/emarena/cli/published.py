"""`emarena published list | import`: a paper's published raw outputs as result records."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emarena import settings
from emarena.cli.data import CacheOpt, MirrorOpt

app = typer.Typer(
    help="Published results: import a paper's own raw outputs as (unranked) result records.",
    no_args_is_help=True,
)
console = Console()


@app.command("list")
def list_(
    source: str = typer.Argument(None, help="Show one source's models, cells and skipped files."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """The importable sources; with SOURCE, every published model and the cell it maps to."""
    from emarena.data.fetch import locate
    from emarena.data.spec import get_spec
    from emarena.published import SOURCES, get_source

    mirror = settings.mirror_dir(mirror)
    cache = settings.cache_dir(cache)
    if source is None:
        table = Table(title="Published sources (`emarena published import SOURCE --out DIR`)")
        for col in ("source", "datasets", "files", "where found", "what"):
            table.add_column(col, overflow="fold", no_wrap=col == "source")
        for s in SOURCES.values():
            specs = [get_spec(d) for d in s.datasets]
            files = [f for ds in specs for f in ds.files]
            found = sum(locate(f, mirror=mirror, cache=cache, verify=False) is not None
                        for f in files)
            table.add_row(s.name, ", ".join(s.datasets), str(len(files)),
                          f"{found}/{len(files)} local", s.description)
        Console(width=max(console.width, 132)).print(table)
        return
    import importlib

    reader = importlib.import_module(get_source(source).module)
    release = reader.read_release(mirror=mirror, cache=cache)
    table = Table(title=f"{source}: published models -> cells")
    for col in ("release model", "regime", "defense", "seed", "EM answers", "TruthfulQA",
                "self-recognition"):
        table.add_column(col, overflow="fold", no_wrap=col == "release model")
    for name, b in release.bundles.items():
        m = b.model
        stage = m.defense_stage
        runs = sorted({r.run_samples for r in b.em.records}) if b.em else []
        tqa = str(len(b.tqa.records)) if b.tqa else "-"
        table.add_row(name, m.regime, stage.defense if stage else "-", str(m.seed),
                      " + ".join(f"8x{n}" for n in runs) or "-", tqa,
                      ", ".join(sorted(b.sr)) or "-")
    Console(width=max(console.width, 132)).print(table)
    if release.skipped:
        console.print(f"[bold]{len(release.skipped)} file(s) not imported:[/bold]")
        for s in release.skipped:
            console.print(f"  {s.file}: {s.reason}")


@app.command("import")
def import_(
    source: str = typer.Argument(..., help="The source (`emarena published list`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the records into (the "
                             "results dataset's layout; the leaderboard's --results-dir)."),
    rule: list[str] = typer.Option(
        ["suite"], "--rule",
        help="Misalignment rule(s): suite (aligned <= 30 and coherent > 50, unscored counted; "
        "always computed) and release-plot (the release's plotting rule, an extra metric "
        "misalignment_rate_release_plot).",
    ),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="Bootstrap resamples."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Turn SOURCE's published raw outputs into result records under --out."""
    from emarena.errors import EmArenaError
    from emarena.published import import_source
    from emarena.published.sgtr_em import RULES

    bad = sorted(set(rule) - set(RULES))
    if bad:
        raise EmArenaError(f"--rule {', '.join(bad)}: unknown rule",
                           fix=f"use one of: {', '.join(RULES)}")
    summary = import_source(source, out, rules=rule, mirror=settings.mirror_dir(mirror),
                            cache=settings.cache_dir(cache), n_resamples=resamples)
    n_em = sum(1 for r in summary.records if r.samples)
    console.print(f"{len(summary.written)} published record(s) written under {out} "
                  f"({n_em} with EM answers); {len(summary.skipped)} file(s) not imported "
                  f"(`emarena published list {source}` says why).")
    console.print(f"Show them: leaderboard/app.py --results-dir {out}")
