"""Grid files and planning: schema errors (file, line, key, fix), deduplication of cells and
stages across defenses, the shipped grids, and an import-light `emarena grid --help`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emarena.errors import ConfigError
from emarena.protocol.grid import grids_dir, load_grid
from emarena.protocol.plan import make_plan, write_view
from emarena.protocol.run import Run
from emarena.protocol.store import Store
from tests.conftest import REPO


def plan_grid(grid, run_dir: Path, write: bool = True, store: Path | None = None):
    plan = make_plan(grid, store=Store(store or run_dir.parent / "store"))
    plan.run = Run(run_dir)
    if write:
        write_view(plan, plan.run)
    return plan

SMOKE = """\
schema_version: 1
name: tiny
preset: smoke
models: [smollm2-135m-q4]
em_datasets: [insecure]
defenses:
  - submissions/word-counting
  - submissions/general-knowledge
regimes: [prevention, reversal]
seeds: [0]
"""


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_grid(path)
    return e.value.render()


def test_shipped_grids_load_and_plan():
    # suite v1's grids (v2's: tests/unit/test_suite_v2.py)
    smoke = plan_grid(load_grid(grids_dir("v1") / "smoke.yaml"), Path("unused"), write=False)
    assert len(smoke.cells) == 6 and len(smoke.stages) == 7 and len(smoke.evals) == 6
    assert len(smoke.summaries) == 2  # SGTR's own summaries: the base model's, the EM model's
    assert smoke.device == "cpu" and smoke.threads == 2
    paper = plan_grid(load_grid(grids_dir("v1") / "paper.yaml"), Path("unused"), write=False)
    # 4 models x 2 EM datasets x 3 seeds x (base + em + 6 defenses x 2 regimes)
    assert len(paper.cells) == 4 * 2 * 3 * (2 + 6 * 2)
    # per (model, seed): per EM dataset 1 EM stage + 6 x (defense-after-EM, EM-after-defense),
    # and the 6 defense stages of prevention, of which sgtr, sgtr-corrupted, sgtr-random and
    # general-knowledge read no EM data and are shared by both EM datasets (4 x 2 - 4 fewer)
    per_model_seed = 2 * (1 + 6 * 2) + (2 * 6 - 4)
    assert len(paper.stages) == 4 * 3 * per_model_seed
    # evaluations: the base model once per seed, not once per EM dataset
    assert len(paper.evals) == len(paper.cells) - 4 * 3
    assert paper.device == "cuda" and paper.resources.num_gpus == 1


def test_plan_dedupes_cells_and_stages_across_defenses(tmp_path):
    plan = plan_grid(load_grid(write(tmp_path, SMOKE)), tmp_path / "run")
    regimes = sorted(c.regime for c in plan.cells)
    assert regimes == ["base", "em", "prevention", "prevention", "reversal", "reversal"]
    assert len({c.id for c in plan.cells}) == len(plan.cells)
    (em_control,) = [c for c in plan.cells if c.regime == "em"]
    (em_key,) = plan.stages_of[em_control.id]
    reversal = [c for c in plan.cells if c.regime == "reversal"]
    assert {plan.stages_of[c.id][0] for c in reversal} == {em_key}  # one EM stage for all
    em_stages = [s for s in plan.stages.values() if s.kind == "em"]
    # the shared EM stage, and one EM stage after each defense (prevention)
    assert len(em_stages) == 3 and sum(s.parent is None for s in em_stages) == 1
    keys = list(plan.stages)
    for s in plan.stages.values():  # parents come first
        assert s.parent is None or keys.index(s.parent) < keys.index(s.key)
    # the plan is written: plan.json lists every cell, each cell folder links into the store
    written = json.loads((plan.run.root / "plan.json").read_text())
    assert written["schema_version"] == 2
    assert written["cells"] == [c.id for c in plan.cells] and written["stages"] == keys
    for c in reversal:
        link = plan.run.root / "cells" / c.id / "stage1"
        assert link.is_symlink() and link.readlink().name == em_key
        assert link.resolve().parent == (plan.store.root / "stages").resolve()
    refs = json.loads((plan.run.root / "refs.json").read_text())["entries"]
    assert {f"stages/{k}" for k in keys} <= set(refs)


def test_two_models_and_seeds_multiply_and_share_nothing(tmp_path):
    text = SMOKE.replace("seeds: [0]", "seeds: [0, 1]").replace(
        "[smollm2-135m-q4]", "[smollm2-135m-q4, qwen2.5-0.5b-instruct]"
    )
    plan = plan_grid(load_grid(write(tmp_path, text)), tmp_path / "run", write=False)
    assert len(plan.cells) == 2 * 2 * 6 and len(plan.stages) == 2 * 2 * 7
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("preset: smoke", "preset: smok", ["grid.yaml:3: preset:", "did you mean 'smoke'"]),
        (
            "[smollm2-135m-q4]",
            "[smollm2-135m]",
            ["grid.yaml:4: models:", "unknown model 'smollm2-135m'", "smollm2-135m-q4"],
        ),
        (
            "em_datasets: [insecure]",
            "em_datasets: [secure]",
            ["grid.yaml:5: em_datasets:", "'secure' has role", "not 'em'", "fix: use an EM"],
        ),
        (
            "regimes: [prevention, reversal]",
            "regimes: [prevention, em]",
            ["grid.yaml:9: regimes:", "'em' is not a defense regime", "base and em controls"],
        ),
        ("seeds: [0]", "seeds: [0, 0]", ["seeds:", "seed listed twice: 0", "list each once"]),
        ("seeds: [0]", "seed: [0]", ["grid.yaml:10: seed:", "unknown key"]),
        ("name: tiny", "name: Tiny Grid", ["grid.yaml:2: name:"]),
    ],
)
def test_schema_errors_name_file_line_key_and_fix(tmp_path, old, new, expect):
    assert old in SMOKE
    msg = error_of(write(tmp_path, SMOKE.replace(old, new)))
    for part in expect:
        assert part in msg, f"{part!r} not in:\n{msg}"


def test_missing_submission_folder_is_named_with_where_it_was_looked_for(tmp_path):
    msg = error_of(write(tmp_path, SMOKE.replace("submissions/word-counting", "submissions/wc")))
    assert "defenses: 'submissions/wc' is not a submission folder" in msg
    assert "looked in:" in msg and "fix:" in msg


def test_a_regime_the_submission_does_not_support_is_refused(tmp_path):
    text = SMOKE.replace("submissions/word-counting", "submissions/none").replace(
        "[prevention, reversal]", "[defense]"
    )
    msg = error_of(write(tmp_path, text))
    assert "defenses: 'submissions/none'" in msg and "does not support regime 'defense'" in msg


def test_the_same_submission_twice_is_refused(tmp_path):
    text = SMOKE.replace("submissions/general-knowledge", "submissions/word-counting/")
    msg = error_of(write(tmp_path, text))
    assert "both submission 'word-counting'" in msg


def test_grid_help_and_plan_do_not_import_ray_or_torch():
    probe = (
        "import json, sys\n"
        "from emarena.cli.main import main\n"
        "rcs = [main(['grid', '--help']), main(['grid', {grid!r}, '--plan'])]\n"
        "heavy = [m for m in ('ray', 'torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "print('@@' + json.dumps({{'rcs': rcs, 'heavy': heavy}}))\n"
    ).format(grid=str(grids_dir() / "smoke.yaml"))
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, out.stdout + out.stderr
    res = json.loads(line[-1][2:])
    assert res == {"rcs": [0, 0], "heavy": []}, res
    assert "6 cells, 7 unique training stages" in out.stdout


def test_unknown_executor_exits_2_with_a_fix(tmp_path):
    out = subprocess.run(
        [
            sys.executable, "-m", "emarena", "grid", str(grids_dir() / "smoke.yaml"),
            "--executor", "slurm", "--run-root", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 2
    assert "--executor 'slurm' is not an executor" in out.stderr and "local or ray" in out.stderr
    assert not (tmp_path / "grid__smoke").exists()


def test_ray_executor_with_no_cluster_at_the_address_fails_fast_with_a_fix(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run(
        [
            sys.executable, "-m", "emarena", "grid", str(grids_dir() / "smoke.yaml"),
            "--executor", "ray", "--address", f"127.0.0.1:{port}", "--run-root", str(tmp_path),
            "--no-eval",
        ],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in out.stderr
    assert "ray start --head" in out.stderr
    assert not (tmp_path / "grid__smoke").exists()  # refused before planning or training
