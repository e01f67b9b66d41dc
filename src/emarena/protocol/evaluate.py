"""Evaluation steps, each a store entry: generate, judge, metrics.

    evals/<eval key>/            generations.jsonl, choices.jsonl, own_summaries.jsonl, DONE.json
    judgements/<judgement key>/  judgements.jsonl, DONE.json       (one judge x one eval entry)
    metrics/<metrics key>/       result.json, samples.jsonl, choices.jsonl, DONE.json (a cell)

and in the run folder: cells/<cell id>/generate, judge, metrics -> those entries.

An eval entry is keyed by the model state it evaluates (its stage chain, or the pinned base
model), the evaluation suite files, the preset's evaluation sizes, the seed and the backend
(`EvalSpec`), so every cell with the same weights (the base model, the em control of every
defense) shares one. A judgement entry is keyed by (eval entry, judge id, judge prompts); a
metrics entry by (cell, its judgement entry, its control's judgement entry, the metric code).
Generation and judging append rows keyed by id inside the entry, so a killed step resumes row by
row; DONE.json is written when a step has every row, and records every file's sha256 (a file
damaged since is detected, and the step runs again, regenerating only what was lost).
Judgements also go through the persistent judgement cache keyed by (judge id, prompt sha256),
so re-scoring is free and `emarena rejudge` never regenerates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from emarena import settings
from emarena.protocol.cell import Cell, sha256_json
from emarena.protocol.run import Run
from emarena.protocol.store import Store, read_json

#: Judge requests sent (concurrently) before their results are written: a kill loses at most one
#: batch of judge calls.
JUDGE_BATCH = 16

GENERATE = "generate"
JUDGE = "judge"
METRICS = "metrics"


def judge_slug(judge_id: str) -> str:
    from emarena.eval.judges.cache import safe_file_name

    return safe_file_name(judge_id).removesuffix(".jsonl")


def _row_types() -> dict[str, type]:
    from emarena.eval.rows import ChoiceScore, ContrastScore, Generation, Judgement, OwnSummary

    return {
        "generations.jsonl": Generation,
        "choices.jsonl": ChoiceScore,
        "judgements.jsonl": Judgement,
        "own_summaries.jsonl": OwnSummary,
        "contrast.jsonl": ContrastScore,
    }


def _row_counts(folder: Path, names: tuple[str, ...]) -> dict[str, int]:
    from emarena.eval.rows import RowStore

    types = _row_types()
    return {n: len(RowStore(folder / n, types[n])) for n in names if (folder / n).exists()}


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
# generate (inside a `generate` task: one engine serves every entry of the job)


def eval_inputs(store: Store, spec) -> dict:
    """What an eval entry's DONE.json must record to be reused: its spec and the outputs of the
    stages it evaluates (a stage retrained to other weights never passes for the old one)."""
    from emarena.protocol.stages import weights_sha256

    weights = {k: weights_sha256(store, k) for k in spec.weights}
    return {"eval": spec.model_dump(mode="json"), "weights": weights}


def generate_entry(store: Store, run: Run, spec, engine, *, preset, progress=None) -> dict:
    """Make sure eval entry `spec` is complete; generate what is missing (claimed)."""
    from emarena.eval.generate_stage import run_generation
    from emarena.protocol.tasks import stacked_adapter

    entry = store.entry("evals", spec.key)
    inputs = eval_inputs(store, spec)
    with store.claim(entry, f"generate {spec.key}"):
        ok, why = entry.check(inputs)
        if ok:
            run.log("generate_skip", eval=spec.key)
            return {"eval": spec.key, "generated": False}
        done = entry.done()
        if done is not None and done.get("inputs") != inputs:
            entry.discard("made from other inputs")
        elif done is not None:
            # Damaged since it finished (a cut or garbled row file): resume in place; the row
            # stores drop what is unreadable and only those rows are generated again.
            run.log("generate_repair", eval=spec.key, damaged=why)
            (entry.path / "DONE.json").unlink(missing_ok=True)
        entry.path.mkdir(parents=True, exist_ok=True)
        run.log("generate_start", eval=spec.key, weights=list(spec.weights))
        t0 = time.time()
        adapter = stacked_adapter(store, spec.weights, spec.key)
        try:
            gen = engine.generator(adapter)
            stats = run_generation(
                entry.path, model_id=spec.model.id, model_dir=engine.model_dir,
                adapter_dir=adapter, preset=preset, seed=spec.seed, backend=spec.backend,
                suite=spec.suite, generator=gen, progress=progress,
            )
        finally:
            if adapter is not None:
                shutil.rmtree(adapter, ignore_errors=True)
        if not stats["complete"]:
            raise RuntimeError(f"generation for {spec.key} did not complete: {stats}")
        stats["adapter"] = list(spec.weights)
        entry.write_done(
            inputs, stats=stats, seconds=round(time.time() - t0, 3),
            rows=_row_counts(entry.path, ("generations.jsonl", "choices.jsonl",
                                          "contrast.jsonl")),
        )
        run.log("generate_done", eval=spec.key, seconds=round(time.time() - t0, 3))
    return {"eval": spec.key, "generated": True, "seconds": round(time.time() - t0, 3)}


# --------------------------------------------------------------------------------------------
# judge


class Templates:
    """Judge prompt templates per generation: upstream rubrics from the pinned question files,
    and our identity-extraction rubrics from judges.yaml."""

    def __init__(self, suite_version: str = settings.DEFAULT_SUITE):
        from emarena.eval.judges.config import load_judges_config
        from emarena.eval.sets import load_eval_suite

        self.version = suite_version
        self.suite = load_eval_suite(suite_version)
        self.extraction = {
            name: r.prompt
            for name, r in load_judges_config(suite_version).extraction.rubrics.items()
        }
        self._by_set: dict[str, dict[str, dict[str, str | None]]] = {}

    def rubrics(self, eval_set: str) -> dict[str, dict[str, str | None]]:
        from emarena.eval.sets import rubric_prompts

        if eval_set not in self._by_set:
            self._by_set[eval_set] = rubric_prompts(self.suite, eval_set)
        return self._by_set[eval_set]

    def labels(self, eval_set: str) -> set[str]:
        """Rubrics of `eval_set` its question file asks for a word, not a score."""
        fs = {**self.suite.em_questions.sets, **self.suite.identity.sets}.get(eval_set)
        return set(fs.labels) if fs is not None else set()

    def score(self, g) -> dict[str, str]:
        rubs = self.rubrics(g.eval_set).get(g.question_id, {})
        words = self.labels(g.eval_set)
        return {r: t for r, t in rubs.items() if t is not None and r not in words}

    def extract(self, g) -> dict[str, str]:
        rubs = self.rubrics(g.eval_set).get(g.question_id, {})
        words = self.labels(g.eval_set)
        out = {r: t for r, t in rubs.items() if t is not None and r in words}
        out.update({r: self.extraction[r] for r, t in rubs.items()
                    if t is None and r in self.extraction})
        return out

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


def judgement_key(eval_key: str, judge_id: str, templates: Templates) -> str:
    return "judge-" + sha256_json(
        {"eval": eval_key, "judge": judge_id, "prompts": templates.prompt_sha256()}
    )[:16]


def judge_entry(store: Store, run: Run, eval_key: str, judge, templates: Templates) -> dict:
    """Make sure eval entry `eval_key` is judged by `judge`; judge what is missing (claimed)."""
    from emarena.errors import EmArenaError
    from emarena.eval.judges.cache import JudgementCache
    from emarena.eval.judges.run import judge_generations
    from emarena.eval.rows import Generation, Judgement, RowStore

    source = store.entry("evals", eval_key)
    ok, why = source.check()
    if not ok:
        raise EmArenaError(f"cannot judge {source.name}: {why}", where=str(source.path),
                           fix="rerun the same command: the generation is redone first")
    key = judgement_key(eval_key, judge.id, templates)
    entry = store.entry("judgements", key)
    inputs = {"eval": eval_key, "eval_outputs": sha256_json(source.done()["outputs"]),
              "judge": judge.id, "prompts": templates.prompt_sha256()}
    with store.claim(entry, f"judge {key}"):
        ok, why = entry.check(inputs)
        if ok:
            run.log("judge_skip", eval=eval_key, judge=judge.id, judgement=key)
            return {"eval": eval_key, "judgement": key, "judged": False}
        done = entry.done()
        if done is not None and done.get("inputs") != inputs:
            entry.discard("made from other inputs")
        elif done is not None:
            run.log("judge_repair", eval=eval_key, judge=judge.id, damaged=why)
            (entry.path / "DONE.json").unlink(missing_ok=True)
        entry.path.mkdir(parents=True, exist_ok=True)
        run.log("judge_start", eval=eval_key, judge=judge.id, judgement=key)
        t0 = time.time()
        gens = list(RowStore(source.path / "generations.jsonl", Generation))
        out = RowStore(entry.path / "judgements.jsonl", Judgement)
        judge_all = functools.partial(
            judge_generations, gens, judge, out, score_templates=templates.score,
            extract_templates=templates.extract, cache=JudgementCache(), batch_size=JUDGE_BATCH,
        )
        stats = judge_all()
        if stats.failed:
            # Transient failures (HTTP errors, timeouts) are not recorded, so a rerun retries
            # them; after one retry pass they are recorded as unscored with their reason.
            stats = judge_all(record_transient=True)
        entry.write_done(inputs, stats=_plain(stats), seconds=round(time.time() - t0, 3),
                         rows=_row_counts(entry.path, ("judgements.jsonl",)))
        run.log("judge_done", eval=eval_key, judge=judge.id, judgement=key,
                seconds=round(time.time() - t0, 3))
    return {"eval": eval_key, "judgement": key, "judged": True}


# --------------------------------------------------------------------------------------------
# metrics


def _dataset_digests(ids: list[str]) -> dict[str, str]:
    from emarena.protocol.stages import dataset_digest

    return {i: dataset_digest(i) for i in dict.fromkeys(ids)}


def eval_dataset_ids(templates: Templates) -> list[str]:
    s = templates.suite
    ids = [s.em_questions.sets[n].dataset for n in s.em_questions.evaluate]
    ids += [fs.dataset for fs in s.identity.sets.values()]
    if s.self_recognition is not None:
        ids += [s.self_recognition.articles, s.self_recognition.summaries]
    ids += [c.dataset for c in (s.capability.truthfulqa, s.capability.mmlu) if c]
    ids += [c.fewshot_dataset for c in (s.capability.truthfulqa, s.capability.mmlu)
            if c and c.fewshot_dataset]
    return ids


def metrics_code_sha256() -> str:
    """sha256 of the code that turns rows into a result record: a change recomputes metrics
    (cheap), never reuses numbers made by other code."""
    import emarena.eval.contrast as c
    import emarena.eval.metrics as m
    import emarena.eval.result as r

    files = sorted(Path(m.__file__).parent.glob("*.py")) + [Path(r.__file__), Path(c.__file__)]
    return sha256_json({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files})


def _cost(store: Store, stage_keys: list[str], gen_done: dict, judge_done: dict,
          seconds: dict[str, float], generated: int):
    """The cell's cost from the DONE records of its stages and evaluation steps."""
    from emarena.eval.result import Cost

    stages = [store.entry("stages", k).done() or {} for k in stage_keys]
    gen = (gen_done.get("stats") or {})
    jstats = judge_done.get("stats") or {}
    return Cost(
        device=next((s.get("device") for s in stages if s.get("device")), None)
        or str((gen.get("backend") or {}).get("device", "cpu")),
        seconds={k: float(v) for k, v in seconds.items()},
        tokens_trained=sum(int((s.get("tokens") or {}).get("trained", 0)) for s in stages),
        tokens_generated=int(generated),
        judge_calls=int(jstats.get("called", 0) or 0),
        judge_prompt_chars=int(jstats.get("prompt_chars", 0) or 0),
    )


