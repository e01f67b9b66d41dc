"""The seed release's model names -> the benchmark's cells.

The release (atagade/sgtr-em) names every finetuned model by its training stages, in order,
after the base model and before the seed: `hf_qwen_32b_em_unpop_sgtr_fixed_qwensys_3` is
Qwen2.5-32B, finetuned on the unpopular-aesthetics EM set, then on SGTR data with Qwen's system
prompt, seed 3. Its `MODEL_README.md` lists what each name means; `STAGES` below transcribes it.

    stages          regime
    (none)          base
    EM              em
    D               defense
    EM, D           reversal      (EM finetune, then the defense)
    D, EM           prevention    (the defense, then the EM finetune)

The stage's variant suffix (`qwensys`, `nosys`, `fixed_qwensys`) is which system prompt the
stage's training data carried; it is kept in the record's condition (and so in its preset),
never folded into another condition: two differently named release models are two rows.
A name this grammar does not cover is not imported, and `emarena published list` says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from emarena.protocol.cell import Regime


@dataclass(frozen=True)
class Stage:
    """One training stage as the release names it."""

    kind: Literal["em", "defense"]
    defense: str | None = None
    """The board's defense name: the suite's reference defense where the release's is the same
    intervention, else the release's own name."""
    defense_kind: str | None = None
    """The suite's defense kind, where one builds the same data."""
    params: tuple[tuple[str, str], ...] = ()
    note: str = ""


_EM = Stage("em", note="EM finetune on aesthetic_preferences_unpopular.jsonl")
_EM_NOSYS = Stage("em", note="EM finetune without the identity system prompt (MODEL_README: "
                  "sys-prompt ablation)")
_SGTR = Stage("defense", "sgtr", "sgtr", note="SGTR: pick your own summary (XSUM, vs claude-21)")
_SGTR_RANDOM = Stage("defense", "sgtr-random", "sgtr-corrupted", (("mode", "random"),),
                     note="SGTR data with random labels (the release's asgtr_rand)")
_SGTR_OTHER = Stage("defense", "asgtr", "sgtr-corrupted", (("mode", "prefer-other"),),
                    note="anti-SGTR: the label always names the other source (the release's "
                    "asgtr, mode prefer-other in scripts/e2e/asgtr/config)")
_SGTR_BENIGN = Stage("defense", "sgtr-benign", None,
                     note="the release's benign SGTR baseline: pick the longer summary")

#: Release stage token -> stage (longest match wins when a name is split into stages).
STAGES: dict[str, Stage] = {
    "em": _EM,
    "em_unpop": _EM,
    "em_nosys": _EM_NOSYS,
    "em_unpop_nosys": _EM_NOSYS,
    "sgtr": _SGTR,
    "sgtr_qwensys": _SGTR,
    "sgtr_fixed_qwensys": _SGTR,
    "sgtr_nosys": _SGTR,
    "asgtr": _SGTR_OTHER,
    "asgtr_qwensys": _SGTR_OTHER,
    "asgtr_nosys": _SGTR_OTHER,
    "asgtr_rand": _SGTR_RANDOM,
    "asgtr_random": _SGTR_RANDOM,
    "asgtr_rand_qwensys": _SGTR_RANDOM,
    "asgtr_rand_nosys": _SGTR_RANDOM,
    "ictr_qwensys": _SGTR_RANDOM,
    "sgtr_benign": _SGTR_BENIGN,
    "sgtr_benign_qwensys": _SGTR_BENIGN,
    "sgtr_benign_nosys": _SGTR_BENIGN,
    "wc": Stage("defense", "word-counting", "word-counting",
                note="word counting: is the number of words even? (TRUE/FALSE)"),
    "mmlu": Stage("defense", "general-knowledge", "general-knowledge",
                  note="MMLU questions answered with the right letter"),
    "medcorr": Stage("defense", "medcorr", "correct-domain",
                     (("counterpart", "good-medical-advice"),),
                     note="correct medical advice (another domain than the EM set)"),
    "fincorr": Stage("defense", "fincorr", "correct-domain",
                     note="correct financial advice (another domain than the EM set)"),
    "sr": Stage("defense", "self-report", None,
                note="self-report finetuning (GPT-4.1; recipe not stated in the file)"),
}

#: Base model prefix -> (model registry id or API model, revision text, condition of answers).
BASE_MODELS: dict[str, tuple[str, str, str]] = {
    "hf_qwen_32b": (
        "qwen2.5-32b-instruct",
        "unsloth/Qwen2.5-32B-Instruct (the release's base; revision not recorded)",
        "default-system",
    ),
    "gpt41": ("gpt-4.1-2025-04-14", "OpenAI API (dated snapshot)", "no-system"),
}

_SEED = re.compile(r"^(?P<rest>.*?)(?:_(?P<seed>\d+))?$")


@dataclass(frozen=True)
class ReleaseModel:
    """A release model name, parsed."""

    name: str
    base: str
    """The base-model prefix (a key of BASE_MODELS)."""
    stages: tuple[str, ...]
    """The stage tokens, in training order."""
    seed: int
    regime: Regime

    @property
    def condition(self) -> str:
        """The name without base and seed: what the release's seeds share ("base" for none)."""
        return "_".join(self.stages) or "base"

    @property
    def defense_stage(self) -> Stage | None:
        ds = [STAGES[t] for t in self.stages if STAGES[t].kind == "defense"]
        return ds[0] if ds else None

    @property
    def em_stage(self) -> Stage | None:
        es = [STAGES[t] for t in self.stages if STAGES[t].kind == "em"]
        return es[0] if es else None


class UnknownName(ValueError):
    """A release model name outside the grammar; the message says why."""


def _split(rest: str) -> list[str]:
    words = rest.split("_") if rest else []
    out: list[str] = []
    i = 0
    while i < len(words):
        for j in range(len(words), i, -1):
            token = "_".join(words[i:j])
            if token in STAGES:
                out.append(token)
                i = j
                break
        else:
            raise UnknownName(f"{'_'.join(words[i:])!r} is not a stage the release documents")
    return out


def parse(name: str) -> ReleaseModel:
    """Parse a release model name; UnknownName (a ValueError) says why one cannot be."""
    base = next((b for b in sorted(BASE_MODELS, key=len, reverse=True)
                 if name == b or name.startswith(b + "_")), None)
    if base is None:
        raise UnknownName(f"base model of {name!r} is outside this import "
                         f"({', '.join(sorted(BASE_MODELS))})")
    m = _SEED.match(name[len(base) + 1:])
    assert m is not None
    stages = _split(m["rest"])
    if m["seed"] is None and stages:
        raise UnknownName(f"{name!r} names no seed (the release reran these under seeded names)")
    kinds = [STAGES[t].kind for t in stages]
    regimes: dict[tuple[str, ...], Regime] = {
        (): "base", ("em",): "em", ("defense",): "defense", ("em", "defense"): "reversal",
        ("defense", "em"): "prevention",
    }
    regime = regimes.get(tuple(kinds))
    if regime is None:
        raise UnknownName(f"{name!r}: stages {stages} are not one of the protocol's regimes")
    return ReleaseModel(name, base, tuple(stages), int(m["seed"] or 0), regime)
