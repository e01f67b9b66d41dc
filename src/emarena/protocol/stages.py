"""Training stages: what a cell needs, their content-addressed keys, and training one.

A stage is one LoRA finetune: `em` (on the cell's EM dataset) or `defense` (on the data the
defense's builder makes). Its key is the sha256 of everything that determines its output and
nothing else: the model, the stage it starts from, the sha256 of every data file its build reads,
the defense's kind, params and training overrides, the seed, the number of examples and the
training fields of the recipe and preset. So the EM stage of (model, EM dataset, seed) has one
key, shared by the `em` control and every reversal cell, and a defense stage that never reads the
EM dataset (SGTR's prevention stage) is the same stage for every EM dataset. It is trained once.

What a stage stores is its LoRA adapter (`adapter/`), the data it trained on (`data.jsonl`), the
builder's record (`build.json`) and DONE.json, never merged weights: a child stage (stage 2 of a
two-stage cell) merges its parents' adapters into the base weights in memory, in the training
dtype, and an evaluation serves the stacked adapters (`emarena.train.adapters`).

Training one stage (`train_stage`, run in a process of its own by the executor):
  1. claim the store entry (another process training it: wait, then reuse its result);
  2. if the entry is done with the same inputs and intact files: skip; a damaged one is discarded;
  3. build the training data (a defense's builder; SGTR reads its summaries entry);
  4. train into a temp folder of the store, rename it into place, write DONE.json last.
"""

from __future__ import annotations

import contextlib
import errno
import json
import random
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from emarena.data.records import ChatRecord
from emarena.errors import EmArenaError
from emarena.protocol.cell import Cell, DefenseRef, ModelRef, OmitDefaults, sha256_json
from emarena.protocol.store import Store, write_json_atomic

StageKind = Literal["em", "defense"]


class StageSpec(OmitDefaults):
    """Everything that determines a stage's output. `key` is its content address."""

    ADDED: ClassVar[dict[str, Any]] = {"system_turn": "default", "mix": None}

    kind: StageKind
    model: ModelRef
    parents: tuple[str, ...] = ()
    """Keys of the stages this one starts from, in order (their adapters are merged into the
    base weights first); empty: the base model."""
    em_dataset: str | None = None
    """The EM dataset trained (em stage), or the cell's EM dataset when the defense's builder
    reads it (word counting, correct domain); None when the stage does not depend on it."""
    defense: DefenseRef | None = None
    """The defense (name and config hash blanked: two submissions of one config share it)."""
    suite: str | None = None
    """Defense stages: the suite whose builders and defense settings make the data."""
    datasets: dict[str, str] = {}
    """sha256 of every registered dataset the stage's data come from (id -> digest)."""
    n_examples: int
    """Training examples (the budget, resolved)."""
    seed: int
    training_sha256: str
    """`training_sha256(recipe, preset)`: the recipe and the preset's training fields."""
    summaries: str | None = None
    """Key of the summaries entry the build reads (SGTR's own summaries)."""
    system_turn: Literal["default", "none"] = "default"
    """EM stages: `none` renders the EM conversations with no system turn at all (the cell's
    `em_system_turn`); `default` as the chat template does."""
    mix: dict[str, Any] | None = None
    """EM stages of an interleaving defense: the kind whose data is mixed in, its params as the
    suite resolves them, the ratio and `n` (its examples, within `n_examples`)."""

    @property
    def key(self) -> str:
        return f"{self.kind}-{sha256_json(self.model_dump(mode='json'))[:16]}"

    @property
    def parent(self) -> str | None:
        return self.parents[-1] if self.parents else None

    @property
    def chain(self) -> tuple[str, ...]:
        """This stage's weights: its parents' keys, then its own."""
        return (*self.parents, self.key)


#: Preset fields that change what a training stage produces (data building included).
TRAINING_PRESET_FIELDS = frozenset(
    {
        "budget",
        "max_seq_length",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "bf16",
        "gradient_checkpointing",
        "padding_free",
        "learning_rate",
        "warmup_steps",
        "sgtr_max_new_tokens",
        "max_prompt_chars",
        "device",
    }
)


def training_sha256(recipe, preset) -> str:
    """sha256 of everything in recipe.yaml that training reads: the recipe minus its presets,
    and the training fields of the cell's preset."""
    fields = set(TRAINING_PRESET_FIELDS) & set(type(preset).model_fields)
    return sha256_json(
        {
            "recipe": recipe.model_dump(mode="json", exclude={"presets"}),
            "preset": preset.model_dump(mode="json", include=fields),
        }
    )


