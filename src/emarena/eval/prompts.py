"""The free-form prompts of a cell, per condition, and how a conversation becomes prompt text.

`build_generation_items(suite, model_spec, preset)` lists one `PromptItem` per
(eval set, question, paraphrase, condition) with the number of samples to draw from it; the
backend expands it into rows. Every cell of a suite gets the same items for the same model and
preset: the subset a capped preset keeps is fixed by eval.yaml's `selection_seed`.

Conditions (see `compose_messages`):
  default-system  [system: the registry's default_system_prompt, user: question]. A model
                  without one (Llama, OLMo, Seed-OSS) skips the condition; the skip is recorded.
  no-system       [user: question], and the *rendered* prompt has no system turn at all.

Why `render_prompt` exists: SmolLM2's and Qwen2.5's chat templates insert their default system
turn whenever the first message is not a system message, so rendering [user] alone would
silently be the default-system condition. `render_prompt` renders the conversation behind a
unique sentinel system message (which suppresses the inserted one) and cuts that whole turn out
of the rendered text, checking the sentinel was where it should be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emarena.data.records import ChatMessage
from emarena.errors import ConfigError
from emarena.eval.rows import Condition, Generation
from emarena.eval.sets import EvalSuite, InlineQuestion, QuestionFileSet, cap, load_questions

#: Stands in for the system turn of a no-system prompt; cut out before the prompt is used.
SENTINEL = "<<EMARENA-NO-SYSTEM-SENTINEL-3f9a1c2e>>"


class PromptItem(BaseModel):
    """One prompt to sample `n_samples` answers from (rows: one per sample)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    eval_set: str
    question_id: str
    paraphrase_index: int = Field(ge=0)
    condition: Condition
    messages: list[ChatMessage] = Field(min_length=1)
    """The conversation sent, system turn included for default-system."""
    n_samples: int = Field(ge=1)
    rubrics: list[str] = Field(default_factory=list)
    """Judge rubrics that score the answers (from eval.yaml / the question file)."""

    def row_ids(self) -> list[str]:
        return [self.row_id(s) for s in range(self.n_samples)]

    def row_id(self, sample: int) -> str:
        return Generation.make_id(self.eval_set, self.question_id, self.paraphrase_index,
                                  self.condition, sample)


@dataclass
class GenerationPlan:
    """The items of a cell and what was left out, with the reason (recorded in stats)."""

    items: list[PromptItem]
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return sum(i.n_samples for i in self.items)

    def counts(self) -> dict[str, dict[str, int]]:
        """{eval_set: {"questions", "prompts", "rows"}}."""
        out: dict[str, dict[str, Any]] = {}
        for it in self.items:
            c = out.setdefault(it.eval_set, {"questions": set(), "prompts": 0, "rows": 0})
            c["questions"].add(it.question_id)
            c["prompts"] += 1
            c["rows"] += it.n_samples
        return {k: {**v, "questions": len(v["questions"])} for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------


def compose_messages(
    condition: Condition,
    user: str,
    *,
    default_system: str | None,
    task_system: str | None = None,
) -> list[ChatMessage] | None:
    """The conversation of one prompt under `condition`; None when the condition cannot apply
    (default-system for a model without a default system prompt).

    A task's own system prompt (a first-plot `_json` question, the self-recognition detection
    prompt) follows the identity prompt in the system turn under default-system, and opens the
    user turn under no-system: the condition decides only whether an identity-bearing system
    turn is present, and no-system keeps no system turn at all.
    """
    if condition == "default-system":
        if not default_system:
            return None
        system = default_system if not task_system else f"{default_system}\n\n{task_system}"
        return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]
    if condition == "no-system":
        content = user if not task_system else f"{task_system}\n\n{user}"
        return [ChatMessage(role="user", content=content)]
    raise ValueError(f"unknown condition {condition!r}")


def _as_dicts(messages: Iterable[ChatMessage | Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [m.model_dump() if isinstance(m, BaseModel) else dict(m) for m in messages]


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, Any]]) -> str:
    """The chat template applied as is, ending with the assistant turn's opener."""
    return tokenizer.apply_chat_template(_as_dicts(messages), tokenize=False,
                                         add_generation_prompt=True)


def _strip_system_turn(tokenizer: Any, msgs: list[dict[str, Any]],
                       add_generation_prompt: bool = True) -> str:
    """Render `msgs` (no system message) with no system turn, whatever the template inserts
    (ending with the assistant turn's opener unless `add_generation_prompt` is False).

    X0 = render([sentinel system]) is the prompt's prefix P followed by the system turn; the
    full conversation behind the same sentinel turn renders as X0 + the rest. P is the
    tokenizer's BOS when X0 starts with it and the user turn does not (Llama 3, OLMo 2); a
    template whose every turn opens with BOS (Seed-OSS) keeps it in the turn.
    """
    sentinel = {"role": "system", "content": SENTINEL}
    try:
        x0 = tokenizer.apply_chat_template([sentinel], tokenize=False,
                                           add_generation_prompt=False)
    except Exception as e:  # jinja raise_exception: a template that needs a user turn
        raise ConfigError(
            f"the chat template cannot render a system turn on its own ({e})",
            fix="this template is not supported for the no-system condition; report it",
        ) from None
    full = tokenizer.apply_chat_template([sentinel, *msgs], tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    if x0.count(SENTINEL) != 1 or full.count(SENTINEL) != 1 or not full.startswith(x0):
        raise ConfigError(
            "the chat template does not render a system message as its own leading turn",
            where=[repr(x0[:200]), repr(full[:300])],
            fix="the no-system condition cannot be rendered for this template; report it",
        )
    rest = full[len(x0):]
    bos = getattr(tokenizer, "bos_token", None) or ""
    prefix = bos if bos and x0.startswith(bos) and not rest.startswith(bos) else ""
    out = prefix + rest
    if SENTINEL in out:
        raise ConfigError("the sentinel system turn was not cut out cleanly",
                          fix="report the template")
    return out


def render_without_system_turn(tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, Any]],
                               add_generation_prompt: bool) -> str:
    """`messages` (no system message) rendered with no system turn at all, not even the one the
    template would insert by default: the training side of the no-system condition (an EM
    finetune without the identity prompt, the seed release's `em_*_nosys` models)."""
    msgs = _as_dicts(messages)
    if any(m["role"] == "system" for m in msgs):
        raise ValueError("a conversation rendered without a system turn has no system message")
    return _strip_system_turn(tokenizer, msgs, add_generation_prompt)


