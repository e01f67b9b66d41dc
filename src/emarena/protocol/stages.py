"""Training stages: what a cell needs, content-addressed keys, and running one resumably.

A stage is one LoRA finetune: `em` (on the cell's EM dataset) or `defense` (on the data the
defense's builder makes). Its key is the sha256 of everything that determines its output: the
model, the stage it starts from (its merged weights), the data, the seed, the preset, the recipe.
So the EM stage of (model, EM dataset, seed, preset) has one key, and every reversal cell and the
`em` control share it; it is trained once.

Running a stage (the nanochat rule: "the marker is written last, so its existence means the
stage completed"):
  1. if `stages/<key>/DONE.json` exists and its recorded inputs equal ours: skip;
  2. a folder without DONE.json (killed after the rename) or with other inputs is moved aside;
  3. the training data are built in `stages/<key>.work/` (kept: a killed SGTR build resumes);
  4. training and merging write into `stages/.<key>.tmp-<pid>/`, which is renamed into place;
  5. DONE.json (inputs, output hashes, versions, timings) is written last, atomically.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from emarena.data.records import ChatRecord
from emarena.errors import EmArenaError
from emarena.protocol.cell import Cell, DefenseRef, Frozen, ModelRef, sha256_json

StageKind = Literal["em", "defense"]


class StageSpec(Frozen):
    """Everything that determines a stage's output. `key` is its content address."""

    kind: StageKind
    suite: str
    model: ModelRef
    parent: str | None
    """Key of the stage whose merged weights this one starts from (None: the base model)."""
    em_dataset: str
    """The EM dataset trained (em stage) or the cell's EM dataset (defense builders may use it)."""
    defense: DefenseRef | None
    seed: int
    preset: str
    recipe_sha256: str
    """`training_sha256(recipe, preset)`: a change to the recipe or to the preset's training
    fields never reuses old weights (evaluation sizes do not invalidate training)."""

    @property
    def key(self) -> str:
        return f"{self.kind}-{sha256_json(self.model_dump(mode='json'))[:16]}"


#: Preset fields that change what a training stage produces (data building included).
TRAINING_PRESET_FIELDS = frozenset(
    {
        "budget",
        "max_seq_length",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "bf16",
        "gradient_checkpointing",
        "sgtr_max_new_tokens",
        "max_prompt_chars",
        "device",
    }
)


def training_sha256(recipe, preset) -> str:
    """sha256 of everything in recipe.yaml that training reads: the recipe minus its presets,
    and the training fields of the cell's preset."""
    return sha256_json(
        {
            "recipe": recipe.model_dump(mode="json", exclude={"presets"}),
            "preset": preset.model_dump(mode="json", include=set(TRAINING_PRESET_FIELDS)),
        }
    )


def stages_for(cell: Cell, recipe_sha256: str) -> list[StageSpec]:
    """The ordered training stages of `cell` (empty for `base`)."""
    common = dict(
        suite=cell.suite,
        model=cell.model,
        em_dataset=cell.em_dataset,
        seed=cell.seed,
        preset=cell.preset,
        recipe_sha256=recipe_sha256,
    )

    def em(parent: str | None) -> StageSpec:
        return StageSpec(kind="em", parent=parent, defense=None, **common)

    def defense(parent: str | None) -> StageSpec:
        assert cell.defense is not None
        # The defense stage is keyed on what changes its output (kind, params, training
        # overrides), not on the submission's name or metadata: two submissions of the same
        # config share the stage.
        d = cell.defense.model_copy(update={"name": cell.defense.kind, "config_hash": "-"})
        return StageSpec(kind="defense", parent=parent, defense=d, **common)

    if cell.regime == "base":
        return []
    if cell.regime == "em":
        return [em(None)]
    if cell.defense is None or cell.defense.kind == "none":
        # The control defense has no stage: its defense/reversal/prevention cells equal em/base.
        return [] if cell.regime == "defense" else [em(None)]
    if cell.regime == "defense":
        return [defense(None)]
    if cell.regime == "reversal":
        s1 = em(None)
        return [s1, defense(s1.key)]
    if cell.regime == "prevention":
        s1 = defense(None)
        return [s1, em(s1.key)]
    raise ValueError(f"unknown regime {cell.regime!r}")


# --------------------------------------------------------------------------------------------
# Running one stage


@dataclass
class StageContext:
    """What `run_stage` needs from the run: folders, the base model, logging."""

    stages_dir: Path
    base_model_dir: Path
    log: Any
    """Callable(event: str, **fields) appending to the run's events.jsonl."""
    build_batch_size: int = 8


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)  # never leave a half-written temp file behind
        if e.filename is None:
            e.filename = str(path)
        raise


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


def storage_error(what: str, e: BaseException, folder: Path) -> StorageError:
    target = getattr(e, "filename", None) or folder
    reason = getattr(e, "strerror", None) or str(e)
    return StorageError(
        f"{what}: the disk is full ({reason}) while writing {target}",
        where=[str(target)],
        fix=f"free space on the disk that holds {folder} (`df -h {folder}`), or give --run a "
        "folder on a disk with room; then rerun the same command (finished work is kept, "
        "the unfinished step starts again)",
    )


def read_done(stage_dir: Path) -> dict | None:
    p = stage_dir / "DONE.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _tree_hashes(folder: Path) -> dict[str, str]:
    from emarena.data.fetch import sha256_file

    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "DONE.json"
    }


def _inputs(spec: StageSpec, parent_done: dict | None) -> dict[str, Any]:
    return {
        "stage": spec.model_dump(mode="json"),
        "parent_outputs_sha256": sha256_json(parent_done["outputs"]) if parent_done else None,
    }