def dataset_digest(dataset_id: str, suite: str | None = None) -> str:
    """One sha256 for a registered dataset: its file's, or the hash of {part: sha256}."""
    from emarena import data, settings

    ds = data.get_spec(dataset_id, suite or settings.DEFAULT_SUITE)
    if len(ds.files) == 1:
        return ds.files[0].sha256
    return sha256_json({f.part or str(i): f.sha256 for i, f in enumerate(ds.files)})


def stages_for(cell: Cell, *, recipe, preset, summaries_key=None) -> list[StageSpec]:
    """The ordered training stages of `cell` (empty for `base` and for the `none` control's
    defense cell). `summaries_key(parents, defense) -> key | None` names the own-summaries
    entry of a defense stage that needs one (the planner's; None: no summaries)."""
    from emarena import data
    from emarena.defenses import DEFENSES, budget_class, defense_inputs, resolve_params

    rsha = training_sha256(recipe, preset)
    em_size = data.get_spec(cell.em_dataset).records or 0

    def em(parents: tuple[str, ...]) -> StageSpec:
        return StageSpec(
            kind="em", model=cell.model, parents=parents, em_dataset=cell.em_dataset,
            datasets={cell.em_dataset: dataset_digest(cell.em_dataset)},
            n_examples=preset.budget.n_examples("em", em_dataset_size=em_size),
            seed=cell.seed, training_sha256=rsha, system_turn=cell.em_system_turn,
        )

    def interleaved() -> StageSpec:
        """The EM stage with the defense's data mixed in (prevention of an interleaving kind)."""
        assert cell.defense is not None
        params = resolve_params(cell.defense.kind, cell.defense.params, cell.suite)
        inner = resolve_params(params["data"], {}, cell.suite)
        kind = DEFENSES.get(cell.defense.kind)
        reads = defense_inputs(kind, params, cell.em_dataset, cell.suite)
        n_em = preset.budget.n_examples("em", em_dataset_size=em_size)
        n_mix = round(n_em * params["ratio"] / (1 - params["ratio"]))
        return em(()).model_copy(update={
            "n_examples": n_em + n_mix,
            "datasets": {i: dataset_digest(i, cell.suite) for i in sorted(reads)},
            "mix": {"kind": params["data"], "params": inner, "ratio": params["ratio"],
                    "n": n_mix, "suite": cell.suite},
        })

    def defense(parents: tuple[str, ...]) -> StageSpec:
        assert cell.defense is not None
        kind = DEFENSES.get(cell.defense.kind)
        # Keyed on what changes its output (kind, params as the suite resolves them, training
        # overrides), not on the submission's name or metadata: two submissions of the same
        # config share the stage.
        params = resolve_params(cell.defense.kind, cell.defense.params, cell.suite)
        d = cell.defense.model_copy(update={"name": cell.defense.kind, "config_hash": "-",
                                            "params": params})
        reads = defense_inputs(kind, params, cell.em_dataset, cell.suite)
        # SGTR's "self": the base model's own summaries (summaries_from: base, suite v2) or the
        # model entering the stage's (parent: the EM model in reversal, suite v1).
        weights = () if params.get("summaries_from") == "base" else parents
        skey = summaries_key(weights, cell) if (kind.needs_model and summaries_key) else None
        return StageSpec(
            kind="defense", model=cell.model, parents=parents,
            em_dataset=cell.em_dataset if kind.reads_em_dataset else None,
            defense=d, suite=cell.suite,
            datasets={i: dataset_digest(i, cell.suite) for i in sorted(reads)},
            n_examples=preset.budget.n_examples(
                "defense", em_dataset_size=em_size,
                defense=budget_class(cell.defense.kind, params)),
            seed=cell.seed, training_sha256=rsha, summaries=skey,
        )

    if cell.regime == "base":
        return []
    if cell.regime == "em":
        return [em(())]
    if cell.defense is None or cell.defense.kind == "none":
        # The control defense has no stage: its defense/reversal/prevention cells equal em/base.
        return [] if cell.regime == "defense" else [em(())]
    if DEFENSES.get(cell.defense.kind).interleaved:
        if cell.regime != "prevention":
            from emarena.errors import ConfigError

            raise ConfigError(
                f"defense kind {cell.defense.kind!r} mixes its data into the EM finetune: it has "
                f"no stage of its own, so no {cell.regime!r} regime",
                fix="list only `prevention` in the submission's regimes")
        return [interleaved()]
    if cell.regime == "defense":
        return [defense(())]
    if cell.regime == "reversal":
        s1 = em(())
        return [s1, defense(s1.chain)]
    if cell.regime == "prevention":
        s1 = defense(())
        return [s1, em(s1.chain)]
    raise ValueError(f"unknown regime {cell.regime!r}")


