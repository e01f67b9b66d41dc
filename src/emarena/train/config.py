"""The one place that turns the recipe into trl / peft configuration objects.

Everything the trainer does is decided here, from the recipe and the preset alone, so that two
stages with the same (recipe, preset, seed) are configured identically and a reader can check
every trainer setting against recipe.yaml in one screen.

How the loss is restricted to assistant tokens: NOT through trl's `assistant_only_loss` (it needs
a chat template with `{% generation %}` markers; SmolLM2's and most released templates have none,
and trl's swap-in training templates cover only the families it knows) and NOT through the
prompt-completion format (`completion_only_loss` trains only the last assistant turn, dropping
earlier turns of a multi-turn conversation). Instead `emarena.train.lora.tokenize_chat` renders
each conversation with the model's own template, marks the characters of every assistant reply
(content + end-of-turn token), and hands trl a pre-tokenized dataset with `input_ids` and
`assistant_masks`; trl turns the mask into `labels` (-100 elsewhere). Both trl flags are therefore
False here on purpose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emarena.errors import ConfigError
from emarena.train.recipe import Preset, Recipe, apply_overrides, for_preset

if TYPE_CHECKING:  # pragma: no cover - typing only; the imports are heavy
    import peft
    import trl


def build_configs(
    recipe: Recipe,
    preset: Preset,
    *,
    output_dir: str | Path,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    check_device: bool = True,
) -> tuple[trl.SFTConfig, peft.LoraConfig]:
    """The `SFTConfig` and `LoraConfig` for one training stage.

    `overrides` are open-division recipe overrides (validated by `apply_overrides`). One process
    is assumed: the effective batch is `per_device_batch_size x gradient_accumulation_steps`.

    `check_device=False` is for checks that only build the objects (that every argument is one
    the installed trl and transformers accept), on a machine without the preset's device: a
    `cuda` preset is then not refused, and its config is built with `use_cpu=True`, because
    transformers itself refuses bf16 without a GPU; every other field is the preset's. Never
    train with such a config.
    """
    import torch
    from peft import LoraConfig
    from trl import SFTConfig

    recipe = apply_overrides(for_preset(recipe, preset), overrides)
    on_cpu = preset.device == "cpu"
    has_device = on_cpu or torch.cuda.is_available()
    if check_device and not has_device:
        raise ConfigError(
            f"preset {preset.name!r} trains on a CUDA GPU, and this machine has none",
            fix="use `--preset cpu-demo` here, or run on a machine with a GPU",
        )

    sft = SFTConfig(
        output_dir=str(output_dir),
        # --- optimisation: recipe.yaml, one line each ---
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_epochs,
        per_device_train_batch_size=preset.per_device_batch_size,
        gradient_accumulation_steps=preset.gradient_accumulation_steps,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        optim=recipe.optimizer,
        max_grad_norm=recipe.max_grad_norm,
        # --- data: pre-tokenized by tokenize_chat (input_ids + assistant_masks) and cut to
        # max_seq_length there (so trl's own max_length, which padding-free training refuses,
        # is not needed). padding_free: each micro-batch is its examples laid end to end with
        # per-example position ids (no pad tokens computed); transformers turns the position
        # ids into a block-diagonal causal mask, so no example attends to another. No packing:
        # a step is always `effective_batch_size` examples, as the recipe says ---
        max_length=None if preset.padding_free else preset.max_seq_length,
        truncation_mode="keep_start",
        packing=False,
        padding_free=preset.padding_free,
        assistant_only_loss=False,  # masking comes from the dataset's assistant_masks column
        completion_only_loss=False,
        # The caller already shuffled the examples with the cell seed; training consumes them in
        # that order, so the data order does not depend on the trainer's sampler implementation.
        train_sampling_strategy="sequential",
        shuffle_dataset=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=not on_cpu,
        # --- device and precision ---
        use_cpu=on_cpu or not has_device,
        bf16=preset.bf16,
        fp16=False,
        **_checkpointing_args(SFTConfig, preset.gradient_checkpointing),
        # --- reproducibility: seeds the LoRA init (trl calls set_seed before get_peft_model),
        # dropout and any sampling; bitwise determinism on GPU (full_determinism) is not
        # requested because it costs speed and the recipe's dropout is 0 ---
        seed=seed,
        data_seed=seed,
        # --- outputs: the caller saves the final adapter itself; nothing else is written ---
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=False,
    )
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        use_rslora=recipe.use_rslora,
        bias=recipe.lora_bias,
        target_modules=list(recipe.lora_target_modules),
    )
    return sft, lora


def _checkpointing_args(sft_config_cls: type, on: bool) -> dict[str, Any]:
    """Activation checkpointing (non-reentrant when on), under the name this transformers uses.

    transformers 5.23 renamed `gradient_checkpointing(_kwargs)` to
    `activation_checkpointing(_kwargs)` and kept the old names as deprecated aliases (a
    FutureWarning; removed in v6); before 5.23 only the old names exist. The image's vLLM pins
    transformers <5.21 (docker/pins.toml) while the dev venv gets the newest, so the dataclass
    is asked which names it has: both build the same config, without a warning.
    """
    names = {f.name for f in dataclasses.fields(sft_config_cls)}
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if name in names and f"{name}_kwargs" in names:
            return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}
    raise ConfigError(
        f"{sft_config_cls.__module__}.{sft_config_cls.__name__} has neither "
        "activation_checkpointing nor gradient_checkpointing",
        fix="install transformers within docker/pins.toml's range: `pip install -e '.[train]'`",
    )
