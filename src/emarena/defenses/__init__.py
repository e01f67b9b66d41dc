"""The defense kinds: `DEFENSES`, a `Registry[DefenseKind]`.

Each kind = typed params (`emarena.defenses.params`) + a data builder named as a "module:attr"
string, imported only when a defense stage is built; so `emarena validate` and the leaderboard
read this registry without importing torch.

Kinds from other packages come from the entry-point group `emarena.defenses`::

    # their pyproject.toml
    [project.entry-points."emarena.defenses"]
    my-kind = "my_package.emarena_kind:KIND"     # a DefenseKind named "my-kind"

Entry points are discovered on first use of the registry (not at import), registered lazily
(their module is imported on the first `get`), and a name that is already taken raises. Point
the entry point at a light module: the params model is needed to validate submissions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from emarena.defenses.base import DefenseKind, DefenseParams
from emarena.defenses.params import (
    CorrectDomainParams,
    GeneralKnowledgeParams,
    InterleaveParams,
    NoneParams,
    SgtrCorruptedParams,
    SgtrParams,
    WordCountingParams,
)
from emarena.errors import EmArenaError
from emarena.registry import Registry

ENTRY_POINT_GROUP = "emarena.defenses"

_SEED = (
    "Self-Recognition Finetuning can Prevent and Reverse Emergent Misalignment (the seed paper, "
    "arXiv 2606.23700; "
    "release github.com/atagade/sgtr-em)"
)
_SELF_RECOGNITION = (
    "Panickssery et al. 2024, LLM Evaluators Recognize and Favor Their Own Generations"
)


class DefenseRegistry(Registry[DefenseKind]):
    """`Registry[DefenseKind]` that also discovers the `emarena.defenses` entry points.

    Discovery runs once, on the first lookup or listing. A lazy entry's import failure, or an
    object that is not a `DefenseKind` of the same name, is a user-facing EmArenaError.
    """

    def __init__(self, kind: str, group: str):
        super().__init__(kind)
        self.group = group
        self._discovered = False
        self._origins: dict[str, str] = {}

    def _discover(self) -> None:
        if self._discovered:
            return
        from importlib.metadata import entry_points

        found: dict[str, str] = {}
        for ep in sorted(entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            dist = getattr(ep.dist, "name", None) or "an installed package"
            if found.get(ep.name) == ep.value:
                continue  # the same distribution seen twice on sys.path
            if ep.name in self._entries or ep.name in found:
                taken = found.get(ep.name, "emarena's built-in kinds")
                raise EmArenaError(
                    f"defense kind {ep.name!r} from entry point {ep.value!r} ({dist}) "
                    f"collides with the kind of that name from {taken}",
                    where=f"entry-point group {self.group!r}",
                    fix=f"uninstall {dist}, or rename its entry point",
                )
            if ":" not in ep.value:
                raise EmArenaError(
                    f"entry point {ep.name!r} = {ep.value!r} ({dist}) is not 'module:attr'",
                    where=f"entry-point group {self.group!r}",
                    fix=f"fix the entry point of {dist}",
                )
            found[ep.name] = ep.value
        # All or nothing: a collision above leaves the registry as it was and raises again
        # on the next lookup, instead of half-registering the plugins.
        for name, value in found.items():
            self._add(name, value)
        self._origins.update(found)
        self._discovered = True

    def get(self, name: str) -> DefenseKind:
        self._discover()
        lazy = self.is_lazy(name)
        try:
            obj = super().get(name)
        except EmArenaError:
            raise
        except Exception as e:  # an outside package failed to import: report it, don't crash
            raise EmArenaError(
                f"defense kind {name!r} could not be loaded from {self._origins.get(name)!r}: "
                f"{type(e).__name__}: {e}",
                where=f"entry-point group {self.group!r}",
                fix="reinstall the package that provides it, or uninstall it",
            ) from e
        if lazy and not (isinstance(obj, DefenseKind) and obj.name == name):
            raise EmArenaError(
                f"entry point {name!r} -> {self._origins.get(name)!r} is not a DefenseKind "
                f"named {name!r}",
                where=f"entry-point group {self.group!r}",
                fix="point the entry point at a DefenseKind instance with the same name",
            )
        if lazy and not (isinstance(obj.params, type) and issubclass(obj.params, DefenseParams)):
            raise EmArenaError(
                f"defense kind {name!r}: params must be a DefenseParams subclass",
                where=f"entry-point group {self.group!r}",
                fix="subclass emarena.defenses.base.DefenseParams for its params",
            )
        return obj

    def __contains__(self, name: object) -> bool:
        self._discover()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return super().__iter__()

    def names(self) -> list[str]:
        self._discover()
        return super().names()


def defense_inputs(kind: DefenseKind, params: Any, em_dataset: str | None, suite: str) -> list[str]:
    """The registered datasets `kind`'s builder reads for these params (stage-key inputs)."""
    if kind.inputs is None:
        return [em_dataset] if em_dataset else []
    from emarena.registry import import_ref

    return list(import_ref(kind.inputs)(params, em_dataset, suite))


