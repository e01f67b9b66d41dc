"""`emarena`: entry point. Keep this import-light: `emarena --help` must not import torch."""

from __future__ import annotations

import sys

import typer

from emarena import __version__
from emarena.cli import data as data_cli
from emarena.cli import models as models_cli
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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user-facing errors print without a traceback and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except EmArenaError as e:
        typer.secho(f"error: {e.render()}", err=True, fg="red")
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:  # click's usage errors
        return int(e.code or 0)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        return 130
    except Exception as e:  # click.exceptions.ClickException and friends
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return 2
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
