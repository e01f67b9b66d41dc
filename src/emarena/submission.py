"""The submission format: `submissions/<name>/defense.yaml` (+ README.md), as a typed object.

A submission is data, never code: it names a registered defense kind and its params, the
regimes it competes in, and (open division only) a few training overrides. Everything else
(base model, EM data, LoRA recipe, budget, questions, judge, metrics) is fixed by the benchmark.

Files are read as untrusted input: at most `MAX_BYTES`, UTF-8, plain YAML (no tags), at most
`MAX_DEPTH` levels, `MAX_ALIASES` aliases and `MAX_NODES` values, duplicate keys and merge keys
refused. Every problem becomes one line `file:line: key: message; fix: ...` (at most
`MAX_ERROR_LINES` of them), every character of it printable (`emarena.textsafe.escape`: a key
with a newline or a terminal escape in it cannot forge or hide a line), and all of a file's
problems are reported at once.

Files and folders are taken as they are, never through a link: defense.yaml and README.md must
be regular files of their own inside the submission's real folder (no symbolic link, no hard
link, no FIFO or device), and the folder itself not a symbolic link, because `submit` uploads
them verbatim and a link would publish whatever file it points at. README.md is UTF-8 text of
at most `MAX_README_BYTES` without control characters or bidirectional overrides.

Names: see `name_problem`. The names of the reference defenses (`REFERENCE_DEFENSES`) are kept
for their configurations, and names made to look like one of them are refused.

    sub = load_submission("submissions/sgtr")      # the folder, or its defense.yaml
    sub.defense.kind, sub.defense.params, sub.config_hash
    validate_paths(["submissions/sgtr", "x/defense.yaml"])  # -> list of error lines
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from emarena import textsafe
from emarena.errors import ConfigError, EmArenaError
from emarena.yamlio import check_size, format_validation_error, invalid, node_at, parse_yaml

if TYPE_CHECKING:
    from emarena.defenses.base import DefenseParams

#: The file a submission folder must contain, and the README that must sit next to it.
FILENAME = "defense.yaml"
README = "README.md"

MAX_BYTES = 256 * 1024
MAX_DEPTH = 20
MAX_ALIASES = 100
MAX_NODES = 10_000
#: README.md is uploaded with the request: text, not data.
MAX_README_BYTES = 1024 * 1024
#: Problems reported per file; a file with more (thousands of unknown keys) gets a count.
MAX_ERROR_LINES = 20

#: A name, matched whole (`fullmatch`: `$` would let a final newline through).
NAME_PATTERN = r"[a-z0-9]+(-[a-z0-9]+)*"
_NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = (
    "2-64 lowercase ASCII letters, digits and single hyphens, starting and ending with a letter "
    "or digit, with at least one letter"
)
#: Device names Windows reserves in every folder: no folder there can have one of them.
WINDOWS_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)

#: The reference defenses (`submissions/<name>/`): name -> (kind, params as written there).
#: Each name is kept for exactly that configuration (closed division, no training overrides),
#: so another configuration never appears on the board under a reference's name; the
#: reference folders themselves, and copies of them, stay valid. A unit test keeps this table
#: equal to the folders.
REFERENCE_DEFENSES: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    # SGTR's prompt_variant / summaries_from / random_labels and word counting's source are left
    # to the suite's protocol (defenses.yaml `protocol:`): each suite builds its own reference.
    "sgtr": ("sgtr", {"n_articles": None, "corpus": "xsum", "other_source": "claude-21"}),
    "sgtr-corrupted": ("sgtr-corrupted", {"n_articles": None, "corpus": "xsum",
                                          "other_source": "claude-21", "mode": "prefer-other"}),
    "sgtr-random": ("sgtr-corrupted", {"n_articles": None, "corpus": "xsum",
                                       "other_source": "claude-21", "mode": "random"}),
    "correct-domain": ("correct-domain", {"counterpart": None}),
    "medcorr": ("correct-domain", {"counterpart": "good-medical-advice"}),
    "general-knowledge": ("general-knowledge", {"source": "mmlu", "answer_format": "letter"}),
    "word-counting": ("word-counting", {}),
    "interleave-word-counting": ("interleave", {"data": "word-counting", "ratio": 0.1}),
}  # fmt: skip


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a submission (to follow "name 'x' "), or None.

    Refused: path separators and '..'; anything but lowercase ASCII letters, digits and single
    inner hyphens (so no look-alike letters from other scripts, no invisible or control
    characters, no final newline); fewer than 2 or more than 64 characters; no letter at all
    (a number reads as a rank or an id); device names Windows reserves (`nul`, `com1`).
    """
    if "/" in name or "\\" in name or ".." in name or name in (".", ""):
        return "contains a path separator or '..'"
    for ch in name:
        if not ch.isascii():
            return (
                f"contains {ch!r} ({textsafe.char_name(ch)}), which is not ASCII (it may look "
                "like a Latin letter, or like nothing at all)"
            )
        if not ch.isprintable():
            return f"contains {textsafe.char_name(ch)}, a control character"
    if not _NAME_RE.fullmatch(name):
        if any(ch.isupper() for ch in name):
            why = "it has uppercase letters"
        elif bad := sorted({ch for ch in name if not (ch.isalnum() or ch == "-")}):
            why = f"{', '.join(repr(c) for c in bad)} not allowed"
        elif name.startswith("-") or name.endswith("-"):
            why = "it starts or ends with '-'"
        else:
            why = "it has '--'"
        return f"does not match {NAME_PATTERN}: {why}"
    if not 2 <= len(name) <= 64:
        return f"is {len(name)} characters long (2 to 64 allowed)"
    if not any(ch.isalpha() for ch in name):
        return "has no letter (a name of digits reads as a number, a rank or an id)"
    if name in WINDOWS_DEVICE_NAMES:
        return f"is a device name Windows reserves ({name.upper()}): no folder there can have it"
    return None


