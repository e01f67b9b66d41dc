"""One LoRA training stage, and merging an adapter into its base.

    report = train_lora(base_dir, records, out_dir, recipe=recipe, preset=preset, seed=0)
    merged = merge_lora(base_dir, out_dir, merged_dir)   # the next stage's base

`train_lora` loads the base model from a local transformers folder, tokenizes the records with
the model's own chat template (loss on assistant replies only, see `tokenize_chat`), trains a
fresh LoRA adapter with `trl.SFTTrainer` configured by `build_configs`, and writes into `out_dir`:
`adapter_model.safetensors`, `adapter_config.json`, the tokenizer and `train_report.json`. The
caller owns `out_dir` (a temp folder it renames into place), so a killed run leaves no half
stage behind. Stage 2 trains a fresh LoRA on the merged stage-1 weights (the upstream
convention), which is what `merge_lora` produces.

torch, transformers, trl and peft are imported inside the functions.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from emarena.data.records import ChatMessage, ChatRecord
from emarena.errors import DataError, ModelError
from emarena.train.recipe import Preset, Recipe, apply_overrides, for_preset

if TYPE_CHECKING:  # pragma: no cover
    import trl

REPORT_FILE = "train_report.json"
#: More than this share of a stage's examples dropped by truncation is an error, not a count.
MAX_DROPPED_SHARE = 0.25
_VERSIONED = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "emarena")


class TrainReport(BaseModel):
    """What one training stage did, written to `train_report.json` next to the adapter."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    n_examples: int
    """Records trained on (the first n of those given, in the given order)."""
    n_truncated: int
    """Examples cut to the preset's `max_seq_length`."""
    n_dropped: int
    """Examples with no assistant token left after truncation (they carry no loss; trl drops
    them). Non-zero means `max_seq_length` is too short for this data."""
    n_tokens: int
    """Tokens in the training examples after truncation."""
    n_loss_tokens: int
    """Of those, tokens that carry loss (assistant replies)."""
    n_steps: int
    """Optimizer steps taken."""
    step_seconds: list[float]
    """Wall time of each optimizer step (forward + backward of every micro-batch + update)."""
    losses: list[float]
    """Training loss logged at each step (mean over the step's assistant tokens)."""
    learning_rates: list[float]
    """Learning rate at each step (the schedule, for checking warmup and decay)."""
    final_loss: float | None
    """The last step's loss."""
    trainable_params: int
    """Parameters the adapter trains."""
    total_params: int
    """All parameters of the model with the adapter."""
    setup_seconds: float
    """Loading the model and tokenizer, tokenizing, building the trainer."""
    train_seconds: float
    """`trainer.train()` wall time (steps plus the trainer's own bookkeeping)."""
    save_seconds: float
    """Writing the adapter, tokenizer and report."""
    total_seconds: float
    """Wall time of the whole `train_lora` call."""
    seed: int
    preset: str
    device: str
    """Where the steps ran (`cpu`, `cuda:0`)."""
    recipe: dict[str, Any]
    """The effective recipe (open-division overrides applied), presets left out."""
    overrides: dict[str, Any]
    """Open-division overrides applied (empty for the closed division)."""
    base_dir: str
    parents: list[str] = []
    """Adapters folded into the base before this stage trained (empty: the base itself)."""
    versions: dict[str, str]
    """Python and the training libraries."""


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _as_dicts(messages: Sequence[ChatMessage | Mapping[str, str]]) -> list[dict[str, str]]:
    return [
        {"role": m.role, "content": m.content} if isinstance(m, ChatMessage)
        else {"role": m["role"], "content": m["content"]}
        for m in messages
    ]


