"""`emarena space build | push`: the leaderboard as a Hugging Face Space that deploys as is."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The leaderboard as a Hugging Face Space: build the folder, push it.",
                  no_args_is_help=True)

RepoOpt = typer.Option(None, "--repo", help="The Space, ORG/NAME: its requirements then name "
                       "the wheel by the Space's own download URL (what the Spaces builder "
                       "installs from).")
WheelOpt = typer.Option(None, "--wheel", help="Use this emarena wheel instead of building one "
                        "from the checkout.")


@app.command("build")
def build(
    out: Path = typer.Argument(..., help="Folder to write (new, empty, or an earlier build)."),
    repo: str = RepoOpt,
    wheel: Path = WheelOpt,
) -> None:
    """Write a ready Space folder: README front matter (sdk: gradio, app_file, hf_oauth),
    app.py, requirements.txt and this emarena as a wheel."""
    from emarena.leaderboard.space import build as run

    run(out, repo=repo, wheel=wheel, echo=typer.echo)
    typer.echo(f"try it: cd {out} && pip install -r requirements.txt && python app.py")


@app.command("push")
def push(
    repo: str = typer.Option(..., "--repo", help="The Space to create or update, ORG/NAME."),
    folder: Path = typer.Option(None, "--folder", help="A folder from `emarena space build` "
                                "(default: build one now)."),
    private: bool = typer.Option(None, "--private/--public", help="Visibility of a new Space."),
    wheel: Path = WheelOpt,
) -> None:
    """Upload the Space folder with huggingface_hub (HF_TOKEN, HF_ENDPOINT from the
    environment)."""
    from emarena.leaderboard.space import push as run

    run(repo, folder, private=private, wheel=wheel, echo=typer.echo)
