"""Evaluate the cells of a run: generate, judge, compute metrics, write result records.

    runs/<run>/evals/<eval_key>/generate/   generations.jsonl, choices.jsonl, DONE.json
    runs/<run>/evals/<eval_key>/judge/<judge>/judgements.jsonl, DONE.json
    runs/<run>/cells/<cell_id>/generate -> ../../evals/<eval_key>/generate
    runs/<run>/cells/<cell_id>/judge    -> ../../evals/<eval_key>/judge/<judge>
    runs/<run>/cells/<cell_id>/metrics/ result.json, samples.jsonl, DONE.json

An evaluation is keyed by the weights it evaluates (the cell's last training stage, or the
pinned base model), the evaluation suite files, the preset, the seed and the backend, so cells
with the same weights (e.g. the base model) share their generations. Generation and judging
append rows keyed by id, so a killed run resumes row by row; DONE.json is written when a step
has every row. Judgements also go through the persistent judgement cache keyed by (judge id,
prompt sha256), so re-scoring is free and `emarena rejudge` never regenerates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.protocol.cell import Cell, sha256_json
from emarena.protocol.run import Run
from emarena.protocol.stages import read_done, write_json_atomic

#: Judge requests sent (concurrently) before their results are written: a kill loses at most one
#: batch of judge calls.
JUDGE_BATCH = 16

GENERATE = "generate"
JUDGE = "judge"
METRICS = "metrics"


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def eval_suite_sha256(suite: str = settings.DEFAULT_SUITE) -> str:
    """sha256 over the files that define what evaluation measures."""
    d = settings.suite_dir(suite)
    return sha256_json({n: _file_sha(d / n) for n in ("eval.yaml", "judges.yaml")})


def eval_key(cell: Cell, stage_keys: list[str], *, backend: str) -> str:
    weights = stage_keys[-1] if stage_keys else f"base:{cell.model.id}@{cell.model.revision}"
    return (
        "eval-"
        + sha256_json(
            {
                "weights": weights,
                "suite": cell.suite,
                "eval_sha256": eval_suite_sha256(cell.suite),
                "preset": cell.preset,
                "seed": cell.seed,
                "backend": backend,
            }
        )[:16]
    )


def judge_slug(judge_id: str) -> str:
    from emarena.eval.judges.cache import safe_file_name

    return safe_file_name(judge_id).removesuffix(".jsonl")


def _link(link: Path, target: Path) -> None:
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == rel:
            return
        link.unlink()
    os.symlink(rel, link)


@dataclass
class EvalJob:
    """One evaluation: the cells it serves and where their weights are."""

    key: str
    cell: Cell
    """The first cell with this key (they share model, seed, preset)."""
    cells: list[Cell]
    model_dir: Path

    def dir(self, run: Run) -> Path:
        return run.root / "evals" / self.key


def plan_evals(
    run: Run, cells: list[Cell], stages_of: dict[str, list[str]], base_dir: Path, backend: str
) -> list[EvalJob]:
    jobs: dict[str, EvalJob] = {}
    for cell in cells:
        stages = stages_of[cell.id]
        key = eval_key(cell, stages, backend=backend)
        model_dir = run.stages_dir / stages[-1] / "merged" if stages else base_dir
        job = jobs.setdefault(key, EvalJob(key, cell, [], model_dir))
        job.cells.append(cell)
    return list(jobs.values())


# --------------------------------------------------------------------------------------------
# row counts: a DONE.json records how many rows each file had, so a file damaged since (a
# truncated or corrupt line, which the row store drops when it opens the file) is noticed and
# its step resumes to rewrite the missing rows, instead of metrics counting fewer rows.


def _row_types() -> dict[str, type]:
    from emarena.eval.rows import ChoiceScore, Generation, Judgement

    return {
        "generations.jsonl": Generation,
        "choices.jsonl": ChoiceScore,
        "judgements.jsonl": Judgement,
    }


def _row_counts(folder: Path, names: tuple[str, ...]) -> dict[str, int]:
    from emarena.eval.rows import RowStore

    types = _row_types()
    return {n: len(RowStore(folder / n, types[n])) for n in names if (folder / n).exists()}


def _missing_rows(folder: Path, done: dict) -> list[str]:
    """'<file>: <n> of <m> rows' for each file with fewer rows than its DONE.json recorded."""
    from emarena.eval.rows import RowStore

    types = _row_types()
    out = []
    for name, n in (done.get("rows") or {}).items():
        got = len(RowStore(folder / name, types[name])) if name in types else n
        if got < n:
            out.append(f"{folder / name}: {got} of {n} rows")
    return out


# --------------------------------------------------------------------------------------------
# generate


def run_generate(run: Run, job: EvalJob, *, preset, backend: str, echo=print) -> Path:
    from emarena.eval.generate_stage import run_generation

    gdir = job.dir(run) / GENERATE
    inputs = {"key": job.key, "model_dir": str(job.model_dir)}
    done = read_done(gdir)
    damaged = _missing_rows(gdir, done) if done is not None else []
    if damaged:
        echo(f"  generate {job.key}: rows lost since it finished ({'; '.join(damaged)}); "
             "generating them again")
        run.log("generate_repair", eval=job.key, damaged=damaged)
    if done is None or done.get("inputs") != inputs or damaged:
        (gdir / "DONE.json").unlink(missing_ok=True)
        run.log("generate_start", eval=job.key)
        t0 = time.time()
        stats = run_generation(
            gdir,
            model_id=job.cell.model.id,
            model_dir=job.model_dir,
            preset=preset,
            seed=job.cell.seed,
            backend=backend,
        )
        if not stats["complete"]:
            raise RuntimeError(f"generation for {job.key} did not complete: {stats}")
        write_json_atomic(
            gdir / "DONE.json",
            {
                "inputs": inputs,
                "stats": stats,
                "rows": _row_counts(gdir, ("generations.jsonl", "choices.jsonl")),
                "seconds": round(time.time() - t0, 3),
            },
        )
        run.log("generate_done", eval=job.key, seconds=round(time.time() - t0, 3))
    else:
        echo(f"  generate {job.key}: done, skipped")
    for cell in job.cells:
        _link(run.cells_dir / cell.id / GENERATE, gdir)
    return gdir


# --------------------------------------------------------------------------------------------
# judge


class Templates:
    """Judge prompt templates per generation: upstream rubrics from the pinned question files,
    and our identity-extraction rubrics from judges.yaml."""

    def __init__(self, suite_version: str = settings.DEFAULT_SUITE):
        from emarena.eval.judges.config import load_judges_config
        from emarena.eval.sets import load_eval_suite

        self.suite = load_eval_suite(suite_version)
        self.extraction = {
            name: r.prompt for name, r in load_judges_config().extraction.rubrics.items()
        }
        self._by_set: dict[str, dict[str, dict[str, str | None]]] = {}

    def rubrics(self, eval_set: str) -> dict[str, dict[str, str | None]]:
        from emarena.eval.sets import rubric_prompts

        if eval_set not in self._by_set:
            self._by_set[eval_set] = rubric_prompts(self.suite, eval_set)
        return self._by_set[eval_set]

    def score(self, g) -> dict[str, str]:
        rubs = self.rubrics(g.eval_set).get(g.question_id, {})
        return {r: t for r, t in rubs.items() if t is not None}

    def extract(self, g) -> dict[str, str]:
        rubs = self.rubrics(g.eval_set).get(g.question_id, {})
        return {
            r: self.extraction[r] for r, t in rubs.items() if t is None and r in self.extraction
        }

    def prompt_sha256(self) -> dict[str, str]:
        """sha256 of each rubric's template(s), over every free-form set evaluated."""
        by_rubric: dict[str, set[str]] = {}
        for name, _ in self.suite.free_form_sets():
            for rubs in self.rubrics(name).values():
                for r, t in rubs.items():
                    by_rubric.setdefault(r, set()).add(t if t is not None else self.extraction[r])
        return {
            r: hashlib.sha256("\n\x00\n".join(sorted(ts)).encode()).hexdigest()
            for r, ts in sorted(by_rubric.items())
        }


