"""docker/pins.toml is the one record of the GPU image's versions: the Dockerfile, the README, the
check scripts and the Makefile agree with it, and scripts/pins.py reads and checks it.

The pins come from vLLM 0.33.0's wheel metadata (Requires-Dist); see the file's header.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PINS_FILE = REPO / "docker" / "pins.toml"
PINS_PY = REPO / "scripts" / "pins.py"
SCRIPTS = [REPO / "scripts" / "check-image.sh", REPO / "scripts" / "check-pins.sh"]


@pytest.fixture(scope="module")
def pins() -> dict:
    return tomllib.loads(PINS_FILE.read_text())


def _exact(spec: str) -> str:
    m = re.fullmatch(r"==(\d+(?:\.\d+)+)", spec)
    assert m, f"{spec!r} is not an exact pin"
    return m.group(1)


def _pins_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PINS_PY), *args], capture_output=True, text=True,
                          check=False)


def test_pins_are_consistent(pins):
    image = pins["image"]
    assert image["base"] == f"vllm/vllm-openai:v{image['vllm']}"
    requires = image["requires"]
    gpu_torch, cpu_torch = _exact(requires["torch"]), pins["cpu"]["torch"]
    # The CPU stand-in is the nearest CPU torch: same major, not newer than the image's.
    assert Version(cpu_torch).major == Version(gpu_torch).major
    assert Version(cpu_torch) <= Version(gpu_torch)
    for name, spec in requires.items():
        SpecifierSet(spec)  # each parses as a PEP 440 specifier
        assert name == name.lower(), f"{name}: use the normalized (lower-case) name"
    assert re.fullmatch(r"\d+", image["cuda"])


def test_dockerfile_agrees(pins):
    df = DockerfileParser(str(REPO / "Dockerfile"))
    base = next(ins["value"].split("=", 1)[1] for ins in df.structure
                if ins["instruction"] == "ARG" and ins["value"].startswith("BASE_IMAGE="))
    assert base.split("@sha256:")[0] == pins["image"]["base"]
    text = (REPO / "Dockerfile").read_text()
    gpu_torch = _exact(pins["image"]["requires"]["torch"])
    assert f"torch {gpu_torch} (CUDA {pins['image']['cuda']})" in text
    assert f"transformers {pins['image']['requires']['transformers']}" in text
    # the base's versions are checked at build time against the file, not restated
    assert "scripts/pins.py check" in text and "docker/pins.toml" in text


def _torch_mentions(text: str) -> list[tuple[str, str]]:
    """(version, the text around it) for every `torch X.Y.Z` / `torch==X.Y.Z`."""
    return [(m.group(1), text[max(0, m.start() - 80):m.end() + 80])
            for m in re.finditer(r"torch(?: |==)(\d+\.\d+\.\d+)", text)]


def test_readme_states_the_pins_and_no_other_torch(pins):
    readme = (REPO / "README.md").read_text()
    image, requires = pins["image"], pins["image"]["requires"]
    gpu_torch, cpu_torch = _exact(requires["torch"]), pins["cpu"]["torch"]
    for fact in (image["base"], f"torch {gpu_torch}", f"CUDA {image['cuda']}",
                 f"transformers {requires['transformers']}", "docker/pins.toml",
                 "scripts/check-pins.sh"):
        assert fact in readme, f"README.md does not state {fact!r} (docker/pins.toml)"
    mentions = _torch_mentions(readme)
    assert mentions
    for found, around in mentions:
        assert found in (gpu_torch, cpu_torch), f"README.md names torch {found}: {around!r}"
        # the CPU stand-in is only ever named as such, never as the image's torch
        if found == cpu_torch:
            assert "CPU" in around, f"README.md: torch {found} without saying CPU: {around!r}"


def test_scripts_read_the_pins_instead_of_repeating_them(pins):
    values = {pins["cpu"]["torch"], pins["image"]["vllm"],
              *(v for s in pins["image"]["requires"].values()
                for v in re.findall(r"\d+(?:\.\d+)+", s))}
    for script in SCRIPTS:
        text = script.read_text()
        assert "scripts/pins.py" in text, f"{script.name} does not read docker/pins.toml"
        for v in values:
            assert v not in text, f"{script.name} repeats the pinned version {v}: read it instead"


def test_makefile_installs_the_cpu_torch_of_the_pins(pins):
    makefile = (REPO / "Makefile").read_text()
    m = re.search(r"^TORCH\s*\?=\s*torch==(\S+)$", makefile, re.M)
    assert m and m.group(1) == pins["cpu"]["torch"]


def test_pins_py_get_and_constraints(pins):
    assert _pins_py("get", "image.base").stdout.strip() == pins["image"]["base"]
    assert _pins_py("get", "cpu.torch").stdout.strip() == pins["cpu"]["torch"]
    r = _pins_py("get", "image.nope")
    assert r.returncode != 0 and "image.nope" in r.stderr
    gpu = _pins_py("constraints", "--target", "gpu").stdout.splitlines()
    cpu = _pins_py("constraints", "--target", "cpu").stdout.splitlines()
    assert f"vllm=={pins['image']['vllm']}" in gpu
    assert f"torch{pins['image']['requires']['torch']}" in gpu
    assert f"torch=={pins['cpu']['torch']}" in cpu and not any(c.startswith("vllm") for c in cpu)
    transformers = f"transformers{pins['image']['requires']['transformers']}"
    assert transformers in gpu and transformers in cpu


def test_pins_py_check_names_what_is_outside(tmp_path):
    """`check` against pins this Python meets, then against pins its transformers misses."""
    torch_v, tf_v = Version(version("torch")).base_version, version("transformers")
    shared = 'huggingface-hub = ">=0"\ntokenizers = ">=0"\nsafetensors = ">=0"\npydantic = ">=2"\n'

    def write(transformers: str) -> Path:
        f = tmp_path / f"pins-{len(list(tmp_path.iterdir()))}.toml"
        f.write_text(f'[image]\nbase = "x"\nvllm = "0"\ncuda = "13"\n[image.requires]\n'
                     f'torch = "==99"\ntransformers = "{transformers}"\n{shared}'
                     f'[cpu]\ntorch = "{torch_v}"\n')
        return f

    ok = _pins_py("--pins", str(write(f"=={tf_v}")), "check", "--target", "cpu")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(rf"transformers\s+{re.escape(tf_v)}\s+=={re.escape(tf_v)}\s+ok", ok.stdout)

    bad = _pins_py("--pins", str(write(f"<{tf_v}")), "check", "--target", "cpu")
    assert bad.returncode == 1
    assert f"transformers {tf_v} is outside <{tf_v}" in bad.stderr
    # gpu target: torch must be the image's (==99 here) and vLLM installed
    gpu = _pins_py("--pins", str(write(f"=={tf_v}")), "check", "--target", "gpu")
    assert gpu.returncode == 1 and "is outside ==99" in gpu.stderr
    assert "vllm is not installed" in gpu.stderr or "is outside ==0" in gpu.stderr
