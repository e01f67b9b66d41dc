"""LoRA adapters as the unit of storage: merging parents in memory, stacking for evaluation.

A stage stores only its adapter (tens of MB for a 7B model, ~1 GB in fp32 for a 32B one), never
merged weights (15 GB per 7B stage in bf16, 64 GB per 32B stage). The two places that need the
effect of several stages:

* training stage 2 on stage 1 (the upstream convention: a fresh LoRA on the merged stage-1
  weights): `load_base_with_parents` loads the base in the training dtype and folds each parent
  adapter into it in memory (peft `merge_and_unload`), exactly as a merged checkpoint saved in
  that dtype and loaded back would be; nothing is written;
* evaluating a chain of stages: `stack_adapters` writes one adapter whose low-rank update is
  the sum of the chain's updates, exactly: for updates s_i * B_i A_i (s_i = alpha_i / sqrt(r_i)
  with rsLoRA, alpha_i / r_i without), the stacked adapter has A = [A_1; A_2; ...] and
  B = [s_1 B_1, s_2 B_2, ...] with rank sum(r_i) and scaling 1 (lora_alpha = r, no rsLoRA), so
  B A = sum_i s_i B_i A_i. vLLM serves it as one LoRA request on the base model, and the
  transformers backend applies it with peft. A single-stage chain is normalised the same way
  (scaling folded into B), so every backend sees scaling 1.

(The evaluated weights are base + the sum of the updates; stage 2 trained on the base with stage
1 folded in, in the training dtype. In bf16 the two differ by the rounding of that fold, as
upstream's merged bf16 checkpoints do; in fp32 they agree to float precision.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emarena.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    adapter_dir = Path(adapter_dir)
    for need in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / need).is_file():
            raise ModelError(f"{adapter_dir} has no {need}", where=str(adapter_dir),
                             fix="train the stage again (a stage entry holds both files)")
    return json.loads((adapter_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))


def scaling(cfg: dict[str, Any]) -> float:
    """peft's LoRA scaling for an adapter config: alpha / sqrt(r) (rsLoRA) or alpha / r."""
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ModelError("adapters with per-module rank or alpha patterns cannot be stacked",
                         fix="train with one r and lora_alpha for every module")
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def adapter_rank(adapter_dir: Path) -> int:
    return int(read_adapter_config(adapter_dir)["r"])


def stack_adapters(adapter_dirs: Sequence[Path], out_dir: Path) -> Path:
    """Write into `out_dir` one adapter equal to the sum of `adapter_dirs`' updates (see the
    module docstring). All adapters must target the same modules of the same base model."""
    import torch
    from safetensors.torch import load_file, save_file

    dirs = [Path(d) for d in adapter_dirs]
    if not dirs:
        raise ValueError("stack_adapters needs at least one adapter")
    cfgs = [read_adapter_config(d) for d in dirs]
    weights = [load_file(str(d / ADAPTER_WEIGHTS)) for d in dirs]
    names = [sorted(k for k in w if ".lora_A." in k) for w in weights]
    if any(n != names[0] for n in names[1:]):
        raise ModelError(
            "the adapters of one chain target different modules, so they cannot be stacked",
            where=", ".join(str(d) for d in dirs),
            fix="train every stage with the suite's one recipe (same target modules)",
        )
    out: dict[str, Any] = {}
    for a_name in names[0]:
        b_name = a_name.replace(".lora_A.", ".lora_B.")
        a = torch.cat([w[a_name].float() for w in weights], dim=0)
        b = torch.cat([w[b_name].float() * scaling(c) for w, c in zip(weights, cfgs,
                                                                      strict=True)], dim=1)
        out[a_name], out[b_name] = a.contiguous(), b.contiguous()
    rank = sum(int(c["r"]) for c in cfgs)
    cfg = dict(cfgs[0])
    cfg.update(r=rank, lora_alpha=rank, use_rslora=False, lora_dropout=0.0, rank_pattern={},
               alpha_pattern={}, inference_mode=True)
    cfg["target_modules"] = sorted(set().union(*(set(c["target_modules"]) for c in cfgs)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_dir / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
    (out_dir / "stacked_from.json").write_text(json.dumps(
        {"adapters": [str(d) for d in dirs], "ranks": [int(c["r"]) for c in cfgs],
         "scalings": [scaling(c) for c in cfgs]}, indent=2) + "\n", encoding="utf-8")
    return out_dir


def load_base_with_parents(base_dir: Path, parents: Sequence[Path], *, dtype: Any,
                           device: str | None = None) -> Any:
    """The base model in `dtype` with each parent adapter folded in, in order (in memory)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype}
    if device and device.startswith("cuda"):
        kwargs["device_map"] = {"": device}  # straight onto the GPU: no host-memory copy
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    for p in parents:
        from peft import PeftModel

        read_adapter_config(p)
        model = PeftModel.from_pretrained(model, str(p)).merge_and_unload()
    return model
