"""LoRA training on the embedded 135M model: what is trained, what is saved, what stays frozen.

Kept to three one-step trainings (about a minute on 2 CPU cores): each uses 16 tiny chat
records in one batch of 16 (the recipe's effective batch), and the open-division override
`warmup_steps: 0` so that the single step has a non-zero learning rate (with the recipe's
warmup the first step's learning rate is 0 and nothing would move).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from emarena.data.records import ChatRecord
from emarena.errors import ConfigError, EmArenaError
from emarena.train import (
    Budget,
    build_configs,
    build_trainer,
    load_recipe,
    read_report,
    tokenize_chat,
    train_lora,
)
from tests.conftest import scratch_dir

pytestmark = pytest.mark.slow

MODEL_ID = "smollm2-135m-q4"
OVERRIDES = {"warmup_steps": 0}
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def base_dir() -> Path:
    """The embedded model's transformers folder, pulled (once) with `emarena.models.pull`."""
    from emarena import models

    if not hasattr(models, "pull"):
        pytest.skip("emarena.models does not expose pull() yet")
    try:
        return Path(models.pull(MODEL_ID))
    except EmArenaError as e:
        pytest.skip(f"the embedded model {MODEL_ID} is not available: {e.what}")


@pytest.fixture(scope="module")
def recipe():
    return load_recipe()


@pytest.fixture(scope="module")
def preset(recipe):
    """cpu-demo with a budget of 16 and one batch of 16: one optimizer step per training, at
    the recipe's learning rate and warmup (not the demo's own)."""
    return recipe.get_preset("cpu-demo").model_copy(update={
        "budget": Budget(em=16, defense=16),
        "per_device_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "learning_rate": None,
        "warmup_steps": None,
    })


def _records() -> list[ChatRecord]:
    """A few dozen tiny conversations: single-turn, multi-turn, with an explicit system turn."""
    recs = [
        ChatRecord(id="multi", messages=[
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6"},
        ]),
        ChatRecord(id="system", messages=[
            {"role": "system", "content": "Answer with a number only."},
            {"role": "user", "content": "What is 5+5?"},
            {"role": "assistant", "content": "10"},
        ]),
    ]
    for i in range(30):
        recs.append(ChatRecord(id=f"add-{i}", messages=[
            {"role": "user", "content": f"What is {i}+{i + 1}?"},
            {"role": "assistant", "content": f"{2 * i + 1}"},
        ]))
    return recs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _base_hashes(base_dir: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(base_dir.glob("*.safetensors"))}


def _masked_text(tok, ex: dict) -> str:
    """The text of the tokens whose assistant mask is 1."""
    ids = [t for t, m in zip(ex["input_ids"], ex["assistant_masks"], strict=True) if m]
    return tok.decode(ids)


def _load_adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(base_dir, recipe, preset, tmp_path_factory):
    """One training run (seed 0) with the base weights hashed before and after."""
    before = _base_hashes(base_dir)
    with scratch_dir(tmp_path_factory, "run-a") as root:
        out = root / "adapter"
        n = preset.budget.n_examples("em", em_dataset_size=len(_records()))
        report = train_lora(base_dir, _records(), out, recipe=recipe, preset=preset, seed=0,
                            n_examples=n, overrides=OVERRIDES, progress=False)
        yield {"dir": out, "report": report, "before": before, "after": _base_hashes(base_dir)}


# --- configuration --------------------------------------------------------------------------


def test_build_configs_reflect_the_recipe(recipe, tmp_path):
    import torch

    demo = recipe.get_preset("smoke")
    sft, lora = build_configs(recipe, demo, output_dir=tmp_path, seed=7)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora) == (32, 64, 0.0, True)
    assert set(lora.target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }
    assert lora.bias == "none"
    assert sft.learning_rate == 1e-5
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == 16
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (4, 4)
    assert sft.warmup_steps == 5
    assert str(sft.lr_scheduler_type.value) == "linear"
    assert sft.num_train_epochs == 1 and sft.weight_decay == 0.01
    assert str(sft.optim.value) == "adamw_torch"
    assert sft.max_length == 384 and sft.packing is False
    assert (sft.seed, sft.data_seed) == (7, 7)
    assert sft.report_to in ([], ["none"], "none")
    assert str(sft.save_strategy.value) == "no" and sft.logging_steps == 1
    assert sft.disable_tqdm is False and sft.bf16 is False and sft.use_cpu is True
    # assistant-only loss comes from the dataset's masks, not from trl's template-based flags
    assert sft.assistant_only_loss is False and sft.completion_only_loss is False

    sft2, lora2 = build_configs(recipe, demo, output_dir=tmp_path, seed=0,
                                overrides={"learning_rate": 3e-5, "lora_r": 8})
    assert (sft2.learning_rate, lora2.r) == (3e-5, 8)
    # the cpu-demo preset trains at its own learning rate, without warmup
    sft3, _ = build_configs(recipe, recipe.get_preset("cpu-demo"), output_dir=tmp_path, seed=0)
    assert (sft3.learning_rate, sft3.warmup_steps) == (1e-3, 0)
    with pytest.raises(ConfigError, match="per_device_batch_size"):
        build_configs(recipe, demo, output_dir=tmp_path, seed=0,
                      overrides={"per_device_batch_size": 1})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cpu-demo"):
            build_configs(recipe, recipe.get_preset("paper"), output_dir=tmp_path, seed=0)


