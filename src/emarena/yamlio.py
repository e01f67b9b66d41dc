"""Safe YAML loading with error messages that name the file, the line, the key and the fix.

Used for the suite files (datasets.yaml, models.yaml, ...) and for submissions. Only plain
YAML is accepted (`yaml.SafeLoader`: no `!!python` tags), files over `MAX_BYTES` are refused
before parsing, and pydantic validation errors are mapped back to the line of the offending key.

Untrusted files (submissions) also pass `max_depth`, `max_aliases`, `max_nodes`,
`unique_keys` and `merge_keys=False`: the nesting depth, the alias count and the number of
values as written are checked on the event stream *before* the (recursive) composer runs, and
the node count after alias expansion is computed on the composed graph (linear time, cycles
refused) before anything is constructed, so neither a deeply nested document nor a "billion
laughs" alias bomb costs more than one pass over the text. Each limit's message names that
limit: a document that is merely large is never called an alias bomb. Merge keys (`<<: *base`)
are refused there, since a merged key and a plain key of the same name would silently override
each other past the duplicate-key check.

Floats are read as YAML 1.2 writes them too: `1e-5` is a number (PyYAML's YAML 1.1 rules read
it as text, so a learning rate written that way was refused with a fix about quotes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from emarena.errors import ConfigError
from emarena.textsafe import char_name, decode_utf8, shorten

M = TypeVar("M", bound=BaseModel)

MAX_BYTES = 2_000_000


def _limit_error(path: Path, line: int | None, what: str, fix: str) -> ConfigError:
    where = f"{path}:{line}" if line else str(path)
    return ConfigError(f"{where}: {what}", fix=fix)


_VALUE_EVENTS = (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)


def _check_events(
    path: Path, text: str, max_depth: int | None, max_aliases: int | None, max_nodes: int | None
) -> None:
    """Depth, alias and size limits on the event stream (PyYAML's parser is not recursive)."""
    depth = aliases = values = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, _VALUE_EVENTS):
            values += 1
            if max_nodes is not None and values > max_nodes:
                raise _limit_error(
                    path, ev.start_mark.line + 1,
                    f"has more than {max_nodes:,} values (keys, list items and scalars); "
                    "the limit for one file",
                    "configuration files are small; remove embedded data and unknown keys",
                )
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if max_depth is not None and depth > max_depth:
                raise _limit_error(
                    path, ev.start_mark.line + 1,
                    f"nested more than {max_depth} levels deep",
                    "flatten the document; configuration files need only a few levels",
                )
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if max_aliases is not None and aliases > max_aliases:
                raise _limit_error(
                    path, ev.start_mark.line + 1,
                    f"more than {max_aliases} YAML aliases (*name)",
                    "write the values out instead of repeating anchors",
                )


MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_graph(
    path: Path, root: yaml.Node, max_nodes: int | None, unique_keys: bool, merge_keys: bool
) -> None:
    """Refuse recursive aliases, documents that expand past `max_nodes`, duplicate keys and
    (unless `merge_keys`) merge keys.

    Iterative post-order over the composed graph with memoised subtree sizes: an alias is a
    shared node, so this is linear in the text however large the expansion would be.
    """
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        nid = id(node)
        if children_done:
            on_path.discard(nid)
            kids = _children(node)
            size[nid] = 1 + sum(size[id(k)] for k in kids)
            if max_nodes is not None and size[nid] > max_nodes:
                # The text itself has at most max_nodes values (_check_events): aliases did it.
                raise _limit_error(
                    path, node.start_mark.line + 1,
                    f"expands to more than {max_nodes:,} values once aliases are resolved "
                    "(an alias bomb)",
                    "write the values out instead of nesting anchors and aliases",
                )
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise _limit_error(
                path, node.start_mark.line + 1,
                "an alias refers to its own anchor (recursive YAML)",
                "remove the recursive alias",
            )
        if isinstance(node, yaml.MappingNode) and (unique_keys or not merge_keys):
            seen: dict[str, int] = {}
            for k, _ in node.value:
                if k.tag == MERGE_TAG and not merge_keys:
                    raise _limit_error(
                        path, k.start_mark.line + 1,
                        "merge key `<<` is not allowed (it copies keys from another mapping, "
                        "and a key written next to it silently overrides the copy)",
                        "write the keys out in full, each once",
                    )
                if unique_keys and isinstance(k, yaml.ScalarNode) and k.tag != MERGE_TAG:
                    if k.value in seen:
                        raise _limit_error(
                            path, k.start_mark.line + 1,
                            f"key {shorten(k.value, 60)!r} appears twice (first on line "
                            f"{seen[k.value]})",
                            "keep one of them; YAML would silently use the last",
                        )
                    seen[k.value] = k.start_mark.line + 1
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    return []


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader whose value errors (`2024-13-45`, `!!int x`) become YAML errors with a line.

    PyYAML's constructors raise plain ValueError and friends for such scalars; turning them
    into a ConstructorError at the innermost node keeps the file:line and never a traceback.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            value = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {str(value)[:60]!r} ({e})", node.start_mark
            ) from None