def run_judge(run: Run, job: EvalJob, judge, templates: Templates, *, echo=print) -> Path:
    from emarena.eval.judges.cache import JudgementCache
    from emarena.eval.judges.run import judge_generations
    from emarena.eval.rows import Generation, Judgement, RowStore

    gdir = job.dir(run) / GENERATE
    jdir = job.dir(run) / JUDGE / judge_slug(judge.id)
    inputs = {"generate": read_done(gdir)["inputs"], "judge": judge.id}  # type: ignore[index]
    done = read_done(jdir)
    damaged = _missing_rows(jdir, done) if done is not None else []
    if damaged:
        echo(f"  judge {job.key}: rows lost since it finished ({'; '.join(damaged)}); "
             "judging them again")
        run.log("judge_repair", eval=job.key, judge=judge.id, damaged=damaged)
    if done is not None and done.get("inputs") == inputs and not damaged:
        echo(f"  judge {job.key} ({judge.id}): done, skipped")
    else:
        (jdir / "DONE.json").unlink(missing_ok=True)
        jdir.mkdir(parents=True, exist_ok=True)
        run.log("judge_start", eval=job.key, judge=judge.id)
        t0 = time.time()
        gens = list(RowStore(gdir / "generations.jsonl", Generation))
        out = RowStore(jdir / "judgements.jsonl", Judgement)
        judge_all = functools.partial(
            judge_generations,
            gens,
            judge,
            out,
            score_templates=templates.score,
            extract_templates=templates.extract,
            cache=JudgementCache(),
            batch_size=JUDGE_BATCH,
        )
        stats = judge_all()
        if stats.failed:
            # Transient failures (HTTP errors, timeouts) are not recorded, so a rerun retries
            # them; after one retry pass they are recorded as unscored with their reason.
            stats = judge_all(record_transient=True)
        write_json_atomic(
            jdir / "DONE.json",
            {
                "inputs": inputs,
                "stats": _plain(stats),
                "rows": _row_counts(jdir, ("judgements.jsonl",)),
                "seconds": round(time.time() - t0, 3),
            },
        )
        run.log("judge_done", eval=job.key, judge=judge.id, seconds=round(time.time() - t0, 3))
    for cell in job.cells:
        _link(run.cells_dir / cell.id / JUDGE, jdir)
    return jdir


