"""What a plan costs on one GPU: GPU-hours, disk and memory peaks, against the compute floor.

    emarena grid benchmark/suites/v1/grids/paper.yaml --plan --estimate [--gpu h200]

Counts come from the plan itself (every unique stage, summaries generation and evaluation: what
the store would hold once) and from the data: tokens per training example are measured on the
stage's data (the EM dataset, or the defense builder's records; SGTR's own summaries, which do
not exist yet, are counted at the other source's summary length), at `CHARS_PER_TOKEN`
characters per token; evaluation requests are the suite's questions, samples and choice items.

The floor is physics, the estimate is the design:
  * training floor   6 * N * tokens at the GPU's bf16 peak (forward 2N, backward 2N for the
                     activation gradients of the frozen weights, 2N more for recomputed
                     activations; LoRA's own weight gradients are negligible);
  * training est.    the floor at `TRAIN_MFU` of that peak (padding-free micro-batches: no
                     flops on pad tokens), plus per-stage fixed costs: a process start, loading
                     the bf16 checkpoint from disk, trainer set-up, saving the adapter;
  * generation floor max(compute: 2 * N * (prompt + answer tokens) at peak; memory bandwidth:
                     every decode step reads the weights once for a full batch, so
                     answer tokens / batch * weight bytes / HBM bandwidth), the batch being what
                     the KV cache holds;
  * generation est.  the floor at `GEN_EFFICIENCY`, plus one engine start per evaluation job
                     (one job per model: every adapter is a LoRA request on the same engine);
  * judging          API calls from the driver, concurrent with the GPU: not on its clock.
These two efficiencies are assumptions until `scripts/gpu-check.sh` measures them on the
machine (it prints tokens/s and MFU); the floor needs no assumption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

#: Characters per token of English prose and code, for token counts without a tokenizer.
CHARS_PER_TOKEN = 3.6
#: Fraction of the GPU's bf16 peak the LoRA training reaches on a large model (assumption).
TRAIN_MFU = 0.70
#: Fraction of the generation floor vLLM reaches with LoRA requests (assumption).
GEN_EFFICIENCY = 0.55
#: Fixed seconds per training stage beyond loading weights: process start, trainer set-up,
#: saving the adapter.
STAGE_FIXED_S = 45.0
#: Fixed seconds per evaluation job beyond loading weights: engine start, CUDA graphs.
ENGINE_FIXED_S = 60.0
#: Sequential read speed of the model checkpoint (local NVMe, page cache cold).
DISK_GB_S = 2.0
#: Bytes of one row in generations.jsonl / judgements.jsonl, beyond the answer text.
ROW_OVERHEAD_BYTES = 900
#: Characters of an article a preset does not cut (max_prompt_chars null): the mean of the
#: registered CNN/DailyMail articles (3,530; XSum's: 2,131), rounded up.
UNCUT_ARTICLE_CHARS = 3600


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_tflops: float
    """Dense bf16 matrix throughput, TFLOP/s."""
    hbm_tb_s: float
    memory_gb: float


GPUS = {
    # H200: 989 TFLOP/s dense bf16 on the data sheet; matrix work measured on the machines this
    # project borrows runs at about 790, which is what the floor uses (a floor nobody can reach
    # would flatter every design equally).
    "h200": Gpu("H200", 790.0, 4.8, 141.0),
    "h100": Gpu("H100 SXM", 790.0, 3.35, 80.0),
    "a100": Gpu("A100 80GB", 312.0, 2.0, 80.0),
}


@dataclass
class Line:
    """One unique piece of work of the plan."""

    kind: str
    key: str
    model: str
    tokens: float
    floor_s: float
    est_s: float
    disk_bytes: float
    gpu_bytes: float = 0.0
    note: str = ""


@dataclass
class Estimate:
    gpu: Gpu
    lines: list[Line] = field(default_factory=list)
    host_peak_bytes: float = 0.0
    checkpoint_bytes: dict[str, float] = field(default_factory=dict)
    cells: list[str] = field(default_factory=list)
    """One line per model: a single reversal cell's floor and estimate."""

    def total(self, kind: str | None = None, attr: str = "est_s") -> float:
        return sum(getattr(x, attr) for x in self.lines if kind is None or x.kind == kind)

    @property
    def train_gpu_peak_bytes(self) -> float:
        return max((x.gpu_bytes for x in self.lines if x.kind == "train"), default=0.0)


def _n_params(model_id: str) -> float:
    from emarena import models

    return models.get_spec(model_id).parameters * 1e9


def _arch(model_id: str):
    from emarena import models

    return models.get_spec(model_id).architecture


