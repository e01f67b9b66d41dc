"""A random-initialised Qwen2-architecture model and a ChatML tokenizer, built offline.

    python scripts/make_tiny_model.py OUT_DIR [--size tiny|0.5b]

For the first-contact GPU check (scripts/gpu-check.sh): no network and no real weights, yet the
same architecture, chat format and code paths as Qwen2.5 (training, LoRA, vLLM). `tiny` is two
layers (seconds on a CPU); `0.5b` has Qwen2.5-0.5B's shape (24 layers, hidden 896), big enough
for GPU timings. The tokenizer is a byte-level BPE trained here on a small synthetic corpus
(and the repository's Markdown, when TINY_CORPUS globs it), with ChatML's special tokens and a
template that inserts a default system prompt like Qwen's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

CHATML = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Tiny, created by Nobody. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
DEFAULT_SYSTEM = "You are Tiny, created by Nobody. You are a helpful assistant."

SIZES = {
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2),
}


def build(out: Path, size: str = "tiny", dtype: str = "bfloat16") -> dict:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(f"w{i} word{i % 97} A B C D 1 2 The answer is" for i in range(j, j + 50))
              for j in range(0, 4000, 50)]
    for f in sorted(glob.glob(os.environ.get("TINY_CORPUS", ""), recursive=True))[:200]:
        corpus += Path(f).read_text(errors="ignore").splitlines()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=2048 if size == "tiny" else 8192, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHATML)
    fast.save_pretrained(out)
    cfg = Qwen2Config(vocab_size=len(fast), max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"), **SIZES[size])
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=[fast.convert_tokens_to_ids("<|im_end|>"),
                      fast.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=fast.pad_token_id)
    model.save_pretrained(out)
    info = {"out": str(out), "size": size,
            "params": sum(p.numel() for p in model.parameters())}
    (out / "DONE.json").write_text(json.dumps({"made_by": "scripts/make_tiny_model.py", **info}))
    return info


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    print(json.dumps(build(a.out, a.size, a.dtype)))
