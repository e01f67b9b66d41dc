"""Training: the recipe (`recipe`), the one config builder (`config`), LoRA stages (`lora`).

Public API::

    from emarena import train
    recipe = train.load_recipe()                 # benchmark/suites/v1/recipe.yaml
    preset = train.get_preset("cpu-demo")
    n = preset.budget.n_examples("em", em_dataset_size=6000)
    report = train.train_lora(base_dir, records, out_dir, recipe=recipe, preset=preset, seed=0)
    merged = train.merge_lora(base_dir, out_dir, merged_dir)

Importing this package does not import torch: `recipe` is plain pydantic, and `config` / `lora`
import torch, transformers, trl and peft inside their functions.
"""

from __future__ import annotations

from emarena.train.config import build_configs
from emarena.train.lora import (
    TrainReport,
    build_trainer,
    merge_lora,
    read_report,
    tokenize_chat,
    train_lora,
)
from emarena.train.recipe import (
    OPEN_DIVISION_KEYS,
    Budget,
    Preset,
    Recipe,
    apply_overrides,
    get_preset,
    load_recipe,
    recipe_path,
    recipe_sha256,
)

__all__ = [
    "OPEN_DIVISION_KEYS",
    "Budget",
    "Preset",
    "Recipe",
    "TrainReport",
    "apply_overrides",
    "build_configs",
    "build_trainer",
    "get_preset",
    "load_recipe",
    "merge_lora",
    "read_report",
    "recipe_path",
    "recipe_sha256",
    "tokenize_chat",
    "train_lora",
]
