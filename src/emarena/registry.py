"""One generic registry for everything pluggable.

Modelled on lm-evaluation-harness' `Registry[T]`: names are explicit, a second registration
under the same name raises, and heavy backends are registered as "module:attr" strings so that
`emarena --help`, `emarena validate` and the leaderboard never import torch or vLLM. A lazy entry
is imported on first `get()` and cached.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from emarena.errors import EmArenaError

T = TypeVar("T")


def import_ref(ref: str):
    """Import a "module:attr" reference (the one place lazy references are resolved)."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ValueError(f"{ref!r} is not a 'module:attr' reference")
    return getattr(importlib.import_module(module), attr)


def did_you_mean(name: str, known: list[str]) -> str:
    """A "did you mean X? " hint for an unknown registry id (empty when nothing is close)."""
    import difflib

    close = difflib.get_close_matches(name, known, n=3)
    return f"did you mean {', '.join(close)}? " if close else ""


class Registry(Generic[T]):
    """A named collection of `T`; entries may be objects or lazy "module:attr" strings."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """Register `obj` under `name`, or use as a decorator: `@REG.register("name")`."""
        if obj is None:

            def deco(o: T) -> T:
                self._add(name, o)
                return o

            return deco
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: T | str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(obj, str) and ":" not in obj:
            raise ValueError(f"lazy {self.kind} {name!r} must be 'module:attr', got {obj!r}")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            obj = self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise EmArenaError(
                f"unknown {self.kind} {name!r}",
                fix=f"use one of: {known}",
            ) from None
        if isinstance(obj, str):
            obj = import_ref(obj)
            self._entries[name] = obj
        return obj  # type: ignore[return-value]

    def is_lazy(self, name: str) -> bool:
        return isinstance(self._entries.get(name), str)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
