"""The vLLM backend: GPU generation with the LoRA adapter as a LoRA request.

`vllm` is imported inside the constructor only, so this module can be imported (and registered)
without it. It needs vLLM's V1 engine (vLLM >= 0.10), for two documented behaviours:
  - per-request seeds (`SamplingParams.seed`): a row's sample depends on its own seed only,
    however requests are batched;
  - raw logprobs (the V1 sampler's default `logprobs_mode="raw_logprobs"`): logprobs come from
    the model's distribution before `allowed_token_ids` and other processing.

Same sampling as the transformers backend: prompts are rendered with the model's own Hugging Face
chat template by `emarena.eval.prompts` (vLLM's chat templating is not used) and passed as token
ids, so both backends see identical tokens; `generation_config="vllm"` stops vLLM from taking
default sampling values from the model's generation_config.json, and every sampling field that
could change the distribution is set explicitly (top_k off, min_p 0, all penalties neutral).
Answers are decoded with the same tokenizer call as the transformers backend.

choice_probs: for each (prompt, option) one request of one token with `allowed_token_ids`
= [the option's first token] and `logprobs=1`. The forced token's raw logprob is its
probability under the model; prefix caching makes the extra requests per prompt cheap. A vLLM
that returns processed logprobs (the V0 engine) would report probability 1 for every option:
this is detected and refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emarena.errors import ModelError
from emarena.eval.backends.base import Completion, Generator, check_sampling, normalise

#: On vLLM's CPU build: the share of the machine's memory its KV cache may take by default.
CPU_MEMORY_SHARE = 0.2
#: LoRA ranks vLLM accepts for max_lora_rank.
_VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def _adapter_rank(adapter_dir: Path) -> int | None:
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    r = cfg.get("r")
    return int(r) if isinstance(r, int) else None


def _eos_ids(model_dir: Path, tokenizer: Any) -> list[int]:
    """Stop tokens as the transformers backend uses them: generation_config.json's eos ids
    plus the tokenizer's eos token."""
    ids: set[int] = set()
    try:
        gc = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
        eos = gc.get("eos_token_id")
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(i) for i in eos)
    except (OSError, ValueError):
        pass
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


