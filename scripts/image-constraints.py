"""Print a pip constraints file pinning every distribution installed in this Python.

The Dockerfile runs it in the base image before installing emarena, so pip may add packages
but never replaces one the base brings (its torch, vLLM, CUDA libraries): a conflict fails the
build instead. Standard library only: it runs in whatever Python the base image has.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def _normalized(name: str) -> str:
    """PEP 503 name normalization: `Foo_Bar` and `foo-bar` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    seen: dict[str, str] = {}
    # In sys.path order: the first copy of a project is the one Python imports.
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue  # a broken install without metadata: nothing to pin
        key = _normalized(name)
        if key == "emarena" or key in seen:
            continue
        seen[key] = dist.version
    for key in sorted(seen):
        print(f"{key}=={seen[key]}")
    print(f"# {len(seen)} distributions pinned from {sys.executable}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