def _plain(stats: Any) -> Any:
    """Stats as JSON-ready data. A dataclass's own `as_dict` wins over `dataclasses.asdict`,
    which rebuilds a Counter from its (key, count) pairs and so turns counts into tuple keys."""
    from dataclasses import asdict, is_dataclass

    if hasattr(stats, "as_dict"):
        stats = stats.as_dict()
    elif is_dataclass(stats) and not isinstance(stats, type):
        stats = asdict(stats)
    return json.loads(json.dumps(stats, default=str))


# --------------------------------------------------------------------------------------------
# metrics


def _dataset_digests(ids: list[str]) -> dict[str, str]:
    from emarena import data

    out = {}
    for i in dict.fromkeys(ids):
        ds = data.get_spec(i)
        out[i] = (
            ds.files[0].sha256
            if len(ds.files) == 1
            else sha256_json({f.part: f.sha256 for f in ds.files})
        )
    return out


def eval_dataset_ids(templates: Templates) -> list[str]:
    s = templates.suite
    ids = [s.em_questions.sets[n].dataset for n in s.em_questions.evaluate]
    ids += [fs.dataset for fs in s.identity.sets.values()]
    if s.self_recognition is not None:
        ids += [s.self_recognition.articles, s.self_recognition.summaries]
    ids += [c.dataset for c in (s.capability.truthfulqa, s.capability.mmlu) if c]
    return ids


def _rows(run: Run, cell: Cell):
    from emarena.eval.metrics.tables import RowSet
    from emarena.eval.rows import ChoiceScore, Generation, Judgement, RowStore

    d = run.cells_dir / cell.id
    return RowSet(
        list(RowStore(d / GENERATE / "generations.jsonl", Generation)),
        list(RowStore(d / JUDGE / "judgements.jsonl", Judgement)),
        list(RowStore(d / GENERATE / "choices.jsonl", ChoiceScore)),
        seed=cell.seed,
    )