class VllmGenerator(Generator):
    """A model folder (+ optional LoRA adapter folder) served by an in-process `vllm.LLM`."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        adapter_dir: str | Path | None = None,
        *,
        seed: int = 0,
        dtype: str = "auto",
        max_lora_rank: int = 32,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        chunk_size: int = 2048,
        enforce_eager: bool = False,
        enable_lora: bool | None = None,
        **llm_kwargs: Any,
    ):
        try:
            from vllm import LLM
            from vllm.lora.request import LoRARequest
        except ImportError as e:
            raise ModelError(
                f"the vllm backend needs the `vllm` package ({e})",
                fix="pip install 'emarena[vllm]' on a CUDA machine, or use --backend "
                "transformers",
            ) from None
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform

        # vLLM's CPU build: float32 like the transformers backend on CPU (vLLM would pick
        # bfloat16), and gpu_memory_utilization is there the share of *CPU* memory reserved for
        # the KV cache, which 0.85 would take from everything else on the machine.
        self.device = "cpu" if current_platform.is_cpu() else str(current_platform.device_type)
        if dtype == "auto" and self.device == "cpu":
            dtype = "float32"
        if gpu_memory_utilization is None:
            gpu_memory_utilization = CPU_MEMORY_SHARE if self.device == "cpu" else 0.85

        self.model_dir = Path(model_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        self.chunk_size = chunk_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.eos_ids = _eos_ids(self.model_dir, self.tokenizer)

        rank = max_lora_rank
        if self.adapter_dir is not None:
            r = _adapter_rank(self.adapter_dir)
            if r is not None and r > rank:
                rank = r
        # vLLM accepts only some ranks for max_lora_rank: the next one up.
        rank = next((k for k in _VLLM_LORA_RANKS if k >= rank), rank)
        self.max_lora_rank = rank
        lora_on = self.adapter_dir is not None if enable_lora is None else enable_lora
        self.options = {
            "device": self.device, "seed": seed, "dtype": dtype, "max_lora_rank": rank,
            "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager,
            **llm_kwargs,
        }
        kwargs: dict[str, Any] = dict(
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            enable_lora=lora_on,
            seed=seed,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            enable_prefix_caching=True,
            generation_config="vllm",
            **llm_kwargs,
        )
        if lora_on:
            kwargs["max_lora_rank"] = rank
            kwargs["max_loras"] = 1
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.llm = LLM(**kwargs)
        self._lora_ids: dict[str, int] = {}
        self._LoRARequest = LoRARequest
        self.lora = self._request(self.adapter_dir) if self.adapter_dir is not None else None

    def _request(self, adapter_dir: Path) -> Any:
        """The LoRA request of an adapter folder (one id per folder, for vLLM's LoRA cache)."""
        path = str(Path(adapter_dir).resolve())
        lid = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        return self._LoRARequest(f"emarena-{lid}", lid, path)

    def with_adapter(self, adapter_dir: str | Path | None) -> VllmGenerator:
        """This engine serving `adapter_dir` (a LoRA request) or the base model (None): a view
        sharing the loaded model, so one evaluation job serves all of its model states."""
        import copy

        if adapter_dir is not None:
            r = _adapter_rank(Path(adapter_dir))
            if r is not None and r > self.max_lora_rank:
                raise ModelError(
                    f"adapter {adapter_dir} has rank {r}, above this engine's max_lora_rank "
                    f"{self.max_lora_rank}",
                    fix="start the engine with the largest rank of the job's adapters",
                )
        view = copy.copy(self)
        view.adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
        view.lora = self._request(Path(adapter_dir)) if adapter_dir is not None else None
        return view

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        try:
            version = metadata.version("vllm")
        except metadata.PackageNotFoundError:
            version = None
        return {
            "backend": self.name,
            "model_dir": str(self.model_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "eos_token_ids": self.eos_ids,
            "options": self.options,
            "versions": {"vllm": version},
        }

    def close(self) -> None:
        import gc

        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def _run(self, prompts: Sequence[str], params: Sequence[Any]) -> list[Any]:
        from vllm.inputs import TokensPrompt

        reqs = [TokensPrompt(prompt_token_ids=self.encode(p)) for p in prompts]
        return self.llm.generate(reqs, list(params), lora_request=self.lora, use_tqdm=False)

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
        from vllm import SamplingParams

        check_sampling(max_new_tokens, temperature, top_p, top_k)
        if len(seeds) != len(prompts):
            raise ValueError("one seed per prompt")
        params = [
            SamplingParams(
                n=1, temperature=float(temperature),
                top_p=float(top_p) if temperature > 0 else 1.0,
                top_k=int(top_k) if top_k > 0 and temperature > 0 else -1, min_p=0.0,
                repetition_penalty=1.0, presence_penalty=0.0,
                frequency_penalty=0.0, max_tokens=max_new_tokens, seed=int(s),
                stop_token_ids=self.eos_ids, ignore_eos=False, skip_special_tokens=True,
            )
            for s in seeds
        ]
        eos = set(self.eos_ids)
        out = []
        for res in self._run(prompts, params):
            o = res.outputs[0]
            ids = list(o.token_ids)
            stopped = o.finish_reason == "stop"
            if stopped and ids and ids[-1] in eos:
                ids = ids[:-1]  # the stop token is not part of the answer
            out.append(Completion(
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                n_tokens=len(ids),
                finish_reason="stop" if stopped else "length",
            ))
        return out

    def choice_probs(
        self, prompts: Sequence[str], options: Sequence[str], *, answer_prefix: str = ""
    ) -> list[tuple[dict[str, float], float]]:
        from vllm import SamplingParams

        texts = [p + answer_prefix for p in prompts]
        reqs: list[str] = []
        params: list[Any] = []
        forced: list[int] = []
        for t in texts:
            for tid in self.option_token_ids(t, options):
                reqs.append(t)
                forced.append(tid)
                params.append(SamplingParams(max_tokens=1, temperature=0.0, logprobs=1,
                                             allowed_token_ids=[tid]))
        results = self._run(reqs, params)
        out = []
        k = len(options)
        for i in range(len(texts)):
            lp: dict[str, float] = {}
            for j, o in enumerate(options):
                res = results[i * k + j].outputs[0]
                tid = forced[i * k + j]
                step = res.logprobs[0] if res.logprobs else {}
                if tid not in step:
                    raise ModelError(f"vLLM returned no logprob for the forced token {tid}",
                                     fix="use vLLM >= 0.10 (V1 engine)")
                lp[o] = float(step[tid].logprob)
            if k > 1 and sum(math.exp(v) for v in lp.values()) > 1.0 + 1e-3:
                raise ModelError(
                    "vLLM returned processed logprobs (every forced option has probability "
                    "~1), so answer probabilities cannot be read",
                    fix="use vLLM >= 0.10 (V1 engine, logprobs_mode=raw_logprobs)",
                )
            out.append(normalise(lp))
        return out

    def loglik(self, prompts: Sequence[str], completions: Sequence[str], *,
               max_tokens: int | None = None) -> list[tuple[float, int]]:
        """Through `prompt_logprobs`: the (raw) log-probability of every prompt token given the
        ones before it; the completion's are summed. One request per (prompt, completion)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        pairs = [self.completion_ids(p, c, max_tokens) for p, c in zip(prompts, completions,
                                                                          strict=True)]
        reqs = [TokensPrompt(prompt_token_ids=p + c) for p, c in pairs]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        results = self.llm.generate(reqs, params, lora_request=self.lora, use_tqdm=False)
        out = []
        for (p, c), res in zip(pairs, results, strict=True):
            steps = res.prompt_logprobs or []
            total = 0.0
            for j, tid in enumerate(c, start=len(p)):
                step = steps[j] if j < len(steps) else None
                if not step or tid not in step:
                    raise ModelError(f"vLLM returned no prompt logprob for token {tid}",
                                     fix="use vLLM >= 0.10 (V1 engine)")
                total += float(step[tid].logprob)
            out.append((total, len(c)))
        return out
