"""The one error type users see.

Every failure a user can cause or fix (bad input, missing data, a checksum mismatch, no
network) is an `EmArenaError` with three parts: what went wrong, where we looked, and how
to fix it. The CLI prints it without a traceback and exits with code 2.
"""

from __future__ import annotations


class EmArenaError(Exception):
    """A user-facing error: `what` failed, `where` it was looked for, and the `fix`."""

    exit_code = 2

    def __init__(self, what: str, *, where: list[str] | str | None = None, fix: str | None = None):
        self.what = what
        self.where = [where] if isinstance(where, str) else list(where or [])
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        lines = [self.what]
        if self.where:
            lines.append("looked in:")
            lines.extend(f"  - {w}" for w in self.where)
        if self.fix:
            lines.append(f"fix: {self.fix}")
        return "\n".join(lines)


class ConfigError(EmArenaError):
    """A YAML/JSON file the user or the suite provided is invalid."""


class DataError(EmArenaError):
    """A dataset could not be found, downloaded or verified."""


class ModelError(EmArenaError):
    """A model could not be found, fetched or converted."""