# YAML 1.2 floats that YAML 1.1 reads as text: no dot (`1e-5`) or no exponent sign (`1.0e5`).
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _tag_name(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag.removeprefix(prefix) if tag.startswith(prefix) else tag


def read_bytes(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """At most `max_bytes` of `path` (never more, whatever stat says); ConfigError otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", fix="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML file", fix="check the path") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror})", fix="check the path") from None
    return check_size(path, raw, max_bytes)


def check_size(path: Path, raw: bytes, max_bytes: int) -> bytes:
    """`raw` (read with a limit of `max_bytes + 1`), or the over-the-limit ConfigError."""
    if len(raw) > max_bytes:
        try:
            size = f"{Path(path).stat().st_size:,} bytes"
        except OSError:
            size = "too large"
        raise ConfigError(
            f"{path}: file is {size}, over the {max_bytes:,}-byte limit",
            fix="configuration files are small; remove embedded data",
        )
    return raw


def read_yaml(
    path: Path, *, max_bytes: int = MAX_BYTES, **limits: Any
) -> tuple[Any, yaml.Node | None]:
    """Parse `path`; return (data, node tree for line lookups). Raise ConfigError on failure.

    `limits` are `parse_yaml`'s; they default to off (the suite files are ours): pass them for
    untrusted input.
    """
    return parse_yaml(read_bytes(path, max_bytes), path, **limits)


def parse_yaml(
    raw: bytes,
    path: Path,
    *,
    max_depth: int | None = None,
    max_aliases: int | None = None,
    max_nodes: int | None = None,
    unique_keys: bool = False,
    merge_keys: bool = True,
) -> tuple[Any, yaml.Node | None]:
    """Parse the bytes of `path` (already read, within the size limit). The limits are the
    module docstring's; the defaults (None, unique_keys=False, merge_keys=True) check nothing."""
    text = decode_utf8(raw, str(path))
    loader = None
    try:
        if max_depth is not None or max_aliases is not None or max_nodes is not None:
            _check_events(path, text, max_depth, max_aliases, max_nodes)
        loader = _SafeLoader(text)
        node = loader.get_single_node()
        if node is not None and (max_nodes is not None or unique_keys or not merge_keys):
            _check_graph(path, node, max_nodes, unique_keys, merge_keys)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise _yaml_error(path, text, e) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, node


def _yaml_error(path: Path, text: str, e: yaml.YAMLError) -> ConfigError:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"{path}:{mark.line + 1}"
    elif isinstance(e, yaml.reader.ReaderError):  # a control character: no mark, a position
        where = f"{path}:{text[: e.position].count(chr(10)) + 1}"
        ch = e.character if isinstance(e.character, str) else chr(e.character)
        return ConfigError(
            f"{where}: not valid YAML: contains {char_name(ch)}, a character YAML does not "
            "allow in a file",
            fix="remove it",
        )
    else:
        where = str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if problem.startswith("could not determine a constructor for the tag"):
        tag = problem.partition("for the tag ")[2].strip("'")
        return ConfigError(
            f"{where}: tag {shorten(_tag_name(tag), 80)!r} is not allowed "
            "(tags like !!python/object are not allowed: only plain YAML)",
            fix="remove the tag and write the value as plain YAML",
        )
    if problem.startswith("but found another document"):
        return ConfigError(
            f"{where}: not valid YAML here: the file holds more than one YAML document (a "
            "second one starts on this line)",
            fix="keep one document: remove the second `---` and what follows it",
        )
    return ConfigError(
        f"{where}: not valid YAML ({problem})",
        fix="fix the YAML syntax; only plain YAML is accepted (no !!python tags)",
    )


def node_at(node: yaml.Node | None, loc: tuple[str | int, ...]) -> tuple[yaml.Node | None, int]:
    """(the node at `loc` as in pydantic's error loc, or None, and the 1-based line of it or of
    its nearest parent's key)."""
    best = node.start_mark.line + 1 if node is not None else 0
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    best = k.start_mark.line + 1
                    node = v
                    break
            else:
                return None, best
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return None, best
            node = node.value[part]
            best = node.start_mark.line + 1
        else:
            return None, best
    return node, best


def line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the key at `loc` (as in pydantic's error loc), or of its nearest parent."""
    return node_at(node, loc)[1] or None


def invalid(msg: str, fix: str) -> PydanticCustomError:
    """Raise this from a validator: `msg` is the problem, `fix` is rendered as `; fix: ...`."""
    return PydanticCustomError("invalid", "{msg}", {"msg": msg, "fix": fix})


def format_validation_error(
    path: Path,
    err: ValidationError,
    node: yaml.Node | None,
    *,
    describe: Callable[[dict[str, Any]], tuple[str, str | None]] | None = None,
) -> list[str]:
    """One line per problem: `file:line: key.path: message` (`; fix: ...` when known).

    `describe(error)` may return (message, fix) for a pydantic error dict whose `loc` has the
    validator-function parts removed; by default the message is pydantic's, lightly reworded.
    """
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(shorten(str(p), 60) for p in loc) or "(top level)"
        line = line_of(node, loc)
        where = f"{path}:{line}" if line else str(path)
        msg = e["msg"]
        fix = (e.get("ctx") or {}).get("fix") if e["type"] == "invalid" else None
        if describe is not None:
            msg, fix = describe({**e, "loc": loc})
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing (add it)"
        out.append(f"{where}: {key}: {msg}" + (f"; fix: {fix}" if fix else ""))
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
