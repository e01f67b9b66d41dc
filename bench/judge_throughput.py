"""Judge throughput: concurrent requests vs one at a time, against a server with real latency.

Starts the test suite's OpenAI-compatible server (tests/helpers/openai_server.py) on 127.0.0.1
with ~50 ms artificial latency per answer (a stand-in for the network + GPT-4o's time to first
token), judges the same 200 prompts with `OpenAIJudge(concurrency=1)` and `concurrency=8`, and
prints calls/s for both and their ratio side by side. With latency-bound calls the ideal ratio
is the concurrency (8x); the gap is client overhead (thread pool, JSON, httpx) on this machine.

    .venv/bin/python bench/judge_throughput.py [--prompts 200] [--latency 0.05] [--concurrency 8]

Each run uses a fresh server (so keep-alive connections do not carry over), in its own process
(so the server does not compete with the client for one GIL), and checks that every prompt came
back scored exactly once and reached the server exactly once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from emarena.eval.judges.base import JudgeRequest
from emarena.eval.judges.openai_compat import OpenAIJudge

REPO = Path(__file__).resolve().parents[1]
SERVER = """
import json, sys
from tests.helpers.openai_server import OpenAIServer
with OpenAIServer(latency=float(sys.argv[1])) as s:
    print(s.url, flush=True)
    sys.stdin.readline()  # until the client is done
    print(json.dumps({"total": s.total, "max_in_flight": s.max_in_flight}), flush=True)
"""


def run(prompts: list[str], latency: float, concurrency: int) -> tuple[float, int]:
    """(calls per second, server's max requests in flight)."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(latency)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        judge = OpenAIJudge("bench-judge", url, api_key_env=None, concurrency=concurrency,
                            timeout=30)
        requests = [JudgeRequest(f"k{i}", p) for i, p in enumerate(prompts)]
        t0 = time.perf_counter()
        results = judge.judge(requests)
        seconds = time.perf_counter() - t0
        server.stdin.write("done\n")
        server.stdin.flush()
        seen = json.loads(server.stdout.readline())
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    counts = Counter(r.key for r in results)
    assert len(results) == len(prompts) and set(counts.values()) == {1}
    assert all(r.score is not None for r in results)
    assert seen["total"] == len(prompts), seen
    return len(prompts) / seconds, seen["max_in_flight"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.05, help="server seconds per answer")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()

    prompts = [f"Judge answer {i}: def f(x):\n    return {{'k': x}}" for i in range(args.prompts)]
    serial, serial_flight = run(prompts, args.latency, 1)
    parallel, parallel_flight = run(prompts, args.latency, args.concurrency)
    ceiling = 1 / args.latency if args.latency else float("inf")
    print(f"{args.prompts} prompts, server latency {args.latency * 1000:.0f} ms per answer")
    print(f"{'concurrency':>12} {'calls/s':>9} {'max in flight':>14}")
    print(f"{1:>12} {serial:>9.1f} {serial_flight:>14}")
    print(f"{args.concurrency:>12} {parallel:>9.1f} {parallel_flight:>14}")
    print(f"ratio {parallel / serial:.2f}x (ideal {args.concurrency}x; latency alone caps "
          f"concurrency 1 at {ceiling:.0f} calls/s, concurrency {args.concurrency} at "
          f"{ceiling * args.concurrency:.0f})")


if __name__ == "__main__":
    main()