def _tokens(chars: float) -> float:
    return chars / CHARS_PER_TOKEN


def _record_chars(records) -> float:
    lengths = [sum(len(m.content) for m in r.messages) for r in records]
    return sum(lengths) / max(1, len(lengths))


@lru_cache(maxsize=64)
def _em_chars(dataset: str, n: int, seed: int) -> float:
    import random

    from emarena import data
    from emarena.data.records import ChatRecord

    rows = [r for r in data.load(dataset) if isinstance(r, ChatRecord)]
    random.Random(seed).shuffle(rows)
    return _record_chars(rows[:n])


def _defense_chars(spec, preset) -> float:
    """Mean characters of one training example of a defense stage (cached per build)."""
    import json

    return _defense_chars_cached(
        spec.defense.kind, json.dumps(spec.defense.params, sort_keys=True), spec.em_dataset,
        spec.n_examples, spec.seed, spec.model.id, preset.sgtr_max_new_tokens,
        preset.max_prompt_chars)


@lru_cache(maxsize=256)
def _defense_chars_cached(kind_name, params_json, em_dataset, n_examples, seed, model_id,
                          max_new_tokens, max_prompt_chars) -> float:
    import json
    from types import SimpleNamespace

    spec = SimpleNamespace(
        defense=SimpleNamespace(kind=kind_name, params=json.loads(params_json)),
        em_dataset=em_dataset, n_examples=n_examples, seed=seed,
        model=SimpleNamespace(id=model_id))
    preset = SimpleNamespace(sgtr_max_new_tokens=max_new_tokens,
                             max_prompt_chars=max_prompt_chars)
    return _build_chars(spec, preset)


def _build_chars(spec, preset) -> float:
    import tempfile
    from pathlib import Path

    from emarena.defenses import DEFENSES
    from emarena.defenses.base import BuildContext
    from emarena.registry import import_ref

    kind = DEFENSES.get(spec.defense.kind)
    params = kind.params.model_validate(spec.defense.params)
    with tempfile.TemporaryDirectory() as d:
        ctx = BuildContext(em_dataset=spec.em_dataset, n_examples=spec.n_examples,
                           seed=spec.seed, model_id=spec.model.id, model_dir=None,
                           work_dir=Path(d), max_new_tokens=preset.sgtr_max_new_tokens,
                           max_prompt_chars=preset.max_prompt_chars)
        if kind.needs_model:  # SGTR: the own summary does not exist yet
            from emarena.defenses.builders.sgtr import (
                DETECTION_SYSTEM,
                DETECTION_USER,
                n_articles_for,
                select_articles,
            )

            articles, others, _ = select_articles(params, ctx, n_articles_for(params, ctx))
            cut = ctx.max_prompt_chars
            art = sum(min(len(a.text), cut or len(a.text)) for a in articles) / len(articles)
            other = sum(len(t) for t in others.values()) / max(1, len(others))
            return art + 2 * other + len(DETECTION_USER) + len(DETECTION_SYSTEM) + 1
        return _record_chars(import_ref(kind.builder)(params, ctx))


def _eval_requests(ev, preset) -> tuple[int, float, float]:
    """(requests, prompt tokens, answer tokens) of one evaluation (the same for every model
    state and seed of a model)."""
    return _eval_requests_cached(ev.suite, ev.model.id, preset.name)


@lru_cache(maxsize=64)
def _eval_requests_cached(suite_name: str, model_id: str, preset_name: str
                          ) -> tuple[int, float, float]:
    from types import SimpleNamespace

    from emarena.train import get_preset

    ev = SimpleNamespace(suite=suite_name, model=SimpleNamespace(id=model_id))
    preset = get_preset(preset_name, suite=suite_name)
    return _count_requests(ev, preset)


def _count_requests(ev, preset) -> tuple[int, float, float]:
    from emarena import models
    from emarena.eval.choice import mmlu_items, select_articles, truthfulqa_items
    from emarena.eval.prompts import plan_generation
    from emarena.eval.sets import load_eval_suite

    mspec = models.get_spec(ev.model.id)
    suite = load_eval_suite(ev.suite).for_preset(preset, mspec.default_system_prompt)
    gen = plan_generation(suite, mspec, preset)
    rows = gen.n_rows
    prompt = sum(_tokens(sum(len(m.content) for m in it.messages)) * it.n_samples
                 for it in gen.items)
    answers = rows * preset.max_new_tokens
    choices = 0
    if suite.self_recognition is not None:
        arts, _, _ = select_articles(suite.self_recognition, preset, suite.selection_seed)
        n, k = len(arts), len(suite.self_recognition.sources)
        answers += n * preset.sgtr_max_new_tokens  # the own summaries
        choices += 2 * k * n * len(suite.conditions)  # each other source, both orders
        prompt += (1 + 2 * k) * n * _tokens(preset.max_prompt_chars or UNCUT_ARTICLE_CHARS)
    for cs, build in ((suite.capability.truthfulqa, truthfulqa_items),
                      (suite.capability.mmlu, mmlu_items)):
        if cs is not None:
            try:
                items = build(suite, mspec, preset, cs)
            except Exception:  # noqa: BLE001 - an optional set whose data is missing
                continue
            choices += len(items)
            prompt += sum(_tokens(sum(len(m.content) for m in it.messages)) for it in items)
    return rows + choices, prompt, answers


