"""The `paper` preset's trainer config builds on a machine without a GPU, under the installed
transformers, with activation checkpointing on and no deprecation warning.

`make test` runs this under the dev venv's transformers (the newest); scripts/check-pins.sh runs
it again under the image's pins (transformers <5.21, docker/pins.toml), where
`activation_checkpointing` does not exist yet. No training: only the config objects.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from emarena.errors import ConfigError
from emarena.train import build_configs, load_recipe
from emarena.train.config import _checkpointing_args


def _build(preset_name: str, tmp_path):
    recipe = load_recipe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sft, lora = build_configs(recipe, recipe.get_preset(preset_name), output_dir=tmp_path,
                                  seed=0, check_device=False)
    # pytest's own filter ignores transformers' FutureWarnings (pyproject), so look for the
    # deprecated-alias warning here: a config built with the old name under a new transformers
    # (or the new name under an old one, which fails outright) is the bug this guards.
    about_checkpointing = [str(w.message) for w in caught if "checkpointing" in str(w.message)]
    assert not about_checkpointing, about_checkpointing
    return sft, lora


def test_paper_preset_config_builds_with_checkpointing_on(tmp_path):
    sft, lora = _build("paper", tmp_path)
    # Both transformers generations expose the old name (5.23+ mirrors the new one into it).
    assert sft.gradient_checkpointing is True
    assert getattr(sft, "activation_checkpointing", True) is True
    kwargs = getattr(sft, "activation_checkpointing_kwargs", sft.gradient_checkpointing_kwargs)
    assert kwargs == {"use_reentrant": False}
    # the rest is the preset's (bf16 on the GPU), with use_cpu only because this check may run
    # where there is no GPU (check_device=False)
    paper = load_recipe().get_preset("paper")
    assert paper.bf16 is True and sft.bf16 is True and sft.fp16 is False
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (
        paper.per_device_batch_size, paper.gradient_accumulation_steps)
    assert (lora.r, lora.lora_alpha, lora.use_rslora) == (32, 64, True)


def test_cpu_demo_config_has_checkpointing_off(tmp_path):
    sft, _ = _build("cpu-demo", tmp_path)
    assert sft.gradient_checkpointing is False and sft.use_cpu is True
    assert getattr(sft, "activation_checkpointing", False) is False


def test_the_checkpointing_name_follows_the_dataclass():
    """Under any transformers, the name comes from the fields the dataclass has: here two real
    dataclasses shaped like TrainingArguments before and after 5.23."""

    @dataclasses.dataclass
    class Before523:
        gradient_checkpointing: bool = False
        gradient_checkpointing_kwargs: dict | None = None

    @dataclasses.dataclass
    class From523(Before523):
        activation_checkpointing: bool | None = None
        activation_checkpointing_kwargs: dict | None = None

    assert _checkpointing_args(Before523, True) == {
        "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}
    }
    assert _checkpointing_args(From523, False) == {
        "activation_checkpointing": False, "activation_checkpointing_kwargs": None
    }

    @dataclasses.dataclass
    class Neither:
        bf16: bool = False

    with pytest.raises(ConfigError, match="neither activation_checkpointing nor"):
        _checkpointing_args(Neither, True)