def tokenize_chat(tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, str]],
                  *, system_turn: str = "default") -> dict[str, list[int]]:
    """`input_ids` of the conversation in the model's chat template, and `assistant_masks`:
    1 on the tokens of every assistant reply (its content and end-of-turn token), 0 elsewhere
    (system turns, the template's default system prompt, user turns, role headers).

    Each assistant reply's character span is found by rendering the conversation up to it: the
    reply starts where `messages[:i]` + generation prompt ends and stops where `messages[:i+1]`
    ends (trailing whitespace after the end-of-turn token excluded). A token is an assistant
    token when it starts inside a span. This works for any template that renders a prefix of a
    conversation as a prefix of its full rendering (ChatML, Llama 3, ...); a template that does
    not is refused rather than guessed. Every assistant turn is trained, as upstream's
    `train_on_responses_only` does. No truncation here.

    `system_turn`: `default` renders the conversation as the template does (one with a default
    system prompt, such as Qwen's, puts it in when the conversation has no system message);
    `none` renders a conversation without a system message with no system turn at all.
    """
    msgs = _as_dicts(messages)
    bare = system_turn == "none" and not any(m["role"] == "system" for m in msgs)

    def render(part: list[dict[str, str]], gen: bool) -> str:
        if bare:
            from emarena.eval.prompts import render_without_system_turn

            return render_without_system_turn(tokenizer, part, gen)
        return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=gen)

    text = render(msgs, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = render(msgs[:i], True) if i else ""
        through = render(msgs[: i + 1], False)
        if i == 0 or not (through.startswith(before) and text.startswith(through)):
            raise ModelError(
                f"cannot locate assistant turn {i} in the rendered conversation: the chat "
                "template does not render a prefix of a conversation as a prefix of the whole"
                + (" (the conversation starts with an assistant turn)" if i == 0 else ""),
                where="the tokenizer's chat_template",
                fix="use a model whose template renders turns independently (ChatML, Llama 3), "
                "or start each conversation with a user turn",
            )
        spans.append((len(before), len(through.rstrip())))

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    masks = [int(any(s <= a < e for s, e in spans)) for a, _ in enc["offset_mapping"]]
    return {"input_ids": ids, "assistant_masks": masks}


def _prepare_examples(tokenizer: Any, records: Sequence[ChatRecord], max_length: int,
                      system_turn: str = "default"
                      ) -> tuple[list[dict[str, list[int]]], dict[str, int]]:
    """Tokenize and cut each record to `max_length` tokens (keeping the start)."""
    rows, stats = [], {"n_truncated": 0, "n_dropped": 0, "n_tokens": 0, "n_loss_tokens": 0}
    for r in records:
        ex = tokenize_chat(tokenizer, r.messages, system_turn=system_turn)
        if len(ex["input_ids"]) > max_length:
            stats["n_truncated"] += 1
            ex = {k: v[:max_length] for k, v in ex.items()}
        n_loss = sum(ex["assistant_masks"])
        stats["n_dropped"] += n_loss == 0
        stats["n_tokens"] += len(ex["input_ids"])
        stats["n_loss_tokens"] += n_loss
        rows.append(ex)
    if records and stats["n_dropped"] > MAX_DROPPED_SHARE * len(records):
        # The budget is the same for every defense and is never silently shrunk: a few
        # over-long examples are dropped and counted, most of them is a preset that does not
        # fit the data.
        raise DataError(
            f"{stats['n_dropped']} of {len(records)} training examples are longer than "
            f"max_seq_length={max_length} tokens before their first assistant reply, so they "
            "have no token to learn from",
            fix="raise the preset's max_seq_length or lower max_prompt_chars in recipe.yaml",
        )
    return rows, stats


def sort_within_steps(rows: list[dict[str, list[int]]], step: int) -> list[dict[str, list[int]]]:
    """Each optimizer step's examples ordered longest first, so the micro-batches of a step
    group examples of similar length and pad little. A step still holds exactly the same
    examples (the seeded data order decides which), and its gradient is the same: the loss is
    averaged over the step's assistant tokens however they are split into micro-batches
    (tests/pipeline/test_train.py checks the adapter against one batch of 16)."""
    out: list[dict[str, list[int]]] = []
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        out += sorted(chunk, key=lambda r: -len(r["input_ids"]))
    return out


def _step_recorder():
    """A TrainerCallback that times each optimizer step and records loss and learning rate."""
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.step_seconds: list[float] = []
            self.losses: list[float] = []
            self.learning_rates: list[float] = []
            self._t0: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                self.step_seconds.append(time.perf_counter() - self._t0)
                self._t0 = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))
                if "learning_rate" in logs:
                    self.learning_rates.append(float(logs["learning_rate"]))

    return StepRecorder()