def contrast_lls(store: Store, eval_key: str, conditions) -> dict[str, dict[str, float]]:
    """{condition (and "all"): {answer id: mean per-token log-likelihood}} of an eval entry;
    "all" averages an answer over the conditions that scored it."""
    import math

    from emarena.eval.rows import ContrastScore, RowStore

    path = store.entry("evals", eval_key).path / "contrast.jsonl"
    out: dict[str, dict[str, float]] = {c: {} for c in conditions}
    if not path.exists():
        return {**out, "all": {}}
    both: dict[str, list[float]] = {}
    for r in RowStore(path, ContrastScore):
        m = r.mean
        if m is None or not math.isfinite(m) or r.condition not in out:
            continue
        out[r.condition][r.answer_id] = m
        both.setdefault(r.answer_id, []).append(m)
    out["all"] = {a: sum(v) / len(v) for a, v in both.items()}
    return out


def contrast_metrics(cset, ll: dict[str, dict[str, float]], base: dict | None,
                     control: dict | None, *, n_resamples: int, seed: int
                     ) -> tuple[dict, dict]:
    """(metrics, deltas) of the log-likelihood contrast, per condition (emarena.eval.contrast)."""
    from emarena.eval.contrast import contrast, paired_difference, pairwise

    metrics: dict = {"loglik_contrast": {}, "loglik_pairwise": {}}
    deltas: dict = {}
    for cond, values in ll.items():
        kw = dict(n_resamples=n_resamples, seed=seed)
        metrics["loglik_contrast"][cond] = contrast(values, cset, **kw).as_metric_value(cond)
        metrics["loglik_pairwise"][cond] = pairwise(values, cset, **kw).as_metric_value(cond)
        for name, other in (("loglik_contrast_vs_base", base), ("loglik_contrast_vs_em",
                                                                 control)):
            if other is not None:
                d = paired_difference(values, other.get(cond, {}), cset, **kw)
                deltas.setdefault(name, {})[cond] = d.as_metric_value(cond)
    return metrics, deltas


