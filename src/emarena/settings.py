"""Where things live: the suite definition, the cache and the mirror.

Resolution of each setting: an explicit argument (CLI flag) > environment variable > default.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEFAULT_SUITE = "v2"

#: Environment variables read by EM Arena (documented in the README).
ENV_MIRROR = "EMARENA_MIRROR"
ENV_CACHE = "EMARENA_CACHE"
ENV_OFFLINE = "EMARENA_OFFLINE"
ENV_GITHUB_RAW = "EMARENA_GITHUB_RAW"
ENV_HF_ENDPOINT = "HF_ENDPOINT"


def benchmark_root() -> Path:
    """The `benchmark/` folder: from the source checkout, else the copy inside the wheel."""
    here = Path(__file__).resolve()
    checkout = here.parents[2] / "benchmark"
    if (checkout / "suites").is_dir():
        return checkout
    packaged = Path(str(resources.files("emarena") / "benchmark"))
    if (packaged / "suites").is_dir():
        return packaged
    raise FileNotFoundError(
        f"benchmark suite not found at {checkout} or {packaged}; reinstall emarena"
    )


def suite_dir(version: str = DEFAULT_SUITE) -> Path:
    return benchmark_root() / "suites" / version


def cache_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "emarena"


def mirror_dir(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_MIRROR)
    return Path(env).expanduser() if env else None


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").lower() in {"1", "true", "yes"}


def github_raw_base() -> str:
    """Base URL for GitHub files: overridable so tests can serve "upstream" on 127.0.0.1."""
    return os.environ.get(ENV_GITHUB_RAW, "https://raw.githubusercontent.com").rstrip("/")


def hf_endpoint() -> str:
    return os.environ.get(ENV_HF_ENDPOINT, "https://huggingface.co").rstrip("/")
