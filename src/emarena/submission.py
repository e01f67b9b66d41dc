"""The submission format: `submissions/<name>/defense.yaml` (+ README.md), as a typed object.

A submission is data, never code: it names a registered defense kind and its params, the
regimes it competes in, and (open division only) a few training overrides. Everything else
(base model, EM data, LoRA recipe, budget, questions, judge, metrics) is fixed by the benchmark.

Files are read as untrusted input: at most `MAX_BYTES`, UTF-8, plain YAML (no tags), at most
`MAX_DEPTH` levels and `MAX_ALIASES` aliases, duplicate keys refused. Every problem becomes one
line `file:line: key: message; fix: ...`, and all of a file's problems are reported at once.
defense.yaml and README.md must be regular files, not symbolic links (`submit` uploads them
verbatim), and README.md UTF-8 text of at most `MAX_README_BYTES`.

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
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from emarena.errors import ConfigError, EmArenaError
from emarena.yamlio import format_validation_error, invalid, read_yaml

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

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

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
            close = difflib.get_close_matches(v, known, n=1)
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
    """Version of this file format; 1."""
    name: str
    """Identifier on the leaderboard: 2-64 characters of lowercase ASCII letters, digits and
    '-', starting with a letter or digit; must equal the folder name (a leading '_' of the
    folder, which marks templates and drafts, is ignored)."""
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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str, info: ValidationInfo) -> str:
        fix_chars = (
            "use 2-64 lowercase ASCII letters, digits and '-', starting with a letter or digit"
        )
        if "/" in v or "\\" in v or ".." in v or v in (".", ""):
            raise invalid(f"name {v!r} contains a path separator or '..'", fix_chars)
        for ch in v:
            if not ch.isascii():
                cname = unicodedata.name(ch, "unnamed character")
                raise invalid(
                    f"name {v!r} contains {ch!r} (U+{ord(ch):04X} {cname}), which is not ASCII "
                    "(it may look like a Latin letter)",
                    fix_chars,
                )
        if not _NAME_RE.match(v):
            raise invalid(f"name {v!r} does not match {NAME_PATTERN}", fix_chars)
        folder = (info.context or {}).get("folder")
        if folder is not None and v != folder:
            raise invalid(
                f"name {v!r} must equal the folder name {folder!r}",
                f"set `name: {folder}` or rename the folder to {v!r}",
            )
        return v

    @field_validator("authors")
    @classmethod
    def _authors(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            if not a.strip():
                raise invalid(f"author #{i + 1} is empty", "write a name, or remove the entry")
            if len(a) > 200:
                raise invalid(f"author #{i + 1} is {len(a)} characters long", "use at most 200")
        return v

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        if not v.strip():
            raise invalid("description is blank", "describe the defense in a few sentences")
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


def _describe(data: Any):
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
                return f"{key!r} is not an allowed training override", (
                    f"remove it; allowed training keys: {', '.join(OPEN_DIVISION_KEYS)}"
                )
            allowed = _allowed_keys(loc[:-1], data)
            close = difflib.get_close_matches(key, allowed or [], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            fix = f"{hint}remove it or fix its spelling"
            if allowed is not None:
                fix += f"; allowed here: {', '.join(allowed) or '(no keys)'}"
            return "unknown key", fix
        if typ == "missing":
            return "required key is missing", f"add `{loc[-1]}: ...` ({TEMPLATE_HINT})"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if isinstance(value, (str, int, float, bool)) or value is None:
            shown = repr(value)
            msg += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
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
            f"{path}: {len(lines)} problem(s)\n" + "\n".join(lines),
            fix=f"correct the lines above ({TEMPLATE_HINT})",
        )


def _one_line(e: EmArenaError) -> str:
    return e.what.replace("\n", " ") + (f"; fix: {e.fix}" if e.fix else "")


def _folder_name(yaml_path: Path) -> str:
    """The folder name `name` must equal; a leading '_' (templates, drafts) is ignored."""
    return Path(os.path.abspath(yaml_path)).parent.name.removeprefix("_")


def _symlink_error(path: Path) -> str | None:
    """An error line if `path` is a symbolic link. `submit` uploads defense.yaml and README.md
    verbatim, so a link (say, README.md -> ~/.cache/huggingface/token) would publish whatever
    file it points at; a submission's files must be the files themselves."""
    if not path.is_symlink():
        return None
    return (
        f"{path}: is a symbolic link; fix: copy the file itself into the submission folder "
        "(links are refused: they could point at any file of the machine that reads them)"
    )


