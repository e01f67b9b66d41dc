"""The bodies of the tasks an executor runs, each in a process of its own.

    train      one training stage (`emarena.protocol.stages.train_stage`)
    summaries  a model state's own summaries for SGTR-family builds (generation backend)
    generate   one evaluation job: one engine (one loaded base model) answering every eval
               entry of the job, each model state as a stacked LoRA adapter
    judge      a local judge model scoring eval entries (API judges run in the driver)

Each takes a JSON payload (paths, spec dumps, names) and returns JSON. The local executor runs
them through `emarena.protocol.isolate.run_task` (`python -m emarena.protocol.tasks`); the Ray
executor calls `run(kind, payload)` inside a Ray worker started for that one task
(`max_calls=1`), so in both cases the process that held a model exits after the task.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from emarena.protocol.run import Run
from emarena.protocol.store import Store, read_json, write_json_atomic


def set_threads(n: int) -> int:
    """Set torch's intra-op thread count to `n` explicitly; return what torch reports."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch's OpenMP starts
    import torch

    torch.set_num_threads(n)
    return torch.get_num_threads()


def _context(payload: dict[str, Any]) -> tuple[Store, Run]:
    store = Store.open(payload["store"])
    run = Run(Path(payload["run"]), task_log=True, driver=payload.get("driver"))
    return store, run


def node_id(payload: dict[str, Any]) -> str:
    """Where this task runs: the Ray node id under Ray, else the host name."""
    if payload.get("executor") == "ray":
        try:
            import ray

            return ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - only a label
            pass
    import socket

    return socket.gethostname()


def _preset(payload: dict[str, Any]):
    from emarena.train import get_preset

    return get_preset(payload["preset"], suite=payload["suite"])


# --------------------------------------------------------------------------------------------
# train


def train(payload: dict[str, Any]) -> dict[str, Any]:
    from emarena import models
    from emarena.protocol.stages import StageSpec, train_stage
    from emarena.train import load_recipe

    store, run = _context(payload)
    spec = StageSpec.model_validate(payload["stage"])
    got = set_threads(payload["threads"])
    run.log("task_start", task="train", stage=spec.key, torch_threads=got,
            executor=payload.get("executor", "local"), node=node_id(payload))
    res = train_stage(
        store, spec, base_dir=models.pull(spec.model.id), recipe=load_recipe(payload["suite"]),
        preset=_preset(payload), log=run.log, progress=payload.get("progress"),
    )
    peak = peak_rss_bytes()
    run.log("task_done", task="train", stage=spec.key, peak_rss_bytes=peak)
    return {"stage": res.key, "trained": res.trained, "seconds": round(res.seconds, 3),
            "peak_rss_bytes": peak}


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------------
# stacked adapters of a model state


def stacked_adapter(store: Store, weights: list[str] | tuple[str, ...], tag: str) -> Path | None:
    """One adapter for the stage chain `weights` (None for the base), in the store's tmp/."""
    if not weights:
        return None
    from emarena.train.adapters import stack_adapters

    out = store.root / "tmp" / f"adapter-{tag}-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    return stack_adapters([store.entry("stages", k).path / "adapter" for k in weights], out)


def chain_rank(store: Store, weights: list[str] | tuple[str, ...]) -> int:
    from emarena.train.adapters import adapter_rank

    return sum(adapter_rank(store.entry("stages", k).path / "adapter") for k in weights)


def _engine(payload: dict[str, Any], store: Store, chains: list[tuple[str, ...]]):
    from emarena import models
    from emarena.eval.backends import Engine

    ranks = [chain_rank(store, c) for c in chains if c]
    model_id = payload["model"]
    return Engine(payload["backend"], models.pull(model_id),
                  max_lora_rank=max(ranks) if ranks else None,
                  **(payload.get("backend_options") or {}))


# --------------------------------------------------------------------------------------------
# summaries


def summaries_weights(store: Store, spec) -> dict[str, str | None]:
    """The outputs (sha256) of the stages a summaries entry's rows were generated with."""
    from emarena.protocol.cell import sha256_json

    out = {}
    for k in spec.weights:
        done = store.entry("stages", k).done()
        out[k] = sha256_json(done["outputs"]) if done else None
    return out


