"""What every generation backend does, and the part they share (resume, seeds, row writing).

A backend implements two primitives on rendered prompt text:
  complete(prompts, seeds=...)  one completion per prompt, sampled with that prompt's own seed
  choice_probs(prompts, options) the next-token probability of each option's first token

and inherits `generate(items, ..., store=...)`, which turns `PromptItem`s into `Generation`
rows: it skips the row ids already in the store, renders each prompt once, orders the remaining
rows by prompt length (less padding), hands them to `complete` in chunks and appends each chunk's
rows to the store as soon as it is done, so a killed run resumes row by row.

Seeds: row r is sampled with `row_seed(seed, r.id)`. A backend must make a row's answer depend
only on its prompt and its seed (per-row random streams: transformers draws each row's tokens
from its own torch.Generator, vLLM takes a seed per request), so resuming, batch size and batch
composition do not change what is sampled (up to floating-point effects of padding).
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from emarena.eval.prompts import PromptItem, render_chat, render_prompt
from emarena.eval.rows import Condition, Generation, RowStore


@dataclass(frozen=True)
class Completion:
    text: str
    """The answer, special tokens removed, not stripped."""
    n_tokens: int
    """Tokens generated, the stop token not counted."""
    finish_reason: Literal["stop", "length"]
    """stop: the model ended its turn; length: max_new_tokens was reached first."""


def row_seed(seed: int, row_id: str) -> int:
    """The 63-bit seed of one row: a function of the run seed and the row id only."""
    digest = hashlib.sha256(f"emarena:row:{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_sampling(max_new_tokens: int, temperature: float, top_p: float, top_k: int = 0) -> None:
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("temperature must be >= 0, top_p in (0, 1] and top_k >= 0 (0: off)")


def normalise(logprobs: dict[str, float]) -> tuple[dict[str, float], float]:
    """(probabilities renormalised over the options, their total mass before that)."""
    import math

    top = max(logprobs.values())
    if top == float("-inf"):
        raise ValueError("every option has probability 0")
    rel = {k: math.exp(v - top) for k, v in logprobs.items()}
    z = sum(rel.values())
    mass = min(1.0, math.exp(top) * z)
    return {k: v / z for k, v in rel.items()}, mass


class Generator(ABC):
    """A loaded model (+ adapter) that writes answers and reads answer-token probabilities."""

    name: ClassVar[str]
    """Registry name, written into every Generation row (`backend`)."""
    tokenizer: Any
    """The model's Hugging Face tokenizer: prompts are always rendered with its chat template."""
    chunk_size: int = 8
    """Rows handed to `complete` at once (and appended to the store together)."""

    # -- primitives ----------------------------------------------------------------------------

    @abstractmethod
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
        """One completion per rendered prompt; temperature 0 is greedy; top_k 0 is off."""

    @abstractmethod
    def choice_probs(
        self, prompts: Sequence[str], options: Sequence[str], *, answer_prefix: str = ""
    ) -> list[tuple[dict[str, float], float]]:
        """For each rendered prompt: (probability of each option's first token after the prompt
        + `answer_prefix`, renormalised over the options; the options' total mass before)."""

    def loglik(self, prompts: Sequence[str], completions: Sequence[str], *,
               max_tokens: int | None = None) -> list[tuple[float, int]]:
        """For each rendered prompt and completion text: (sum of the log-probabilities of the
        completion's tokens given the prompt, number of tokens), the completion cut to its first
        `max_tokens` tokens. Teacher-forced: no sampling, deterministic."""
        raise NotImplementedError(f"the {self.name} backend does not score log-likelihoods")

    def completion_ids(self, prompt: str, completion: str, max_tokens: int | None
                       ) -> tuple[list[int], list[int]]:
        """(prompt ids, completion ids) as the model sees them: the completion tokenized in
        context (after the prompt) when that keeps the prompt's tokens, else on its own."""
        p = self.encode(prompt)
        full = self.encode(prompt + completion)
        c = full[len(p):] if full[: len(p)] == p else self.encode(completion)
        return p, c[:max_tokens] if max_tokens is not None else c

    def describe(self) -> dict[str, Any]:
        """How this backend was built (recorded with the stage's outputs)."""
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 (optional hook: a backend may hold nothing)
        """Free the model (GPU memory); the object is unusable afterwards."""

    # -- shared --------------------------------------------------------------------------------

    def render(self, messages: Sequence[Any], condition: Condition) -> str:
        return render_prompt(self.tokenizer, messages, condition)

    def render_as_is(self, messages: Sequence[Any]) -> str:
        return render_chat(self.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        """Token ids of rendered text; the template already wrote BOS where the model wants it."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def option_token_ids(self, prompt: str, options: Sequence[str]) -> list[int]:
        """The token each option starts with when it directly follows `prompt`.

        Tokenised in context (prompt + option), so a tokenizer that would merge the option
        with the prompt's last characters is caught rather than mis-scored.
        """
        base = self.encode(prompt)
        ids = []
        for o in options:
            full = self.encode(prompt + o)
            if len(full) <= len(base) or full[: len(base)] != base:
                raise ValueError(
                    f"option {o!r} does not start a new token after the prompt "
                    f"(...{prompt[-30:]!r}); change the answer prefix"
                )
            ids.append(full[len(base)])
        if len(set(ids)) != len(ids):
            raise ValueError(f"options {list(options)} share a first token")
        return ids

    def generate(
        self,
        items: Sequence[PromptItem],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        store: RowStore[Generation],
        progress: bool | None = None,
        limit: int | None = None,
        top_k: int = 0,
    ) -> dict[str, Any]:
        """Sample every row of `items` not yet in `store`, appending rows chunk by chunk.

        `limit` stops after that many new rows (tests of resumption). `progress`: a progress
        bar on stderr (None: only on a terminal). Returns counts and throughput.
        """
        check_sampling(max_new_tokens, temperature, top_p, top_k)
        # top_k is passed only when set, so a backend written before it existed still serves
        # a suite without it (v1).
        extra = {"top_k": top_k} if top_k else {}
        t0 = time.monotonic()
        rows: list[tuple[str, PromptItem, int]] = []
        seen: set[str] = set()
        for it in items:
            for s in range(it.n_samples):
                rid = it.row_id(s)
                if rid in seen:
                    raise ValueError(f"row id {rid!r} appears twice among the items")
                seen.add(rid)
                rows.append((rid, it, s))
        pending = [r for r in rows if r[0] not in store]
        existing = len(rows) - len(pending)
        for rid, it, _ in rows:
            done = store.get(rid)
            if done is not None and (done.seed != row_seed(seed, rid)
                                     or done.messages != list(it.messages)):
                raise ValueError(
                    f"{store.path} already holds row {rid!r} made with another "
                    f"{'seed' if done.seed != row_seed(seed, rid) else 'prompt'}; "
                    "write to a fresh file (outputs are keyed by what produced them)"
                )
        if limit is not None:
            pending = pending[: max(0, limit)]

        prompts: dict[int, str] = {}
        lengths: dict[int, int] = {}
        for _, it, _ in pending:
            if id(it) not in prompts:
                prompts[id(it)] = self.render(it.messages, it.condition)
                lengths[id(it)] = len(self.encode(prompts[id(it)]))
        pending.sort(key=lambda r: (lengths[id(r[1])], r[0]))

        from tqdm import tqdm

        generated = tokens = n_length = 0
        with tqdm(total=len(pending), desc=f"generate ({self.name})", unit="row",
                  disable=None if progress is None else not progress, leave=False) as bar:
            for start in range(0, len(pending), self.chunk_size):
                chunk = pending[start : start + self.chunk_size]
                seeds = [row_seed(seed, rid) for rid, _, _ in chunk]
                outs = self.complete(
                    [prompts[id(it)] for _, it, _ in chunk], seeds=seeds,
                    max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    **extra,
                )
                new_rows = [
                    Generation(
                        id=rid, eval_set=it.eval_set, question_id=it.question_id,
                        paraphrase_index=it.paraphrase_index, condition=it.condition,
                        sample=s, seed=sd, messages=list(it.messages), answer=out.text,
                        n_tokens=out.n_tokens, finish_reason=out.finish_reason,
                        backend=self.name,
                    )
                    for (rid, it, s), sd, out in zip(chunk, seeds, outs, strict=True)
                ]
                store.append(new_rows)
                generated += len(new_rows)
                tokens += sum(o.n_tokens for o in outs)
                n_length += sum(o.finish_reason == "length" for o in outs)
                bar.update(len(chunk))
        seconds = time.monotonic() - t0
        return {
            "rows": len(rows),
            "existing": existing,
            "other_rows_in_store": len(store) - existing - generated,
            "generated": generated,
            "remaining": len(rows) - existing - generated,
            "tokens": tokens,
            "finish_length": n_length,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
        }
