"""Safe YAML loading with error messages that name the file, the line, the key and the fix.

Used for the suite files (datasets.yaml, models.yaml, ...) and, later, submissions. Only plain
YAML is accepted (`yaml.SafeLoader`: no `!!python` tags), files over `MAX_BYTES` are refused
before parsing, and pydantic validation errors are mapped back to the line of the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from emarena.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 2_000_000


def read_yaml(path: Path, *, max_bytes: int = MAX_BYTES) -> tuple[Any, yaml.Node | None]:
    """Parse `path`; return (data, node tree for line lookups). Raise ConfigError on failure."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", fix="check the path") from None
    if size > max_bytes:
        raise ConfigError(
            f"{path}: file is {size:,} bytes, over the {max_bytes:,}-byte limit",
            fix="configuration files are small; remove embedded data",
        )
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"{where}: not valid YAML ({problem})",
            fix="fix the YAML syntax; only plain YAML is accepted (no !!python tags)",
        ) from None
    return data, node


def line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the key at `loc` (as in pydantic's error loc), or of its nearest parent."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    best = k.start_mark.line + 1
                    node = v
                    break
            else:
                return best
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return best
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            return best
    return best


def format_validation_error(path: Path, err: ValidationError, node: yaml.Node | None) -> list[str]:
    """One line per problem: `file:line: key.path: message`."""
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(node, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing (add it)"
        out.append(f"{where}: {key}: {msg}")
    return out


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Read `path` and validate it as `model`, raising one ConfigError listing every problem."""
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level, got {type(data).__name__}",
            fix="the file must be 'key: value' pairs",
        )
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        lines = format_validation_error(path, err, node)
        raise ConfigError(
            f"{path}: {len(lines)} problem(s)\n" + "\n".join(lines),
            fix="correct the keys above",
        ) from None
