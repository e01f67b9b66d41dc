"""Generation backends, registered lazily so that `--help` and `validate` never import torch.

    transformers   `hf.TransformersGenerator`: CPU or GPU, batched, LoRA via peft
    vllm           `vllm.VllmGenerator`: GPU, LoRA requests (vllm imported only there)

Both implement `base.Generator`: `generate(items, ..., store=...)` appends one `Generation`
row per sample (resumable, per-row seeds) and `choice_probs(prompts, options)` reads answer-token
probabilities. Build one with `make_generator("transformers", model_dir, adapter_dir=...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emarena.registry import Registry

GENERATORS: Registry[Any] = Registry("generator")
GENERATORS.register("transformers", "emarena.eval.backends.hf:TransformersGenerator")
GENERATORS.register("vllm", "emarena.eval.backends.vllm:VllmGenerator")


def make_generator(
    name: str, model_dir: str | Path, adapter_dir: str | Path | None = None, **options: Any
) -> Any:
    """Instantiate the registered backend `name` (imports it on first use)."""
    cls = GENERATORS.get(name)
    return cls(model_dir, adapter_dir=adapter_dir, **options)


__all__ = ["GENERATORS", "make_generator"]