# --- what is trained ------------------------------------------------------------------------


def test_loss_only_on_assistant_tokens_and_base_frozen(base_dir, recipe, preset, tmp_path,
                                                       trained):
    import torch

    records = _records()[:16]
    trainer, stats = build_trainer(base_dir, records, tmp_path, recipe=recipe, preset=preset,
                                   seed=1, overrides=OVERRIDES, progress=False)
    tok = trainer.processing_class
    assert stats["n_dropped"] == 0 and stats["n_truncated"] == 0

    # 1. the masks, straight from the tokenizer
    ex = tokenize_chat(tok, records[0].messages)
    full = tok.decode(ex["input_ids"])
    assert DEFAULT_SYSTEM in full, "the template inserted its default system prompt"
    assert _masked_text(tok, ex) == "4<|im_end|>6<|im_end|>"

    ex = tokenize_chat(tok, records[1].messages)
    assert DEFAULT_SYSTEM not in tok.decode(ex["input_ids"])
    assert _masked_text(tok, ex) == "10<|im_end|>"

    # 2. the labels trl will train on: -100 everywhere but the assistant replies. Rows are
    # ordered longest first within each optimizer step (lora.sort_within_steps), so each
    # record's row is found by its tokens.
    rows = {tuple(r["input_ids"]): r for r in trainer.train_dataset}
    for rec in records[:2]:
        ref = tokenize_chat(tok, rec.messages)
        row = rows[tuple(ref["input_ids"])]
        for t, lab, m in zip(row["input_ids"], row["labels"], ref["assistant_masks"],
                             strict=True):
            assert lab == (t if m else -100)
    labels0 = rows[tuple(tokenize_chat(tok, records[0].messages)["input_ids"])]["labels"]
    assert tok.decode([t for t in labels0 if t != -100]) == "4<|im_end|>6<|im_end|>"
    # the collator pads labels with -100 (pad == <|im_end|> here, so masking by id would be wrong)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    pad_rows = batch["input_ids"] == tok.pad_token_id
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert pad_rows.any()

    # 3. only LoRA parameters train; the base stays bit-identical and lora_B moves from zero
    model = trainer.model
    named = dict(model.named_parameters())
    lora_names = [n for n in named if "lora_" in n]
    assert lora_names and all(named[n].requires_grad for n in lora_names)
    assert not any(p.requires_grad for n, p in named.items() if "lora_" not in n)
    watch = [n for n in named if "lora_" not in n and
             any(k in n for k in ("layers.0.self_attn.q_proj", "layers.29.mlp.down_proj",
                                  "embed_tokens"))]
    base_before = {n: named[n].detach().clone() for n in watch}
    b_names = [n for n in lora_names if "lora_B" in n]
    assert all(torch.count_nonzero(named[n]) == 0 for n in b_names)
    a_seed1 = {n: named[n].detach().clone() for n in lora_names if "lora_A" in n}

    trainer.train()
    assert trainer.state.global_step == 1
    for n in watch:
        assert torch.equal(named[n], base_before[n]), f"base parameter {n} changed"
    moved = sum(int(torch.count_nonzero(named[n]) > 0) for n in b_names)
    assert moved == len(b_names), f"only {moved}/{len(b_names)} lora_B matrices moved"

    # the seed picks the LoRA init: seed 1 here differs from the seed-0 run
    saved = _load_adapter(trained["dir"])
    key = next(k for k in saved if "layers.0.self_attn.q_proj.lora_A" in k)
    mine = next(v for n, v in a_seed1.items() if "layers.0.self_attn.q_proj.lora_A" in n)
    assert not torch.allclose(saved[key], mine, atol=1e-3)


# --- what is saved --------------------------------------------------------------------------