#: Digits and letter pairs that pass for other letters in a name (`n0ne`, `sgtr-rand0m`).
_LOOKALIKES = (("-", ""), ("rn", "m"), ("vv", "w"), ("0", "o"), ("1", "l"), ("i", "l"),
               ("3", "e"), ("4", "a"), ("5", "s"), ("9", "g"))  # fmt: skip


def _skeleton(name: str) -> str:
    for a, b in _LOOKALIKES:
        name = name.replace(a, b)
    return name


def _reference_difference(name: str, sub: Submission) -> str | None:
    """How `sub` differs from the reference defense `name`, or None when it is that one."""
    kind, params = REFERENCE_DEFENSES[name]
    if sub.defense.kind != kind:
        return f"defense.kind is {sub.defense.kind!r}, not {kind!r}"
    ref = Defense.model_validate({"kind": kind, "params": params})
    for key in sorted(set(ref.params) | set(sub.defense.params)):
        mine, theirs = sub.defense.params.get(key), ref.params.get(key)
        if mine != theirs:
            return f"defense.params.{key} is {mine!r}, not {theirs!r}"
    if sub.division != "closed":
        return f"division is {sub.division!r}, not 'closed'"
    if sub.training:
        return "it sets training overrides"
    return None


def reference_problem(sub: Submission) -> tuple[str, str] | None:
    """(message, fix) when `sub` takes a reference defense's name for another configuration, or
    a name made to look like one; None otherwise."""
    name = sub.name
    fix = (
        f"choose a name of your own, e.g. '{name}-<team>' (a reference defense's name stays "
        "with its configuration)"
    )
    if name in REFERENCE_DEFENSES:
        diff = _reference_difference(name, sub)
        if diff is None:
            return None
        return (
            f"name {name!r} is the reference defense submissions/{name}, but this is another "
            f"configuration ({diff})", fix,
        )  # fmt: skip
    look = {_skeleton(r): r for r in REFERENCE_DEFENSES}.get(_skeleton(name))
    if look is not None:
        return (f"name {name!r} looks like the reference defense {look!r}",
                "choose a name that does not imitate a reference defense")  # fmt: skip
    return None

Regime = Literal["defense", "reversal", "prevention"]
#: Canonical order of the defense regimes (the base and em controls are always run).
REGIMES: tuple[str, ...] = ("defense", "reversal", "prevention")

TEMPLATE_HINT = "see submissions/_template/defense.yaml"