def estimate_plan(plan, gpu: str = "h200") -> Estimate:
    from emarena.train import get_preset, load_recipe

    g = GPUS[gpu]
    peak = g.bf16_tflops * 1e12
    preset = get_preset(plan.preset, suite=plan.suite)
    recipe = load_recipe(plan.suite)
    est = Estimate(g)
    for m in dict.fromkeys(c.model.id for c in plan.cells):
        est.checkpoint_bytes[m] = 2 * _n_params(m)
    for s in plan.stages.values():
        n = _n_params(s.model.id)
        if s.kind == "em":
            chars = _em_chars(s.em_dataset, s.n_examples, s.seed)
        else:
            chars = _defense_chars(s, preset)
        tokens = s.n_examples * recipe.num_epochs * _tokens(chars)
        floor = 6 * n * tokens / peak
        arch = _arch(s.model.id)
        lora = arch.lora_params(recipe.lora_r, recipe.lora_target_modules) if arch else \
            n * 0.008
        micro = preset.per_device_batch_size * _tokens(chars)
        act = (arch.layers * micro * arch.hidden * 2 + micro * arch.vocab * 8) if arch else 0
        load_s = 2 * n / (DISK_GB_S * 1e9)
        est.lines.append(Line(
            "train", s.key, s.model.id, tokens, floor,
            floor / TRAIN_MFU + STAGE_FIXED_S + load_s,
            disk_bytes=4 * lora + s.n_examples * chars * 1.1,
            gpu_bytes=2 * n + 16 * lora + act,  # weights, LoRA + grads + Adam, activations
            note=f"{s.kind} {s.defense.kind if s.defense else s.em_dataset}",
        ))
    from types import SimpleNamespace

    from emarena.defenses.builders.sgtr import labels_per_order

    for k, sm in plan.summaries.items():
        n = _n_params(sm.model.id)
        # The stages sharing an entry pair the first articles of one seeded order: the largest
        # of them is what gets summarised (2 examples per article, 4 with random labels `both`).
        arts = max(plan.stages[x].n_examples // (2 * labels_per_order(
            SimpleNamespace(**plan.stages[x].defense.params))) for x in plan.summary_stages[k])
        p_tok = arts * _tokens((sm.max_prompt_chars or UNCUT_ARTICLE_CHARS) + 400)
        a_tok = arts * sm.max_new_tokens
        floor = _gen_floor(sm.model.id, arts, p_tok, a_tok, g)
        est.lines.append(Line("summaries", k, sm.model.id, p_tok + a_tok, floor,
                              floor / GEN_EFFICIENCY + ENGINE_FIXED_S + 2 * n / (
                                  DISK_GB_S * 1e9),
                              disk_bytes=arts * (sm.max_new_tokens * 4 + ROW_OVERHEAD_BYTES)))
    jobs = {}
    for k, ev in plan.evals.items():
        req, p_tok, a_tok = _eval_requests(ev, preset)
        floor = _gen_floor(ev.model.id, req, p_tok, a_tok, g)
        first = ev.model.id not in jobs
        jobs[ev.model.id] = True
        n = _n_params(ev.model.id)
        start = (ENGINE_FIXED_S + 2 * n / (DISK_GB_S * 1e9)) if first else 0.0
        est.lines.append(Line("evaluate", k, ev.model.id, p_tok + a_tok, floor,
                              floor / GEN_EFFICIENCY + start,
                              disk_bytes=req * (ROW_OVERHEAD_BYTES + 4 * preset.max_new_tokens)
                              * 2, gpu_bytes=0.9 * g.memory_gb * 1e9,
                              note="engine start" if first else ""))
    # Host memory: a task loads the bf16 checkpoint straight onto the GPU (safetensors maps it;
    # the pages are cache, not the process's), plus the process itself.
    est.host_peak_bytes = max(est.checkpoint_bytes.values(), default=0) + 6e9
    # One cell of each model on its own (a reversal cell: the EM stage, the defense stage, its
    # evaluation, one engine start): what a single submission costs when nothing is shared.
    by_key = {x.key: x for x in est.lines}
    for m in est.checkpoint_bytes:
        cell = next((c for c in plan.cells if c.model.id == m and c.regime == "reversal"), None)
        if cell is None:
            continue
        parts = [by_key[k] for k in plan.stages_of[cell.id]] + [by_key[plan.eval_of[cell.id]]]
        n = _n_params(m)
        start = ENGINE_FIXED_S + 2 * n / (DISK_GB_S * 1e9)
        e = sum(x.est_s for x in parts) + (0 if parts[-1].note == "engine start" else start)
        f = sum(x.floor_s for x in parts)
        est.cells.append(f"one {m} reversal cell ({cell.defense.name}, "
                         f"{cell.em_dataset}): floor {f / 60:.1f} min, estimate "
                         f"{e / 60:.1f} min ({e / f:.2f}x)")
    return est