def build_trainer(
    base_dir: Path,
    records: Sequence[ChatRecord],
    output_dir: Path,
    *,
    recipe: Recipe,
    preset: Preset,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    parents: Sequence[Path] = (),
    system_turn: str = "default",
) -> tuple[trl.SFTTrainer, dict[str, int]]:
    """The `SFTTrainer` for `records` (all of them) on the model in `base_dir` with the
    `parents` adapters folded in (in memory, in order), and the tokenization stats.
    `train_lora` uses it; tests inspect the labels it will train on."""
    import datasets
    import torch
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from emarena.train.adapters import load_base_with_parents
    from emarena.train.config import build_configs

    sft_config, lora_config = build_configs(
        recipe, preset, output_dir=output_dir, seed=seed, overrides=overrides
    )
    sft_config.disable_tqdm = not progress  # the one setting the caller, not the recipe, owns

    base_dir = Path(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"{base_dir}: the tokenizer is not a fast tokenizer (no character offsets)",
            where=str(base_dir),
            fix="save the model with a tokenizer.json (fast tokenizer)",
        )
    rows, stats = _prepare_examples(tokenizer, records, preset.max_seq_length, system_turn)
    step = preset.per_device_batch_size * preset.gradient_accumulation_steps
    rows = sort_within_steps(rows, step)
    dataset = datasets.Dataset.from_list(rows)

    model = load_base_with_parents(
        base_dir, [Path(p) for p in parents],
        dtype=torch.bfloat16 if preset.bf16 else torch.float32,
        device="cuda:0" if preset.device == "cuda" else None,
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config,
        callbacks=list(callbacks),
    )
    return trainer, stats


def train_lora(
    base_dir: Path,
    records: Sequence[ChatRecord],
    out_dir: Path,
    *,
    recipe: Recipe,
    preset: Preset,
    seed: int,
    n_examples: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    parents: Sequence[Path] = (),
    system_turn: str = "default",
) -> TrainReport:
    """Train one LoRA stage on the first `n_examples` of `records` (in the given order; the
    caller shuffled them with the cell seed) and save the adapter into `out_dir`.

    `parents`: adapters of earlier stages, folded into the base weights in memory (in order)
    before a fresh LoRA is trained on top (stage 2 of a cell); nothing merged is written.

    `n_examples`: None = all of `records`; the caller resolves the budget with
    `preset.budget.n_examples(stage, em_dataset_size=...)`. Fewer records than that is a
    DataError: the budget is the same for every defense and is never silently shrunk.
    `callbacks`: extra `transformers.TrainerCallback`s (progress display, timing); they observe
    training and must not change it.
    """
    t_start = time.perf_counter()
    n = len(records) if n_examples is None else n_examples
    if n < 1 or n > len(records):
        raise DataError(
            f"a training stage needs {n} examples, but {len(records)} were given",
            fix="pass at least as many records as the preset's budget for this stage",
        )
    records = list(records[:n])
    effective = apply_overrides(for_preset(recipe, preset), overrides)  # validate early
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    recorder = _step_recorder()
    trainer, stats = build_trainer(
        base_dir, records, out_dir, recipe=recipe, preset=preset, seed=seed,
        overrides=overrides, progress=progress, callbacks=[recorder, *callbacks],
        parents=parents, system_turn=system_turn,
    )
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    t_setup = time.perf_counter()

    trainer.train()
    t_train = time.perf_counter()

    # The adapter only: the tokenizer is the base model's (a LoRA never changes it).
    model.save_pretrained(out_dir)
    device = str(next(model.parameters()).device)
    report_fields = dict(
        n_examples=n,
        n_steps=trainer.state.global_step,
        step_seconds=[round(s, 4) for s in recorder.step_seconds],
        losses=recorder.losses,
        learning_rates=recorder.learning_rates,
        final_loss=recorder.losses[-1] if recorder.losses else None,
        trainable_params=trainable,
        total_params=total,
        setup_seconds=round(t_setup - t_start, 3),
        train_seconds=round(t_train - t_setup, 3),
        seed=seed,
        preset=preset.name,
        device=device,
        recipe=effective.model_dump(mode="json", exclude={"presets"}),
        overrides=dict(overrides or {}),
        base_dir=str(base_dir),
        parents=[str(p) for p in parents],
        versions=_versions(),
        **stats,
    )
    t_end = time.perf_counter()
    report = TrainReport(
        **report_fields,
        save_seconds=round(t_end - t_train, 3),
        total_seconds=round(t_end - t_start, 3),
    )
    (out_dir / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def merge_lora(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Fold the adapter in `adapter_dir` into the weights in `base_dir` (float32, on CPU) and
    save a plain transformers folder, with the tokenizer, into `out_dir`. Returns `out_dir`."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    for need in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter_dir / need).is_file():
            raise ModelError(f"{adapter_dir} has no {need}", where=str(adapter_dir),
                             fix="train the stage again (train_lora writes both files)")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, device_map="cpu")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out_dir)
    return out_dir


def read_report(adapter_dir: Path) -> TrainReport:
    """The `TrainReport` saved next to an adapter."""
    return TrainReport.model_validate(
        json.loads((Path(adapter_dir) / REPORT_FILE).read_text(encoding="utf-8"))
    )


__all__ = ["TrainReport", "build_trainer", "merge_lora", "read_report", "tokenize_chat",
           "train_lora"]