def summaries(payload: dict[str, Any]) -> dict[str, Any]:
    from emarena import models
    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext
    from emarena.protocol.plan import SummariesSpec
    from emarena.protocol.stages import StageSpec
    from emarena.registry import import_ref

    store, run = _context(payload)
    spec = SummariesSpec.model_validate(payload["summaries"])
    stages = [StageSpec.model_validate(s) for s in payload["stages"]]
    set_threads(payload["threads"])
    entry = store.entry("summaries", spec.key)
    run.log("summaries_start", summaries=spec.key, stages=[s.key for s in stages])
    t0 = time.time()
    stats: dict[str, Any] = {}
    with store.claim(entry, f"summaries {spec.key}"):
        entry.path.mkdir(parents=True, exist_ok=True)
        weights = summaries_weights(store, spec)
        recorded = read_json(entry.path / "weights.json")
        if recorded is not None and recorded != weights:
            # the stages these summaries were generated with were retrained to other weights
            (entry.path / "own_summaries.jsonl").unlink(missing_ok=True)
            run.log("summaries_discard", summaries=spec.key, reason="weights changed")
        write_json_atomic(entry.path / "weights.json", weights)
        adapter = stacked_adapter(store, spec.weights, spec.key)
        try:
            with _engine({**payload, "model": spec.model.id}, store, [spec.weights]) as engine:
                gen = engine.generator(adapter)
                for s in stages:
                    assert s.defense is not None
                    kind = DEFENSES.get(s.defense.kind)
                    params = kind.params.model_validate(s.defense.params)
                    ctx = BuildContext(
                        em_dataset=s.em_dataset, n_examples=s.n_examples, seed=s.seed,
                        model_id=s.model.id, model_dir=models.pull(s.model.id),
                        work_dir=entry.path, max_new_tokens=spec.max_new_tokens,
                        max_prompt_chars=spec.max_prompt_chars, summaries_dir=entry.path,
                    )
                    assert kind.summarizer is not None
                    summarize = import_ref(kind.summarizer)
                    stats[s.key] = summarize(params, ctx, gen, progress=payload.get("progress"))
        finally:
            if adapter is not None:
                shutil.rmtree(adapter, ignore_errors=True)
    run.log("summaries_done", summaries=spec.key, seconds=round(time.time() - t0, 3),
            stats=stats)
    return {"summaries": spec.key, "stats": stats}


# --------------------------------------------------------------------------------------------
# generate (one evaluation job)


def generate(payload: dict[str, Any]) -> dict[str, Any]:
    from emarena.protocol.evaluate import generate_entry
    from emarena.protocol.plan import EvalSpec

    store, run = _context(payload)
    specs = [EvalSpec.model_validate(e) for e in payload["evals"]]
    got = set_threads(payload["threads"])
    run.log("task_start", task="generate", evals=[s.key for s in specs], torch_threads=got,
            executor=payload.get("executor", "local"), node=node_id(payload))
    preset = _preset(payload)
    done = []
    with _engine({**payload, "model": specs[0].model.id}, store,
                 [s.weights for s in specs]) as engine:
        for spec in specs:
            done.append(generate_entry(store, run, spec, engine, preset=preset,
                                       progress=payload.get("progress")))
    run.log("task_done", task="generate", evals=[s.key for s in specs],
            peak_rss_bytes=peak_rss_bytes())
    return {"evals": done}


# --------------------------------------------------------------------------------------------
# judge (a local judge model; API judges are called from the driver)


def judge(payload: dict[str, Any]) -> dict[str, Any]:
    from emarena.eval.judges import resolve_judge
    from emarena.protocol.evaluate import Templates, judge_entry

    store, run = _context(payload)
    set_threads(payload["threads"])
    j, _ = resolve_judge(payload["judge"])
    templates = Templates(payload["suite"])
    out = []
    for eval_key in payload["evals"]:
        out.append(judge_entry(store, run, eval_key, j, templates))
    return {"judgements": out}


TASKS = {"train": train, "summaries": summaries, "generate": generate, "judge": judge}


def run(kind: str, payload: dict[str, Any]) -> Any:
    """Run task `kind` in this process (a Ray worker's, or the isolated child's)."""
    return TASKS[kind](payload)


def main(argv: list[str]) -> int:
    """`python -m emarena.protocol.tasks KIND PAYLOAD RESULT PARENT_PID` (see isolate.py)."""
    from emarena.protocol.isolate import die_with_parent, error_record
    from emarena.protocol.store import write_json_atomic

    kind, payload_file, result_file, parent = argv[1], argv[2], argv[3], int(argv[4])
    die_with_parent(parent)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    payload = json.loads(Path(payload_file).read_text())
    try:
        value = run(kind, payload)
    except KeyboardInterrupt:
        write_json_atomic(Path(result_file), {"ok": False, "type": "KeyboardInterrupt",
                                              "message": "interrupted", "traceback": ""})
        return 130
    except BaseException as e:  # noqa: BLE001 - reported whole to the parent
        write_json_atomic(Path(result_file), error_record(e))
        from emarena.errors import EmArenaError

        if not isinstance(e, EmArenaError):  # a user-facing error is printed by the parent
            import traceback

            traceback.print_exc()
        return 1
    write_json_atomic(Path(result_file), {"ok": True, "value": value})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