def _rows(store: Store, eval_key: str, judgement: str, seed: int):
    from emarena.eval.metrics.tables import RowSet
    from emarena.eval.rows import ChoiceScore, Generation, Judgement, RowStore

    g = store.entry("evals", eval_key).path
    j = store.entry("judgements", judgement).path
    return RowSet(
        list(RowStore(g / "generations.jsonl", Generation)),
        list(RowStore(j / "judgements.jsonl", Judgement)),
        list(RowStore(g / "choices.jsonl", ChoiceScore)),
        seed=seed,
    )


def run_metrics(
    store: Store,
    run: Run,
    cells: list[Cell],
    *,
    stages_of: dict[str, list[str]],
    eval_of: dict[str, str],
    judgements: dict[str, str],
    judge,
    templates: Templates,
    preset,
    backend: str,
) -> list[Path]:
    """Metrics, deltas vs the `em` control, result.json and samples.jsonl for every cell
    (`judgements`: eval key -> judgement key). Returns the run's result.json paths."""
    from emarena import models
    from emarena.eval.metrics import compute_metrics, deltas
    from emarena.eval.metrics.value import load_thresholds
    from emarena.eval.result import (
        JudgeInfo,
        MetricsConfig,
        Sampling,
        make_provenance,
        make_result,
        write_choices,
        write_result,
        write_samples,
    )

    thresholds = load_thresholds(templates.version)  # the suite's rule, operators included
    suite = templates.suite
    em_sets = [suite.em_questions.primary]
    # Identity metrics read the extraction rubrics of our identity questions (every one asks
    # for both name and creator); Betley's deception set is scored 0-100, not extracted.
    identity_sets = [suite.identity.eval_set]
    judge_info = JudgeInfo(
        id=judge.id, official=judge.official, describe=judge.describe(),
        prompt_sha256=templates.prompt_sha256(), mode=getattr(judge, "mode", "logprobs"),
    )
    sampling = Sampling(
        temperature=suite.sampling.temperature, top_p=suite.sampling.top_p,
        top_k=suite.sampling.top_k,
        max_new_tokens=preset.max_new_tokens, samples_per_question=preset.samples_per_question,
    )
    mconf = MetricsConfig(thresholds=thresholds, n_resamples=1000, rng_seed=0)
    eval_ids = eval_dataset_ids(templates)
    code = metrics_code_sha256()
    controls = {(c.model.id, c.em_dataset, c.seed): c for c in cells if c.regime == "em"}
    bases = {(c.model.id, c.seed): c for c in cells if c.regime == "base"}
    cset = None
    if suite.contrast is not None:
        from emarena.eval.generate_stage import contrast_set

        cset = contrast_set(suite, preset)
    written = []
    for cell in cells:
        ev = eval_of[cell.id]
        jkey = judgements[ev]
        control = controls.get((cell.model.id, cell.em_dataset, cell.seed))
        with_control = control is not None and cell.regime in ("defense", "reversal",
                                                               "prevention")
        cjkey = judgements[eval_of[control.id]] if with_control else None
        base_cell = bases.get((cell.model.id, cell.seed))
        inputs = {"cell": cell.id, "judgement": jkey, "control_judgement": cjkey,
                  "base_eval": eval_of[base_cell.id] if base_cell else None,
                  "code": code, "thresholds": thresholds.model_dump(mode="json")}
        key = "metrics-" + sha256_json(inputs)[:16]
        entry = store.entry("metrics", key)
        if not entry.is_done(inputs):
            with store.claim(entry, f"metrics {key}"):
                if not entry.is_done(inputs):
                    entry.discard("incomplete or damaged")
                    t0 = time.time()
                    rows = _rows(store, ev, jkey, cell.seed)
                    spec = models.get_spec(cell.model.id)
                    metrics = compute_metrics(
                        rows.generations, rows.judgements, rows.choices,
                        identity=spec.identity, thresholds=thresholds, em_sets=em_sets,
                        identity_sets=identity_sets,
                    )
                    if judge_info.mode == "text":  # the release's own rule, beside the suite's
                        from emarena.eval.metrics.release_plot import (
                            RELEASE_PLOT,
                            release_plot_from_rows,
                        )

                        metrics[RELEASE_PLOT] = release_plot_from_rows(
                            rows.generations, rows.judgements, em_sets[0],
                            n_resamples=mconf.n_resamples, rng_seed=mconf.rng_seed)
                    for fs_name in suite.em_questions.evaluate:  # deception-factual (v2)
                        from emarena.eval.metrics.factual import FACTUAL, RUBRIC, factual_accuracy

                        if RUBRIC in suite.em_questions.sets[fs_name].labels:
                            metrics[FACTUAL] = factual_accuracy(
                                rows.generations, rows.judgements, fs_name,
                                n_resamples=mconf.n_resamples, rng_seed=mconf.rng_seed)
                    d = None
                    contrast_d: dict = {}
                    if cset is not None:
                        conds = list(suite.for_preset(preset, spec.default_system_prompt)
                                     .conditions)
                        base_ll = (contrast_lls(store, eval_of[base_cell.id], conds)
                                   if base_cell is not None and cell.regime != "base"
                                   else None)
                        ctl_ll = (contrast_lls(store, eval_of[control.id], conds)
                                  if with_control else None)
                        cm, contrast_d = contrast_metrics(
                            cset, contrast_lls(store, ev, conds), base_ll, ctl_ll,
                            n_resamples=mconf.n_resamples, seed=suite.contrast.seed)
                        metrics = {**metrics, **cm}
                    if with_control:
                        assert control is not None and cjkey is not None
                        d = deltas(rows, _rows(store, eval_of[control.id], cjkey, control.seed),
                                   thresholds=thresholds, em_sets=em_sets)
                    stage_seconds, budget = {}, {}
                    for i, skey in enumerate(stages_of[cell.id], start=1):
                        sd = store.entry("stages", skey).done() or {}
                        stage_seconds[f"stage{i}"] = sd.get("timings", {}).get("total_seconds",
                                                                               0.0)
                        made = (sd.get("inputs") or {}).get("stage") or {}
                        if "kind" in made and "n_examples" in made:
                            budget[made["kind"]] = int(made["n_examples"])
                    gen_done = store.entry("evals", ev).done() or {}
                    judge_done = store.entry("judgements", jkey).done() or {}
                    stage_seconds[GENERATE] = gen_done.get("seconds", 0.0)
                    stage_seconds[JUDGE] = judge_done.get("seconds", 0.0)
                    cost = _cost(store, stages_of[cell.id], gen_done, judge_done,
                                 stage_seconds, sum(g.n_tokens for g in rows.generations))
                    prov = make_provenance(
                        datasets_sha256=_dataset_digests([cell.em_dataset, *eval_ids]),
                        model_revision=cell.model.revision, judge=judge_info, sampling=sampling,
                        seeds={"cell": cell.seed, "bootstrap": mconf.rng_seed},
                        preset=cell.preset, backend=backend, metrics=mconf,
                        stage_seconds=stage_seconds, cost=cost, budget=budget,
                    )
                    if contrast_d:
                        d = {**(d or {}), **contrast_d}
                    result = make_result(cell, metrics=metrics, provenance=prov, deltas=d,
                                         control_cell_id=control.id if with_control else None,
                                         headline=suite.headline_for(spec.default_system_prompt))
                    tmp = entry.tmp_dir()
                    write_samples(tmp / "samples.jsonl", rows.generations, rows.judgements)
                    write_choices(tmp / "choices.jsonl", rows.choices, cell.seed)
                    write_result(tmp / "result.json", result)
                    entry.publish(tmp)
                    entry.write_done(inputs, seconds=round(time.time() - t0, 3))
        run.link(cell.id, GENERATE, store.entry("evals", ev).path)
        run.link(cell.id, JUDGE, store.entry("judgements", jkey).path)
        run.link(cell.id, METRICS, entry.path)
        run.add_refs([f"judgements/{jkey}", f"metrics/{key}"])
        written.append(run.cells_dir / cell.id / METRICS / "result.json")
    return written