class TrainingOverrides(BaseModel):
    """Open division only: the training-recipe keys a submission may change for its defense stage.

    Names and meanings are those of `benchmark/suites/v1/recipe.yaml`; an unset key keeps the
    suite's value. The EM stage always uses the suite recipe, and the number of training
    examples (the budget) is never a submission's choice.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )

    learning_rate: float | None = Field(default=None, gt=0, le=1e-2)
    """Peak learning rate (suite: 1e-5)."""
    num_epochs: int | None = Field(default=None, ge=1, le=20)
    """Passes over the defense data (suite: 1). More epochs, never more examples."""
    lora_r: int | None = Field(default=None, ge=1, le=256)
    """LoRA rank (suite: 32)."""
    lora_alpha: int | None = Field(default=None, ge=1, le=1024)
    """LoRA alpha (suite: 64)."""
    lora_dropout: float | None = Field(default=None, ge=0, le=0.5)
    """LoRA dropout (suite: 0.0)."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] | None = None
    """Learning-rate schedule (suite: linear)."""
    warmup_steps: int | None = Field(default=None, ge=0, le=10_000)
    """Linear warmup steps (suite: 5)."""
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    """AdamW weight decay (suite: 0.01)."""


#: The whitelist of `training:` keys (open division); the same set as
#: `emarena.train.recipe.OPEN_DIVISION_KEYS`, which applies them (a test keeps the two equal).
OPEN_DIVISION_KEYS: tuple[str, ...] = tuple(TrainingOverrides.model_fields)

#: Keys people reach for that the benchmark fixes, with the reason given in the error.
_FIXED_KEYS = {
    "n_examples": "the budget (number of training examples) is fixed by the benchmark",
    "budget": "the budget (number of training examples) is fixed by the benchmark",
    "max_steps": "the budget (number of training examples) is fixed by the benchmark",
    "seed": "seeds are chosen by the benchmark run, not by the submission",
    "model": "the base model is chosen by the benchmark run, not by the submission",
}


class Defense(BaseModel):
    """Which defense kind to run, and its params."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )

    kind: str
    """A registered defense kind (`emarena.defenses.DEFENSES`): none, sgtr, sgtr-corrupted,
    correct-domain, general-knowledge, word-counting, or one from an installed plugin."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The kind's params (see `emarena.defenses.params`), validated by the kind's params model
    and stored with every default filled in, so equal configurations hash equally."""

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        from emarena.defenses import DEFENSES

        if v not in DEFENSES:
            known = DEFENSES.names()
            close = difflib.get_close_matches(v.lower(), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise invalid(
                f"unknown defense kind {v!r}",
                f"{hint}known kinds: {', '.join(known)}",
            )
        return v

    @field_validator("params", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return {} if v is None else v  # `params:` with nothing after it

    @field_validator("params")
    @classmethod
    def _validate_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None:  # the kind itself was invalid: that is the error to report
            return v
        from emarena.defenses import DEFENSES

        # A ValidationError raised here is nested by pydantic under `defense.params.<key>`.
        model = DEFENSES.get(kind).params
        return model.model_validate(v, strict=True).model_dump(mode="json")

    def params_model(self) -> DefenseParams:
        """The params as the kind's typed model (e.g. `SgtrParams`)."""
        from emarena.defenses import DEFENSES

        return DEFENSES.get(self.kind).params.model_validate(self.params)