def run_metrics(
    run: Run,
    cells: list[Cell],
    stages_of: dict[str, list[str]],
    *,
    judge,
    templates: Templates,
    preset,
    backend: str,
    echo=print,
) -> list[Path]:
    """Metrics, deltas vs the `em` control, result.json and samples.jsonl for every cell."""
    from emarena import models
    from emarena.eval.metrics import compute_metrics, deltas
    from emarena.eval.metrics.value import load_thresholds
    from emarena.eval.result import (
        JudgeInfo,
        MetricsConfig,
        Sampling,
        make_provenance,
        make_result,
        write_result,
        write_samples,
    )

    thresholds = load_thresholds()
    suite = templates.suite
    em_sets = [suite.em_questions.primary]
    # Identity metrics read the extraction rubrics of our identity questions (every one asks
    # for both name and creator); Betley's deception set is scored 0-100, not extracted.
    identity_sets = [suite.identity.eval_set]
    judge_info = JudgeInfo(
        id=judge.id,
        official=judge.official,
        describe=judge.describe(),
        prompt_sha256=templates.prompt_sha256(),
    )
    sampling = Sampling(
        temperature=suite.sampling.temperature,
        top_p=suite.sampling.top_p,
        max_new_tokens=preset.max_new_tokens,
        samples_per_question=preset.samples_per_question,
    )
    mconf = MetricsConfig(thresholds=thresholds, n_resamples=1000, rng_seed=0)
    eval_ids = eval_dataset_ids(templates)
    controls = {(c.model.id, c.em_dataset, c.seed): c for c in cells if c.regime == "em"}
    written = []
    for cell in cells:
        mdir = run.cells_dir / cell.id / METRICS
        inputs = {
            "judgements": (read_done(run.cells_dir / cell.id / JUDGE) or {}).get("inputs"),
            "generate": (read_done(run.cells_dir / cell.id / GENERATE) or {}).get("inputs"),
            "eval_sha256": eval_suite_sha256(cell.suite),
        }
        control = controls.get((cell.model.id, cell.em_dataset, cell.seed))
        if control is not None and cell.regime in ("defense", "reversal", "prevention"):
            inputs["control"] = (read_done(run.cells_dir / control.id / JUDGE) or {}).get("inputs")
        done = read_done(mdir)
        if done is not None and done.get("inputs") == inputs:
            written.append(mdir / "result.json")
            continue
        t0 = time.time()
        rows = _rows(run, cell)
        spec = models.get_spec(cell.model.id)
        metrics = compute_metrics(
            rows.generations,
            rows.judgements,
            rows.choices,
            identity=spec.identity,
            thresholds=thresholds,
            em_sets=em_sets,
            identity_sets=identity_sets,
        )
        d = None
        control_id = None
        if control is not None and cell.regime in ("defense", "reversal", "prevention"):
            d = deltas(rows, _rows(run, control), thresholds=thresholds, em_sets=em_sets)
            control_id = control.id
        stage_seconds = {}
        for i, key in enumerate(stages_of[cell.id], start=1):
            sd = read_done(run.stages_dir / key) or {}
            stage_seconds[f"stage{i}"] = sd.get("timings", {}).get("total_seconds", 0.0)
        for step in (GENERATE, JUDGE):
            sd = read_done(run.cells_dir / cell.id / step) or {}
            stage_seconds[step] = sd.get("seconds", 0.0)
        ds_ids = [cell.em_dataset, *eval_ids]
        prov = make_provenance(
            datasets_sha256=_dataset_digests(ds_ids),
            model_revision=cell.model.revision,
            judge=judge_info,
            sampling=sampling,
            seeds={"cell": cell.seed, "bootstrap": mconf.rng_seed},
            preset=cell.preset,
            backend=backend,
            metrics=mconf,
            stage_seconds=stage_seconds,
        )
        result = make_result(
            cell, metrics=metrics, provenance=prov, deltas=d, control_cell_id=control_id
        )
        mdir.mkdir(parents=True, exist_ok=True)
        write_samples(mdir / "samples.jsonl", rows.generations, rows.judgements)
        write_result(mdir / "result.json", result)
        write_json_atomic(
            mdir / "DONE.json", {"inputs": inputs, "seconds": round(time.time() - t0, 3)}
        )
        written.append(mdir / "result.json")
    return written


