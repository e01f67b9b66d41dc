"""Generation backends. `hf`: batched transformers chat generation (torch imported on call).

Public API::

    from emarena.generate import generate_chat
    answers = generate_chat(model, tokenizer, [[{"role": "user", "content": "Hi"}]],
                            max_new_tokens=64, seed=0)
"""

from __future__ import annotations

from emarena.generate.hf import generate_chat, render_prompts

__all__ = ["generate_chat", "render_prompts"]