class Submission(BaseModel):
    """One competing defense: `submissions/<name>/defense.yaml`."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, use_attribute_docstrings=True
    )

    schema_version: Literal[1]
    """Version of this file format; the whole number 1."""
    name: str
    """Identifier on the leaderboard: 2-64 lowercase ASCII letters, digits and single hyphens,
    starting and ending with a letter or digit, with at least one letter; must equal the folder
    name (a leading '_' of the folder, which marks templates and drafts, is ignored). The names
    of the reference defenses are kept for their configurations (`REFERENCE_DEFENSES`)."""
    authors: list[str] = Field(min_length=1)
    """Who made the defense (names, optionally with affiliation or e-mail); at least one."""
    description: str = Field(min_length=1, max_length=2000)
    """What the defense does, in a few sentences (at most 2000 characters)."""
    paper: str | None = Field(default=None, min_length=1, max_length=500)
    """Where the method comes from: a URL or a citation. None for an unpublished method."""
    division: Literal["closed", "open"]
    """`closed`: only the defense data differs, the suite's training recipe is used unchanged.
    `open`: may also override a whitelist of recipe keys for its defense stage (`training`)."""
    defense: Defense
    """The defense kind and its params."""
    regimes: list[Regime]
    """Where the defense competes: `defense` (defense finetune alone, its cost on the base
    model), `reversal` (EM finetune, then the defense), `prevention` (the defense, then the EM
    finetune). At least one, each once; stored in that canonical order. The `none` control may
    list none (`[]`) or reversal / prevention (where its numbers are the EM-only control);
    `defense` with `none` would be the base model, which the benchmark always runs anyway."""
    training: dict[str, Any] | None = None
    """Open division only: overrides of the suite recipe for the defense stage (whitelisted
    keys: see `TrainingOverrides`). Stored with only the keys that were set; empty means none."""

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_version(cls, v: Any) -> Any:
        # Literal[1] takes True and 1.0 as 1: they are other values, and say so.
        if type(v) is not int:
            shown = textsafe.shorten(repr(v), 60)
            raise invalid(
                f"schema_version must be the whole number 1 (got {shown}, a {type(v).__name__})",
                "write `schema_version: 1`",
            )
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        why = name_problem(v)
        if why is not None:
            shown = repr(v) if len(v) <= 80 else f"{v[:80]!r}... ({len(v):,} characters)"
            raise invalid(f"name {shown} {why}", f"use {NAME_RULE}")
        folder = (info.context or {}).get("folder")
        if folder is not None and v != folder:
            bad_folder = name_problem(folder)
            raise invalid(
                f"name {v!r} must equal the folder name {folder!r}",
                f"rename the folder to {v!r} (the folder name {bad_folder}, so it cannot be "
                "the name)" if bad_folder is not None else
                f"set `name: {folder}` or rename the folder to {v!r}",
            )
        return v

    @field_validator("authors")
    @classmethod
    def _authors(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            _free_text(f"author #{i + 1}", a, multiline=False, blank="is empty",
                       fix="write a name, or remove the entry")  # fmt: skip
            if len(a) > 200:
                raise invalid(f"author #{i + 1} is {len(a)} characters long", "use at most 200")
        return v

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        _free_text("description", v, multiline=True,
                   fix="describe the defense in a few sentences")  # fmt: skip
        return v

    @field_validator("paper")
    @classmethod
    def _paper(cls, v: str | None) -> str | None:
        if v is not None:
            _free_text("paper", v, multiline=False,
                       fix="give a URL or a citation, or remove `paper`")  # fmt: skip
        return v

    @field_validator("regimes")
    @classmethod
    def _regimes(cls, v: list[str], info: ValidationInfo) -> list[str]:
        seen: set[str] = set()
        for r in v:
            if r in seen:
                raise invalid(f"regime {r!r} is listed twice", "list each regime once")
            seen.add(r)
        defense = info.data.get("defense")
        if defense is not None and defense.kind == "none":
            if "defense" in seen:
                raise invalid(
                    "the `none` control has no `defense` regime (it would be the base model, "
                    "which is always run)",
                    "use [], or any of reversal, prevention",
                )
        elif not v:
            raise invalid(
                "no regimes listed",
                f"list at least one of: {', '.join(REGIMES)}",
            )
        elif defense is not None and defense.kind == "interleave" and seen != {"prevention"}:
            raise invalid(
                "an interleaving defense mixes its data into the EM finetune: it has no stage "
                "of its own, so only the `prevention` regime",
                "use regimes: [prevention]",
            )
        return [r for r in REGIMES if r in seen]

    @field_validator("training", mode="before")
    @classmethod
    def _training_allowed(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or v == {}:
            return None
        if info.data.get("division") == "closed":
            raise invalid(
                "training overrides are only allowed in the open division",
                "set division: open, or remove `training`",
            )
        defense = info.data.get("defense")
        if defense is not None and defense.kind == "none":
            raise invalid(
                "the `none` control has no defense stage, so there is no training to override",
                "remove `training`",
            )
        return v

    @field_validator("training")
    @classmethod
    def _training_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        # A ValidationError raised here is nested by pydantic under `training.<key>`.
        return TrainingOverrides.model_validate(v).model_dump(exclude_unset=True) or None

    @property
    def config_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys) of the validated submission."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    def canonical_json(self) -> str:
        """The validated submission as JSON with sorted keys and no whitespace."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )


def _free_text(label: str, v: str, *, multiline: bool, fix: str, blank: str = "is blank") -> None:
    """Free text shown to readers: no control characters or direction overrides, and visible."""
    why = textsafe.problem(v, multiline=multiline)
    if why is not None:
        raise invalid(
            f"{label} {why}",
            "remove it: write plain text (control characters and direction overrides are "
            "refused, since they change what readers of the board or a terminal see)",
        )
    if textsafe.is_blank(v):
        raise invalid(f"{label} {blank} (only spaces or invisible characters)", fix)


# --- error messages ------------------------------------------------------------------------

_FIXES = {
    "string_type": "write text (quote it if YAML reads it as a number, date or boolean)",
    "int_type": "write a whole number without quotes",
    "int_from_float": "write a whole number",
    "float_type": "write a number without quotes",
    "bool_type": "write true or false",
    "list_type": "write a YAML list (`- item` lines, or [a, b])",
    "dict_type": "write a mapping (`key: value` lines)",
    "model_type": "write a mapping (`key: value` lines)",
    "literal_error": "use one of the values listed",
    "string_pattern_mismatch": "use only the characters the pattern allows",
    "finite_number": "write a finite number",
    "invalid_key": "write keys as plain words (YAML reads 1, true or null keys as non-text)",
}


def _allowed_keys(loc: tuple, data: Any) -> list[str] | None:
    """The keys a mapping at `loc` accepts (for "unknown key" messages)."""
    if loc == ():
        return list(Submission.model_fields)
    if loc == ("defense",):
        return list(Defense.model_fields)
    if loc == ("training",):
        return list(OPEN_DIVISION_KEYS)
    if loc == ("defense", "params"):
        from emarena.defenses import DEFENSES

        defense = data.get("defense") if isinstance(data, dict) else None
        kind = defense.get("kind") if isinstance(defense, dict) else None
        if isinstance(kind, str) and kind in DEFENSES:
            return list(DEFENSES.get(kind).params.model_fields)
    return None