def evaluate(
    run: Run,
    cells: list[Cell],
    stages_of: dict[str, list[str]],
    *,
    base_dir: Path,
    preset,
    judge_spec: str | None,
    backend: str = "transformers",
    echo=print,
) -> list[Path]:
    """Generate, judge and score every cell; return the result.json paths."""
    from emarena.eval.judges import resolve_judge

    judge, note = resolve_judge(judge_spec)
    echo(f"judge: {judge.id}" + (" (official)" if judge.official else " (unofficial)"))
    if note:
        echo(f"note: {note}")
    run.log("evaluate_start", judge=judge.id, official=judge.official)
    templates = Templates(cells[0].suite)
    jobs = plan_evals(run, cells, stages_of, base_dir, backend)
    for i, job in enumerate(jobs, start=1):
        labels = ", ".join(c.label for c in job.cells)
        echo(f"[eval {i}/{len(jobs)}] {job.key}: {labels}")
        run_generate(run, job, preset=preset, backend=backend, echo=echo)
        run_judge(run, job, judge, templates, echo=echo)
    paths = run_metrics(
        run,
        cells,
        stages_of,
        judge=judge,
        templates=templates,
        preset=preset,
        backend=backend,
        echo=echo,
    )
    run.log("evaluate_done", results=len(paths))
    return paths


def load_run_cells(run: Run) -> tuple[list[Cell], dict[str, list[str]]]:
    """The cells of an existing run (plan order) and their stage keys."""
    from emarena.errors import EmArenaError

    entries = run.read_cells()
    if not entries:
        raise EmArenaError(
            f"{run.root}: no cells found",
            where=str(run.cells_dir),
            fix="run `emarena score` first",
        )
    cells = [Cell.model_validate(e["cell"]) for e in entries]
    return cells, {c.id: e["stages"] for c, e in zip(cells, entries, strict=True)}


def rejudge(run_root: Path, judge_spec: str | None, *, echo=print) -> list[Path]:
    """Re-score a run's existing generations with another judge; never regenerates."""
    from emarena.errors import EmArenaError
    from emarena.eval.judges import resolve_judge
    from emarena.eval.report import write_report
    from emarena.train import get_preset

    run = Run(Path(run_root))
    cells, stages_of = load_run_cells(run)
    judge, note = resolve_judge(judge_spec)
    echo(f"judge: {judge.id}" + (" (official)" if judge.official else " (unofficial)"))
    if note:
        echo(f"note: {note}")
    templates = Templates(cells[0].suite)
    plan = json.loads((run.root / "plan.json").read_text())
    backend = plan.get("backend", "transformers")
    jobs = plan_evals(run, cells, stages_of, Path("."), backend)
    ready = [j for j in jobs if read_done(j.dir(run) / GENERATE) is not None]
    for job in jobs:
        if job not in ready:
            labels = ", ".join(c.label for c in job.cells)
            echo(f"  skipped {labels}: no complete generations (finish them with `emarena score`)")
    if not ready:
        raise EmArenaError(
            f"{run.root}: no evaluation has complete generations to re-judge",
            where=str(run.root / "evals"),
            fix="run the original `emarena score` command (without --no-eval) first",
        )
    for job in ready:
        run_judge(run, job, judge, templates, echo=echo)
    done_cells = [c for j in ready for c in j.cells]
    preset = get_preset(cells[0].preset)
    paths = run_metrics(
        run,
        done_cells,
        stages_of,
        judge=judge,
        templates=templates,
        preset=preset,
        backend=backend,
        echo=echo,
    )
    write_report(run.root, echo=echo)
    return paths
