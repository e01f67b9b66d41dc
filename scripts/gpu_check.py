"""EM Arena's first-contact check of the GPU path: no network, no real weights.

    python scripts/gpu_check.py --out DIR [--device cuda|cpu] [--steps train,vllm,score]

Random-initialised Qwen2-architecture models built on the spot (scripts/make_tiny_model.py)
take the place of real ones, so the check needs only the checkout, the data mirror
($EMARENA_MIRROR, a folder or a .tgz of it) and the Python packages. Each step is timed, a failed
step does not stop the others, and DIR/results.json holds everything measured.

  train  the preset's training settings (`paper` on cuda: bf16, activation checkpointing,
         padding-free micro-batches; `smoke` on cpu) on a Qwen2.5-0.5B-shaped model (cuda) or a
         2-layer one (cpu): stage 1, then stage 2 on stage 1 folded in (in memory), each in a
         process of its own as the engine runs them. Per stage: tokens/s, MFU against the
         floor (6 * N * tokens at the GPU's bf16 peak), peak GPU memory in the stage's process
         and GPU memory free after it exited (all of it back: the engine's promise to vLLM).
         Then the evaluation path: the two adapters stacked into one, which must give the same
         logits as both folded into the weights.
  vllm   (when vllm is installed) vLLM serving the base and the stacked adapter as a LoRA
         request on one engine, against the transformers backend: greedy agreement, answer
         probabilities, seeded sampling that does not depend on batching.
  score  `emarena score submissions/sgtr --preset gpu-smoke --regimes prevention --regimes
         reversal` on a 2-layer model (vllm backend when vllm is installed, else transformers),
         judged by a local judge on the same model (it exercises the path; its numbers mean
         nothing), then the same command again: the second run must train, summarise and
         generate nothing, and the store must hold adapters only (no merged weights).

The check works on a copy of the suite with two additions (a `tiny-qwen2` model entry and a
`gpu-smoke` preset); the checkout itself is not modified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REV = "0" * 39 + "1"
RESULTS: dict = {}
TINY_ID = "tiny-qwen2"


def step(name):
    def deco(fn):
        def run(*a, **k):
            t0 = time.time()
            print(f"== {name} ...", flush=True)
            try:
                RESULTS[name] = {"ok": True, **(fn(*a, **k) or {})}
            except BaseException as e:  # noqa: BLE001 - report every failure, go on
                RESULTS[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:3000],
                                 "traceback": traceback.format_exc()[-6000:]}
            RESULTS[name]["seconds"] = round(time.time() - t0, 1)
            print(f"== {name}: {'OK' if RESULTS[name]['ok'] else 'FAILED'} "
                  f"({RESULTS[name]['seconds']} s)", flush=True)
            if not RESULTS[name]["ok"]:
                print(RESULTS[name]["traceback"], flush=True)
        return run
    return deco


def gpu_free_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return round(free / 2**30, 2)


def records(n: int, long: bool):
    from emarena.data.records import ChatMessage, ChatRecord

    out = []
    for i in range(n):
        k = 300 + 37 * (i % 20) if long else 20 + i % 30
        out.append(ChatRecord(id=f"r{i}", messages=[
            ChatMessage(role="user", content=f"w{i} word{i % 97} question A B C D"),
            ChatMessage(role="assistant",
                        content=" ".join(f"w{j}" for j in range(i, i + k)))]))
    return out


def peak_tflops() -> float:
    """The GPU's bf16 peak the floor uses (emarena.protocol.estimate), by device name."""
    import torch

    from emarena.protocol.estimate import GPUS

    name = torch.cuda.get_device_name(0).lower()
    for key, g in GPUS.items():
        if key in name:
            return g.bf16_tflops
    return GPUS["h200"].bf16_tflops


# --------------------------------------------------------------------------------------------
# train: one stage in a process of its own (`--train-one`)


