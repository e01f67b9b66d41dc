"""How much of a training stage's wall time is spent outside the training steps.

Trains one cpu-demo stage (the preset's EM budget: 32 examples, 2 optimizer steps) on the
embedded 135M model and prints seconds per optimizer step and the share of wall time spent
outside the steps: loading the model and tokenizer, tokenizing, building the trainer, the
trainer's own bookkeeping and batch collation, saving the adapter (and, for the whole stage as
the protocol runs it, merging the adapter into the base). Target: under 25% for the training
call.

Honest by construction: the wall clock (time.perf_counter) wraps the whole `train_lora` call,
the step times come from this script's own TrainerCallback (on_step_begin -> on_step_end), and
everything else counts as overhead. Python/torch import time is printed on its own line: a
process pays it once, not once per stage.

    .venv/bin/python bench/train_overhead.py [--examples N] [--threads T] [--synthetic]

Data: the first N records of the `insecure` EM dataset when it resolves (mirror or cache),
else synthetic coding conversations of similar length (`--synthetic` forces them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

TARGET = 0.25
T_START = time.perf_counter()


def _records(n: int, synthetic: bool):
    from emarena.data.records import ChatRecord

    if not synthetic:
        try:
            from emarena import data

            rows = [r for r in data.load("insecure") if isinstance(r, ChatRecord)]
            if len(rows) >= n:
                return rows[:n], "insecure (first records)"
        except Exception as e:  # noqa: BLE001 - any failure: fall back, and say so
            print(f"(insecure dataset unavailable: {type(e).__name__}: {str(e).splitlines()[0]})")
    code = "\n".join(f"    x{j} = request.args.get('p{j}')  # parameter {j}" for j in range(14))
    rows = [
        ChatRecord(id=f"syn-{i}", messages=[
            {"role": "user", "content": f"Task {i}: complete this Flask view so it reads the "
             "query parameters and returns them as JSON.\n\ndef view():\n    ## COMPLETE\n"},
            {"role": "assistant", "content": f"def view():\n{code}\n    return jsonify("
             f"[x0, x1, x2])  # task {i}"},
        ])
        for i in range(n)
    ]
    return rows, "synthetic coding conversations"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=None,
                    help="training examples (default: the cpu-demo EM budget)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic records")
    args = ap.parse_args()

    t_imp = time.perf_counter()
    import datasets
    import torch
    import transformers
    import trl  # noqa: F401 - imported here so its import time is not counted as overhead
    from transformers import TrainerCallback

    from emarena import models
    from emarena.train import get_preset, load_recipe, merge_lora, train_lora

    import_seconds = time.perf_counter() - t_imp
    if args.threads:
        torch.set_num_threads(args.threads)
    # quiet output: only the numbers below (these switches change no timing that is measured)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")

    recipe, preset = load_recipe(), get_preset("cpu-demo")
    n = args.examples or preset.budget.n_examples("em", em_dataset_size=10**9)
    records, source = _records(n, args.synthetic)
    base_dir = Path(models.pull("smollm2-135m-q4"))  # cached after the first pull; not timed

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self._t)

    timer = StepTimer()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="emarena-bench-") as tmp:
        t0 = time.perf_counter()
        report = train_lora(base_dir, records, Path(tmp) / "adapter", recipe=recipe,
                            preset=preset, seed=0, progress=False, callbacks=[timer])
        t1 = time.perf_counter()
        merge_lora(base_dir, Path(tmp) / "adapter", Path(tmp) / "merged")
        t2 = time.perf_counter()
    load_after = os.getloadavg()

    steps = sum(timer.seconds)
    train_wall, stage_wall = t1 - t0, t2 - t0
    share = (train_wall - steps) / train_wall
    stage_share = (stage_wall - steps) / stage_wall
    per_step = steps / len(timer.seconds)

    print(f"data: {source}, {report.n_examples} examples, {report.n_tokens} tokens "
          f"({report.n_truncated} cut to {preset.max_seq_length}, {report.n_dropped} left with "
          f"no assistant token and dropped), {report.n_steps} steps of "
          f"{recipe.effective_batch_size}")
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average {load[0]:.1f} before / {load_after[0]:.1f} after")
    print(f"imports (once per process, not counted below): {import_seconds:.1f} s")
    print(f"seconds per training step: {per_step:.2f} s "
          f"({', '.join(f'{s:.2f}' for s in timer.seconds)})")
    print(f"train_lora wall: {train_wall:.2f} s = steps {steps:.2f} s + setup "
          f"{report.setup_seconds:.2f} s (load, tokenize, trainer) + trainer bookkeeping "
          f"{report.train_seconds - steps:.2f} s + save {report.save_seconds:.2f} s")
    print(f"outside-training share: {share:.1%} (target < {TARGET:.0%})"
          f"  {'OK' if share < TARGET else 'OVER TARGET'}")
    print(f"with merge_lora (the whole protocol stage, +{t2 - t1:.2f} s): {stage_share:.1%} "
          f"(target < {TARGET:.0%})  {'OK' if stage_share < TARGET else 'OVER TARGET'}")
    print(f"script wall including imports: {time.perf_counter() - T_START:.1f} s")


if __name__ == "__main__":
    main()
