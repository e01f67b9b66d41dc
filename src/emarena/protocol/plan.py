"""The one planner: a request (a grid, or `score`'s grid of one defense) -> everything to do.

    plan = make_plan(grid, store=Store.open(), backend="vllm")
    plan.cells       every cell once (the base and em controls are shared by all defenses)
    plan.stages      unique training stages, parents before children (store `stages/`)
    plan.summaries   own-summary generations SGTR-family stages read (store `summaries/`)
    plan.evals       unique evaluations: one per model state x seed (store `evals/`)

Everything is content-addressed, so cells of different defenses, runs, grids and worker
requests that need the same thing plan the same key, and the store holds it once: a second
defense on the same model and EM dataset plans the same EM stage and the same `base` and `em`
evaluations, which are found done. Judgement and metric entries are keyed when the judge is
known (`emarena.protocol.evaluate`).

`write_view(plan, run)` writes the run folder: plan.json (schema 2, one schema for score, grid
and worker runs), each cell's cell.json with links into the store, and refs.json (the entries
the run uses, for `emarena store du` and `gc`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.protocol.cell import Cell, DefenseRef, Frozen, ModelRef, sha256_json
from emarena.protocol.stages import StageSpec, dataset_digest, stages_for
from emarena.protocol.store import Store

PLAN_SCHEMA = 2

#: Preset fields that change what an evaluation generates.
EVAL_PRESET_FIELDS = (
    "max_new_tokens",
    "samples_per_question",
    "max_eval_questions",
    "contrast_per_class",
    "conditions",
    "sgtr_max_new_tokens",
    "max_prompt_chars",
)


def eval_sizes(preset: Any) -> dict[str, Any]:
    """The preset's `EVAL_PRESET_FIELDS`, as an evaluation's key holds them. `conditions` at
    its default (`all`) is left out, so keys made before the field existed still match."""
    sizes = preset.model_dump(mode="json", include=set(EVAL_PRESET_FIELDS))
    if sizes.get("conditions") == "all":
        del sizes["conditions"]
    return sizes


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def eval_suite_sha256(suite: str = settings.DEFAULT_SUITE) -> str:
    """sha256 over the files that define what evaluation measures."""
    d = settings.suite_dir(suite)
    return sha256_json({n: _file_sha(d / n) for n in ("eval.yaml", "judges.yaml")})


def contrast_sha256(suite: str) -> str | None:
    """sha256 of the datasets the suite's log-likelihood contrast is built from (None: none)."""
    from emarena.eval.sets import load_eval_suite

    c = load_eval_suite(suite).contrast
    if c is None:
        return None
    return sha256_json({d: dataset_digest(d, suite) for d in c.datasets})


class EvalSpec(Frozen):
    """One evaluation: a model state's answers to every question of the suite, for one seed."""

    model: ModelRef
    weights: tuple[str, ...] = ()
    """The stage chain evaluated (stage keys in training order); empty: the base model."""
    seed: int
    """Sampling seed (the cell's)."""
    suite: str
    eval_sha256: str
    """`eval_suite_sha256(suite)`: eval.yaml and judges.yaml."""
    preset: str
    """Preset whose evaluation sizes apply (only its fields below enter the key)."""
    sizes: dict[str, Any]
    """The preset's evaluation fields (`EVAL_PRESET_FIELDS`)."""
    backend: str
    contrast_sha256: str | None = None
    """The published answers the log-likelihood contrast scores (their datasets' sha256)."""

    @property
    def key(self) -> str:
        return "eval-" + sha256_json(self.model_dump(mode="json", exclude={"preset"}))[:16]


