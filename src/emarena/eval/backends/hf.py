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

import inspect
from collections.abc import Iterator, Sequence
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


#: Prompts that share an opening of at least this many tokens run it once (`choice_probs`).
SHARED_PREFIX_MIN = 32


def shared_prefix_groups(seqs: Sequence[Sequence[int]], min_shared: int
                         ) -> list[tuple[list[int], list[int]]]:
    """[(prefix, member indices)]: every index once, in groups of sequences that all begin
    with `prefix` (at least `min_shared` tokens, and shorter than each member, so that each
    keeps a suffix); a sequence that shares no such opening is a group of its own (prefix
    empty)."""
    order = sorted(range(len(seqs)), key=lambda i: (list(seqs[i]), i))
    groups: list[tuple[list[int], list[int]]] = []
    for i in order:
        s = seqs[i]
        if groups and groups[-1][1]:
            prefix, members = groups[-1]
            first = seqs[members[0]]
            k = 0
            limit = min(len(first), len(s)) - 1
            while k < limit and first[k] == s[k]:
                k += 1
            k = min(k, len(prefix)) if len(members) > 1 else k
            if k >= min_shared:
                groups[-1] = (list(first[:k]), [*members, i])
                continue
        groups.append(([], [i]))
    return groups


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
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not keep_generation_config:
            # Nothing of generation_config.json may reach generate(): see the module docstring.
            neutral = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id)
            inner.generation_config = neutral
        self.model = model
        self._torch = torch
        self.share_prefixes = True
        """Run a common prompt opening once (`loglik`, `choice_probs`); False: every sequence
        whole (bench/shared_prefix.py compares the two)."""
        # transformers renamed forward's `past_key_values` to `cache` (5.2x; the old name goes
        # in 5.40): pass whichever this version's model takes
        forward = inspect.signature(type(inner).forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

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

        def put(i: int, logits: Any) -> None:
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            lp = {o: float(logprobs[t]) for o, t in zip(options, option_ids[i], strict=True)}
            out[i] = normalise(lp)

        # Prompts that open alike (self-recognition: one article, every other source, both
        # orders) run their common opening once; the rest go in left-padded batches.
        ids = [self.encode(t) for t in texts]
        alone = []
        groups = (shared_prefix_groups(ids, SHARED_PREFIX_MIN) if self.share_prefixes
                  else [([], [i]) for i in range(len(ids))])
        for prefix, members in groups:
            if len(members) == 1:
                alone += members
                continue
            for j, logits in self._suffix_logits(prefix, [ids[i][len(prefix):]
                                                          for i in members]):
                put(members[j], logits[-1])
        for batch in self._batches([texts[i] for i in alone]):
            batch = [alone[j] for j in batch]
            enc = self._encode_batch([texts[i] for i in batch])
            mask = enc["attention_mask"]
            # A plain forward does not derive positions from the mask as generate() does:
            # without them a left-padded row would see shifted positions.
            positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                                    position_ids=positions, logits_to_keep=1).logits[:, -1, :]
            for row, i in enumerate(batch):
                put(i, logits[row])
        return out  # type: ignore[return-value]

    def loglik(self, prompts: Sequence[str], completions: Sequence[str], *,
               max_tokens: int | None = None) -> list[tuple[float, int]]:
        """Each completion's teacher-forced log-likelihood. Completions of one prompt (the
        contrast set: every published answer to a question) share the prompt's forward pass."""
        torch = self._torch
        pairs = [self.completion_ids(p, c, max_tokens) for p, c in zip(prompts, completions,
                                                                          strict=True)]
        out: list[tuple[float, int] | None] = [None] * len(pairs)
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (p, c) in enumerate(pairs):
            if not c:
                out[i] = (0.0, 0)
            else:  # one group per prompt; unshared, one group of whole sequences
                by_prompt.setdefault(tuple(p) if self.share_prefixes else (), []).append(i)
        for key, members in by_prompt.items():
            # the prompt's last token stays in each suffix: its logits predict the first
            # completion token
            prefix = list(key[:-1])
            suffixes = [[*pairs[i][0][len(prefix):], *pairs[i][1]] for i in members]
            for j, logits in self._suffix_logits(prefix, suffixes):
                i, s = members[j], suffixes[j]
                k = len(pairs[i][0]) - len(prefix)  # prompt tokens at the suffix's start
                lp = torch.log_softmax(logits[k - 1 : -1].float(), dim=-1)
                got = lp.gather(-1, torch.tensor(s[k:], device=lp.device)[:, None]).sum()
                out[i] = (float(got), len(s) - k)
        return out  # type: ignore[return-value]

    def _suffix_logits(self, prefix: list[int], suffixes: list[list[int]]
                       ) -> Iterator[tuple[int, Any]]:
        """(j, logits at every position of `suffixes[j]`) for each suffix, batch by batch, of
        the sequence `prefix + suffixes[j]`. The prefix runs once and its keys and values are
        shared by every suffix: the same numbers as the whole sequences, at the prefix's cost
        once. Suffixes are non-empty and go in right-padded batches of similar length; a batch's
        logits are freed once the caller moves on (a 152k vocabulary makes them large)."""
        import copy

        torch = self._torch
        n = len(prefix)
        cache = None
        if n:
            with torch.inference_mode():
                pre = self.model(input_ids=torch.tensor([prefix], device=self.device),
                                 use_cache=True)
            cache = getattr(pre, "cache", None) or pre.past_key_values
            del pre
        pad = self.tokenizer.pad_token_id
        order = sorted(range(len(suffixes)), key=lambda j: (len(suffixes[j]), j))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(suffixes[j]) for j in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), n + width), dtype=torch.long)
            mask[:, :n] = 1
            for row, j in enumerate(batch):
                ids[row, : len(suffixes[j])] = torch.tensor(suffixes[j])
                mask[row, n : n + len(suffixes[j])] = 1
            past = None
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(batch))
            positions = torch.arange(n, n + width).expand(len(batch), -1)
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device),
                                    attention_mask=mask.to(self.device),
                                    position_ids=positions.to(self.device),
                                    use_cache=past is not None,
                                    **{self._cache_arg: past}).logits
            del past
            for row, j in enumerate(batch):
                yield j, logits[row, : len(suffixes[j])]
            del logits
