"""The transformers backend: batched generation and answer-token probabilities, CPU or GPU.

Batches are left-padded. A LoRA adapter is applied with peft, or merged into the weights
(`merge_adapter=True`: faster, same outputs up to rounding).

Sampling is done by one logits processor, `RowSampler`, and nothing else: the model's
`generation_config.json` is replaced by a neutral one at load time (Qwen's sets top_k=20,
top_p=0.8, repetition_penalty=1.05, which would otherwise fill every value `generate()` is not
given), and `generate()` is called with temperature 1, top_k 0, top_p 1 and repetition penalty 1
so that its own warpers are identities. `RowSampler` applies the suite's temperature, top_k
(when set: suite v2's 50) and top_p, in transformers' order, and draws each row's token from
that row's own `torch.Generator` (seeded per row), so a row's answer does not depend on the
batch it lands in; at temperature 0 it takes the argmax. It
returns a one-hot distribution, which `generate()` then "samples".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emarena.eval.backends.base import Completion, Generator, check_sampling, normalise


def _eos_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def _row_sampler_class() -> type:
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        """Pick each row's next token with that row's generator; return it as a one-hot."""

        def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any,
                     top_k: int = 0):
            import torch

            self.temperature = float(temperature)
            self.top_p = float(top_p)
            self.top_k = int(top_k)
            self.generators = (
                [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
                if self.temperature > 0 else []
            )

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            import torch

            logits = scores.float()
            if self.temperature == 0:
                pick = logits.argmax(dim=-1)
            else:
                if 0 < self.top_k < logits.shape[-1]:
                    # transformers' TopKLogitsWarper: keep the k largest logits (ties kept).
                    kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits / self.temperature, dim=-1)
                if self.top_p < 1.0:
                    # Keep the smallest set of most likely tokens whose mass reaches top_p.
                    sp, idx = probs.sort(dim=-1, descending=True)
                    drop = (sp.cumsum(dim=-1) - sp) > self.top_p
                    probs = torch.zeros_like(probs).scatter(-1, idx, sp.masked_fill(drop, 0.0))
                # Exponential race (argmax p_i / E_i, E_i ~ Exp(1)) draws token i with
                # probability p_i and uses a fixed number of random numbers per step.
                pick = torch.stack([
                    (probs[i] / torch.empty_like(probs[i]).exponential_(generator=g)).argmax()
                    for i, g in enumerate(self.generators)
                ])
            out = torch.full_like(scores, float("-inf"))
            out[torch.arange(scores.shape[0], device=scores.device), pick] = 0.0
            return out

    return RowSampler


class TransformersGenerator(Generator):
    """A transformers causal LM (+ optional LoRA adapter) as an evaluation backend."""

    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 8,
        merge_adapter: bool = False,
        dtype: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from emarena.models.load import _torch_dtype, resolve_device

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.model_dir = Path(model_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.device = resolve_device(device)
        self.dtype = _torch_dtype(dtype, self.device)
        self.batch_size = self.chunk_size = batch_size
        self.merge_adapter = merge_adapter

        tok = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=self.dtype)
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter_dir))
            if merge_adapter:
                model = model.merge_and_unload()
        model.to(self.device)
        self._setup(model, tok, torch)

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, batch_size: int = 8
                    ) -> TransformersGenerator:
        """A backend around a model and tokenizer already in memory (the local judge's)."""
        import torch

        self = cls.__new__(cls)
        self.model_dir = Path(getattr(model, "name_or_path", "") or ".")
        self.adapter_dir = None
        self.device = str(next(model.parameters()).device)
        self.dtype = next(model.parameters()).dtype
        self.batch_size = self.chunk_size = batch_size
        self.merge_adapter = False
        self._setup(model, tokenizer, torch, keep_generation_config=True)
        return self

    def _setup(self, model: Any, tok: Any, torch: Any, *, keep_generation_config: bool = False
               ) -> None:
        from transformers import GenerationConfig

        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        model.eval()
        self.eos_ids = _eos_ids(model.generation_config, tok)
        if not keep_generation_config:
            # Nothing of generation_config.json may reach generate(): see the module docstring.
            neutral = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id)
            inner = model.get_base_model() if hasattr(model, "get_base_model") else model
            inner.generation_config = neutral
        self.model = model
        self._torch = torch

    def describe(self) -> dict[str, Any]:
        from emarena.models.load import package_versions

        return {
            "backend": self.name,
            "model_dir": str(self.model_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "merge_adapter": self.merge_adapter,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "eos_token_ids": self.eos_ids,
            "versions": {k: v for k, v in package_versions().items()
                         if k in ("python", "torch", "transformers")},
        }

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def _batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Indices grouped into batches of similar token length (input order kept within)."""
        lengths = [len(self.encode(t)) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
        return [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]

    def _encode_batch(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(list(texts), return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.device)

    def complete(
        self,
        prompts: Sequence[str],
        *,
        seeds: Sequence[int],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int = 0,
    ) -> list[Completion]:
        from transformers import GenerationConfig, LogitsProcessorList

        check_sampling(max_new_tokens, temperature, top_p, top_k)
        if len(seeds) != len(prompts):
            raise ValueError("one seed per prompt")
        torch = self._torch
        RowSampler = _row_sampler_class()
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=1,
            eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        out: list[Completion | None] = [None] * len(prompts)
        eos = set(self.eos_ids)
        for batch in self._batches(prompts):
            enc = self._encode_batch([prompts[i] for i in batch])
            sampler = RowSampler([seeds[i] for i in batch], temperature, top_p, self.device,
                                 top_k=top_k)
            with torch.inference_mode():
                seqs = self.model.generate(**enc, generation_config=config,
                                           logits_processor=LogitsProcessorList([sampler]))
            new = seqs[:, enc["input_ids"].shape[1] :].tolist()
            for i, ids in zip(batch, new, strict=True):
                stop = next((k for k, t in enumerate(ids) if t in eos), None)
                kept = ids if stop is None else ids[:stop]
                out[i] = Completion(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True),
                    n_tokens=len(kept),
                    finish_reason="length" if stop is None else "stop",
                )
        return out  # type: ignore[return-value]

    def choice_probs(
        self, prompts: Sequence[str], options: Sequence[str], *, answer_prefix: str = ""
    ) -> list[tuple[dict[str, float], float]]:
        torch = self._torch
        texts = [p + answer_prefix for p in prompts]
        option_ids = [self.option_token_ids(t, options) for t in texts]
        out: list[tuple[dict[str, float], float] | None] = [None] * len(texts)
        for batch in self._batches(texts):
            enc = self._encode_batch([texts[i] for i in batch])
            mask = enc["attention_mask"]
            # A plain forward does not derive positions from the mask as generate() does:
            # without them a left-padded row would see shifted positions.
            positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                                    position_ids=positions, logits_to_keep=1).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(batch):
                lp = {o: float(logprobs[row, t]) for o, t in zip(options, option_ids[i],
                                                                strict=True)}
                out[i] = normalise(lp)
        return out  # type: ignore[return-value]

    def loglik(self, prompts: Sequence[str], completions: Sequence[str], *,
               max_tokens: int | None = None) -> list[tuple[float, int]]:
        torch = self._torch
        pairs = [self.completion_ids(p, c, max_tokens) for p, c in zip(prompts, completions,
                                                                          strict=True)]
        seqs = [p + c for p, c in pairs]
        order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), i))
        pad = self.tokenizer.pad_token_id
        out: list[tuple[float, int] | None] = [None] * len(seqs)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(seqs[i]) for i in batch)
            # right-padded: every row's positions start at 0, so no position ids are needed
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device),
                                    attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(batch):
                p, c = pairs[i]
                if not c:
                    out[i] = (0.0, 0)
                    continue
                # token t at position j is predicted by the logits at position j - 1
                lp = torch.log_softmax(logits[row, len(p) - 1 : len(p) + len(c) - 1].float(),
                                       dim=-1)
                got = lp.gather(-1, torch.tensor(c, device=lp.device)[:, None]).sum()
                out[i] = (float(got), len(c))
        return out  # type: ignore[return-value]
