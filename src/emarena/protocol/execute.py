"""The one executor: run a plan's tasks, locally or on a Ray cluster, and score every cell.

    report = execute(plan, run, executor="local", judge_spec=None, echo=print)

What runs where:
  * training stages, SGTR summaries, evaluation jobs and a local judge are tasks, each in a
    process of its own (`emarena.protocol.tasks`): locally through `isolate.run_task`, on Ray as
    a task of a worker that exits after it (`max_calls=1`). GPU and host memory go back to the
    system between them;
  * an evaluation job is one engine (one vLLM instance, or one transformers model) answering
    for every model state of one base model: the base and each stage chain as a LoRA adapter;
  * an API judge (GPT-4o, any OpenAI-compatible server) runs in this process, in a thread, on
    each eval entry as soon as its generation is done, while the GPU works on the next; a local
    judge model is a task of its own after the generations (it needs the same accelerator);
  * metrics and the report are computed here at the end (arithmetic).

Every step first asks the store whether it is already done, and a task re-checks under its
claim, so reruns, concurrent runs and other grids never redo anything.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emarena.errors import ConfigError, EmArenaError
from emarena.protocol.cell import Cell
from emarena.protocol.plan import Plan
from emarena.protocol.run import Run
from emarena.protocol.stages import is_done

EXECUTORS: tuple[str, ...] = ("local", "ray")


@dataclass
class RunReport:
    """What one `score` / `grid` / worker run did: the one report type of every front-end."""

    run: Path
    cells: list[Cell]
    stages: list[str]
    trained: list[str] = field(default_factory=list)
    """Stages this run trained."""
    reused: list[str] = field(default_factory=list)
    """Stages found done in the store (trained by this run earlier, or by another)."""
    generated: list[str] = field(default_factory=list)
    """Eval entries this run generated."""
    evals_reused: list[str] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def skipped(self) -> list[str]:
        return self.reused


def describe_stage(spec) -> str:
    what = spec.em_dataset if spec.kind == "em" else spec.defense.kind
    after = f" after {spec.parent}" if spec.parent else ""
    return f"{spec.key} ({spec.kind}: {what}{after})"


def _payload(plan: Plan, run: Run, executor: str, **extra: Any) -> dict[str, Any]:
    return {
        "store": str(plan.store.root),
        "run": str(run.root),
        "preset": plan.preset,
        "suite": plan.suite,
        "backend": plan.backend,
        "threads": plan.threads,
        "executor": executor,
        "driver": os.getpid(),
        **extra,
    }


def summaries_needed(plan: Plan, skey: str) -> bool:
    """True unless every article the summaries' stages pair already has its summary (checked
    without a model, so a rerun starts no generation process for nothing)."""
    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext
    from emarena.defenses.builders.sgtr import planned_articles, summary_requests
    from emarena.eval.choice import OWN_SUMMARIES, read_own_summaries
    from emarena.protocol.store import read_json
    from emarena.protocol.tasks import summaries_weights

    spec = plan.summaries[skey]
    entry = plan.store.entry("summaries", skey)
    if read_json(entry.path / "weights.json") != summaries_weights(plan.store, spec):
        return True
    for stage_key in plan.summary_stages[skey]:
        s = plan.stages[stage_key]
        if is_done(plan.store, s):
            continue
        kind = DEFENSES.get(s.defense.kind)  # type: ignore[union-attr]
        params = kind.params.model_validate(s.defense.params)  # type: ignore[union-attr]
        ctx = BuildContext(em_dataset=s.em_dataset, n_examples=s.n_examples, seed=s.seed,
                           model_id=s.model.id, model_dir=None, work_dir=entry.path,
                           max_new_tokens=spec.max_new_tokens,
                           max_prompt_chars=spec.max_prompt_chars, summaries_dir=entry.path)
        articles, corpus = planned_articles(params, ctx)
        system, template, texts = summary_requests(articles, corpus, ctx)
        have = read_own_summaries(entry.path / OWN_SUMMARIES, system, template, texts,
                                  spec.max_new_tokens)
        if len(have) < len(articles):
            return True
    return False


def eval_jobs(plan: Plan, keys: list[str], *, per_seed: bool = False) -> list[list[str]]:
    """Eval entries grouped into jobs: one engine per base model (and per seed with
    `per_seed`, for parallel workers), in plan order."""
    groups: dict[tuple, list[str]] = {}
    for k in keys:
        e = plan.evals[k]
        g = (e.model.id, e.seed) if per_seed else (e.model.id,)
        groups.setdefault(g, []).append(k)
    return list(groups.values())


def is_local_judge(judge) -> bool:
    return str(judge.id).startswith("hf:")


def judge_spec_of(judge) -> str:
    """A spec that makes the same judge in a task process."""
    return str(judge.id).split("?", 1)[0]


# --------------------------------------------------------------------------------------------


def execute(
    plan: Plan,
    run: Run,
    *,
    executor: str = "local",
    address: str | None = None,
    judge_spec: str | None = None,
    evaluate: bool = True,
    echo=print,
) -> RunReport:
    """Run `plan` (train, generate, judge, score) with `executor`; resumable."""
    from emarena import models

    check_executor(executor, address)
    t0 = time.time()
    store = plan.store
    report = RunReport(run=run.root, cells=plan.cells, stages=list(plan.stages))
    run.log("run_start", executor=executor, cells=len(plan.cells), stages=len(plan.stages),
            evals=len(plan.evals), store=str(store.root), torch_threads=plan.threads)
    echo(f"run {run.root}: {len(plan.cells)} cells, {len(plan.stages)} training stages, "
         f"{len(plan.evals)} evaluations; store {store.root}")
    for c in plan.cells:
        echo(f"  cell {c.short_id}  {c.label}")
    # Pull every model once, before any task, so no two tasks convert or download it at once.
    for m in dict.fromkeys(c.model.id for c in plan.cells):
        models.pull(m)

    todo = [s for s in plan.stages.values() if not is_done(store, s)]
    report.reused = [k for k in plan.stages if k not in {s.key for s in todo}]
    for k in report.reused:
        echo(f"  {describe_stage(plan.stages[k])}: done, skipped")

    judge = templates = None
    if evaluate:
        from emarena.eval.judges import resolve_judge
        from emarena.protocol.evaluate import Templates

        judge, note = resolve_judge(judge_spec)
        echo(f"judge: {judge.id}" + (" (official)" if judge.official else " (unofficial)"))
        if note:
            echo(f"note: {note}")
        echo(agreement_line(judge.id))
        templates = Templates(plan.suite)
    if evaluate:
        from emarena.protocol.evaluate import eval_inputs

        eval_todo = [k for k in plan.evals if not plan.store.entry("evals", k).is_done(
            eval_inputs(store, plan.evals[k]))]
    else:
        eval_todo = []
    report.evals_reused = [k for k in plan.evals if k not in eval_todo] if evaluate else []

    judged: dict[str, str] = {}
    if executor == "local":
        _local(plan, run, todo, eval_todo, judge, templates, judged, report, echo)
    else:
        from emarena.protocol.ray_executor import run_on_ray

        run_on_ray(plan, run, todo, eval_todo, judge, templates, judged, report,
                   address=address, echo=echo)
    run.log("run_trained", trained=report.trained, reused=report.reused)
    echo(f"training complete: {len(report.trained)} stage(s) trained, "
         f"{len(report.reused)} reused")

    if evaluate:
        assert judge is not None and templates is not None
        from emarena.eval.report import write_report
        from emarena.protocol.evaluate import run_metrics
        from emarena.train import get_preset

        missing = [k for k in plan.evals if k not in judged]
        if missing:  # a rerun whose generations and judgements were already done
            _judge_in_driver(plan, run, missing, judge, templates, judged, echo)
        report.results = run_metrics(
            store, run, plan.cells, stages_of=plan.stages_of, eval_of=plan.eval_of,
            judgements=judged, judge=judge, templates=templates,
            preset=get_preset(plan.preset, suite=plan.suite), backend=plan.backend,
        )
        write_report(run.root, echo=echo)
        echo(f"report: {run.root / 'report.md'}")
    else:
        echo("evaluation skipped (--no-eval): no result records were written")
    report.seconds = time.time() - t0
    run.log("run_done", seconds=round(report.seconds, 3), results=len(report.results))
    echo(f"done in {report.seconds:.0f} s; `emarena status {run.root}` shows every cell.")
    return report


def check_executor(executor: str, address: str | None) -> None:
    """Refuse a bad --executor / --address before anything is planned or written."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not an executor",
                          fix=f"use {' or '.join(EXECUTORS)}")
    if executor == "local" and address:
        raise ConfigError("--address is only for --executor ray",
                          fix="drop --address or add --executor ray")
    if executor == "ray" and address and address.count(":") == 1 and "://" not in address:
        from emarena.protocol.ray_executor import check_reachable

        check_reachable(address)  # ray.init retries an unreachable address for minutes


