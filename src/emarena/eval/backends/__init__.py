"""Generation backends: the one generation engine of EM Arena. Registered lazily, so that
`--help` and `validate` never import torch.

    transformers   `hf.TransformersGenerator`: CPU or GPU, batched, LoRA via peft
    vllm           `vllm.VllmGenerator`: GPU (or vLLM's CPU build), LoRA requests

Both implement `base.Generator`: `generate(items, ..., store=...)` appends one `Generation`
row per sample (resumable, per-row seeds), `complete(prompts, ...)` answers rendered prompts
(SGTR's own summaries, the local judge's extractions, `emarena models generate`) and
`choice_probs(prompts, options)` reads answer-token probabilities.

`Engine` is what an evaluation job holds: one loaded base model serving every model state of
the job (the base itself, and each stage chain as a stacked LoRA adapter): vLLM keeps one
engine and switches LoRA requests; transformers loads the base and merges the adapter for each
state (cheap next to generating).
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


class Engine:
    """One base model for one evaluation job, serving the base and any number of adapters.

        with Engine("vllm", base_dir, max_lora_rank=64) as engine:
            gen = engine.generator(None)            # the base model
            gen = engine.generator(stacked_dir)     # base + that adapter
    """

    def __init__(self, backend: str, model_dir: str | Path, *, max_lora_rank: int | None = None,
                 **options: Any):
        self.backend = backend
        self.model_dir = Path(model_dir)
        self.options = options
        self.max_lora_rank = max_lora_rank
        self._vllm: Any = None
        self._current: Any = None

    def generator(self, adapter_dir: str | Path | None) -> Any:
        """A generator for the base + `adapter_dir` (None: the base); valid until the next call."""
        if self.backend == "vllm":
            if self._vllm is None:
                self._vllm = make_generator(
                    "vllm", self.model_dir, enable_lora=self.max_lora_rank is not None,
                    max_lora_rank=self.max_lora_rank or 32, **self.options,
                )
            return self._vllm.with_adapter(adapter_dir)
        if self._current is not None:
            self._current.close()
        # transformers: merge the adapter into freshly loaded weights (faster generation than an
        # unmerged peft model; the stored artifact stays the adapter).
        self._current = make_generator(self.backend, self.model_dir, adapter_dir,
                                       merge_adapter=adapter_dir is not None, **self.options)
        return self._current

    def close(self) -> None:
        for g in (self._current, self._vllm):
            if g is not None:
                g.close()
        self._current = self._vllm = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["GENERATORS", "Engine", "make_generator"]