# --------------------------------------------------------------------------------------------
# Disk-full errors


#: errno values meaning the disk is full (or a quota / this process's file-size limit is hit).
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageError(EmArenaError):
    """A write failed because the disk is full: what was written, where, and how to go on."""


def is_no_space(e: BaseException) -> bool:
    """An OSError for a full disk, or a library's wrapping of one (safetensors: os error 28)."""
    if isinstance(e, OSError) and e.errno in NO_SPACE:
        return True
    text = str(e)
    return "No space left on device" in text or "os error 28" in text


@contextlib.contextmanager
def _naming(path: Path):
    """An OSError raised by writes to `path` names it (a failed `f.write` carries no filename,
    so a full-disk error could otherwise only name the store)."""
    try:
        yield
    except OSError as e:
        if not getattr(e, "filename", None):
            e.filename = str(path)
        raise


def storage_error(what: str, e: BaseException, folder: Path) -> StorageError:
    target = getattr(e, "filename", None) or folder
    reason = getattr(e, "strerror", None) or str(e)
    return StorageError(
        f"{what}: the disk is full ({reason}) while writing {target}",
        where=[str(target)],
        fix=f"free space on the disk that holds {folder} (`df -h {folder}`, `emarena store "
        "gc`), or point EMARENA_STORE at a disk with room; then rerun the same command "
        "(finished work is kept, the unfinished step starts again)",
    )


# --------------------------------------------------------------------------------------------
# Training one stage (the body of a `train` task)


@dataclass
class StageResult:
    key: str
    trained: bool
    seconds: float = 0.0
    reason: str = ""


def weights_sha256(store: Store, key: str) -> str | None:
    """The identity of a finished stage's weights: the sha256 of its adapter's tensors as
    DONE.json records them (None while it is not done). Not train_report.json (timings) or
    adapter_config.json (the base model's path, peft's unordered module list; the spec fixes
    the LoRA config): a stage retrained to the same floats keeps its identity, so what was
    built on it stays valid; one retrained to other floats never passes for the old one."""
    done = store.entry("stages", key).done()
    if done is None:
        return None
    weights = {p: v for p, v in done["outputs"].items() if p.endswith(".safetensors")}
    return sha256_json(weights)


def stage_inputs(store: Store, spec: StageSpec) -> dict[str, Any]:
    """What DONE.json must record for the entry to be reused: the spec and its parents'
    weights (a parent retrained differently never passes for the old one)."""
    parents = {k: weights_sha256(store, k) for k in spec.parents}
    return {"stage": spec.model_dump(mode="json"), "parents": parents}


def is_done(store: Store, spec: StageSpec) -> bool:
    if any(not store.entry("stages", k).is_done() for k in spec.parents):
        return False
    return store.entry("stages", spec.key).is_done(stage_inputs(store, spec))


def build_stage_data(
    spec: StageSpec, store: Store, base_dir: Path, work_dir: Path, preset
) -> list[ChatRecord]:
    """The training records of a stage: the EM dataset, or the defense builder's output."""
    from emarena import data

    if spec.kind == "em":
        assert spec.em_dataset is not None
        rows = [r for r in data.load(spec.em_dataset) if isinstance(r, ChatRecord)]
        rng = random.Random(spec.seed)
        rng.shuffle(rows)
        if spec.mix is None:
            return rows[: spec.n_examples]
        return _interleave(spec, rows[: spec.n_examples - spec.mix["n"]], base_dir, work_dir,
                           preset)

    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext
    from emarena.defenses.builders.simple import summary_sampling
    from emarena.registry import import_ref

    assert spec.defense is not None
    kind = DEFENSES.get(spec.defense.kind)
    params = kind.params.model_validate(spec.defense.params)
    if kind.builder is None:
        raise ValueError(f"defense kind {kind.name!r} has no training stage")
    ctx = BuildContext(
        em_dataset=spec.em_dataset,
        n_examples=spec.n_examples,
        seed=spec.seed,
        model_id=spec.model.id,
        model_dir=base_dir,
        work_dir=work_dir,
        max_new_tokens=preset.sgtr_max_new_tokens,
        max_prompt_chars=preset.max_prompt_chars,
        exclude_ids=frozenset(),
        summaries_dir=store.entry("summaries", spec.summaries).path if spec.summaries else None,
        summary_sampling=summary_sampling(spec.suite, spec.seed) if spec.summaries else None,
    )
    return import_ref(kind.builder)(params, ctx)