def agreement_line(judge_id: str) -> str:
    """The judge's measured agreement with the reference judge, if a calibration exists."""
    try:
        from emarena.eval.judges.calibration import agreement_note
    except ImportError:
        return f"judge agreement with the reference judge: no calibration record for {judge_id}"
    return agreement_note(judge_id)


def _judge_in_driver(plan, run, keys, judge, templates, judged, echo) -> None:
    """Judge eval entries here (API judges), or in one local-judge task (a judge model)."""
    from emarena.protocol.evaluate import judge_entry, judgement_key

    if is_local_judge(judge):
        todo = [k for k in keys if not plan.store.entry(
            "judgements", judgement_key(k, judge.id, templates)).is_done()]
        if todo:
            from emarena.protocol.isolate import run_task

            echo(f"judging {len(todo)} evaluation(s) with the local judge {judge.id}")
            run_task("judge", _payload(plan, run, "local", judge=judge_spec_of(judge),
                                       evals=todo))
        for k in keys:
            judged[k] = judgement_key(k, judge.id, templates)
        return
    for k in keys:
        judged[k] = judge_entry(plan.store, run, k, judge, templates)["judgement"]


def _local(plan, run, todo, eval_todo, judge, templates, judged, report, echo) -> None:
    from emarena.protocol.isolate import run_task

    store = plan.store
    ran_summaries: set[str] = set()
    for i, s in enumerate(todo, start=1):
        if s.summaries and s.summaries not in ran_summaries:
            ran_summaries.add(s.summaries)
            if summaries_needed(plan, s.summaries):
                echo(f"[{i}/{len(todo)}] {s.summaries}: the model's own summaries "
                     f"({plan.backend})")
                run_task("summaries", _payload(
                    plan, run, "local", summaries=plan.summaries[s.summaries].model_dump(
                        mode="json"),
                    stages=[plan.stages[k].model_dump(mode="json")
                            for k in plan.summary_stages[s.summaries]]))
        echo(f"[{i}/{len(todo)}] {describe_stage(s)}: training")
        task = f"train-{s.key}"
        run.clear_failure(task)
        try:
            out = run_task("train", _payload(plan, run, "local",
                                             stage=s.model_dump(mode="json")))
        except EmArenaError as e:
            run.fail(task, e.what, getattr(e, "traceback", ""))
            raise
        run.clear_failure(task)
        (report.trained if out["trained"] else report.reused).append(s.key)
    if judge is None:
        return
    api_judge = not is_local_judge(judge)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge") if api_judge else None
    futures: dict[str, Future] = {}

    pending = set(eval_todo)
    t_jobs = time.time()

    def submit_finished() -> None:
        """Judge every eval entry finished so far (API judge, in a thread): those done before
        this run, and those whose generation this run finished (a DONE.json written since the
        jobs started; an entry found damaged has an old one until it is repaired)."""
        if pool is None:
            return
        from emarena.protocol.evaluate import judge_entry

        for k in plan.evals:
            if k in futures:
                continue
            done = store.entry("evals", k).done()
            if done is not None and (k not in pending or done.get("finished", 0) >= t_jobs):
                futures[k] = pool.submit(judge_entry, store, run, k, judge, templates)

    try:
        submit_finished()
        for job in eval_jobs(plan, eval_todo):
            labels = sorted({c.label for k in job for c in plan.eval_cells(k)})
            echo(f"[eval] {len(job)} evaluation(s) on one engine: {', '.join(labels)}")
            out = run_task("generate", _payload(
                plan, run, "local", evals=[plan.evals[k].model_dump(mode="json") for k in job],
                progress=None), poll=submit_finished)
            report.generated += [e["eval"] for e in out["evals"] if e["generated"]]
            report.evals_reused += [e["eval"] for e in out["evals"] if not e["generated"]]
        submit_finished()
        for k, f in futures.items():
            judged[k] = f.result()["judgement"]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if not api_judge:
        _judge_in_driver(plan, run, list(plan.evals), judge, templates, judged, echo)


def env_for_tasks() -> dict[str, str]:
    """The environment a remote task needs from the driver (paths, offline mode, threads)."""
    keep = ("EMARENA_STORE", "EMARENA_CACHE", "EMARENA_MIRROR", "EMARENA_OFFLINE", "HF_HOME",
            "HF_HUB_OFFLINE", "HF_ENDPOINT", "EMARENA_GITHUB_RAW", "OMP_WAIT_POLICY")
    return {k: os.environ[k] for k in keep if k in os.environ}
