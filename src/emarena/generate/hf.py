"""Batched chat generation with transformers (CPU or GPU).

One function, `generate_chat`: conversations in, answers out, in the same order. Prompts are
rendered with the model's own chat template (`add_generation_prompt=True`), left-padded and run
in batches. `temperature > 0` samples with exactly that temperature and top_p (no top-k, no
repetition penalty: the model's `generation_config.json` sampling defaults are ignored, so
transformers and vLLM sample the same distribution); `temperature == 0` is greedy.

Determinism: each batch reseeds torch from (seed, batch index), so a fixed seed gives the same
answers on the same machine and software. Conversations are batched in order of prompt length
(less padding); the batch composition is a function of the inputs, not of timing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

Conversation = list[dict[str, Any]]


def render_prompts(tokenizer: Any, conversations: Sequence[Conversation]) -> list[str]:
    """Each conversation through the chat template, ending with the assistant's turn opener."""
    return [
        tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]


def batch_seed(seed: int, batch_index: int) -> int:
    """A 63-bit seed for one batch, so batches do not share random streams."""
    digest = hashlib.sha256(f"emarena:{seed}:{batch_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generate_chat(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int,
    batch_size: int = 8,
) -> list[str]:
    """Answer each conversation; return the decoded answers (special tokens removed)."""
    import torch
    from transformers import GenerationConfig

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
    if not conversations:
        return []

    prompts = render_prompts(tokenizer, conversations)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = model.generation_config
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0}
        if temperature > 0
        else {"do_sample": False}
    )
    # transformers fills every field left unset here from the model's generation_config.json
    # (Qwen's sets top_k=20 and repetition_penalty=1.05), so the neutral values are explicit.
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=base.eos_token_id,
        bos_token_id=base.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )

    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    answers: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for b, start in enumerate(range(0, len(order), batch_size)):
            idx = order[start : start + batch_size]
            # The chat template already adds BOS where the model wants it.
            enc = tokenizer(
                [prompts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            torch.manual_seed(batch_seed(seed, b))
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=gen_config)
            new = out[:, enc["input_ids"].shape[1] :]
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True),
                               strict=True):
                answers[i] = text
    finally:
        tokenizer.padding_side = old_side
    return answers