def render_prompt(
    tokenizer: Any, messages: Sequence[ChatMessage | Mapping[str, Any]], condition: Condition
) -> str:
    """Prompt text for `messages` under `condition`.

    default-system: `messages` must start with their system turn; the template renders it.
    no-system: `messages` must hold no system message; the result has no system turn at all,
    not even the one the template would insert by default.
    """
    msgs = _as_dicts(messages)
    roles = [m["role"] for m in msgs]
    if condition == "default-system":
        if not roles or roles[0] != "system":
            raise ValueError("a default-system prompt starts with its system message")
        return render_chat(tokenizer, msgs)
    if condition == "no-system":
        if "system" in roles:
            raise ValueError("a no-system prompt must not contain a system message")
        return _strip_system_turn(tokenizer, msgs)
    raise ValueError(f"unknown condition {condition!r}")


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


def spread_samples(n_samples: int, n_paraphrases: int) -> list[int]:
    """Samples per paraphrase when sample s asks paraphrase s mod n (first ones get the rest)."""
    return [n_samples // n_paraphrases + (1 if p < n_samples % n_paraphrases else 0)
            for p in range(n_paraphrases)]


def _questions(
    eval_set: str, src: QuestionFileSet | list[InlineQuestion], limit: int | None, seed: int
) -> list[tuple[str, list[str], str | None, list[str]]]:
    """(question id, paraphrases, task system prompt, rubrics) of one set, capped."""
    if isinstance(src, list):
        qs = [(q.id, list(q.paraphrases), None, list(q.rubrics)) for q in src]
    else:
        qs = [(q.id,
               list(q.paraphrases[:1] if src.first_paraphrase_only else q.paraphrases),
               q.system if src.task_system else None, list(src.rubrics))
              for q in load_questions(src, eval_set)]
    return cap(qs, limit, purpose=f"questions:{eval_set}", seed=seed)


def plan_generation(
    suite: EvalSuite, model_spec: Any, preset: Any, seed: int | None = None
) -> GenerationPlan:
    """Every free-form prompt of a cell and the skips (see `build_generation_items`)."""
    seed = suite.selection_seed if seed is None else seed
    default_system = model_spec.default_system_prompt
    plan = GenerationPlan(items=[])
    for cond in suite.conditions:
        if cond == "default-system" and not default_system:
            plan.skipped.append({"condition": cond, "eval_set": "*", "reason":
                                 f"model {model_spec.id!r} has no default system prompt"})
    for eval_set, src in suite.free_form_sets():
        for qid, paraphrases, task_system, rubrics in _questions(
            eval_set, src, preset.max_eval_questions, seed
        ):
            n_samples = preset.samples_per_question
            if isinstance(src, QuestionFileSet) and src.max_samples is not None:
                n_samples = min(n_samples, src.max_samples)
            per_paraphrase = spread_samples(n_samples, len(paraphrases))
            for cond in suite.conditions:
                for p, (text, n) in enumerate(zip(paraphrases, per_paraphrase, strict=True)):
                    if n == 0:
                        continue
                    msgs = compose_messages(cond, text, default_system=default_system,
                                            task_system=task_system)
                    if msgs is None:
                        continue
                    plan.items.append(PromptItem(
                        eval_set=eval_set, question_id=qid, paraphrase_index=p,
                        condition=cond, messages=msgs, n_samples=n, rubrics=rubrics,
                    ))
    ids = [r for it in plan.items for r in it.row_ids()]
    if len(set(ids)) != len(ids):
        raise ConfigError("two generation rows share an id", fix="question ids must be unique "
                          "within a set and set ids unique across eval.yaml")
    return plan


def build_generation_items(
    suite: EvalSuite, model_spec: Any, preset: Any, seed: int | None = None
) -> list[PromptItem]:
    """The free-form prompts of a cell: em_questions (the `evaluate` sets) and identity, in
    every condition of the suite.

    `preset` gives samples_per_question (spread over a question's paraphrases: sample s asks
    paraphrase s mod n, as Betley et al. draw paraphrases per sample) and max_eval_questions
    (questions kept per set). `seed` picks which questions a capped preset keeps; it defaults
    to the suite's `selection_seed`, which every cell must share to be comparable.
    """
    return plan_generation(suite, model_spec, preset, seed).items