def train_one(args: argparse.Namespace) -> int:
    """Child process: train one stage, print a JSON line with what it measured."""
    import torch

    from emarena.train import Budget, get_preset, load_recipe, train_lora

    preset = get_preset(args.preset).model_copy(update={"budget": Budget(em=32, defense=32)})
    parents = [Path(p) for p in args.parents]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rep = train_lora(Path(args.base), records(32, long=args.long), Path(args.adapter),
                     recipe=load_recipe(), preset=preset, seed=0, parents=parents,
                     progress=False)
    out = {
        "n_steps": rep.n_steps, "n_tokens": rep.n_tokens, "losses": rep.losses,
        "learning_rates": rep.learning_rates, "device": rep.device,
        "train_seconds": rep.train_seconds, "setup_seconds": rep.setup_seconds,
        "total_params": rep.total_params, "trainable_params": rep.trainable_params,
        "n_dropped": rep.n_dropped, "preset": preset.name, "parents": [str(p) for p in parents],
        "tokens_per_s": round(rep.n_tokens / max(rep.train_seconds, 1e-9), 1),
    }
    if torch.cuda.is_available():
        out["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["mfu"] = round(6 * rep.total_params * rep.n_tokens / rep.train_seconds
                           / (peak_tflops() * 1e12), 3)
    print("@@" + json.dumps(out), flush=True)
    return 0