def _yaml_reads(value: Any) -> str | None:
    """What YAML made of an unquoted word that was meant as text."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if value is None:
        return "null (nothing)"
    if isinstance(value, (int, float)):
        return "a number"
    if type(value).__name__ in ("date", "datetime"):
        return "a date"
    return None


def _type_fix(typ: str, value: Any, scalar: yaml.Node | None) -> tuple[str, str] | None:
    """(what happened, fix) for a value of the wrong type, from how the YAML wrote it."""
    raw = scalar.value if isinstance(scalar, yaml.ScalarNode) else None
    plain = isinstance(scalar, yaml.ScalarNode) and scalar.style is None
    if typ in ("string_type", "literal_error") and plain and raw is not None:
        reads = _yaml_reads(value)
        if reads is not None:
            shown = textsafe.shorten(raw, 40)
            fix = (f"quote it to make it text: '{shown}'" if typ == "string_type"
                   else "use one of the values listed")  # fmt: skip
            return f"YAML reads {shown} as {reads}", fix
    if typ in ("int_type", "int_from_float", "float_type"):
        whole = typ != "float_type"
        what = "a whole number" if whole else "a number"
        example = "e.g. 10" if whole else "e.g. 0.00001 or 1e-5"
        if isinstance(value, str) and plain:
            return (f"YAML reads {textsafe.shorten(value, 40)!r} as text, not as {what}",
                    f"write {what} ({example})")  # fmt: skip
        if isinstance(value, str):
            return "it is quoted, so it is text", f"remove the quotes ({example})"
        if isinstance(value, bool):
            return f"YAML reads {raw or value} as a boolean", f"write {what} ({example})"
        if isinstance(value, float) and whole:
            return ("it has a decimal point or an exponent",
                    f"write a whole number without one ({example})")  # fmt: skip
    return None


def _key_note(key: str) -> str:
    """For an unknown key that looks like a known one: the character that makes it differ."""
    for ch in key:
        if not ch.isascii():
            return (f" (it contains {textsafe.char_name(ch)}, which is not ASCII: it may look "
                    "like a Latin letter, or like nothing)")  # fmt: skip
        if not ch.isprintable():
            return f" (it contains {textsafe.char_name(ch)}, a control character)"
    return ""


def _describe(data: Any, node: yaml.Node | None):
    def describe(e: dict[str, Any]) -> tuple[str, str | None]:
        loc, typ, ctx = e["loc"], e["type"], e.get("ctx") or {}
        if typ == "invalid":
            return e["msg"], ctx.get("fix")
        if typ == "extra_forbidden":
            key = str(loc[-1])
            if loc[:-1] == ("training",):
                if key in _FIXED_KEYS:
                    return f"{key!r} cannot be overridden: {_FIXED_KEYS[key]}", (
                        f"remove it; allowed training keys: {', '.join(OPEN_DIVISION_KEYS)}"
                    )
                return f"{textsafe.shorten(key, 60)!r} is not an allowed training override", (
                    f"remove it; allowed training keys: {', '.join(OPEN_DIVISION_KEYS)}"
                )
            allowed = _allowed_keys(loc[:-1], data)
            close = difflib.get_close_matches(key, allowed or [], n=1) if len(key) < 100 else []
            hint = f"did you mean {close[0]!r}? " if close else ""
            fix = f"{hint}remove it or fix its spelling"
            if allowed is not None:
                fix += f"; allowed here: {', '.join(allowed) or '(no keys)'}"
            return "unknown key" + _key_note(key), fix
        if typ == "missing":
            return "required key is missing", f"add `{loc[-1]}: ...` ({TEMPLATE_HINT})"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if isinstance(value, (str, int, float, bool)) or value is None:
            msg += f" (got {textsafe.shorten(repr(value), 60)})"
        typed = _type_fix(typ, value, node_at(node, loc)[0])
        if typed is not None:
            return f"{msg}: {typed[0]}", typed[1]
        if typ in _FIXES:
            return msg, _FIXES[typ]
        for bound, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if bound in ctx:
                return msg, f"use a value {word} {ctx[bound]}"
        if "max_length" in ctx:
            return msg, f"shorten it to at most {ctx['max_length']}"
        if "min_length" in ctx:
            return msg, f"give at least {ctx['min_length']}"
        return msg, TEMPLATE_HINT

    return describe


# --- loading --------------------------------------------------------------------------------


class SubmissionError(ConfigError):
    """An invalid submission; `lines` holds one `file:line: key: message; fix: ...` per problem."""

    def __init__(self, path: Path, lines: list[str]):
        self.path = path
        self.lines = lines
        super().__init__(
            f"{_shown(path)}: {len(lines)} problem(s)\n" + "\n".join(lines),
            fix=f"correct the lines above ({TEMPLATE_HINT})",
        )


def _shown(path: Path | str) -> str:
    return textsafe.escape(str(path))


def _one_line(e: EmArenaError) -> str:
    return e.what.replace("\n", " ") + (f"; fix: {e.fix}" if e.fix else "")


def _folder_name(yaml_path: Path) -> str:
    """The folder name `name` must equal; a leading '_' (templates, drafts) is ignored."""
    return Path(os.path.abspath(yaml_path)).parent.name.removeprefix("_")


# --- files: only the submission's own ---------------------------------------------------------

LINK_FIX = (
    "copy the file itself into the submission folder (links are refused: they could point at "
    "any file of the machine that reads them)"
)
FOLDER_LINK_FIX = (
    "pass the submission folder itself, not a link to it (links are refused: they could point "
    "at any folder of the machine that reads them)"
)
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)  # fmt: skip


def _kind_of(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):  # fmt: skip
        if test(mode):
            return what
    return "not a regular file"


def _own_file_problem(path: Path, st: os.stat_result) -> str | None:
    """An error line unless `st` is a regular file with one name (no link of either kind)."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path}: is a symbolic link; fix: {LINK_FIX}"
    if not stat.S_ISREG(st.st_mode):
        return (
            f"{path}: is {_kind_of(st.st_mode)}, not a regular file; fix: put the file itself "
            "there"
        )
    if st.st_nlink > 1:
        return (
            f"{path}: is a hard link (the same file has {st.st_nlink} names, possibly outside "
            "the submission); fix: replace it with a copy of its own (links are refused: they "
            "could expose any file of the machine that reads them)"
        )
    return None