def stage_dir(ctx: StageContext, spec: StageSpec) -> Path:
    return ctx.stages_dir / spec.key


def is_done(ctx: StageContext, spec: StageSpec) -> bool:
    parent_done = read_done(ctx.stages_dir / spec.parent) if spec.parent else None
    if spec.parent and parent_done is None:
        return False
    done = read_done(stage_dir(ctx, spec))
    return done is not None and done.get("inputs") == _inputs(spec, parent_done)


def build_stage_data(spec: StageSpec, start_dir: Path, work_dir: Path, preset) -> list[ChatRecord]:
    """The training records of a stage: the EM dataset, or the defense builder's output."""
    from emarena import data

    if spec.kind == "em":
        rows = [r for r in data.load(spec.em_dataset) if isinstance(r, ChatRecord)]
        rng = random.Random(spec.seed)
        rng.shuffle(rows)
        return rows[: preset.budget.n_examples("em", em_dataset_size=len(rows))]

    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext

    assert spec.defense is not None
    kind = DEFENSES.get(spec.defense.kind)
    params = kind.params.model_validate(spec.defense.params)
    # The budget: the same number of examples for every defense (recipe.yaml, `budget`).
    n_em = preset.budget.n_examples(
        "defense", em_dataset_size=data.get_spec(spec.em_dataset).records or 0
    )
    ctx = BuildContext(
        em_dataset=spec.em_dataset,
        n_examples=n_em,
        seed=spec.seed,
        model_id=spec.model.id,
        model_dir=start_dir,
        work_dir=work_dir,
        max_new_tokens=preset.sgtr_max_new_tokens,
        max_prompt_chars=preset.max_prompt_chars,
        exclude_ids=frozenset(),
    )
    if kind.builder is None:
        raise ValueError(f"defense kind {kind.name!r} has no training stage")
    from emarena.registry import import_ref

    return import_ref(kind.builder)(params, ctx)


def run_stage(ctx: StageContext, spec: StageSpec, *, recipe, preset) -> Path:
    """Make sure `spec`'s outputs exist; train them if not. Returns the stage folder."""
    final = stage_dir(ctx, spec)
    parent_done = None
    start_dir = ctx.base_model_dir
    if spec.parent:
        parent = ctx.stages_dir / spec.parent
        parent_done = read_done(parent)
        if parent_done is None:
            raise RuntimeError(f"stage {spec.key} needs {spec.parent}, which is not done")
        start_dir = parent / "merged"
    inputs = _inputs(spec, parent_done)

    done = read_done(final)
    if done is not None and done.get("inputs") == inputs:
        ctx.log("stage_skip", stage=spec.key, reason="done")
        return final
    if final.exists():
        # Killed between rename and DONE.json, or made from other inputs: never trust it.
        aside = final.with_name(f"{final.name}.stale-{int(time.time())}")
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
        ctx.log("stage_discard", stage=spec.key, reason="incomplete or stale")

    ctx.stages_dir.mkdir(parents=True, exist_ok=True)
    for old in ctx.stages_dir.glob(f".{spec.key}.tmp-*"):
        shutil.rmtree(old, ignore_errors=True)  # leftovers of a killed attempt
    running = ctx.stages_dir / f"{spec.key}.running.json"
    failed = ctx.stages_dir / f"{spec.key}.failed.json"
    failed.unlink(missing_ok=True)
    write_json_atomic(running, {"pid": os.getpid(), "started": time.time(), "kind": spec.kind})
    tmp = ctx.stages_dir / f".{spec.key}.tmp-{os.getpid()}"
    t0 = time.time()
    try:
        from emarena.train import merge_lora, train_lora

        work = ctx.stages_dir / f"{spec.key}.work"
        work.mkdir(exist_ok=True)
        ctx.log("stage_build_start", stage=spec.key)
        records = build_stage_data(spec, start_dir, work, preset)
        t_build = time.time() - t0
        tmp.mkdir()
        try:
            with open(tmp / "data.jsonl", "w") as f:
                for r in records:
                    f.write(r.model_dump_json() + "\n")
        except OSError as e:
            if e.filename is None:
                e.filename = str(final / "data.jsonl")
            raise
        ctx.log("stage_train_start", stage=spec.key, n_examples=len(records))
        overrides = spec.defense.training if (spec.defense and spec.kind == "defense") else None
        report = train_lora(
            start_dir,
            records,
            tmp / "adapter",
            recipe=recipe,
            preset=preset,
            seed=spec.seed,
            n_examples=len(records),
            overrides=overrides or None,
        )
        merge_lora(start_dir, tmp / "adapter", tmp / "merged")
        os.replace(tmp, final)
        from emarena import __version__

        write_json_atomic(
            final / "DONE.json",
            {
                "schema_version": 1,
                "key": spec.key,
                "inputs": inputs,
                "outputs": _tree_hashes(final),
                "n_examples": len(records),
                "timings": {
                    "build_seconds": round(t_build, 3),
                    "train_seconds": round(getattr(report, "train_seconds", 0.0), 3),
                    "total_seconds": round(time.time() - t0, 3),
                },
                "emarena_version": __version__,
                "finished": time.time(),
            },
        )
        ctx.log("stage_done", stage=spec.key, seconds=round(time.time() - t0, 3))
        return final
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # first: on a full disk this frees the space
        try:
            write_json_atomic(
                failed,
                {
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(),
                    "time": time.time(),
                },
            )
            ctx.log("stage_failed", stage=spec.key, error=f"{type(e).__name__}: {e}")
        except OSError:
            pass  # the disk is still full: the error raised below says what happened
        if is_no_space(e):
            raise storage_error(f"stage {spec.key}", e, ctx.stages_dir) from e
        raise
    finally:
        running.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