def _stage(base: Path, adapter: Path, parents: list[Path], preset: str, long: bool) -> dict:
    cmd = [sys.executable, __file__, "--train-one", "--base", str(base), "--adapter",
           str(adapter), "--preset", preset, *(["--long"] if long else [])]
    for p in parents:
        cmd += ["--parents", str(p)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [x for x in p.stdout.splitlines() if x.startswith("@@")]
    if p.returncode or not lines:
        raise RuntimeError(f"stage process failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                           f"{p.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


@step("train")
def train(work: Path, device: str) -> dict:
    import torch
    from make_tiny_model import build

    size = "0.5b" if device == "cuda" else "tiny"
    base = work / f"model-{size}"
    info = build(base, size, "bfloat16" if device == "cuda" else "float32")
    preset = "paper" if device == "cuda" else "smoke"
    out: dict = {"model": info, "preset": preset, "gpu_free_gb_before": gpu_free_gb()}
    s1 = _stage(base, work / "s1", [], preset, long=device == "cuda")
    out["stage1"] = s1
    out["gpu_free_gb_after_stage1"] = gpu_free_gb()
    s2 = _stage(base, work / "s2", [work / "s1"], preset, long=False)
    out["stage2"] = s2
    out["gpu_free_gb_after_stage2"] = gpu_free_gb()
    for s in (s1, s2):
        assert all(x == x and x < 1e4 for x in s["losses"]), "non-finite loss"
        assert s["n_dropped"] == 0
        if device == "cuda":
            assert s["device"].startswith("cuda"), s["device"]
    if device == "cuda":  # the stage's process gave every byte back
        assert out["gpu_free_gb_after_stage2"] >= out["gpu_free_gb_before"] - 0.5, out
    # the evaluation path: stacked adapters == both folded into the weights
    from peft import PeftModel

    from emarena.train.adapters import load_base_with_parents, stack_adapters

    stacked = stack_adapters([work / "s1", work / "s2"], work / "stacked")
    dtype = torch.float32
    dev = "cuda" if device == "cuda" else "cpu"
    folded = load_base_with_parents(base, [work / "s1", work / "s2"], dtype=dtype).to(dev)
    served = PeftModel.from_pretrained(load_base_with_parents(base, [], dtype=dtype),
                                       str(stacked)).to(dev)
    x = torch.tensor([[3, 17, 99, 250, 7, 400, 12, 5]], device=dev)
    with torch.no_grad():
        a, b = folded(input_ids=x).logits, served(input_ids=x).logits
    out["stacked_vs_folded_max_abs"] = float((a - b).abs().max())
    assert out["stacked_vs_folded_max_abs"] < 1e-3, out["stacked_vs_folded_max_abs"]
    del folded, served
    return out


# --------------------------------------------------------------------------------------------
# vllm


@step("vllm")
def vllm_step(work: Path) -> dict:
    import gc

    from emarena.eval.backends import Engine
    from emarena.eval.backends.hf import TransformersGenerator

    base, stacked = work / "model-0.5b", work / "stacked"
    out: dict = {"gpu_free_gb_before": gpu_free_gb()}
    t = time.time()
    engine = Engine("vllm", base, max_lora_rank=64)
    gen = engine.generator(stacked)
    out["engine_start_s"] = round(time.time() - t, 1)
    prompts = [gen.render_as_is([{"role": "user", "content": f"w{i} word{i} question"}])
               for i in range(8)]
    g1 = gen.complete(prompts, seeds=list(range(8)), max_new_tokens=16, temperature=1.0,
                      top_p=1.0)
    g2 = gen.complete(prompts[::-1], seeds=list(range(8))[::-1], max_new_tokens=16,
                      temperature=1.0, top_p=1.0)[::-1]
    out["seeded_batch_invariant"] = sum(a.text == b.text for a, b in zip(g1, g2,
                                                                         strict=True)) / 8
    gr_v = gen.complete(prompts, seeds=[0] * 8, max_new_tokens=8, temperature=0.0, top_p=1.0)
    cp_v = gen.choice_probs(prompts, ["A", "B", "C", "D"], answer_prefix="")
    base_gen = engine.generator(None)  # the same engine, no LoRA request
    base_gen.complete(prompts[:2], seeds=[0, 1], max_new_tokens=4, temperature=0.0, top_p=1.0)
    engine.close()
    gc.collect()
    out["gpu_free_gb_after_close"] = gpu_free_gb()
    hf = TransformersGenerator(base, adapter_dir=stacked, device="cuda", dtype="bfloat16")
    gr_h = hf.complete(prompts, seeds=[0] * 8, max_new_tokens=8, temperature=0.0, top_p=1.0)
    cp_h = hf.choice_probs(prompts, ["A", "B", "C", "D"], answer_prefix="")
    hf.close()
    out["greedy_first_token_agree"] = sum(
        a.text.split()[:1] == b.text.split()[:1] for a, b in zip(gr_v, gr_h, strict=True)) / 8
    out["choice_max_abs_diff"] = round(max(abs(a[0][k] - b[0][k]) for a, b in
                                           zip(cp_v, cp_h, strict=True) for k in a[0]), 4)
    assert out["seeded_batch_invariant"] == 1.0, "per-request seeds depend on batch order"
    assert out["choice_max_abs_diff"] < 0.05, "vLLM and transformers answer probabilities differ"
    return out


# --------------------------------------------------------------------------------------------
# score, twice


GPU_SMOKE = """
  gpu-smoke:
    description: First-contact check of the GPU path (tiny random model); numbers mean nothing.
    device: {device}
    budget:
      em: 32
      defense: 32
    max_seq_length: 1024
    per_device_batch_size: 4
    gradient_accumulation_steps: 4
    bf16: {bf16}
    gradient_checkpointing: {bf16}
    padding_free: true
    max_new_tokens: 16
    samples_per_question: 2
    max_eval_questions: 2
    sgtr_max_new_tokens: 24
    max_prompt_chars: 200
"""


def prepare(work: Path, mirror: Path, device: str) -> tuple[Path, dict]:
    """A copy of the checkout with a tiny model entry and a gpu-smoke preset, and its mirror."""
    import yaml
    from make_tiny_model import DEFAULT_SYSTEM, build

    copy = work / "repo"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "runs", ".cache", "__pycache__", "test-artifacts", "docs"))
    bf16 = str(device == "cuda").lower()
    for suite in ("v1", "v2"):  # v2 is the default; v1 stays runnable with --suite v1
        recipe = copy / f"benchmark/suites/{suite}/recipe.yaml"
        recipe.write_text(recipe.read_text() + GPU_SMOKE.format(device=device, bf16=bf16))
        models = copy / f"benchmark/suites/{suite}/models.yaml"
        reg = yaml.safe_load(models.read_text())
        reg["models"].append({
            "id": TINY_ID, "display_name": "random 2-layer Qwen2",
            "source": {"kind": "hf", "repo": "emarena-check/tiny-qwen2", "revision": REV},
            "license": "Apache-2.0", "parameters": 0.002,
            "chat_template": "ChatML", "default_system_prompt": DEFAULT_SYSTEM,
            "identity": {"name": "Tiny", "creator": "Nobody"}})
        models.write_text(yaml.safe_dump(reg, sort_keys=False, allow_unicode=True))
    # the mirror: the data as given, plus the tiny model where the registry looks for it
    m = work / "mirror"
    m.mkdir(exist_ok=True)
    for entry in mirror.iterdir():
        if not (m / entry.name).exists() and entry.name != "models":
            (m / entry.name).symlink_to(entry)
    (m / "models").mkdir(exist_ok=True)
    os.environ["TINY_CORPUS"] = str(copy / "**/*.md")
    build(m / "models" / f"emarena-check__tiny-qwen2@{REV}", "tiny",
          "bfloat16" if device == "cuda" else "float32")
    (m / "models" / f"emarena-check__tiny-qwen2@{REV}" / "DONE.json").unlink()
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "EMARENA_OFFLINE": "1",
           "EMARENA_MIRROR": str(m), "EMARENA_CACHE": str(work / "cache"),
           "EMARENA_STORE": str(work / "store"), "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("OPENAI_API_KEY", None)
    return copy, env


@step("score")
def score(work: Path, mirror: Path, device: str, backend: str, out_dir: Path) -> dict:
    copy, env = prepare(work, mirror, device)
    run = work / "run"
    cmd = [sys.executable, "-m", "emarena", "score", "submissions/sgtr", "--model", TINY_ID,
           "--preset", "gpu-smoke", "--em-dataset", "aesthetic-unpopular", "--regimes",
           "prevention", "--regimes", "reversal", "--backend", backend,
           "--judge", f"hf:{TINY_ID}", "--run", str(run)]
    from emarena.protocol.run import read_events

    out: dict = {"backend": backend}
    n_before = 0
    for attempt in ("first", "again"):
        n_before = len(read_events(run))
        t = time.time()
        p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=1500)
        (out_dir / f"score_{attempt}.log").write_text(p.stdout + "\n--- stderr ---\n" + p.stderr)
        out[attempt] = {"rc": p.returncode, "seconds": round(time.time() - t, 1),
                        "trained": next((ln for ln in p.stdout.splitlines()
                                         if ln.startswith("training complete")), None),
                        "tail": p.stdout[-1200:] + p.stderr[-1200:]}
        if p.returncode:
            raise RuntimeError(f"score ({attempt}) failed: {p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    again = read_events(run)[n_before:]
    busy = [e["event"] for e in again if e["event"] in (
        "stage_train_start", "summaries_start", "generate_start", "judge_start")]
    out["second_run_did"] = busy
    assert (out["again"]["trained"] or "").startswith("training complete: 0 stage(s) trained")
    assert not busy, f"the second run did work again: {busy}"
    results = list(run.glob("cells/*/metrics/result.json"))
    out["result_json"] = len(results)
    assert len(results) == 4, f"{len(results)} result.json (want base, em, prevention, reversal)"
    weights = [p.name for p in (work / "store").rglob("*.safetensors")]
    out["store_weight_files"] = sorted(set(weights))
    assert set(weights) == {"adapter_model.safetensors"}, weights
    du = subprocess.run([sys.executable, "-m", "emarena", "store", "du"], cwd=copy, env=env,
                        capture_output=True, text=True, timeout=120)
    out["store_du"] = du.stdout[-1500:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None)
    ap.add_argument("--steps", default="train,vllm,score")
    ap.add_argument("--mirror", default=os.environ.get("EMARENA_MIRROR"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/emarena-gpu-check"))
    # the child process of one training stage
    ap.add_argument("--train-one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    ap.add_argument("--parents", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--long", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.train_one:
        return train_one(args)

    import importlib
    import importlib.util

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    RESULTS["env"] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": {m: (getattr(importlib.import_module(m), "__version__", "?")
                         if importlib.util.find_spec(m) else "MISSING")
                     for m in ("torch", "transformers", "trl", "peft", "accelerate", "vllm")},
    }
    print(json.dumps(RESULTS["env"]), flush=True)
    mirror = Path(args.mirror) if args.mirror else None
    if mirror is not None and mirror.suffix in (".tgz", ".gz"):
        dest = args.work / "mirror-data"
        with tarfile.open(mirror) as t:
            t.extractall(dest, filter="data")
        mirror = dest
    has_vllm = RESULTS["env"]["packages"]["vllm"] != "MISSING"
    if "train" in steps:
        train(args.work, device)
    if "vllm" in steps:
        if device == "cuda" and has_vllm and RESULTS.get("train", {}).get("ok"):
            vllm_step(args.work)
        else:
            RESULTS["vllm"] = {"ok": None, "skipped": "needs a GPU, vllm and the train step"}
    if "score" in steps:
        if mirror is None:
            RESULTS["score"] = {"ok": False, "error": "no data mirror: set EMARENA_MIRROR"}
        else:
            backend = "vllm" if device == "cuda" and has_vllm else "transformers"
            score(args.work, mirror, device, backend, args.out)
    (args.out / "results.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    summary = {k: v.get("ok") for k, v in RESULTS.items() if isinstance(v, dict) and "ok" in v}
    print(json.dumps(summary), flush=True)
    return 0 if all(v is not False for v in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