def read_own_file(path: Path, max_bytes: int) -> bytes | str | None:
    """At most `max_bytes + 1` bytes of one file of a submission; an error line instead when it
    is not a regular file of its own (a symbolic or hard link, a FIFO, a device, a folder);
    None when there is no such file.

    Checked before opening (so a FIFO is never opened) and again on the opened file (so a file
    swapped for a link in between is refused, and O_NOFOLLOW never follows one)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{path}: cannot be read ({e.strerror}); fix: check the file"
    problem = _own_file_problem(path, st)
    if problem is not None:
        return problem
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        return f"{path}: cannot be read ({e.strerror}); fix: check the file"
    with os.fdopen(fd, "rb") as f:
        problem = _own_file_problem(path, os.fstat(f.fileno()))
        if problem is not None:
            return problem
        return f.read(max_bytes + 1)


def read_texts(folder: Path) -> tuple[str, str]:
    """(defense.yaml, README.md) of a submission folder that `load_submission` accepted, read
    the same way (never through a link). Raise SubmissionError if either changed since."""
    texts = []
    for name, limit in ((FILENAME, MAX_BYTES), (README, MAX_README_BYTES)):
        path = Path(folder) / name
        raw = read_own_file(path, limit)
        try:
            if not isinstance(raw, bytes) or len(raw) > limit:
                raise ConfigError(f"{path}: changed while it was being submitted", fix="retry")
            texts.append(textsafe.decode_utf8(raw, str(path)))
        except ConfigError as e:
            raise SubmissionError(path, [textsafe.escape(_one_line(e))]) from None
    return texts[0], texts[1]


def _readme_errors(yaml_path: Path) -> list[str]:
    """README.md must be a regular file of its own holding UTF-8 text of at most
    `MAX_README_BYTES`, visible, without control characters or direction overrides (it is
    uploaded as is, and read in terminals and on the Hub)."""
    readme = yaml_path.parent / README
    raw = read_own_file(readme, MAX_README_BYTES)
    if raw is None:
        return [
            f"{yaml_path}: {README} is missing next to {yaml_path.name}; fix: add {readme} "
            "describing the method, its source and its params"
        ]
    if isinstance(raw, str):
        return [raw]
    if len(raw) > MAX_README_BYTES:
        return [
            f"{readme}: is over the {MAX_README_BYTES:,}-byte limit; fix: describe the method "
            "in a few pages and link to the rest"
        ]
    try:
        text = textsafe.decode_utf8(raw, str(readme))
    except ConfigError as e:
        return [_one_line(e)]
    if textsafe.is_blank(text):
        return [
            f"{readme}: is empty (or only spaces and invisible characters); fix: describe the "
            "method, its source and its params"
        ]
    found = textsafe.find_problem(text, multiline=True)
    if found is not None:
        index, why = found
        return [
            f"{readme}:{text.count(chr(10), 0, index) + 1}: {why}; fix: remove it (control "
            "characters and direction overrides are refused in README.md)"
        ]
    return []


def _check_file(yaml_path: Path) -> tuple[Submission | None, list[str]]:
    """Validate one defense.yaml; return (submission or None, error lines), each line escaped
    (`textsafe.escape`) and at most `MAX_ERROR_LINES` of them."""
    sub, errors = _check_file_raw(yaml_path)
    lines = [textsafe.escape(e) for e in errors]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - (MAX_ERROR_LINES - 1)
        lines = lines[: MAX_ERROR_LINES - 1] + [
            f"{_shown(yaml_path)}: {more:,} more problem(s) not shown; fix: correct the ones "
            "above, then validate again"
        ]
    return sub, lines


def _check_file_raw(yaml_path: Path) -> tuple[Submission | None, list[str]]:
    folder = yaml_path.parent
    if folder.is_symlink():
        return None, [f"{folder}: is a symbolic link to a folder elsewhere; fix: {FOLDER_LINK_FIX}"]
    errors = _readme_errors(yaml_path)
    raw = read_own_file(yaml_path, MAX_BYTES)
    if raw is None:
        return None, [f"{yaml_path}: no such file; fix: check the path", *errors]
    if isinstance(raw, str):  # never read what a link points at: it could be any file
        return None, [raw, *errors]
    try:
        data, node = parse_yaml(
            check_size(yaml_path, raw, MAX_BYTES), yaml_path, max_depth=MAX_DEPTH,
            max_aliases=MAX_ALIASES, max_nodes=MAX_NODES, unique_keys=True, merge_keys=False,
        )
    except EmArenaError as e:
        return None, [_one_line(e), *errors]
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        errors.insert(
            0,
            f"{yaml_path}{line}: (top level): expected a mapping of keys (schema_version, "
            f"name, ...), got {got}; fix: write `key: value` lines ({TEMPLATE_HINT})",
        )
        return None, errors
    try:
        sub = Submission.model_validate(data, context={"folder": _folder_name(yaml_path)})
    except ValidationError as err:
        lines = format_validation_error(yaml_path, err, node, describe=_describe(data, node))
        return None, lines + errors
    except EmArenaError as e:  # e.g. the suite's dataset registry could not be read
        return None, [f"{yaml_path}: {_one_line(e)}", *errors]
    taken = reference_problem(sub)
    if taken is not None:
        line = node_at(node, ("name",))[1]
        errors.insert(0, f"{yaml_path}:{line}: name: {taken[0]}; fix: {taken[1]}")
    return (None if errors else sub), errors


def _yaml_path(path: Path) -> Path:
    return path / FILENAME if path.is_dir() else path


def load_submission(path: str | Path) -> Submission:
    """Load and validate a submission folder (or its defense.yaml). Raise SubmissionError."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ConfigError(f"{_shown(path)}: no such file or folder", fix="check the path")
    if path.is_symlink():
        raise ConfigError(f"{_shown(path)}: is a symbolic link", fix=FOLDER_LINK_FIX)
    yaml_path = _yaml_path(path)
    if not os.path.lexists(yaml_path):
        raise ConfigError(
            f"{_shown(path)}: no {FILENAME} here",
            fix=f"pass a submission folder ({TEMPLATE_HINT})",
        )
    sub, errors = _check_file(yaml_path)
    if errors or sub is None:
        raise SubmissionError(yaml_path, errors)
    return sub