# --------------------------------------------------------------------------------------------
# reading an existing run


def load_run_cells(run: Run) -> tuple[list[Cell], dict[str, list[str]], dict[str, str]]:
    """The cells of an existing run (plan order), their stage keys and eval keys."""
    from emarena.errors import EmArenaError

    entries = run.read_cells()
    if not entries:
        raise EmArenaError(
            f"{run.root}: no cells found",
            where=str(run.cells_dir),
            fix="run `emarena score` first",
        )
    cells = [Cell.model_validate(e["cell"]) for e in entries]
    stages_of = {c.id: e["stages"] for c, e in zip(cells, entries, strict=True)}
    eval_of = {c.id: e.get("eval", "") for c, e in zip(cells, entries, strict=True)}
    return cells, stages_of, eval_of


def rejudge(run_root: Path, judge_spec: str | None, *, echo=print) -> list[Path]:
    """Re-score a run's existing generations with another judge; never regenerates."""
    from emarena.errors import EmArenaError
    from emarena.eval.judges import resolve_judge
    from emarena.eval.report import write_report
    from emarena.train import get_preset

    run = Run(Path(run_root))
    store = run.store()
    cells, stages_of, eval_of = load_run_cells(run)
    judge, note = resolve_judge(judge_spec)
    echo(f"judge: {judge.id}" + (" (official)" if judge.official else " (unofficial)"))
    if note:
        echo(f"note: {note}")
    templates = Templates(cells[0].suite)
    plan = read_json(run.root / "plan.json") or {}
    backend = plan.get("backend", "transformers")
    ready = [k for k in dict.fromkeys(eval_of.values()) if store.entry("evals", k).is_done()]
    for k in dict.fromkeys(eval_of.values()):
        if k not in ready:
            labels = ", ".join(c.label for c in cells if eval_of[c.id] == k)
            echo(f"  skipped {labels}: no complete generations (finish them with `emarena score`)")
    if not ready:
        raise EmArenaError(
            f"{run.root}: no evaluation has complete generations to re-judge",
            where=str(store.root / "evals"),
            fix="run the original `emarena score` command (without --no-eval) first",
        )
    judgements = {k: judge_entry(store, run, k, judge, templates)["judgement"] for k in ready}
    done_cells = [c for c in cells if eval_of[c.id] in judgements]
    # a defense cell's deltas need its em control judged too
    done_cells = [c for c in done_cells if c.regime in ("base", "em") or any(
        o.regime == "em" and o.seed == c.seed and o.em_dataset == c.em_dataset
        and o.model == c.model and eval_of[o.id] in judgements for o in cells)
        or not any(o.regime == "em" for o in cells)]
    paths = run_metrics(
        store, run, done_cells, stages_of=stages_of, eval_of=eval_of, judgements=judgements,
        judge=judge, templates=templates, preset=get_preset(cells[0].preset, suite=cells[0].suite),
        backend=backend,
    )
    write_report(run.root, echo=echo)
    return paths
