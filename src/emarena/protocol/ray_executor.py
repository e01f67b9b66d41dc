"""The Ray executor: the plan's tasks as Ray tasks on an existing cluster.

Every training stage, summaries generation, evaluation job (one per base model and seed, so
seeds run in parallel on several GPUs) and local-judge pass is one Ray task, calling the same
task body as the local executor (`emarena.protocol.tasks.run`) in a worker process that exits
after it (`max_calls=1`), so the next task on that GPU starts with all of its memory. A task
takes the tasks it depends on as arguments, so Ray starts it only once they are done.

What each task gets:
  * code and environment: a `runtime_env` with this emarena package (`py_modules`, so nodes
    need only the dependencies), the driver's EMARENA_* / HF_* paths, and
    `VLLM_WORKER_MULTIPROC_METHOD=spawn` (vLLM must not fork inside a Ray worker);
  * resources: the grid's `resources.<device>` CPUs and GPUs, and a `memory` request sized from
    the model (`task_memory_bytes`): loading a checkpoint maps it into host memory, so a task of
    a 32B model asks for ~70 GB and Ray never puts two of them on one 128 GB node;
  * the store: every node must see the store, the run folder and the model cache at the same
    paths (a shared file system); claims make two workers never train the same stage twice.

Judging: an API judge runs in the driver, in a thread, on each eval entry as soon as its
generation task finishes (`ray.wait`), while other tasks run. A failed task is reported whole
(its traceback) once every other task has finished; finished work is kept.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from emarena.errors import EmArenaError

#: Host memory a task reserves beyond the model's bf16 checkpoint (Python, torch, CUDA context).
TASK_OVERHEAD_BYTES = 6 * 2**30


def task_memory_bytes(model_id: str, device: str) -> int:
    """Host memory to request for a task of `model_id`: its checkpoint (bf16 on GPU, fp32 on
    CPU) plus overhead. Loading maps the safetensors files into memory page by page."""
    from emarena import models

    params = models.get_spec(model_id).parameters * 1e9
    per_param = 2 if device == "cuda" else 4
    return int(params * per_param + TASK_OVERHEAD_BYTES)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise EmArenaError(
            f"--address {address}: no Ray cluster answers there ({e})",
            fix="start one (`ray start --head --port=PORT`) and pass HOST:PORT of its head node",
        ) from None


def package_for_workers(tmp: Path) -> Path:
    """This emarena, laid out as its wheel is (the suite under `emarena/benchmark/`), in `tmp`:
    what `py_modules` ships, so a node runs exactly the driver's code and suite."""
    import shutil

    import emarena
    from emarena import settings

    src = Path(emarena.__file__).parent
    out = tmp / "emarena"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    bench = settings.benchmark_root()
    if not (out / "benchmark").exists():
        shutil.copytree(bench, out / "benchmark",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return out


def runtime_env(tmp: Path) -> dict[str, Any]:
    from emarena.protocol.execute import env_for_tasks

    env = {**env_for_tasks(), "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    return {"py_modules": [str(package_for_workers(tmp))], "env_vars": env}


def run_on_ray(plan, run, todo, eval_todo, judge, templates, judged, report, *, address, echo
               ) -> None:
    """Submit the missing tasks of `plan`; wait for all; judge (API) as generations finish."""
    try:
        import ray
    except ImportError:
        raise EmArenaError(
            "--executor ray needs the `ray` package, which is not installed",
            fix="pip install 'emarena[ray]'",
        ) from None
    import tempfile

    from emarena.protocol.execute import (
        _judge_in_driver,
        _payload,
        describe_stage,
        eval_jobs,
        is_local_judge,
        judge_spec_of,
        summaries_needed,
    )

    res = plan.resources
    shipped = tempfile.TemporaryDirectory(prefix="emarena-ray-")
    try:
        ray.init(address=address or "auto", log_to_driver=False, configure_logging=False,
                 runtime_env=runtime_env(Path(shipped.name)))
    except (ConnectionError, RuntimeError, ValueError) as e:
        shipped.cleanup()
        raise EmArenaError(
            f"cannot connect to a Ray cluster at {address or 'auto'}: {e}",
            fix="start one (`ray start --head`) and pass its address with --address HOST:PORT",
        ) from None
    pool = None
    try:
        total = ray.cluster_resources()
        if total.get("CPU", 0) < res.num_cpus or total.get("GPU", 0) < res.num_gpus:
            raise EmArenaError(
                f"the Ray cluster has {total.get('CPU', 0):g} CPU / {total.get('GPU', 0):g} GPU, "
                f"but each task asks for {res.num_cpus} CPU / {res.num_gpus:g} GPU "
                f"({plan.device} preset)",
                fix=f"lower resources.{plan.device} in the grid file or add nodes",
            )
        remote = ray.remote(max_calls=1, max_retries=0)(_task)

        def opts(name: str, model_id: str) -> dict[str, Any]:
            mem = task_memory_bytes(model_id, plan.device)
            if mem > total.get("memory", mem):
                mem = int(total["memory"])  # one node's worth: the task then runs alone
            return {"name": name, "num_cpus": res.num_cpus, "num_gpus": res.num_gpus,
                    "memory": mem}

        refs: dict[str, Any] = {}
        what: dict[Any, str] = {}
        summaries_refs: dict[str, Any] = {}
        for s in todo:
            deps = [refs[p] for p in s.parents if p in refs]
            if s.summaries:
                if s.summaries not in summaries_refs and summaries_needed(plan, s.summaries):
                    sdeps = [refs[p] for p in plan.summaries[s.summaries].weights if p in refs]
                    payload = _payload(plan, run, "ray",
                                       summaries=plan.summaries[s.summaries].model_dump(
                                           mode="json"),
                                       stages=[plan.stages[k].model_dump(mode="json")
                                               for k in plan.summary_stages[s.summaries]])
                    r = remote.options(**opts(f"summaries:{s.summaries}", s.model.id)).remote(
                        "summaries", payload, *sdeps)
                    summaries_refs[s.summaries] = r
                    what[r] = f"summaries {s.summaries}"
                if s.summaries in summaries_refs:
                    deps.append(summaries_refs[s.summaries])
            r = remote.options(**opts(f"train:{s.key}", s.model.id)).remote(
                "train", _payload(plan, run, "ray", stage=s.model_dump(mode="json")), *deps)
            refs[s.key] = r
            what[r] = f"stage {describe_stage(s)}"
            echo(f"submitted {describe_stage(s)}")
        gen_refs: dict[Any, list[str]] = {}
        if judge is not None:
            for job in eval_jobs(plan, eval_todo, per_seed=True):
                deps = list(dict.fromkeys(refs[k] for e in job for k in plan.evals[e].weights
                                          if k in refs))
                payload = _payload(plan, run, "ray",
                                   evals=[plan.evals[k].model_dump(mode="json") for k in job])
                r = remote.options(**opts(f"generate:{job[0]}", plan.evals[job[0]].model.id)
                                   ).remote("generate", payload, *deps)
                gen_refs[r] = job
                what[r] = "evaluation " + ", ".join(
                    sorted({c.label for k in job for c in plan.eval_cells(k)}))
        api = judge is not None and not is_local_judge(judge)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge") if api else None
        futures = {}
        if api:
            from emarena.protocol.evaluate import judge_entry

            for k in plan.evals:  # generations already done before this run
                if k not in eval_todo:
                    futures[k] = pool.submit(judge_entry, plan.store, run, k, judge, templates)
        failed: list[str] = []
        pending = list(what)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                out = ray.get(ready[0])
            except Exception as e:  # a task's error (RayTaskError): its traceback, whole
                failed.append(f"{what[ready[0]]}:\n{e}")
                echo(f"failed: {what[ready[0]]}")
                continue
            if out.get("stage") is not None:
                (report.trained if out["trained"] else report.reused).append(out["stage"])
            for e in out.get("evals", []):
                (report.generated if e["generated"] else report.evals_reused).append(e["eval"])
                if api:
                    from emarena.protocol.evaluate import judge_entry

                    futures[e["eval"]] = pool.submit(judge_entry, plan.store, run, e["eval"],
                                                     judge, templates)
            echo(f"finished {what[ready[0]]}")
        for k, f in futures.items():
            judged[k] = f.result()["judgement"]
        if failed:
            raise EmArenaError(
                f"{len(failed)} Ray task(s) failed; finished work is kept in the store:\n"
                + "\n".join(failed),
                where=str(run.root / "events.jsonl"),
                fix=f"see `emarena status {run.root}`, fix the cause, rerun the same "
                "command (it resumes)",
            )
        if judge is not None and not api:
            todo_j = [k for k in plan.evals]
            r = remote.options(**opts("judge", plan.cells[0].model.id)).remote(
                "judge", _payload(plan, run, "ray", judge=judge_spec_of(judge), evals=todo_j))
            ray.get(r)
            _judge_in_driver(plan, run, todo_j, judge, templates, judged, echo)
        order = list(plan.stages)
        report.trained.sort(key=order.index)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        ray.shutdown()
        shipped.cleanup()


def _task(kind: str, payload: dict[str, Any], *deps: Any) -> Any:
    """A Ray task: the same body as the local executor's, in this (fresh) worker process."""
    from emarena.protocol.tasks import run

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run(kind, payload)
