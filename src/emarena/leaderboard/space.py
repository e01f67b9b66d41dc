"""The leaderboard as a Hugging Face Space folder that deploys as is.

    emarena space build OUT [--repo ORG/NAME]      write the folder
    emarena space push --repo ORG/NAME [--folder OUT]   build (unless given) and upload it

The folder:

    README.md          Space front matter (sdk: gradio at the installed gradio's version,
                       app_file, python_version, hf_oauth: true) and what to configure
    app.py             starts `emarena.leaderboard.app` (the same app as leaderboard/app.py)
    requirements.txt   this emarena, from the wheel below, with its leaderboard extra;
                       gradio pinned to the front matter's version
    wheels/emarena-<version>-py3-none-any.whl   built from this checkout (`pip wheel`)

Which emarena the Space runs is the wheel in its own repo, never an index's: a local build
names it by path (`./wheels/...`, for `pip install -r requirements.txt` in the folder); a build
for a repo (`--repo`, and always on push) names it by the repo's own download URL, because the
Spaces builder installs requirements.txt before it copies the repo's other files in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from emarena import __version__
from emarena.errors import ConfigError, EmArenaError

APP_PY = '''\
"""EM Arena leaderboard Space: the app of the emarena wheel this Space installs
(requirements.txt). Configure it with the Space's variables and secrets (README.md)."""

from emarena.leaderboard.app import main

if __name__ == "__main__":
    main()