def _interleave(spec: StageSpec, em_rows: list[ChatRecord], base_dir: Path, work_dir: Path,
                preset) -> list[ChatRecord]:
    """The EM records with the mixed-in kind's `mix["n"]` records, in one seeded order."""
    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext
    from emarena.registry import import_ref

    assert spec.mix is not None
    kind = DEFENSES.get(spec.mix["kind"])
    ctx = BuildContext(em_dataset=spec.em_dataset, n_examples=spec.mix["n"], seed=spec.seed,
                       model_id=spec.model.id, model_dir=base_dir, work_dir=work_dir,
                       max_new_tokens=preset.sgtr_max_new_tokens,
                       max_prompt_chars=preset.max_prompt_chars)
    mixed = [*em_rows,
             *import_ref(kind.builder)(kind.params.model_validate(spec.mix["params"]), ctx)]
    random.Random(f"emarena:interleave:{spec.seed}").shuffle(mixed)
    return mixed


def train_stage(
    store: Store, spec: StageSpec, *, base_dir: Path, recipe, preset, log, progress=None
) -> StageResult:
    """Make sure `spec`'s entry exists; train it if not (claimed, so once across processes)."""
    entry = store.entry("stages", spec.key)
    for k in spec.parents:
        ok, why = store.entry("stages", k).check()
        if not ok:
            raise EmArenaError(
                f"stage {spec.key} starts from stage {k}, which is not usable ({why})",
                where=str(store.entry("stages", k).path),
                fix="rerun the same command: the parent stage is trained first",
            )

    def waiting(owner: dict) -> None:
        log("stage_wait", stage=spec.key, owner=f"{owner.get('pid')}@{owner.get('host')}")

    with store.claim(entry, f"train {spec.key}", on_wait=waiting):
        inputs = stage_inputs(store, spec)
        ok, why = entry.check(inputs)
        if ok:
            log("stage_skip", stage=spec.key, reason="done")
            return StageResult(spec.key, False, reason="done")
        if entry.path.exists():
            log("stage_discard", stage=spec.key, reason=why)
            entry.discard(why)
        return _train(store, spec, entry, inputs, base_dir=base_dir, recipe=recipe,
                      preset=preset, log=log, progress=progress)


def _train(store, spec, entry, inputs, *, base_dir, recipe, preset, log, progress) -> StageResult:
    from emarena.train import train_lora

    tmp = entry.tmp_dir()
    t0 = time.time()
    try:
        log("stage_build_start", stage=spec.key)
        records = build_stage_data(spec, store, base_dir, tmp / "build", preset)
        t_build = time.time() - t0
        with _naming(tmp / "data.jsonl"), open(tmp / "data.jsonl", "w") as f:
            for r in records:
                f.write(r.model_dump_json() + "\n")
        build = tmp / "build" / "build.json"
        if build.exists():
            build.replace(tmp / "build.json")
        shutil.rmtree(tmp / "build", ignore_errors=True)
        log("stage_train_start", stage=spec.key, n_examples=len(records))
        overrides = spec.defense.training if (spec.defense and spec.kind == "defense") else None
        parents = [store.entry("stages", k).path / "adapter" for k in spec.parents]
        report = train_lora(
            base_dir, records, tmp / "adapter", recipe=recipe, preset=preset, seed=spec.seed,
            n_examples=len(records), overrides=overrides or None, parents=parents,
            progress=progress, system_turn=spec.system_turn,
        )
        entry.publish(tmp)
        from emarena import __version__

        entry.write_done(
            inputs,
            n_examples=len(records),
            timings={
                "build_seconds": round(t_build, 3),
                "train_seconds": round(report.train_seconds, 3),
                "total_seconds": round(time.time() - t0, 3),
            },
            tokens={"trained": report.n_tokens, "loss": report.n_loss_tokens},
            device=report.device,
            emarena_version=__version__,
        )
        log("stage_done", stage=spec.key, seconds=round(time.time() - t0, 3))
        return StageResult(spec.key, True, seconds=time.time() - t0)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # first: on a full disk this frees the space
        try:
            log("stage_failed", stage=spec.key, error=f"{type(e).__name__}: {e}",
                traceback=traceback.format_exc()[-4000:])
        except OSError:
            pass  # the disk is still full: the error raised below says what happened
        if is_no_space(e):
            raise storage_error(f"stage {spec.key}", e, store.root) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_data(store: Store, key: str) -> list[dict]:
    """A trained stage's data.jsonl rows (for tests and reports)."""
    path = store.entry("stages", key).path / "data.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = [
    "NO_SPACE",
    "StageResult",
    "StageSpec",
    "StorageError",
    "build_stage_data",
    "dataset_digest",
    "is_done",
    "is_no_space",
    "weights_sha256",
    "read_data",
    "stage_inputs",
    "stages_for",
    "storage_error",
    "train_stage",
    "training_sha256",
    "write_json_atomic",
]
