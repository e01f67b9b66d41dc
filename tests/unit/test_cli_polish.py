"""The command line's rough edges, each fixed and kept fixed: Ctrl-C reads as interrupted, a
GPU preset on a CPU machine fails before planning, validate never suggests an invalid name,
`--regimes a b` says how to give several values, `models list` never cuts an id, `report` on a
run without results fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emarena.cli.main import main
from emarena.protocol.isolate import raise_from_record
from emarena.protocol.run import Run
from emarena.protocol.store import Store

REPO = Path(__file__).resolve().parents[2]


def test_ctrl_c_in_a_task_is_an_interruption_not_a_failure(tmp_path):
    """The child catches Ctrl-C first and reports it; the parent re-raises it as an
    interruption (no failure record), and an older record of that kind reads interrupted."""
    with pytest.raises(KeyboardInterrupt):
        raise_from_record({"ok": False, "type": "KeyboardInterrupt", "message": "interrupted",
                           "traceback": ""}, "train")
    run = Run(tmp_path / "run")
    (tmp_path / "run").mkdir()
    store = Store.open(tmp_path / "store")
    run.log("stage_train_start", stage="k1")
    run.fail("train-k1", "task train failed: KeyboardInterrupt: interrupted")
    assert run.stage_status("k1", store)[0] == "interrupted"
    run.fail("train-k1", "task train failed: RuntimeError: out of memory")
    assert run.stage_status("k1", store) == ("failed",
                                             "task train failed: RuntimeError: out of memory")


def test_a_gpu_preset_on_a_cpu_machine_fails_before_planning(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    run, store = tmp_path / "run", tmp_path / "store"
    rc = main(["score", str(REPO / "submissions" / "sgtr"), "--preset", "paper", "--run",
               str(run), "--store", str(store)])
    err = capsys.readouterr().err
    assert rc == 2 and "preset 'paper' trains on a CUDA GPU" in err and "--preset cpu-demo" in err
    assert not run.exists() and not store.exists()  # nothing planned, nothing written


def test_validate_never_suggests_an_invalid_name(tmp_path, capsys):
    folder = tmp_path / "My_Defense"
    folder.mkdir()
    text = (REPO / "submissions" / "sgtr" / "defense.yaml").read_text()
    (folder / "defense.yaml").write_text(text.replace("name: sgtr", "name: my-defense"))
    (folder / "README.md").write_text("# mine\n")
    assert main(["validate", str(folder)]) == 2
    out = capsys.readouterr()
    line = next(ln for ln in (out.out + out.err).splitlines() if "must equal the folder" in ln)
    assert "name: My_Defense" not in line
    assert "rename the folder to 'my-defense'" in line and "uppercase" in line


def test_several_values_for_a_repeatable_flag_get_a_hint(capsys):
    rc = main(["score", "submissions/sgtr", "--regimes", "reversal", "prevention"])
    err = capsys.readouterr()
    text = err.out + err.err
    assert rc == 2 and "unexpected extra argument" in text
    flat = " ".join(text.replace("│", " ").split())  # the panel wraps the line
    assert "repeat the flag: --regimes reversal --regimes prevention" in flat


def test_models_list_never_cuts_an_id():
    from emarena.models.spec import all_specs

    out = subprocess.run([sys.executable, "-m", "emarena", "models", "list"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    for model_id in all_specs():
        assert model_id in out.stdout, model_id


def test_report_without_results_fails(tmp_path, capsys):
    cell = tmp_path / "run" / "cells" / ("a" * 64)
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text("{}")
    assert main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no cell has a result yet (1 cell(s) pending)" in err and "emarena status" in err
    assert not (tmp_path / "run" / "report.md").exists()