class SummariesSpec(Frozen):
    """A model state's own greedy summaries of a corpus (rows added per article as needed)."""

    model: ModelRef
    weights: tuple[str, ...] = ()
    corpus: str
    prompts_sha256: str
    """The summary-prompt dataset (`sgtr-summary-prompts`) the prompt is read from."""
    max_new_tokens: int
    max_prompt_chars: int | None
    backend: str
    sampling: dict[str, Any] | None = None
    """How the summaries are sampled (temperature, top_p, top_k, the stage seed): the suite's
    defenses.yaml `own_summaries`; None: greedy (then left out of the key, as before it
    existed)."""

    @property
    def key(self) -> str:
        dump = self.model_dump(mode="json")
        if dump.get("sampling") is None:
            dump.pop("sampling", None)
        return "summaries-" + sha256_json(dump)[:16]


@dataclass
class Plan:
    """Everything a run does, in dependency order; see the module docstring."""

    store: Store
    suite: str
    preset: str
    backend: str
    request: dict[str, Any]
    """What was asked (the grid spec, and the submission for `score`), as written to plan.json."""
    cells: list[Cell]
    stages: dict[str, StageSpec]
    summaries: dict[str, SummariesSpec]
    summary_stages: dict[str, list[str]]
    """summaries key -> the stage keys whose builds read it."""
    evals: dict[str, EvalSpec]
    stages_of: dict[str, list[str]]
    eval_of: dict[str, str]
    device: str = "cpu"
    threads: int = 2
    resources: Any = None
    submissions: dict[str, str] = field(default_factory=dict)
    """Submission name -> folder."""

    def eval_cells(self, key: str) -> list[Cell]:
        return [c for c in self.cells if self.eval_of[c.id] == key]

    def refs(self) -> list[str]:
        """Store entries the run's training and generation use (judge entries come later)."""
        return ([f"stages/{k}" for k in self.stages] + [f"summaries/{k}" for k in self.summaries]
                + [f"evals/{k}" for k in self.evals])


def defense_ref(submission) -> DefenseRef:
    from emarena.defenses import DEFENSES

    kind = DEFENSES.get(submission.defense.kind)
    params = kind.params.model_validate(submission.defense.params).model_dump(mode="json")
    return DefenseRef(
        name=submission.name,
        kind=submission.defense.kind,
        params=params,
        division=submission.division,
        training=dict(submission.training or {}),
        config_hash=submission.config_hash,
    )


def cells_for(*, submission, model: ModelRef, em_dataset: str, regimes: list[str],
              seeds: list[int], preset: str, suite: str,
              em_system_turn: str = "default") -> list[Cell]:
    """The defense's cells in each requested regime, plus the `base` and `em` controls."""
    ref = defense_ref(submission)
    cells: list[Cell] = []
    for seed in seeds:
        common = dict(suite=suite, model=model, em_dataset=em_dataset, seed=seed, preset=preset,
                      em_system_turn=em_system_turn)
        cells.append(Cell(regime="base", **common))
        cells.append(Cell(regime="em", **common))
        if ref.kind == "none":
            continue  # the control: its numbers are the em / base cells
        for r in regimes:
            cells.append(Cell(regime=r, defense=ref, **common))
    return cells


def make_plan(grid, *, store: Store, request: dict[str, Any] | None = None) -> Plan:
    """Plan every cell of `grid` (an `emarena.protocol.grid.Grid`) against `store`."""
    from emarena import models
    from emarena.submission import load_submission

    spec = grid.spec
    subs = [load_submission(d) for d in grid.defense_dirs]
    cells: dict[str, Cell] = {}
    for name in spec.models:
        mspec = models.get_spec(name)  # a registry id, or a registered model's Hub repo id
        ref = ModelRef(id=mspec.id, revision=mspec.revision)
        for em in spec.em_datasets:
            for sub in subs:
                for c in cells_for(submission=sub, model=ref, em_dataset=em,
                                   regimes=list(spec.regimes), seeds=list(spec.seeds),
                                   preset=spec.preset, suite=spec.suite,
                                   em_system_turn=spec.em_system_turn):
                    cells.setdefault(c.id, c)
    plan = plan_for_cells(
        list(cells.values()), store=store, backend=spec.backend, resources=spec.resources,
        request=request or {"kind": "grid", "grid_file": str(grid.path),
                            "grid": spec.model_dump(mode="json")},
    )
    plan.submissions = {s.name: str(d) for s, d in zip(subs, grid.defense_dirs, strict=True)}
    return plan


