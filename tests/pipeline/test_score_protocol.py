"""`emarena score` end to end on the embedded model (smoke preset), through the shared store.

The session's `canonical` fixture (tests/conftest.py) starts two `emarena score` processes at
once on one fresh store: SGTR (prevention + reversal) and word counting (reversal). Then:
  1. the race: both need the EM stage of (model, EM dataset, seed); it is trained once, by one
     process, and the other waits for its claim and reuses it;
  2. the outputs: adapters exist and moved, the base weights are unchanged, no merged weights
     anywhere, SGTR's data balanced, its two defense stages read one summaries entry (the base
     model's: suite v2);
  3. evaluation of SGTR with a judge on a real OpenAI-compatible server on 127.0.0.1,
     SIGKILLed during judging and rerun: no judge call is repeated for a cached prompt, every
     cell gets a result.json that validates;
  4. word counting evaluated after it: only its own cell is generated and judged; the base and
     em evaluations and judgements are found in the store (trained once, evaluated once);
  5. rejudge with another judge never regenerates; status; `store du` and `store gc`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from emarena.protocol.run import read_events
from tests.conftest import REPO, score_cmd

pytestmark = pytest.mark.slow


def cells(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (run / "cells").glob("*/cell.json")]


def events(*runs: Path) -> list[dict]:
    return [e for r in runs for e in read_events(r)]


def count(evs: list[dict], name: str, field: str) -> Counter:
    return Counter(e[field] for e in evs if e["event"] == name)


def sha_tree(folder: Path) -> dict[str, str]:
    from emarena.data.fetch import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.glob("*.safetensors"))}


def test_two_scores_at_once_train_the_shared_em_stage_once(canonical):
    sgtr, wc = canonical.runs["sgtr"], canonical.runs["word-counting"]
    em_keys = {c["stages"][0] for run in (sgtr, wc) for c in cells(run)
               if c["cell"]["regime"] in ("em", "reversal")}
    assert len(em_keys) == 1, "every em and reversal cell must share one EM stage"
    em = em_keys.pop()
    evs = events(sgtr, wc)
    assert count(evs, "stage_train_start", "stage")[em] == 1, "the EM stage trained twice"
    # the process that lost the race waited for the winner's claim, then found it done
    waited = [e for e in evs if e["event"] == "stage_wait" and e["stage"] == em]
    skipped = [e for e in evs if e["event"] == "stage_skip" and e["stage"] == em]
    reused = "done, skipped" in canonical.logs["sgtr"] + canonical.logs["word-counting"]
    assert waited or skipped or reused, "the second process neither waited nor reused"
    # every stage of both plans is trained exactly once
    planned = {k for run in (sgtr, wc) for c in cells(run) for k in c["stages"]}
    assert count(evs, "stage_train_start", "stage") == Counter({k: 1 for k in planned})


def test_outputs_adapters_moved_base_unchanged_no_merged_weights(canonical):
    from safetensors.torch import load_file

    from emarena import models
    from emarena.protocol.stages import read_data

    store = canonical.store
    base = models.pull("smollm2-135m-q4")
    assert "model.safetensors" in sha_tree(base)
    by_regime = {c["cell"]["regime"]: c for c in cells(canonical.runs["sgtr"])}
    for regime in ("reversal", "prevention"):
        c = by_regime[regime]
        assert len(c["stages"]) == 2
        for key in c["stages"]:
            adapter = store / "stages" / key / "adapter" / "adapter_model.safetensors"
            weights = load_file(adapter)
            lora_b = [t for name, t in weights.items() if "lora_B" in name]
            assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b), key
            # the run folder is a view: its stage links point into the store
            link = canonical.runs["sgtr"] / "cells" / c["id"] / f"stage{c['stages'].index(key) + 1}"
            assert link.resolve() == (store / "stages" / key).resolve()
    # adapters, never merged weights: no weights file in the store but adapters
    weights_files = [p for p in store.rglob("*.safetensors")]
    assert weights_files and all(p.name == "adapter_model.safetensors" for p in weights_files)
    assert not any(p.name == "merged" for p in store.rglob("*") if p.is_dir())
    # SGTR: the model's own summary is in position 1 and 2 equally often, labelled correctly
    for regime in ("reversal", "prevention"):
        key = next(k for k in by_regime[regime]["stages"] if k.startswith("defense-"))
        answers = Counter(r["messages"][-1]["content"].strip() for r in read_data(
            _store(store), key))
        assert set(answers) == {"1", "2"} and answers["1"] == answers["2"], answers
    # suite v2: both SGTR stages read one summaries entry, the base model's (summaries_from:
    # base); suite v1 read two, the base model's and the EM model's
    summaries = sorted(p.name for p in (store / "summaries").iterdir())
    assert len(summaries) == 1


def _store(path: Path):
    from emarena.protocol.store import Store

    return Store(path)


def test_evaluation_killed_during_judging_resumes_without_repeated_calls(canonical, tmp_path):
    from emarena.eval.judges import resolve_judge
    from emarena.eval.judges.cache import CachedJudgement, JudgementCache
    from emarena.eval.result import load_result
    from emarena.eval.rows import RowStore
    from tests.helpers.openai_server import OpenAIServer

    run = canonical.runs["sgtr"]
    env = {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-test-not-a-secret"}
    with OpenAIServer(latency=0.2) as server:
        judge = f"openai:test-judge@{server.url}"  # the port makes the judge id, and so its
        cache_file = JudgementCache().path_for(resolve_judge(judge)[0].id)  # cache, unique
        cmd = score_cmd("sgtr", run, "reversal", "prevention", evaluate=True,
                        store=canonical.store, judge=judge)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        deadline = time.time() + 1800
        while time.time() < deadline and proc.poll() is None:
            ev = [e["event"] for e in read_events(run)]
            judging = ev.count("judge_start") > ev.count("judge_done")
            if judging and cache_file.exists() and cache_file.stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)  # mid-judging, with some judgements cached
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "evaluation ended before judging got going"
        cached = {row.id.split("#")[0] for row in RowStore(cache_file, CachedJudgement)}
        assert cached, "nothing was cached before the kill"
        hits_before = dict(server.hits)
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=1800)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        repeated = [h for h in cached if server.hits[h] > hits_before.get(h, 0)]
        assert repeated == [], f"{len(repeated)} cached prompts were sent to the judge again"
        assert "training complete: 0 stage(s) trained" in out.stdout

    plan = json.loads((run / "plan.json").read_text())
    assert plan["schema_version"] == 2 and plan["kind"] == "score"
    for cell_id in plan["cells"]:
        result = load_result(run / "cells" / cell_id / "metrics" / "result.json")
        assert result.cell_id == cell_id
        mr = result.metrics["misalignment_rate"]["all"]
        assert mr.n > 0 and mr.n_unscored <= mr.n
        assert result.provenance.judge.id.startswith("openai:test-judge")
        assert result.official is False  # smoke preset, test judge
        assert (run / "cells" / cell_id / "metrics" / "samples.jsonl").exists()
    for regime in ("base", "em", "prevention", "reversal"):
        assert regime in out.stdout
    assert (run / "report.md").exists()
    assert "sk-test-not-a-secret" not in "".join(
        p.read_text(errors="ignore") for p in canonical.store.rglob("*.json*") if p.is_file()
    )


def test_second_defense_evaluates_only_its_own_cell(canonical, session_judge):
    """Word counting after SGTR, same judge: base and em are neither generated nor judged again
    (the store holds them), only the word-counting reversal cell is."""
    judge, _ = session_judge
    sgtr, wc = canonical.runs["sgtr"], canonical.runs["word-counting"]
    first = subprocess.run(
        score_cmd("sgtr", sgtr, "reversal", "prevention", evaluate=True, store=canonical.store,
                  judge=judge), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    n_before = len(read_events(wc))
    # the smoke grid (tests/pipeline/test_grid.py) shares this store and may have evaluated the
    # word-counting reversal cell already: then nothing at all is generated here
    done_before = {p.parent.name for p in canonical.store.glob("evals/*/DONE.json")}
    out = subprocess.run(
        score_cmd("word-counting", wc, "reversal", evaluate=True, store=canonical.store,
                  judge=judge), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    new = read_events(wc)[n_before:]
    by_regime = {c["cell"]["regime"]: c for c in cells(wc)}
    generated = count(new, "generate_start", "eval")
    judged = count(new, "judge_start", "eval")
    rev = by_regime["reversal"]["eval"]
    assert set(generated) <= {rev} and set(judged) <= {rev}, (generated, judged)
    if rev not in done_before:
        assert set(generated) == set(judged) == {rev}
    assert (canonical.store / "evals" / by_regime["reversal"]["eval"] / "DONE.json").exists()
    for regime in ("base", "em"):  # the same entries as SGTR's run
        assert by_regime[regime]["eval"] in {c["eval"] for c in cells(sgtr)}
        a = (wc / "cells" / by_regime[regime]["id"] / "metrics").resolve()
        b = (sgtr / "cells" / by_regime[regime]["id"] / "metrics").resolve()
        assert a == b, f"{regime}: two metrics entries for one cell"
    assert not count(new, "stage_train_start", "stage")


def test_rejudge_rescores_without_regenerating(canonical):
    from emarena.eval.result import load_result
    from tests.helpers.openai_server import OpenAIServer

    run = canonical.runs["sgtr"]
    plan = json.loads((run / "plan.json").read_text())
    gens = {p: p.stat().st_mtime_ns for p in canonical.store.glob("evals/*/generations.jsonl")}
    assert gens
    env = {**os.environ, "EMARENA_JUDGE_API_KEY": "sk-test-not-a-secret"}
    with OpenAIServer() as server:
        judge = f"openai:second-judge@{server.url}"
        out = subprocess.run(
            [sys.executable, "-m", "emarena", "rejudge", str(run), "--judge", judge],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert server.total > 0
    assert {p: p.stat().st_mtime_ns for p in gens} == gens, "rejudge regenerated answers"
    for cell_id in plan["cells"]:
        result = load_result(run / "cells" / cell_id / "metrics" / "result.json")
        assert result.provenance.judge.id.startswith("openai:second-judge")


def test_status_shows_every_cell_done(canonical):
    out = subprocess.run(
        [sys.executable, "-m", "emarena", "status", str(canonical.runs["sgtr"])],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("done") >= 5
    assert "failed" not in out.stdout and "interrupted" not in out.stdout


def test_store_du_and_gc(canonical, tmp_path):
    """du: each run's entries and bytes, shared ones counted once; gc: a deleted run's own
    entries go, the ones another run uses stay. On a copy of the session's store (hard links),
    so other tests keep theirs."""
    import shutil

    from emarena.protocol.store import Store, collect, usage
    from tests.conftest import seed_store

    src = Store(canonical.store)
    store = Store(tmp_path / "store")
    seed_store(src.root, store.root, [e.name for e in src.entries()])
    views = {}
    for name, run in canonical.runs.items():
        views[name] = tmp_path / name
        shutil.copytree(run, views[name], symlinks=True)
        store.register_run(views[name])
    out = subprocess.run([sys.executable, "-m", "emarena", "store", "du", "--store",
                          str(store.root)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    assert str(views["sgtr"]) in out.stdout and "stages" in out.stdout
    use = {u.run: u for u in usage(store).runs}
    sgtr, wc = use[views["sgtr"]], use[views["word-counting"]]
    assert 0 < sgtr.own_bytes < sgtr.bytes  # it shares the EM stage and the controls
    wc_only = {n for n in wc.entries} - set(sgtr.entries)
    assert wc_only and all(n.split("/")[0] in ("stages", "evals", "judgements", "metrics")
                           for n in wc_only)
    assert set(collect(store, dry_run=True)["removed"]) <= {
        n for n in (e.name for e in store.entries()) if n not in wc.entries + sgtr.entries}
    shutil.rmtree(views["word-counting"])
    res = collect(store)
    assert str(views["word-counting"]) in res["forgotten_runs"]
    left = {e.name for e in store.entries()}
    assert not wc_only & left, "gc kept entries only the deleted run used"
    assert set(sgtr.entries) <= left, "gc removed entries a live run uses"
