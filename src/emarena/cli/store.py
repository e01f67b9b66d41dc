"""`emarena store du` and `emarena store gc`: what the shared store holds, and reclaiming it.

Torch-free: reads folders and JSON only.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()
app = typer.Typer(help="The shared store of stages, generations, judgements and metrics.",
                  no_args_is_help=True)

StoreOpt = typer.Option(None, "--store", help="Store folder (default: EMARENA_STORE, else "
                        "<cache>/store).")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@app.command("du")
def du(
    runs: list[Path] = typer.Argument(None, help="Run folders (default: every run registered "
                                      "with the store)."),
    store: Path = StoreOpt,
    entries: bool = typer.Option(False, "--entries", help="List each run's entries too."),
) -> None:
    """What each run references in the store, and its size (shared entries counted once)."""
    from emarena.protocol.store import Store, usage

    s = Store.open(store)
    use = usage(s, runs or None)
    table = Table(title=f"store {s.root}")
    for col in ("run", "entries", "size", "only this run"):
        table.add_column(col, justify="right" if col != "run" else "left", overflow="fold")
    for r in use.runs:
        table.add_row(str(r.run), str(len(r.entries)), _human(r.bytes), _human(r.own_bytes))
    console.print(table)
    by_kind: dict[str, list[int]] = {}
    for name, b in use.entry_bytes.items():
        k = by_kind.setdefault(name.split("/", 1)[0], [0, 0])
        k[0] += 1
        k[1] += b
    for kind, (n, b) in sorted(by_kind.items()):
        console.print(f"{kind:<11} {n:>5} entries  {_human(b):>9}", highlight=False)
    unref = sum(use.entry_bytes[n] for n in use.unreferenced)
    console.print(f"total {_human(use.total)}; referenced by no run: {len(use.unreferenced)} "
                  f"entries, {_human(unref)} (`emarena store gc` reclaims them); "
                  f"temporary: {_human(use.tmp_bytes)}", highlight=False)
    if entries:
        for r in use.runs:
            console.print(f"{r.run}:", highlight=False)
            for n in r.entries:
                console.print(f"  {n}  {_human(use.entry_bytes.get(n, 0))}", highlight=False)


@app.command("gc")
def gc(
    store: Path = StoreOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go, delete nothing."),
) -> None:
    """Delete store entries no registered run references (and leftovers of dead processes)."""
    from emarena.protocol.store import Store, collect

    s = Store.open(store)
    out = collect(s, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in out["removed"]:
        console.print(f"{verb} {name}", highlight=False)
    for name in out["kept_claimed"]:
        console.print(f"kept {name} (being built now)", highlight=False)
    for r in out["forgotten_runs"]:
        console.print(f"forgot run {r} (its folder is gone)", highlight=False)
    console.print(f"{verb} {len(out['removed'])} item(s), {_human(out['freed_bytes'])}",
                  highlight=False)
