"""The training recipe as data: it parses, its presets add up, overrides are whitelisted.

Fast and torch-free (the one subprocess test checks that importing `emarena.train` stays so).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emarena.errors import ConfigError
from emarena.train import (
    OPEN_DIVISION_KEYS,
    Recipe,
    apply_overrides,
    get_preset,
    load_recipe,
    recipe_path,
    recipe_sha256,
)
from emarena.yamlio import load_model


@pytest.fixture
def recipe() -> Recipe:
    return load_recipe()


def test_recipe_parses_with_the_upstream_values(recipe):
    assert recipe.lora_r == 32 and recipe.lora_alpha == 64 and recipe.lora_dropout == 0.0
    assert recipe.use_rslora is True
    assert set(recipe.lora_target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }
    assert recipe.learning_rate == 1e-5 and recipe.num_epochs == 1
    assert recipe.effective_batch_size == 16
    assert recipe.lr_scheduler == "linear" and recipe.warmup_steps == 5
    assert recipe.weight_decay == 0.01
    assert recipe.loss == "assistant_only"


def test_recipe_matches_upstream_train_json(recipe, mirror):
    """Every recipe value that upstream's train.json sets agrees with it."""
    up = json.loads(
        (mirror / "emergent-misalignment__emergent-misalignment/open_models/train.json").read_text()
    )
    assert recipe.lora_r == up["r"]
    assert recipe.lora_alpha == up["lora_alpha"]
    assert recipe.lora_dropout == up["lora_dropout"]
    assert recipe.use_rslora == up["use_rslora"]
    assert list(recipe.lora_target_modules) == up["target_modules"]
    assert recipe.learning_rate == up["learning_rate"]
    assert recipe.num_epochs == up["epochs"]
    assert recipe.warmup_steps == up["warmup_steps"]
    assert recipe.weight_decay == up["weight_decay"]
    assert recipe.lr_scheduler == up["lr_scheduler_type"]
    assert recipe.seed == up["seed"]
    assert recipe.effective_batch_size == (
        up["per_device_train_batch_size"] * up["gradient_accumulation_steps"]
    )
    paper = recipe.get_preset("paper")
    assert paper.max_seq_length == up["max_seq_length"]
    assert up["train_on_responses_only"] is True and recipe.loss == "assistant_only"


def test_presets_exist_and_split_the_effective_batch(recipe):
    assert {"paper", "cpu-demo"} <= set(recipe.presets)
    for name, p in recipe.presets.items():
        assert p.name == name
        assert p.per_device_batch_size * p.gradient_accumulation_steps == 16
    paper, demo = recipe.get_preset("paper"), get_preset("cpu-demo")
    assert (paper.device, paper.max_seq_length, paper.bf16) == ("cuda", 2048, True)
    # upstream's 16 examples per step, split 8 x 2 (the same gradient: see sort_within_steps)
    assert (paper.per_device_batch_size, paper.gradient_accumulation_steps) == (8, 2)
    assert (demo.device, demo.max_seq_length, demo.bf16) == ("cpu", 384, False)
    # the demo's EM stage trains 64 examples (4 steps), a defense 16 (1 step), at its own
    # learning rate: enough to move the 135M model (the recipe's 1e-5 and warmup move nothing
    # in a few steps; bench/demo_time.py measured the contrast move +0.44 [0.31, 0.56]
    # nats/token from the base), and the whole demo scores in about 7 minutes on 2 cores
    assert (demo.budget.em, demo.budget.defense) == (64, 16)
    assert (demo.learning_rate, demo.warmup_steps) == (1e-3, 0)
    # CPU presets, every suite: micro-batches of 4 (x 4); with 8 an SGTR smoke stage peaked
    # at 9 GB on a CPU
    for suite in ("v1", "v2"):
        for name in ("cpu-demo", "smoke"):
            p = get_preset(name, suite=suite)
            assert (p.per_device_batch_size, p.gradient_accumulation_steps) == (4, 4), (suite,
                                                                                        name)


def test_budget_resolves_per_stage(recipe):
    paper, demo = recipe.get_preset("paper"), recipe.get_preset("cpu-demo")
    # paper: the whole EM dataset; every defense gets the same fixed budget (2000: the most
    # SGTR can build from the 1000 XSUM articles with summaries)
    assert paper.budget.n_examples("em", em_dataset_size=6000) == 6000
    assert paper.budget.n_examples("defense", em_dataset_size=7049) == 2000
    assert paper.budget.n_examples("defense", em_dataset_size=20) == 2000
    assert paper.n_examples is None
    assert demo.budget.n_examples("em", em_dataset_size=6000) == 64
    assert demo.budget.n_examples("defense", em_dataset_size=6000) == 16


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        get_preset("gpu-xl")
    msg = str(e.value)
    assert "unknown preset 'gpu-xl'" in msg
    assert "cpu-demo" in msg and "paper" in msg
    assert str(recipe_path()) in msg


def test_open_division_whitelist(recipe):
    assert {"learning_rate", "num_epochs", "lora_r", "lora_alpha", "lora_dropout",
            "warmup_steps"} <= OPEN_DIVISION_KEYS
    # what makes rows comparable is never overridable
    assert not {"effective_batch_size", "presets", "loss", "seed", "lora_target_modules",
                "schema_version"} & OPEN_DIVISION_KEYS

    out = apply_overrides(recipe, {"learning_rate": 2e-5, "lora_r": 16})
    assert (out.learning_rate, out.lora_r) == (2e-5, 16)
    assert recipe.learning_rate == 1e-5, "the suite recipe itself is untouched"
    assert apply_overrides(recipe, None) is recipe and apply_overrides(recipe, {}) is recipe

    with pytest.raises(ConfigError) as e:
        apply_overrides(recipe, {"learning_rate": 2e-5, "effective_batch_size": 64})
    assert "effective_batch_size" in str(e.value) and "learning_rate" in str(e.value.fix)
    with pytest.raises(ConfigError, match="lora_r"):
        apply_overrides(recipe, {"lora_r": 0})
    with pytest.raises(ConfigError, match="lora_dropout"):
        apply_overrides(recipe, {"lora_dropout": "lots"})


def _write_variant(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(recipe_path().read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_bad_recipe_files_fail_with_file_line_and_key(tmp_path):
    path = _write_variant(tmp_path, lora_rank=8)
    with pytest.raises(ConfigError) as e:
        load_model(path, Recipe)
    assert f"{path}:" in str(e.value) and "lora_rank: unknown key" in str(e.value)

    path = _write_variant(tmp_path, presets__paper__gradient_accumulation_steps=4)
    with pytest.raises(ConfigError, match=r"'paper'.*= 32, but effective_batch_size is 16"):
        load_model(path, Recipe)


def test_recipe_sha256_is_the_file_hash():
    import hashlib

    assert recipe_sha256() == hashlib.sha256(recipe_path().read_bytes()).hexdigest()
    assert recipe_sha256() != load_recipe().sha256()  # the other one hashes the parsed values


def test_importing_train_does_not_import_torch():
    probe = (
        "import sys, emarena.train; "
        "print([m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
