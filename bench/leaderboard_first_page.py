"""Leaderboard first page with 1,000 result files: time to answer and to show the table.

Writes 1,000 synthetic result files (valid schema v1, with samples) into a temp folder, starts
`leaderboard/app.py` on them as a subprocess, and measures
  - startup: process start until the server answers (includes reading the 1,000 files),
  - HTTP GET / and GET /config (the config holds the first page's table: the table data),
  - in headless Chromium (Playwright), navigation until the table's rows are visible, for
    several first visits (fresh browser context each: no cache),
and prints them beside the 2 s target. For scale, the same browser measurement of a bare
Gradio page (one Markdown) on the same machine is printed too: that part of the time is
Gradio's frontend, whatever the app shows.

    .venv/bin/python bench/leaderboard_first_page.py [--files 1000] [--visits 5]

Needs /usr/bin/chromium for the browser rows (`apt-get install -y chromium`); without it only
the HTTP rows are printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TARGET_S = 2.0
TABLE_ROW = "#lb tbody tr[data-row]"

BARE_APP = textwrap.dedent(
    """
    import sys
    import gradio as gr
    with gr.Blocks() as demo:
        gr.Markdown("bare page", elem_id="bare")
    demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), ssr_mode=False,
                quiet=True)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], url: str, log: Path) -> tuple[subprocess.Popen, float]:
    import httpx

    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "EMARENA_RESULTS_REPO": "",
           "EMARENA_REQUESTS_REPO": ""}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{args[1]} exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > 300:
            raise SystemExit(f"{args[1]} did not answer in 300 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def http_times(url: str, n: int = 5) -> tuple[float, float, int]:
    import httpx

    page, config, size = [], [], 0
    with httpx.Client() as c:
        for _ in range(n):
            t0 = time.perf_counter()
            assert c.get(url).status_code == 200
            page.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = c.get(url + "config")
            config.append(time.perf_counter() - t0)
            assert r.status_code == 200 and "data-row" in r.text  # the table is in it
            size = len(r.content)
    return statistics.median(page), statistics.median(config), size


def browser_times(url: str, selector: str, visits: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for _ in range(visits):
            ctx = b.new_context(viewport={"width": 1600, "height": 1100})
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(url, wait_until="commit")
            page.wait_for_selector(selector, state="visible", timeout=60_000)
            out.append(time.perf_counter() - t0)
            ctx.close()
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--visits", type=int, default=5, help="first visits measured in the browser")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from emarena.leaderboard.synthetic import write_synthetic_results

    with tempfile.TemporaryDirectory(prefix="emarena-bench-lb-") as tmp:
        results = Path(tmp) / "results"
        t0 = time.perf_counter()
        write_synthetic_results(results, args.files)
        made = time.perf_counter() - t0
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        proc, startup = start(
            [sys.executable, str(REPO / "leaderboard" / "app.py"), "--results-dir", str(results),
             "--port", str(port), "--refresh-s", "0"], url, Path(tmp) / "app.log")
        try:
            get_page, get_config, config_bytes = http_times(url)
            use_browser = CHROMIUM.exists()
            try:
                import playwright  # noqa: F401
            except ImportError:
                use_browser = False
            visits = browser_times(url, TABLE_ROW, args.visits) if use_browser else []
        finally:
            stop(proc)
        bare: list[float] = []
        if use_browser:
            bare_port = free_port()
            bare_url = f"http://127.0.0.1:{bare_port}/"
            bare_py = Path(tmp) / "bare_app.py"
            bare_py.write_text(BARE_APP)
            bproc, _ = start([sys.executable, str(bare_py), str(bare_port)], bare_url,
                             Path(tmp) / "bare.log")
            try:
                bare = browser_times(bare_url, "#bare", args.visits)
            finally:
                stop(bproc)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"EM Arena leaderboard, first page with {args.files:,} result files "
          f"(written in {made:.1f} s); machine: {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'measurement':<58} {'measured':>9} {'target':>8}  verdict")

    def line(what: str, value: float, target: float | None = None) -> None:
        t = f"{target:.2f} s" if target is not None else "-"
        verdict = "" if target is None else ("OK" if value <= target else "OVER")
        print(f"{what:<58} {value:>7.3f} s {t:>8}  {verdict}")

    line("server start -> answering (reads all files first)", startup)
    line("HTTP GET / (median of 5)", get_page, TARGET_S)
    line(f"HTTP GET /config, holds the table ({config_bytes / 1e6:.1f} MB; median of 5)",
         get_config, TARGET_S)
    if visits:
        line(f"browser: navigate -> table rows visible (median of {len(visits)})",
             statistics.median(visits), TARGET_S)
        line("browser: navigate -> table rows visible (slowest)", max(visits), TARGET_S)
        line(f"  for scale: bare Gradio page, same browser (median of {len(bare)})",
             statistics.median(bare))
        print("  every visit (s):", ", ".join(f"{v:.2f}" for v in visits),
              "| bare:", ", ".join(f"{v:.2f}" for v in bare))
    else:
        print("browser rows skipped: /usr/bin/chromium or playwright is missing")


if __name__ == "__main__":
    main()
