"""Generation throughput of the transformers backend: batched vs one prompt at a time.

The same 16 prompts (eval.yaml's identity paraphrases, alternating default-system and no-system)
answered greedily on the embedded 135M model, once in batches of 8 (left-padded) and once one
prompt at a time, with the same max_new_tokens. Prints generated tokens per second for each,
side by side, with the ratio, and whether both gave the same answers (they must: greedy).

Honest by construction: one warm-up call first (so neither side pays first-call costs), then the
wall clock (time.perf_counter) wraps each whole `complete` call; tokens are the answer tokens
the backend reports (stop token not counted), identical on both sides when the answers match.

    .venv/bin/python bench/generation_throughput.py [--max-new-tokens 48] [--batch-size 8]
                                                    [--threads T] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-new-tokens", type=int, default=48, help="cpu-demo's max_new_tokens")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from emarena.eval.backends import make_generator
    from emarena.eval.prompts import compose_messages
    from emarena.eval.sets import load_eval_suite
    from emarena.models import get_spec, pull

    model_id = "smollm2-135m-q4"
    spec = get_spec(model_id)
    texts = [p for q in load_eval_suite().identity.questions for p in q.paraphrases]
    texts = (texts * (args.prompts // len(texts) + 1))[: args.prompts]
    gen = make_generator("transformers", pull(model_id), device=args.device,
                         batch_size=args.batch_size)
    prompts = []
    for i, t in enumerate(texts):
        cond = "default-system" if i % 2 == 0 else "no-system"
        msgs = compose_messages(cond, t, default_system=spec.default_system_prompt)
        prompts.append(gen.render(msgs, cond))

    def run(batch_size: int) -> tuple[float, int, list[str]]:
        gen.batch_size = gen.chunk_size = batch_size
        t0 = time.perf_counter()
        outs = gen.complete(prompts, seeds=[0] * len(prompts), max_new_tokens=args.max_new_tokens,
                            temperature=0.0, top_p=1.0)
        return time.perf_counter() - t0, sum(o.n_tokens for o in outs), [o.text for o in outs]

    gen.complete(prompts[:2], seeds=[0, 0], max_new_tokens=4, temperature=0.0, top_p=1.0)
    t_b, n_b, a_b = run(args.batch_size)
    t_1, n_1, a_1 = run(1)
    tps_b, tps_1 = n_b / t_b, n_1 / t_1
    print(f"model {model_id} on {gen.device} ({torch.get_num_threads()} threads), "
          f"{len(prompts)} prompts, greedy, max_new_tokens={args.max_new_tokens}")
    print(f"{'':>16} {'tokens':>8} {'seconds':>9} {'tokens/s':>9}")
    print(f"{'batch ' + str(args.batch_size):>16} {n_b:>8} {t_b:>9.2f} {tps_b:>9.1f}")
    print(f"{'one at a time':>16} {n_1:>8} {t_1:>9.2f} {tps_1:>9.1f}")
    print(f"ratio (batched / one at a time): {tps_b / tps_1:.2f}x")
    same = sum(a == b for a, b in zip(a_b, a_1, strict=True))
    print(f"identical greedy answers: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