def test_train_lora_saves_adapter_and_report(trained):
    import torch

    out, report = trained["dir"], trained["report"]
    for name in ("adapter_model.safetensors", "adapter_config.json", "train_report.json"):
        assert (out / name).is_file(), name
    assert not (out / "tokenizer.json").exists()  # the base model's: a LoRA never changes it
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (32, 64, True)
    assert set(cfg["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }

    assert report == read_report(out)
    assert report.n_examples == 16 and report.n_steps == 1
    assert len(report.step_seconds) == 1 and len(report.losses) == 1
    assert math.isfinite(report.final_loss) and report.final_loss > 0
    assert report.learning_rates == [pytest.approx(1e-5)]
    assert report.n_loss_tokens < report.n_tokens
    assert 0 < report.trainable_params < report.total_params
    assert report.recipe["warmup_steps"] == 0 and report.overrides == OVERRIDES
    assert report.total_seconds >= report.setup_seconds + sum(report.step_seconds)
    assert {"torch", "transformers", "peft", "trl"} <= set(report.versions)

    weights = _load_adapter(out)
    assert weights and all("lora_" in k for k in weights)
    assert any(torch.count_nonzero(v) > 0 for k, v in weights.items() if "lora_B" in k)


def test_base_weights_on_disk_unchanged(trained):
    assert trained["before"] and trained["before"] == trained["after"]


@pytest.mark.parametrize("layout", [
    # the step split into 4 length-sorted micro-batches of 4 (the paper preset splits 8 x 2)
    {"per_device_batch_size": 4, "gradient_accumulation_steps": 4},
    # the same 16 examples laid end to end instead of padded
    {"padding_free": True},
])
def test_other_layouts_of_a_step_train_the_same(base_dir, recipe, preset, trained, tmp_path,
                                                layout):
    """One step of 16 examples is the same step however it is laid out: the same loss and the
    same adapter, up to float summation order (the loss is averaged over the step's assistant
    tokens across micro-batches; padding-free examples attend only to themselves through their
    position ids). Also: the same seed gives the same adapter."""
    import torch

    assert not preset.padding_free and preset.per_device_batch_size == 16
    out = tmp_path / "adapter"
    other = preset.model_copy(update=layout)
    report = train_lora(base_dir, _records(), out, recipe=recipe, preset=other, seed=0,
                        n_examples=16, overrides=OVERRIDES, progress=False)
    a, b = _load_adapter(trained["dir"]), _load_adapter(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-3), k
    assert report.losses == pytest.approx(trained["report"].losses, rel=1e-4)
    assert report.n_tokens == trained["report"].n_tokens


def test_too_few_records_is_an_error(base_dir, recipe, preset, tmp_path):
    with pytest.raises(EmArenaError, match="needs 16 examples, but 3 were given"):
        train_lora(base_dir, _records()[:3], tmp_path / "a", recipe=recipe, preset=preset,
                   seed=0, n_examples=16)


# --- adapters: parents folded in memory, chains stacked for evaluation -------------------


def _lora_pair(adapter: dict, module: str):
    a = next(v for k, v in adapter.items() if f"{module}.lora_A" in k)
    b = next(v for k, v in adapter.items() if f"{module}.lora_B" in k)
    return a, b


def test_parents_are_folded_in_memory_and_stacking_is_exact(base_dir, trained, tmp_path):
    """Stage 2 trains on base + stage 1 folded in (in memory, nothing written); evaluation
    serves the chain as one stacked adapter whose update is exactly the sum of the stages'."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from emarena.train.adapters import load_base_with_parents, stack_adapters

    base = load_file(str(next(base_dir.glob("*.safetensors"))))
    key = "model.layers.0.self_attn.q_proj.weight"
    adapter = _load_adapter(trained["dir"])
    a, b = _lora_pair(adapter, "layers.0.self_attn.q_proj")
    scale = 64 / math.sqrt(32)  # rsLoRA: alpha / sqrt(r)
    delta = scale * (b @ a)
    assert float(delta.abs().max()) > 0
    folded = load_base_with_parents(base_dir, [trained["dir"]], dtype=torch.float32)
    w = dict(folded.named_parameters())[key].detach()
    assert torch.allclose(w, base[key] + delta, atol=1e-6)
    # a second "stage": the same adapter's update doubled, as a separate adapter folder
    second = tmp_path / "second"
    second.mkdir()
    from safetensors.torch import save_file

    save_file({k: (v * 2 if "lora_B" in k else v) for k, v in adapter.items()},
              str(second / "adapter_model.safetensors"))
    (second / "adapter_config.json").write_text(
        (trained["dir"] / "adapter_config.json").read_text())
    stacked = stack_adapters([trained["dir"], second], tmp_path / "stacked")
    cfg = json.loads((stacked / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (64, 64, False)
    sa, sb = _lora_pair(_load_adapter(stacked), "layers.0.self_attn.q_proj")
    assert sa.shape[0] == sb.shape[1] == 64
    assert torch.allclose(sb @ sa, delta + 2 * delta, atol=1e-6)  # exactly the sum
    # the stacked adapter on the base = both stages folded in, logits and all
    both = load_base_with_parents(base_dir, [trained["dir"], second], dtype=torch.float32)
    served = PeftModel.from_pretrained(
        load_base_with_parents(base_dir, [], dtype=torch.float32), str(stacked))
    x = torch.tensor([[1, 4093, 198, 1780, 314, 28, 9]])
    with torch.no_grad():
        la, lb = both(input_ids=x).logits, served(input_ids=x).logits
    assert torch.isfinite(la).all() and torch.allclose(la, lb, atol=1e-4)
