"""Hub models: find the pinned snapshot and link it into the model folder.

Resolution order (the same rule as the datasets: mirror, then cache, then download):
  1. a mirror folder `<EMARENA_MIRROR>/models/<org>__<name>@<revision>/` (used in place);
  2. the Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`), with `local_files_only=True`;
  3. `huggingface_hub.snapshot_download(repo, revision=...)`, unless EMARENA_OFFLINE=1.
Only the files a transformers/vLLM load needs are fetched (configs, safetensors, tokenizer);
Meta-format `original/` weights are skipped. The model folder `<cache>/models/<id>/` holds
symbolic links to the snapshot's files, so a 65 GB model is never stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.errors import ModelError
from emarena.models.load import Progress
from emarena.models.spec import UNPINNED, HfSource, ModelSpec

MIRROR_MODELS = "models"
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
IGNORE_PATTERNS = ["original/*", "*/original/*"]


def mirror_path(src: HfSource, mirror: Path) -> Path:
    return mirror / MIRROR_MODELS / src.mirror_name


def check_snapshot(folder: Path) -> str | None:
    """None if `folder` has a config and every weight file, else what is missing."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError) as e:
            return f"unreadable model.safetensors.index.json ({e})"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"{len(missing)} of {len(shards)} weight shards missing (e.g. {missing[0]})"
        return None
    if not (folder / "model.safetensors").is_file():
        return "no model.safetensors (nor a sharded index)"
    return None


def _hub_fix(src: HfSource, exc: BaseException) -> str:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return (f"{src.repo} is gated: accept its licence on the Hub with your account, then set "
                "HF_TOKEN (or run `hf auth login`) and pull again")
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"revision {src.revision} does not exist in {src.repo}: fix models.yaml"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{src.repo} is not on the Hub (or is private): fix models.yaml or set HF_TOKEN"
    return (f"check the network (or {settings.ENV_HF_ENDPOINT}), or put the snapshot into "
            f"<{settings.ENV_MIRROR}>/{MIRROR_MODELS}/{src.mirror_name}/")


def resolve_snapshot(
    src: HfSource, *, mirror: Path | None, progress: Progress, allow_download: bool = True
) -> tuple[Path, str]:
    """A complete local snapshot of `src`: (folder, 'mirror' | 'hf-cache' | 'download')."""
    tried: list[str] = []
    if mirror is not None:
        p = mirror_path(src, mirror)
        why = check_snapshot(p) if p.is_dir() else "absent"
        if why is None:
            progress(f"using the mirror's snapshot {p}")
            return p, "mirror"
        tried.append(f"mirror {p} ({why})")
    else:
        tried.append(f"mirror (none: set {settings.ENV_MIRROR})")

    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    kwargs: dict[str, Any] = dict(revision=src.revision, allow_patterns=ALLOW_PATTERNS,
                                  ignore_patterns=IGNORE_PATTERNS)
    try:
        p = Path(snapshot_download(src.repo, local_files_only=True, **kwargs))
        why = check_snapshot(p)
        if why is None:
            progress(f"using the Hugging Face cache's snapshot {p}")
            return p, "hf-cache"
        tried.append(f"Hugging Face cache {p} ({why})")
    except Exception as e:  # LocalEntryNotFoundError and friends: not (fully) cached
        tried.append(f"Hugging Face cache {HF_HUB_CACHE} ({type(e).__name__})")

    url = f"{settings.hf_endpoint()}/{src.repo}/tree/{src.revision}"
    if not allow_download or settings.offline():
        reason = f"offline ({settings.ENV_OFFLINE}=1)" if settings.offline() else "not allowed"
        tried.append(f"download {url} ({reason})")
        raise ModelError(
            f"{src.repo}@{src.revision} not found locally",
            where=tried,
            fix=f"put the snapshot into <{settings.ENV_MIRROR}>/{MIRROR_MODELS}/"
            f"{src.mirror_name}/, or pull with network access",
        )
    progress(f"downloading {src.repo}@{src.revision[:12]} from the Hub (this can take a while)")
    try:
        p = Path(snapshot_download(src.repo, **kwargs))
    except Exception as e:
        tried.append(f"download {url} ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        raise ModelError(f"could not download {src.repo}@{src.revision}", where=tried,
                         fix=_hub_fix(src, e)) from None
    why = check_snapshot(p)
    if why is not None:
        raise ModelError(f"the downloaded snapshot of {src.repo} is incomplete: {why}",
                         where=str(p), fix="pull again; if it persists, report the repository")
    return p, "download"


def link_tree(snapshot: Path, out: Path) -> int:
    """Recreate `snapshot`'s files under `out` as links (copies where links are impossible)."""
    n = 0
    for p in sorted(snapshot.rglob("*")):
        rel = p.relative_to(snapshot)
        if p.is_dir() or rel.parts[0] in ("original", ".cache") or rel.name.startswith("."):
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = p.resolve()  # the HF cache's blob, or the mirror's file
        try:
            os.symlink(target, dest)
        except OSError:
            shutil.copy2(target, dest)
        n += 1
    return n


def build(
    spec: ModelSpec, out: Path, *, scratch: Path, cache: Path, mirror: Path | None,
    progress: Progress,
) -> dict[str, Any]:
    """Fill `out` with links to the pinned snapshot; return what DONE.json records."""
    del scratch, cache  # the Hub's own cache holds the files; ours only holds the links
    src = spec.source
    assert isinstance(src, HfSource)
    if src.revision == UNPINNED:
        progress(f"warning: {spec.id} is not pinned (revision {UNPINNED}); "
                 "do not use it for official runs")
    snapshot, where = resolve_snapshot(src, mirror=mirror, progress=progress)
    n = link_tree(snapshot, out)
    progress(f"linked {n} files from {snapshot}")
    return {"snapshot": str(snapshot), "where": where, "commit": snapshot.name
            if where != "mirror" else src.revision}