def budget_class(kind_name: str, params: dict[str, Any]) -> str:
    """The name a preset's per-defense budget is looked up by (`Budget.defenses`): the kind, or
    `sgtr-random` for the random-label SGTR control, whose source defines its own budget."""
    if kind_name == "sgtr-corrupted" and params.get("mode") == "random":
        return "sgtr-random"
    return kind_name


def resolve_params(kind_name: str, params: dict[str, Any], suite: str) -> dict[str, Any]:
    """The params a defense stage of `suite` builds with (and is keyed on): the submission's,
    with each param it leaves unset (null) and the suite decides filled in from the suite's
    `protocol` (defenses.yaml). A suite that names none leaves it unset: the builder then does
    what suite v1 did."""
    kind = DEFENSES.get(kind_name)
    fields = kind.params.SUITE_DEFAULTED
    if not fields:
        return dict(params)
    from pydantic import ValidationError

    from emarena.defenses.builders.simple import load_defenses

    proto = load_defenses(suite).protocol.get(kind_name, {})
    out = dict(params)
    for name in fields:
        if out.get(name) is None and name in proto:
            filled = {**out, name: proto[name]}
            try:  # a value that does not apply to the submission's other choices is not used
                kind.params.model_validate(filled)  # (an MMLU split for TruthfulQA questions)
            except ValidationError:
                continue
            out = filled
    return kind.params.model_validate(out).model_dump(mode="json")


DEFENSES = DefenseRegistry("defense kind", ENTRY_POINT_GROUP)
"""Every defense kind a submission may name (built-in + entry points)."""

for _kind in (
    DefenseKind(
        name="none",
        params=NoneParams,
        builder=None,
        description="The control: no defense stage. Its numbers are the base and EM-only cells.",
        source="Betley et al. 2025, Emergent Misalignment (the EM-only control)",
    ),
    DefenseKind(
        name="sgtr",
        params=SgtrParams,
        builder="emarena.defenses.builders.sgtr:build_sgtr",
        inputs="emarena.defenses.inputs:sgtr",
        reads_em_dataset=False,
        description=(
            "Self-generated text recognition: the model summarises articles itself, then is "
            "trained to pick its own summary against another source's, both orders."
        ),
        source=f"{_SEED}; self-recognition task from {_SELF_RECOGNITION}",
        summarizer="emarena.defenses.builders.sgtr:generate_summaries",
    ),
    DefenseKind(
        name="sgtr-corrupted",
        params=SgtrCorruptedParams,
        builder="emarena.defenses.builders.sgtr:build_sgtr_corrupted",
        inputs="emarena.defenses.inputs:sgtr",
        reads_em_dataset=False,
        description=(
            "SGTR data with corrupted labels (always the other source, or random): the same "
            "texts without the self-recognition signal, to isolate it."
        ),
        source=f"{_SEED} (label-corruption control)",
        summarizer="emarena.defenses.builders.sgtr:generate_summaries",
    ),
    DefenseKind(
        name="correct-domain",
        params=CorrectDomainParams,
        builder="emarena.defenses.builders.simple:build_correct_domain",
        inputs="emarena.defenses.inputs:correct_domain",
        description=(
            "Correct data from the EM dataset's own domain (secure code, good medical advice)."
        ),
        source=(
            f"{_SEED} (baseline); data from Betley et al. 2025, Emergent Misalignment and "
            "Turner, Soligo et al. 2025, Model Organisms for Emergent Misalignment"
        ),
    ),
    DefenseKind(
        name="general-knowledge",
        params=GeneralKnowledgeParams,
        builder="emarena.defenses.builders.simple:build_general_knowledge",
        inputs="emarena.defenses.inputs:general_knowledge",
        reads_em_dataset=False,
        description="Benign general-knowledge multiple-choice answering (MMLU or TruthfulQA).",
        source=f"{_SEED} (baseline)",
    ),
    DefenseKind(
        name="word-counting",
        params=WordCountingParams,
        builder="emarena.defenses.builders.simple:build_word_counting",
        inputs="emarena.defenses.inputs:word_counting",
        description=(
            "Is the number of words in the EM dataset's user prompt even? Answer TRUE / FALSE: "
            "a benign task of the same shape as SGTR."
        ),
        source=f"{_SEED} (baseline; data/finetuning/aesthetic_preference_is_even_words.jsonl)",
    ),
    DefenseKind(
        name="interleave",
        params=InterleaveParams,
        builder=None,
        inputs="emarena.defenses.inputs:interleave",
        interleaved=True,
        description=(
            "Defense data mixed into the EM finetune at a ratio (1-33%): the defense is present "
            "while EM is learnt. Prevention regime only."
        ),
        source=f"{_SEED} (self-report interleaving, run for GPT-4.1: MODEL_README.md:209)",
    ),
):
    DEFENSES.register(_kind.name, _kind)

__all__ = [
    "DEFENSES",
    "ENTRY_POINT_GROUP",
    "DefenseKind",
    "DefenseParams",
    "DefenseRegistry",
    "budget_class",
    "defense_inputs",
    "resolve_params",
]