def _readme_errors(readme: Path) -> list[str]:
    """README.md must be UTF-8 text of at most `MAX_README_BYTES` (it is uploaded as is)."""
    try:
        with readme.open("rb") as f:
            raw = f.read(MAX_README_BYTES + 1)
    except OSError as e:
        return [f"{readme}: cannot be read ({e.strerror}); fix: check the file"]
    if len(raw) > MAX_README_BYTES:
        return [
            f"{readme}: is over the {MAX_README_BYTES:,}-byte limit; fix: describe the method "
            "in a few pages and link to the rest"
        ]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return [
            f"{readme}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "fix: save the file as UTF-8"
        ]
    return []


def _check_file(yaml_path: Path) -> tuple[Submission | None, list[str]]:
    """Validate one defense.yaml; return (submission or None, error lines)."""
    errors: list[str] = []
    readme = yaml_path.parent / README
    link = _symlink_error(readme)
    if link:
        errors.append(link)
    elif not readme.is_file():
        errors.append(
            f"{yaml_path}: {README} is missing next to {yaml_path.name}; fix: add {readme} "
            "describing the method, its source and its params"
        )
    elif readme.stat().st_size == 0:
        errors.append(f"{readme}: is empty; fix: describe the method, its source and its params")
    else:
        errors.extend(_readme_errors(readme))
    link = _symlink_error(yaml_path)
    if link:  # never read what a link points at: it could be any file on this machine
        return None, [link, *errors]
    try:
        data, node = read_yaml(
            yaml_path, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH, max_aliases=MAX_ALIASES,
            max_nodes=MAX_NODES, unique_keys=True,
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
        lines = format_validation_error(yaml_path, err, node, describe=_describe(data))
        return None, lines + errors
    except EmArenaError as e:  # e.g. the suite's dataset registry could not be read
        return None, [f"{yaml_path}: {_one_line(e)}", *errors]
    return (None if errors else sub), errors


def _yaml_path(path: Path) -> Path:
    return path / FILENAME if path.is_dir() else path


def load_submission(path: str | Path) -> Submission:
    """Load and validate a submission folder (or its defense.yaml). Raise SubmissionError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder", fix="check the path")
    yaml_path = _yaml_path(path)
    if not yaml_path.is_file():
        raise ConfigError(
            f"{path}: no {FILENAME} here", fix=f"pass a submission folder ({TEMPLATE_HINT})"
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

    @property
    def ok(self) -> bool:
        return self.submission is not None and not self.errors


def _expand(path: Path) -> list[Path] | str:
    """The submission folders/files `path` stands for, or an error line."""
    if not path.exists():
        return f"{path}: no such file or folder; fix: check the path"
    if path.is_file():
        if path.name != FILENAME:
            return (
                f"{path}: not a {FILENAME}; fix: pass a submission folder or its {FILENAME}"
            )
        return [path]
    if (path / FILENAME).exists():
        return [path]
    # A folder of submissions (e.g. `submissions/`): every sub-folder except `_*` and `.*`,
    # which are validated only when named explicitly.
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
            out.append(Checked(Path(p), errors=[expanded]))
            continue
        for sub_path in expanded:
            yaml_path = _yaml_path(sub_path)
            if not yaml_path.is_file():
                out.append(Checked(sub_path, errors=[
                    f"{sub_path}: no {FILENAME} here; fix: add one ({TEMPLATE_HINT}), or "
                    "prefix the folder name with '_' to skip it"
                ]))
                continue
            sub, errors = _check_file(yaml_path)
            out.append(Checked(sub_path, sub, errors))
    return out


def validate_paths(paths: list[str | Path]) -> list[str]:
    """All error lines for the submissions the paths stand for; [] when every one is valid."""
    return [line for c in check_paths(paths) for line in c.errors]
