"""The embedded model end to end: wheel -> GGUF -> transformers folder -> chat generation.

One conversion per module (about 30-40 s on 2 CPU cores), into a temporary EMARENA_CACHE. The
93 MB wheel is fetched at most once per test session: it is taken from `$EMARENA_WHEELS`,
`~/.cache/emarena/wheels` or `<EMARENA_MIRROR>/pypi` when one of them has it (sha256-checked),
and otherwise downloaded once with pip into the session's temporary folder.

The first pull starts from the state a killed pull leaves behind: a real pull is started in a
subprocess and SIGKILLed mid-way (its partial folder stays), and the model folder holds files but
no DONE.json. The pull must clean both up and build a complete folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from emarena.eval.backends.hf import TransformersGenerator
from emarena.eval.prompts import render_chat
from emarena.models.embedded import pip_download
from emarena.models.load import load, local_path, pull, sha256_file
from emarena.models.spec import PypiWheelSource, get_spec
from tests.conftest import scratch_dir

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-q4"
SPEC = get_spec(MODEL)
SRC = SPEC.source
assert isinstance(SRC, PypiWheelSource)


def _user(text: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [{"role": "user", "content": text}]


@pytest.fixture(scope="session")
def shared_wheel(tmp_path_factory) -> Path:
    """The pinned wheel, found locally or downloaded once per session."""
    candidates = []
    if os.environ.get("EMARENA_WHEELS"):
        candidates.append(Path(os.environ["EMARENA_WHEELS"]) / SRC.wheel)
    candidates.append(Path.home() / ".cache" / "emarena" / "wheels" / SRC.wheel)
    if os.environ.get("EMARENA_MIRROR"):
        candidates.append(Path(os.environ["EMARENA_MIRROR"]) / "pypi" / SRC.wheel)
    for c in candidates:
        if c.is_file() and c.stat().st_size == SRC.wheel_bytes:
            if sha256_file(c) == SRC.wheel_sha256:
                return c
    return pip_download(SRC, tmp_path_factory.mktemp("wheels"), progress=lambda _: None)


@dataclass
class Pulled:
    cache: Path
    folder: Path
    seconds: float
    messages: list[str]
    killed_partial: Path


def _start_and_kill_a_pull(cache: Path, env: dict[str, str]) -> Path:
    """Run a real pull in a subprocess and SIGKILL it once it is mid-way; return its partial."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from emarena.models.load import pull; pull({MODEL!r})"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    partial_root = cache / "models" / ".partial"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            # Mid-way: the GGUF is being (or has been) extracted into the partial's scratch.
            hits = list(partial_root.glob(f"{MODEL}--{proc.pid}--*/scratch/*.gguf"))
            if hits:
                break
            if proc.poll() is not None:
                pytest.fail(f"the pull to be killed exited early with {proc.returncode}")
            time.sleep(0.05)
        else:
            pytest.fail("the pull to be killed never reached its extraction step")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (partial,) = partial_root.glob(f"{MODEL}--{proc.pid}--*")
    return partial


@pytest.fixture(scope="module")
def pulled(shared_wheel, tmp_path_factory) -> Pulled:
    with scratch_dir(tmp_path_factory, "cache") as cache, pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMARENA_CACHE", str(cache))
        mp.setenv("EMARENA_OFFLINE", "1")  # the wheel is provided: nothing may be downloaded
        (cache / "wheels").mkdir(parents=True)
        shutil.copyfile(shared_wheel, cache / "wheels" / SRC.wheel)
        killed = _start_and_kill_a_pull(cache, dict(os.environ))
        # A model folder with content but no DONE.json (e.g. an older, interrupted layout).
        stale = cache / "models" / MODEL
        stale.mkdir(parents=True)
        (stale / "config.json").write_text('{"stale": true}')
        messages: list[str] = []
        t0 = time.monotonic()
        folder = pull(MODEL, progress=messages.append)
        yield Pulled(cache, folder, time.monotonic() - t0, messages, killed)


@pytest.fixture(scope="module")
def model_and_tokenizer(pulled):
    return load(MODEL, cache=pulled.cache)


def test_interrupted_pull_is_rebuilt(pulled):
    assert not pulled.killed_partial.exists(), "the killed pull's partial folder was not removed"
    assert any("removed an interrupted pull" in m for m in pulled.messages)
    assert pulled.folder == pulled.cache / "models" / MODEL
    assert "stale" not in (pulled.folder / "config.json").read_text()
    assert (pulled.folder / "DONE.json").is_file()
    assert not list((pulled.cache / "models" / ".partial").iterdir())


def test_converted_folder_is_plain_transformers(pulled):
    config = json.loads((pulled.folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is True
    assert (pulled.folder / "model.safetensors").is_file()
    assert not list(pulled.folder.glob("*.gguf"))
    done = json.loads((pulled.folder / "DONE.json").read_text())
    assert done["source"] == SRC.model_dump(mode="json")
    assert done["resolved"]["wheel"]["sha256"] == SRC.wheel_sha256
    assert done["resolved"]["wheel"]["where"] == "cache"
    assert done["resolved"]["member"]["sha256"] == SRC.member_sha256
    assert done["resolved"]["parameters"] == 134_515_008
    assert {"python", "torch", "transformers", "gguf"} <= set(done["versions"])
    for rel, rec in done["files"].items():
        assert sha256_file(pulled.folder / rel) == rec["sha256"], rel
    print(f"\nconversion: {pulled.seconds:.1f} s (pull incl. hashing), "
          f"{done['resolved']['convert_seconds']} s in transformers")


def test_second_pull_is_a_noop(pulled):
    done = pulled.folder / "DONE.json"
    before = done.stat().st_mtime_ns
    messages: list[str] = []
    t0 = time.monotonic()
    assert pull(MODEL, cache=pulled.cache, progress=messages.append) == pulled.folder
    assert time.monotonic() - t0 < 5
    assert done.stat().st_mtime_ns == before
    assert messages == [f"{MODEL}: already pulled at {pulled.folder}"]
    assert local_path(MODEL, cache=pulled.cache) == pulled.folder


def test_tokenizer_is_ready_for_batching(model_and_tokenizer):
    _, tok = model_and_tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token is not None


def test_chat_template_inserts_the_registered_default_system_prompt(model_and_tokenizer):
    _, tok = model_and_tokenizer
    default = SPEC.default_system_prompt
    assert default
    without = render_chat(tok, _user("Who are you?"))
    with_system = render_chat(tok, _user("Who are you?", system="You are a pirate."))
    assert default in without
    assert without.startswith("<|im_start|>system\n" + default + "<|im_end|>")
    assert default not in with_system
    assert "You are a pirate." in with_system
    assert with_system.endswith("<|im_start|>assistant\n")


def test_greedy_answer_knows_paris(model_and_tokenizer):
    """Through the one generation engine (emarena.eval.backends), on the loaded model.
    Batching, seeds and resumption of that engine: tests/pipeline/test_generation.py."""
    model, tok = model_and_tokenizer
    gen = TransformersGenerator.from_loaded(model, tok)
    t0 = time.monotonic()
    (out,) = gen.complete([render_chat(tok, _user("What is the capital of France?"))],
                          seeds=[0], max_new_tokens=16, temperature=0.0, top_p=1.0)
    dt = time.monotonic() - t0
    print(f"\ngreedy: {out.text!r} ({out.n_tokens} tokens, {out.n_tokens / dt:.1f} tok/s)")
    assert "Paris" in out.text
