"""`emarena data list | pull | verify | show`: the dataset registry from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emarena import settings
from emarena.errors import DataError

app = typer.Typer(
    help="Datasets: list, pull, verify and show registry entries.", no_args_is_help=True
)
console = Console()

MirrorOpt = typer.Option(
    None,
    "--mirror",
    help=f"Mirror folder laid out <owner>__<repo>/<path> (or {settings.ENV_MIRROR}).",
)
CacheOpt = typer.Option(None, "--cache", help=f"Cache folder (or {settings.ENV_CACHE}).")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command("list")
def list_(
    role: str = typer.Option(None, "--role", help="Only this role (em, defense, eval, ...)."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Table of registered datasets: id, role, records, licence, where found."""
    from emarena.data.fetch import locate
    from emarena.data.spec import all_specs

    mirror = settings.mirror_dir(mirror)
    cache = settings.cache_dir(cache)
    table = Table(title=f"EM Arena datasets (suite {settings.DEFAULT_SUITE})")
    for col in ("id", "role", "files", "records", "size", "licence", "where found"):
        table.add_column(
            col,
            justify="right" if col in ("files", "records", "size") else "left",
            no_wrap=col in ("id", "role"),  # ids are what users type: never truncate them
            overflow="fold",
        )
    specs = all_specs()
    for ds in specs.values():
        if role and ds.role != role:
            continue
        places = {}
        for f in ds.files:
            r = locate(f, mirror=mirror, cache=cache, verify=False)
            places[r.where if r else "missing"] = places.get(r.where if r else "missing", 0) + 1
        where = ", ".join(
            k if len(ds.files) == 1 else f"{k} {v}/{len(ds.files)}" for k, v in places.items()
        )
        table.add_row(
            ds.id,
            ds.role,
            str(len(ds.files)),
            f"{ds.records:,}" if ds.records is not None else "?",
            _human(ds.bytes),
            ds.license,
            f"[red]{where}[/red]" if "missing" in places else where,
        )
    # Wide enough that no id, count or licence is cut (a narrow terminal wraps lines instead).
    Console(width=max(console.width, 132)).print(table)
    console.print(
        f"{len(specs)} datasets; 'where found' checks presence and size (`data verify` hashes)."
    )


def _ids(ids: list[str] | None, all_: bool) -> list[str]:
    from emarena.data.spec import all_specs, get_spec

    if all_ or not ids:
        if not all_:
            raise DataError(
                "no dataset ids given",
                fix="name ids, e.g. `emarena data pull insecure`, or pass --all",
            )
        return list(all_specs())
    for i in ids:
        get_spec(i)  # raises a clear error for an unknown id
    return ids


@app.command()
def pull(
    ids: list[str] = typer.Argument(None, help="Dataset ids (see `emarena data list`)."),
    all_: bool = typer.Option(False, "--all", help="Pull every registered dataset."),
    into_cache: bool = typer.Option(
        False,
        "--into-cache",
        help="Also copy files found in the mirror into the cache, so the cache alone holds "
        "them (an image build, an offline machine).",
    ),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Fetch datasets into the cache (from the mirror's presence or upstream), sha256-verified."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from emarena.data.fetch import resolve
    from emarena.data.spec import get_spec

    mirror = settings.mirror_dir(mirror)
    cache = settings.cache_dir(cache)
    todo = [(get_spec(i), f) for i in _ids(ids, all_) for f in get_spec(i).files]
    counts = {"mirror": 0, "cache": 0, "download": 0, "copied": 0}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("verifying", total=sum(f.bytes for _, f in todo))
        for ds, f in todo:
            progress.update(task, description=f"{ds.id}" + (f"/{f.part}" if f.part else ""))
            sub = progress.add_task(f"  {f.src.path}", total=f.bytes, visible=False)
            r = resolve(
                ds,
                f,
                mirror=mirror,
                cache=cache,
                progress=lambda n, sub=sub: progress.update(sub, advance=n, visible=True),
            )
            progress.remove_task(sub)
            if into_cache and r.where == "mirror":
                _copy_into_cache(r.path, cache / "data" / f.src.cache_relpath)
                counts["copied"] += 1
            counts[r.where] += 1
            progress.advance(task, f.bytes)
    console.print(
        f"{len(todo)} files ready: {counts['mirror']} in the mirror, "
        f"{counts['cache']} already cached, {counts['download']} downloaded into {cache / 'data'}"
        + (f"; {counts['copied']} copied from the mirror into the cache" if into_cache else "")
    )


def _copy_into_cache(src: Path, dest: Path) -> None:
    """Copy a verified mirror file to its cache path: a temp file renamed into place, so a
    killed copy never leaves a half-written cache entry."""
    import os
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@app.command()
def verify(
    ids: list[str] = typer.Argument(None, help="Dataset ids (default: all)."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Hash every file of every (or the given) dataset; exit 2 if any is missing or mismatched."""
    from rich.progress import track

    from emarena.data.fetch import locate, sha256_file
    from emarena.data.spec import all_specs, get_spec

    mirror = settings.mirror_dir(mirror)
    cache = settings.cache_dir(cache)
    specs = [get_spec(i) for i in ids] if ids else list(all_specs().values())
    bad: list[str] = []
    ok = 0
    items = [(ds, f) for ds in specs for f in ds.files]
    for ds, f in track(items, description="hashing", console=console):
        r = locate(f, mirror=mirror, cache=cache, verify=True)
        if r is None:
            # say whether it is absent or present with another hash
            detail = "absent"
            for base, rel in (
                (mirror, f.src.mirror_relpath),
                (cache / "data", f.src.cache_relpath),
            ):
                if base is not None and (base / rel).is_file():
                    detail = (
                        f"sha256 mismatch at {base / rel} (got {sha256_file(base / rel)[:12]}…)"
                    )
            bad.append(f"{ds.id}: {f.src.path}: {detail}")
        else:
            ok += 1
    console.print(f"{ok}/{len(items)} files found with a matching sha256 ({len(specs)} datasets)")
    if bad:
        raise DataError(
            f"{len(bad)} file(s) missing or mismatched:\n" + "\n".join(f"  {b}" for b in bad),
            fix=f"set {settings.ENV_MIRROR} or run `emarena data pull --all` with network",
        )


@app.command()
def show(
    dataset_id: str = typer.Argument(..., help="Dataset id."),
    n: int = typer.Option(3, "--n", help="Number of records to print."),
    part: str = typer.Option(None, "--part", help="Only this part of a multi-file dataset."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Print the registry entry and the first N canonical records."""
    import itertools
    import json

    from emarena.data import iter_records
    from emarena.data.spec import get_spec

    ds = get_spec(dataset_id)
    console.print(f"[bold]{ds.id}[/bold] ({ds.role}, {ds.license}) - {ds.description}")
    console.print(f"  citation: {ds.citation}; adapter: {ds.adapter}; files: {len(ds.files)}")
    recs = iter_records(
        dataset_id,
        parts=[part] if part else None,
        mirror=settings.mirror_dir(mirror),
        cache=settings.cache_dir(cache),
    )
    for rec in itertools.islice(recs, n):
        text = json.dumps(rec.model_dump(), ensure_ascii=False, indent=2)
        if len(text) > 2000:
            text = text[:2000] + "\n  … (truncated)"
        console.print(text, markup=False, highlight=False)
