"""`emarena validate PATH...`: check submissions without running anything.

PATH is a submission folder, its defense.yaml, or a folder of submission folders (whose `_*`
and `.*` entries are skipped; name `submissions/_template` explicitly to check it). Prints
`ok  <path>  (...)` per valid submission and every problem as `file:line: key: message; fix:
...`, then a summary; exits 2 if anything is invalid. Never imports torch: it reads YAML and
the suite's registries only.

Every line printed is one line of printable text: paths, keys and values come from the
submission (a folder or a key may hold a newline or a terminal escape) and are escaped
(`emarena.textsafe.escape`), so no submission can forge an `ok` line or reach the terminal.
"""

from __future__ import annotations

import typer

from emarena.errors import ConfigError

PathsArg = typer.Argument(
    None,
    metavar="PATH...",
    help="Submission folders, defense.yaml files, or folders of submissions "
    "(e.g. `submissions/*`).",
)


def validate(paths: list[str] = PathsArg) -> None:
    """Validate submissions: schema, params, names, README. Exit 2 if any is invalid."""
    from emarena.submission import check_paths
    from emarena.textsafe import escape

    if not paths:  # checked here, not by typer, so it is a ConfigError: exit 2, no traceback
        raise ConfigError(
            "no PATH given", fix="name submission folders, e.g. `emarena validate submissions/*`"
        )
    results = check_paths(paths)
    n_bad = n_problems = 0
    for r in results:
        if r.ok:
            s = r.submission
            assert s is not None
            regimes = f"regimes {', '.join(s.regimes)}" if s.regimes else "no regimes (control)"
            typer.echo(f"ok  {escape(str(r.path))}  ({s.defense.kind}, {s.division}, {regimes})")
        else:
            n_bad += 1
            n_problems += len(r.errors)
            for line in r.errors:
                typer.echo(escape(line))  # already escaped by check_paths; kept for safety
    n_ok = len(results) - n_bad
    summary = f"{len(results)} submission(s): {n_ok} valid, {n_bad} invalid"
    if n_bad:
        # A ConfigError (not typer.Exit): `main` prints it and exits 2.
        raise ConfigError(
            f"{summary} ({n_problems} problem(s))",
            fix="correct the lines above (see submissions/_template/defense.yaml)",
        )
    typer.echo(summary)