'''

README_BODY = """\
# EM Arena leaderboard

Defenses against emergent misalignment (EM), each trained and scored identically: how much EM a
defense **prevents** (defense, then EM finetune) and **reverses** (EM finetune, then defense),
and what it costs in capability, identity and self-recognition. One row per defense for a model
and an EM dataset; every number with its 95% interval, its n and its unscored count; paired
differences to the EM-only control and to SGTR with p-values; the cost of every row; the
answers behind every number; submissions through a Hugging Face login.

Built by `emarena space build` from emarena {version}; the app is `emarena.leaderboard.app`.

## Configure (Settings → Variables and secrets)

| name | kind | meaning |
|---|---|---|
| `EMARENA_RESULTS_REPO` | variable | the results dataset, e.g. `org/em-arena-results` |
| `EMARENA_REQUESTS_REPO` | variable | the requests dataset, e.g. `org/em-arena-requests` |
| `HF_TOKEN` | secret | a token that can write the requests dataset (and read private ones) |
| `EMARENA_SUBMISSIONS_PER_DAY` | variable | requests one account may make in 24 hours (3) |

Without a results repo the page says so; when the Hub cannot be reached it shows the results it
downloaded last (kept under `/data` when the Space has persistent storage). Visitors log in with
Hugging Face to submit (`hf_oauth: true` above); without `HF_TOKEN` submitting is disabled and
the page says why.
"""


def project_root() -> Path:
    """The emarena source checkout this package runs from (a wheel is built from it)."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "emarena"' not in pyproject.read_text():
        raise ConfigError(
            f"no emarena source checkout at {root} (this emarena was installed from a wheel)",
            fix="run `emarena space build` from a checkout (`pip install -e .`), or pass "
            "--wheel with an emarena wheel",
        )
    return root


def build_wheel(dest: Path, echo: Callable[[str], None] = print) -> Path:
    """`pip wheel --no-deps` of the checkout into `dest`; the wheel's path."""
    root = project_root()
    dest.mkdir(parents=True, exist_ok=True)
    echo(f"building the emarena wheel from {root}")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
         str(dest), str(root)], capture_output=True, text=True, timeout=900)
    wheels = sorted(dest.glob(f"emarena-{__version__}-*.whl"))
    if out.returncode != 0 or not wheels:
        raise EmArenaError(
            f"pip wheel {root} failed (exit {out.returncode})",
            where=(out.stderr or out.stdout)[-2000:],
            fix="check that the checkout builds: `pip wheel --no-deps .` in it",
        )
    return wheels[-1]


def gradio_version() -> str:
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise ConfigError("gradio is not installed, so the Space's sdk_version is unknown",
                          fix="pip install 'emarena[leaderboard]'") from None


def front_matter(sdk_version: str) -> str:
    return "\n".join([
        "---",
        "title: EM Arena",
        "emoji: 🛡️",
        "colorFrom: indigo",
        "colorTo: red",
        "sdk: gradio",
        f"sdk_version: {sdk_version}",
        'python_version: "3.11"',
        "app_file: app.py",
        "hf_oauth: true",
        "hf_oauth_expiration_minutes: 480",
        "pinned: true",
        "license: apache-2.0",
        "short_description: Defenses against emergent misalignment, scored identically",
        "---",
        "",
    ])


def wheel_url(repo: str, wheel_name: str, endpoint: str | None = None) -> str:
    """Where the Space's repo serves its wheel (what the Spaces builder can download)."""
    from emarena import hub

    base = (endpoint or hub.endpoint() or "https://huggingface.co").rstrip("/")
    return f"{base}/spaces/{repo}/resolve/main/wheels/{wheel_name}"


def requirements(wheel_name: str, sdk_version: str, repo: str | None = None,
                 endpoint: str | None = None) -> str:
    ref = (f"emarena[leaderboard] @ {wheel_url(repo, wheel_name, endpoint)}" if repo
           else f"./wheels/{wheel_name}[leaderboard]")
    return "\n".join([
        "# The EM Arena leaderboard: this emarena, from the wheel in this Space's wheels/",
        "# folder, with its leaderboard extra (gradio with OAuth, pandas, matplotlib,",
        "# huggingface_hub). Nothing here pulls torch.",
        ref,
        f"gradio[oauth]=={sdk_version}",
        "",
    ])


def build(out: Path, *, repo: str | None = None, wheel: Path | None = None,
          endpoint: str | None = None, echo: Callable[[str], None] = print) -> Path:
    """Write the Space folder into `out` (emptied first when it holds a previous build)."""
    from emarena import hub

    out = Path(out)
    if repo is not None:
        hub.check_repo_id(repo)
    if out.exists() and any(out.iterdir()):
        if not (out / "app.py").is_file() or not (out / "wheels").is_dir():
            raise ConfigError(f"{out} is not empty and holds no earlier Space build",
                              fix="give an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    sdk = gradio_version()
    wheels = out / "wheels"
    if wheel is not None:
        wheels.mkdir()
        built = wheels / Path(wheel).name
        shutil.copy(wheel, built)
    else:
        built = build_wheel(wheels, echo)
    (out / "app.py").write_text(APP_PY, encoding="utf-8")
    (out / "requirements.txt").write_text(requirements(built.name, sdk, repo, endpoint),
                                          encoding="utf-8")
    (out / "README.md").write_text(front_matter(sdk) + "\n" + README_BODY.format(
        version=__version__), encoding="utf-8")
    echo(f"Space folder: {out} (gradio {sdk}, {built.name})")
    return out


def push(repo: str, folder: Path | None = None, *, private: bool | None = None,
         wheel: Path | None = None, echo: Callable[[str], None] = print) -> str:
    """Build the folder for `repo` (unless `folder` is given: then its requirements are pointed
    at `repo`) and upload it as a Gradio Space; returns the commit id."""
    from emarena import hub

    hub.check_repo_id(repo)
    with tempfile.TemporaryDirectory(prefix="emarena-space-") as tmp:
        if folder is None:
            folder = build(Path(tmp) / "space", repo=repo, wheel=wheel, echo=echo)
        else:
            folder = Path(folder)
            wheels = sorted((folder / "wheels").glob("emarena-*.whl"))
            if not (folder / "app.py").is_file() or not wheels:
                raise ConfigError(f"{folder} is not a Space folder (app.py, wheels/emarena-*)",
                                  fix="make one with `emarena space build OUT`")
            (folder / "requirements.txt").write_text(
                requirements(wheels[-1].name, gradio_version(), repo), encoding="utf-8")
        commit = hub.upload_space(repo, folder, private=private)
    echo(f"pushed the Space {repo} (commit {commit[:12] if commit else '-'})")
    return commit