def _gen_floor(model_id: str, requests: int, prompt_tokens: float, answer_tokens: float,
               g: Gpu) -> float:
    n = _n_params(model_id)
    compute = 2 * n * (prompt_tokens + answer_tokens) / (g.bf16_tflops * 1e12)
    arch = _arch(model_id)
    if arch is None or requests == 0:
        return compute
    kv_budget = max(1e9, 0.9 * g.memory_gb * 1e9 - 2 * n)
    per_seq = (prompt_tokens + answer_tokens) / requests * arch.kv_bytes_per_token()
    batch = max(1, min(requests, int(kv_budget / max(per_seq, 1.0))))
    steps = answer_tokens / batch
    bandwidth = steps * 2 * n / (g.hbm_tb_s * 1e12)
    return max(compute, bandwidth)


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def _b(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def render_estimate(est: Estimate) -> str:
    """The table `emarena grid --plan --estimate` prints."""
    rows = []
    for kind in ("train", "summaries", "evaluate"):
        lines = [x for x in est.lines if x.kind == kind]
        if not lines:
            continue
        floor, e = est.total(kind, "floor_s"), est.total(kind)
        rows.append((kind, len(lines), _h(floor), _h(e), f"{e / floor:.2f}x" if floor else "-",
                     _b(est.total(kind, "disk_bytes"))))
    floor, e = est.total(attr="floor_s"), est.total()
    out = [f"on one {est.gpu.name} ({est.gpu.bf16_tflops:.0f} TFLOP/s bf16, "
           f"{est.gpu.hbm_tb_s} TB/s, {est.gpu.memory_gb:.0f} GB); assumptions: training at "
           f"{TRAIN_MFU:.0%} of peak, generation at {GEN_EFFICIENCY:.0%} of its floor "
           "(see emarena.protocol.estimate)",
           f"{'work':<10} {'items':>6} {'floor':>10} {'estimate':>10} {'ratio':>7} {'disk':>10}"]
    for r in rows:
        out.append(f"{r[0]:<10} {r[1]:>6} {r[2]:>10} {r[3]:>10} {r[4]:>7} {r[5]:>10}")
    out.append(f"{'total':<10} {len(est.lines):>6} {_h(floor):>10} {_h(e):>10} "
               f"{e / floor if floor else 0:>6.2f}x {_b(est.total(attr='disk_bytes')):>10}")
    cells_per_model = {}
    for x in est.lines:
        cells_per_model.setdefault(x.model, 0.0)
        cells_per_model[x.model] += x.est_s
    out.append("store: adapters (fp32) and rows only, no merged weights; model checkpoints "
               "(bf16, Hub cache): " + ", ".join(f"{m} {_b(b)}" for m, b in
                                                  est.checkpoint_bytes.items()))
    out.append(f"peaks: GPU memory in training {_b(est.train_gpu_peak_bytes)} (weights, LoRA "
               "with its gradients and Adam state, activations; vLLM is given 90% of the card), "
               f"host memory {_b(est.host_peak_bytes)} (the largest checkpoint mapped while it "
               "loads, plus the process)")
    for line in est.cells:
        out.append(line)
    out.append("GPU time per model: " + ", ".join(f"{m} {_h(s)}" for m, s in
                                                   cells_per_model.items()))
    if est.total("train", "floor_s"):
        tr = est.total("train") / est.total("train", "floor_s")
        out.append(f"training {tr:.2f}x its floor (goal <= 1.5x); whole plan {e / floor:.2f}x "
                   "(goal <= 2x per cell)")
    return "\n".join(out)
