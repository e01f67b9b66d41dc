"""`--help`, `data list`, `published list` and `validate` must never import torch, transformers
or vLLM.

They run in a subprocess so that nothing another test imported can hide a heavy import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "peft", "trl")

PROBE = """
import json, sys
from emarena.cli.main import main
rc = main({argv!r})
heavy = [m for m in {heavy!r} if m in sys.modules]
print("@@" + json.dumps({{"rc": rc, "heavy": heavy}}))
"""


def run_cli(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, f"probe printed nothing\nstdout:{out.stdout}\nstderr:{out.stderr}"
    return json.loads(line[-1][2:])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["data", "--help"], ["models", "--help"], ["data", "list"], ["models", "list"],
     ["published", "list"], ["judge", "--help"], ["space", "--help"]],
)
def test_light_commands_do_not_import_torch(argv):
    res = run_cli(argv)
    assert res["rc"] == 0
    assert res["heavy"] == [], f"`emarena {' '.join(argv)}` imported {res['heavy']}"


def test_unknown_dataset_exits_2_with_a_fix():
    out = subprocess.run(
        [sys.executable, "-m", "emarena", "data", "show", "insecur"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "unknown dataset 'insecur'" in out.stderr
    assert "emarena data list" in out.stderr
    assert "Traceback" not in out.stderr