@dataclass
class Checked:
    """The outcome of validating one submission."""

    path: Path
    """The folder (or file) as named on the command line or found inside a named folder."""
    submission: Submission | None = None
    errors: list[str] = field(default_factory=list)
    """Error lines, every character printable (`textsafe.escape`)."""

    @property
    def ok(self) -> bool:
        return self.submission is not None and not self.errors


def _expand(path: Path) -> list[Path] | str:
    """The submission folders/files `path` stands for, or an error line."""
    if not os.path.lexists(path):
        return f"{path}: no such file or folder; fix: check the path"
    if path.is_symlink():
        return f"{path}: is a symbolic link; fix: {FOLDER_LINK_FIX}"
    if path.is_file():
        if path.name != FILENAME:
            return (
                f"{path}: not a {FILENAME}; fix: pass a submission folder or its {FILENAME}"
            )
        return [path]
    if not path.is_dir():
        return (
            f"{path}: is {_kind_of(os.lstat(path).st_mode)}; fix: pass a submission folder or "
            f"its {FILENAME}"
        )
    if os.path.lexists(path / FILENAME):
        return [path]
    # A folder of submissions (e.g. `submissions/`): every sub-folder except `_*` and `.*`,
    # which are validated only when named explicitly. A link to a folder is listed (and
    # refused), never followed.
    subs = sorted(
        p for p in path.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    )
    if not subs:
        return f"{path}: no {FILENAME} here; fix: pass a submission folder ({TEMPLATE_HINT})"
    return subs


def check_paths(paths: list[str | Path]) -> list[Checked]:
    """Validate every submission the paths stand for (folders, defense.yaml files, or folders
    of submission folders); one `Checked` per submission, in order."""
    out: list[Checked] = []
    for p in paths:
        expanded = _expand(Path(p))
        if isinstance(expanded, str):
            out.append(Checked(Path(p), errors=[textsafe.escape(expanded)]))
            continue
        for sub_path in expanded:
            if sub_path.is_symlink():
                out.append(Checked(sub_path, errors=[textsafe.escape(
                    f"{sub_path}: is a symbolic link to a folder elsewhere, not a submission "
                    f"folder; fix: {FOLDER_LINK_FIX}"
                )]))  # fmt: skip
                continue
            yaml_path = _yaml_path(sub_path)
            if not os.path.lexists(yaml_path):
                out.append(Checked(sub_path, errors=[textsafe.escape(
                    f"{sub_path}: no {FILENAME} here; fix: add one ({TEMPLATE_HINT}), or "
                    "prefix the folder name with '_' to skip it"
                )]))  # fmt: skip
                continue
            sub, errors = _check_file(yaml_path)
            out.append(Checked(sub_path, sub, errors))
    return out


def validate_paths(paths: list[str | Path]) -> list[str]:
    """All error lines for the submissions the paths stand for; [] when every one is valid."""
    return [line for c in check_paths(paths) for line in c.errors]