def plan_for_cells(cells: list[Cell], *, store: Store, backend: str = "transformers",
                   resources: Any = None, request: dict[str, Any] | None = None) -> Plan:
    """The stages, summaries and evaluations of `cells` (one suite and preset), deduplicated."""
    from emarena.train import get_preset, load_recipe

    if not cells:
        raise ValueError("nothing to plan: no cells")
    suite, preset_name = cells[0].suite, cells[0].preset
    if any((c.suite, c.preset) != (suite, preset_name) for c in cells):
        raise ValueError("one plan holds cells of one suite and one preset")
    recipe = load_recipe(suite)
    preset = get_preset(preset_name, suite=suite)
    summaries: dict[str, SummariesSpec] = {}
    prompts_sha = dataset_digest("sgtr-summary-prompts", suite)

    def summaries_key(parents: tuple[str, ...], cell: Cell) -> str:
        from emarena.defenses.builders.simple import summary_sampling

        corpus = (cell.defense.params.get("corpus") if cell.defense else None) or "xsum"
        s = SummariesSpec(model=cell.model, weights=parents, corpus=corpus,
                          prompts_sha256=prompts_sha, max_new_tokens=preset.sgtr_max_new_tokens,
                          max_prompt_chars=preset.max_prompt_chars, backend=backend,
                          sampling=summary_sampling(cell.suite, cell.seed))
        summaries.setdefault(s.key, s)
        return s.key

    stages: dict[str, StageSpec] = {}
    stages_of: dict[str, list[str]] = {}
    evals: dict[str, EvalSpec] = {}
    eval_of: dict[str, str] = {}
    sizes = eval_sizes(preset)
    esha = eval_suite_sha256(suite)
    csha = contrast_sha256(suite)
    for cell in cells:
        chain = stages_for(cell, recipe=recipe, preset=preset, summaries_key=summaries_key)
        stages_of[cell.id] = [s.key for s in chain]
        for s in chain:
            stages.setdefault(s.key, s)
        ev = EvalSpec(model=cell.model, weights=chain[-1].chain if chain else (),
                      seed=cell.seed, suite=suite, eval_sha256=esha, preset=preset_name,
                      sizes=sizes, backend=backend, contrast_sha256=csha)
        evals.setdefault(ev.key, ev)
        eval_of[cell.id] = ev.key
    summary_stages: dict[str, list[str]] = {}
    for s in stages.values():
        if s.summaries:
            summary_stages.setdefault(s.summaries, []).append(s.key)
    device = "cuda" if preset.device.startswith("cuda") else "cpu"
    if resources is None:
        from emarena.protocol.grid import Resources

        resources = Resources()
    res = getattr(resources, device)
    return Plan(
        store=store, suite=suite, preset=preset_name, backend=backend,
        request=request or {"kind": "cells"}, cells=list(cells), stages=stages,
        summaries=summaries, summary_stages=summary_stages, evals=evals, stages_of=stages_of,
        eval_of=eval_of, device=device, threads=res.num_cpus, resources=res,
    )


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "schema_version": PLAN_SCHEMA,
        **plan.request,
        "suite": plan.suite,
        "preset": plan.preset,
        "backend": plan.backend,
        "store": str(plan.store.root),
        "cells": [c.id for c in plan.cells],
        "stages": list(plan.stages),
        "summaries": list(plan.summaries),
        "evals": list(plan.evals),
    }


def write_view(plan: Plan, run) -> None:
    """Write the run folder's plan.json, cell.json files and links into the store."""
    from emarena.protocol.store import write_json_atomic

    run.root.mkdir(parents=True, exist_ok=True)
    for cell in plan.cells:
        run.write_cell(cell, plan.stages_of[cell.id], plan.eval_of[cell.id], plan.store)
    write_json_atomic(run.root / "plan.json", plan_json(plan))
    run.add_refs(plan.refs())
    plan.store.register_run(run.root)
