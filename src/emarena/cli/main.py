"""`emarena`: entry point. Keep this import-light: `emarena --help` must not import torch."""

from __future__ import annotations

import os
import re
import sys

# Before torch is ever imported: OpenMP threads that spin while waiting make CPU generation
# up to 10x slower on a busy 2-core machine. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

from emarena import __version__  # noqa: E402
from emarena.cli import data as data_cli
from emarena.cli import grid as grid_cli
from emarena.cli import hub as hub_cli
from emarena.cli import judge as judge_cli
from emarena.cli import models as models_cli
from emarena.cli import protocol as protocol_cli
from emarena.cli import published as published_cli
from emarena.cli import space as space_cli
from emarena.cli import store as store_cli
from emarena.cli.validate import validate as validate_cmd
from emarena.errors import EmArenaError

app = typer.Typer(
    name="emarena",
    help="EM Arena: score defenses against emergent misalignment, identically.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.add_typer(models_cli.app, name="models")
app.add_typer(store_cli.app, name="store")
app.add_typer(published_cli.app, name="published")
app.add_typer(judge_cli.app, name="judge")
app.add_typer(space_cli.app, name="space")
app.command("score")(protocol_cli.score)
app.command("grid")(grid_cli.grid)
app.command("status")(protocol_cli.status)
app.command("report")(protocol_cli.report)
app.command("rejudge")(protocol_cli.rejudge)
app.command("validate")(validate_cmd)
app.command("publish")(hub_cli.publish)
app.command("submit")(hub_cli.submit)
app.command("worker")(hub_cli.worker)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emarena {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """EM Arena: score defenses against emergent misalignment, identically."""


def repeat_hint(err: typer.TyperException, argv: list[str]) -> str | None:
    """For "Got unexpected extra argument(s) (x y)" right after a repeatable option: how to
    give several values (`--regimes reversal --regimes prevention`)."""
    m = re.search(r"unexpected extra argument(?:s|\(s\))? \((.+)\)",
                  str(getattr(err, "message", "")))
    ctx = getattr(err, "ctx", None)
    cmd = ctx.command if ctx is not None else None
    if m is None or cmd is None:
        return None
    extras = m.group(1).split()
    repeatable = {o: p for p in cmd.params if getattr(p, "multiple", False) for o in p.opts}
    for i, token in enumerate(argv):
        if token in repeatable and argv[i + 2: i + 2 + len(extras)] == extras and i + 1 < len(
                argv):
            values = [argv[i + 1], *extras]
            return ("hint: to give several values, repeat the flag: "
                    + " ".join(f"{token} {v}" for v in values))
    return None


def _show(err: typer.TyperException) -> None:
    """A usage error as typer shows it (a panel with the usage line), else plainly."""
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(err)  # type: ignore[arg-type]
    except ImportError:
        err.show()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Usage errors print the usage line and the error (exit 2), with a hint when a repeatable
    option was given several values at once; our own `EmArenaError`s print what / where / fix
    without a traceback and exit 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # not standalone: usage errors come back here, to add the hint before they are shown
        code = app(args=args, prog_name="emarena", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 1
    except typer.TyperException as e:  # click's usage and parameter errors (typer's copy)
        hint = repeat_hint(e, args)
        if hint:
            e.message = f"{e.message}\n{hint}"  # type: ignore[attr-defined]
        _show(e)
        return int(getattr(e, "exit_code", 2))
    except SystemExit as e:
        if e.code is None:
            return 0
        return e.code if isinstance(e.code, int) else 1
    except EmArenaError as e:
        typer.secho(f"error: {e.render()}", err=True, fg="red")
        return e.exit_code
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
