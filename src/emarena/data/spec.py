"""The dataset registry: `benchmark/suites/<version>/datasets.yaml` as typed objects.

Each dataset is one or more pinned upstream files (repository + commit + path, sha256, bytes,
record count) plus the adapter that turns them into canonical records. Multi-file datasets
(e.g. SGTR summaries, one file per source model) name each file's `part`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emarena import settings
from emarena.errors import DataError
from emarena.registry import did_you_mean
from emarena.yamlio import load_model

Role = Literal["em", "defense", "eval", "sgtr-corpus", "capability", "published"]
"""published: a paper's own outputs (answers with their judge scores, forced choices), read by
`emarena published`, judge calibration and the contrast set; never trained on."""

_SOURCE_RE = re.compile(
    r"^(?:(?P<host>github|hf):)?(?P<repo>[\w.-]+/[\w.-]+)@(?P<rev>[\w.-]+):(?P<path>[^\s]+)$"
)


@dataclass(frozen=True)
class Source:
    """An upstream file: `github:owner/repo@commit:path` or `hf:org/dataset@revision:path`."""

    host: str
    repo: str
    revision: str
    path: str

    @classmethod
    def parse(cls, text: str) -> Source:
        m = _SOURCE_RE.match(text)
        if not m:
            raise ValueError(
                f"bad source {text!r}: expected 'github:owner/repo@commit:path' "
                "or 'hf:org/dataset@revision:path'"
            )
        if ".." in m["path"].split("/"):
            raise ValueError(f"bad source {text!r}: '..' is not allowed in paths")
        return cls(m["host"] or "github", m["repo"], m["rev"], m["path"])

    @property
    def mirror_relpath(self) -> str:
        """Path inside a mirror folder: `<owner>__<repo>/<path>` (`hf__` prefix for HF)."""
        prefix = "hf__" if self.host == "hf" else ""
        return f"{prefix}{self.repo.replace('/', '__')}/{self.path}"

    @property
    def cache_relpath(self) -> str:
        """Path inside the cache: also keyed by revision, so two pins never collide."""
        prefix = "hf__" if self.host == "hf" else ""
        return f"{prefix}{self.repo.replace('/', '__')}@{self.revision}/{self.path}"

    def url(self) -> str:
        if self.host == "hf":
            return (
                f"{settings.hf_endpoint()}/datasets/{self.repo}/resolve/{self.revision}/{self.path}"
            )
        return f"{settings.github_raw_base()}/{self.repo}/{self.revision}/{self.path}"

    def __str__(self) -> str:
        return f"{self.host}:{self.repo}@{self.revision}:{self.path}"


class FileSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    source: str
    """Upstream location, `github:owner/repo@commit:path` or `hf:org/dataset@revision:path`."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the file exactly as stored upstream (compressed files stay compressed)."""
    bytes: int = Field(gt=0)
    """Size in bytes; a cheap first check before hashing."""
    records: int | None = Field(default=None, ge=0)
    """Number of canonical records the adapter yields from this file."""
    part: str | None = None
    """Name of this file within a multi-file dataset (e.g. the summary's source model)."""

    @field_validator("source")
    @classmethod
    def _check_source(cls, v: str) -> str:
        Source.parse(v)
        return v

    @property
    def src(self) -> Source:
        return Source.parse(self.source)


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    """Registry id, used on the command line and in cells."""
    role: Role
    """em | defense | eval | sgtr-corpus | capability | published."""
    description: str
    citation: str
    """Paper the data comes from."""
    license: str
    """SPDX id where upstream states one; NOASSERTION where it has no licence file."""
    adapter: str
    """Name of the adapter turning the files into canonical records."""
    adapter_args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments passed to the adapter."""
    files: list[FileSpec] = Field(min_length=1)
    notes: str | None = None

    @model_validator(mode="after")
    def _parts_unique(self) -> DatasetSpec:
        parts = [f.part for f in self.files]
        if len(self.files) > 1 and (None in parts or len(set(parts)) != len(parts)):
            raise ValueError("a multi-file dataset needs a unique `part` name on every file")
        return self

    @property
    def records(self) -> int | None:
        counts = [f.records for f in self.files]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def file(self, part: str | None) -> FileSpec:
        for f in self.files:
            if f.part == part:
                return f
        raise DataError(
            f"dataset {self.id!r} has no part {part!r}",
            fix="use one of: " + ", ".join(str(f.part) for f in self.files),
        )


class DatasetRegistryFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1]
    datasets: list[DatasetSpec]

    @model_validator(mode="after")
    def _ids_unique(self) -> DatasetRegistryFile:
        seen: set[str] = set()
        for d in self.datasets:
            if d.id in seen:
                raise ValueError(f"dataset id {d.id!r} appears twice")
            seen.add(d.id)
        return self


@lru_cache(maxsize=8)
def _load(path: Path) -> dict[str, DatasetSpec]:
    reg = load_model(path, DatasetRegistryFile)
    return {d.id: d for d in reg.datasets}


def registry_path(suite: str = settings.DEFAULT_SUITE) -> Path:
    return settings.suite_dir(suite) / "datasets.yaml"


def all_specs(suite: str = settings.DEFAULT_SUITE) -> dict[str, DatasetSpec]:
    return _load(registry_path(suite))


def get_spec(dataset_id: str, suite: str = settings.DEFAULT_SUITE) -> DatasetSpec:
    specs = all_specs(suite)
    if dataset_id not in specs:
        hint = did_you_mean(dataset_id, list(specs))
        raise DataError(
            f"unknown dataset {dataset_id!r}",
            where=str(registry_path(suite)),
            fix=f"{hint}run `emarena data list` to see the {len(specs)} registered datasets",
        )
    return specs[dataset_id]
