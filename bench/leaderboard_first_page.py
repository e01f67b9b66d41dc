"""Leaderboard first page with 1,000 result files: time to answer and to show the table.

Writes 1,000 synthetic result files (valid schema v1, with samples) into a temp folder, and 10
more for a baseline, starts `leaderboard/app.py` on each as a subprocess, and measures
  - startup: process start until the server answers (includes reading the files),
  - HTTP GET / and GET /config of the 1,000-file app (the config holds the first page's table),
  - in headless Chromium (Playwright), navigation until the table's rows are visible, first
    visits only (a fresh browser context each: nothing cached), for the 1,000-file app, the
    10-file app and a bare Gradio page (one Markdown) taking turns, so all three share the
    machine's load; with the number of requests each page made and its first HTML's size,
and prints them beside the 2 s target. The 10-file app shows what the 1,000 files cost; the
bare page what any Gradio page costs on this machine, whatever it shows.

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


def browser_visits(urls: dict[str, tuple[str, str]], visits: int) -> dict[str, list[dict]]:
    """First visits (a fresh browser context each: nothing cached) to every page in turn, so
    the pages share whatever load the machine has. Per visit: seconds until `selector` is
    visible, the number of requests the page made by then, and the first HTML's size."""
    from playwright.sync_api import sync_playwright

    out: dict[str, list[dict]] = {name: [] for name in urls}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for _ in range(visits):
            for name, (url, selector) in urls.items():
                ctx = b.new_context(viewport={"width": 1600, "height": 1100})
                page = ctx.new_page()
                n_requests = [0]
                page.on("request", lambda _r, n=n_requests: n.__setitem__(0, n[0] + 1))
                t0 = time.perf_counter()
                page.goto(url, wait_until="commit")
                page.wait_for_selector(selector, state="visible", timeout=120_000)
                seconds = time.perf_counter() - t0
                html_bytes = page.evaluate(
                    "() => performance.getEntriesByType('navigation')[0].decodedBodySize")
                out[name].append({"s": seconds, "requests": n_requests[0], "html": html_bytes})
                ctx.close()
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--baseline-files", type=int, default=10,
                    help="result files of the baseline app measured in the same run")
    ap.add_argument("--visits", type=int, default=5, help="first visits measured per page")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from emarena.leaderboard.synthetic import write_synthetic_results

    use_browser = CHROMIUM.exists()
    try:
        import playwright  # noqa: F401
    except ImportError:
        use_browser = False
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="emarena-bench-lb-") as tmp:
        try:
            apps: dict[str, tuple[str, float]] = {}
            made = 0.0
            for n in (args.files, args.baseline_files):
                results = Path(tmp) / f"results-{n}"
                t0 = time.perf_counter()
                write_synthetic_results(results, n)
                made = made or time.perf_counter() - t0
                port = free_port()
                url = f"http://127.0.0.1:{port}/"
                proc, startup = start(
                    [sys.executable, str(REPO / "leaderboard" / "app.py"), "--results-dir",
                     str(results), "--port", str(port), "--refresh-s", "0"],
                    url, Path(tmp) / f"app-{n}.log")
                procs.append(proc)
                apps[f"app, {n:,} files"] = (url, startup)
            main_url = apps[f"app, {args.files:,} files"][0]
            get_page, get_config, config_bytes = http_times(main_url)
            pages = {name: (url, TABLE_ROW) for name, (url, _) in apps.items()}
            if use_browser:
                bare_port = free_port()
                bare_url = f"http://127.0.0.1:{bare_port}/"
                bare_py = Path(tmp) / "bare_app.py"
                bare_py.write_text(BARE_APP)
                bproc, _ = start([sys.executable, str(bare_py), str(bare_port)], bare_url,
                                 Path(tmp) / "bare.log")
                procs.append(bproc)
                pages["bare Gradio page (one Markdown)"] = (bare_url, "#bare")
            visits = browser_visits(pages, args.visits) if use_browser else {}
        finally:
            for proc in procs:
                stop(proc)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"EM Arena leaderboard, first page with {args.files:,} result files "
          f"(written in {made:.1f} s); machine: {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'measurement':<58} {'measured':>9} {'target':>8}  verdict")

    def line(what: str, value: float, target: float | None = None, extra: str = "") -> None:
        t = f"{target:.2f} s" if target is not None else "-"
        verdict = "" if target is None else ("OK" if value <= target else "OVER")
        print(f"{what:<58} {value:>7.3f} s {t:>8}  {verdict}{extra}")

    for name, (_, startup) in apps.items():
        line(f"{name}: server start -> answering (reads the files)", startup)
    line(f"HTTP GET / ({args.files:,} files; median of 5)", get_page, TARGET_S)
    line(f"HTTP GET /config, holds the table ({config_bytes / 1e6:.2f} MB; median of 5)",
         get_config, TARGET_S)
    if not visits:
        print("browser rows skipped: /usr/bin/chromium or playwright is missing")
        return
    print(f"browser, first visit (fresh context) until the table's rows are visible; the pages "
          f"take turns, {args.visits} visits each:")
    for name, vs in visits.items():
        secs = [v["s"] for v in vs]
        target = TARGET_S if name.startswith("app") else None
        line(f"  {name} (median)", statistics.median(secs), target,
             f"   {vs[0]['requests']} requests, first HTML {vs[0]['html'] / 1e3:.0f} kB")
        print(f"    every visit (s): {', '.join(f'{s:.2f}' for s in secs)}")
    main_name = f"app, {args.files:,} files"
    base = [statistics.median(v["s"] for v in vs) for n, vs in visits.items() if n != main_name]
    ratios = ", ".join(f"{statistics.median(v['s'] for v in visits[main_name]) / b:.2f}x"
                       for b in base)
    print(f"  {main_name} vs the baselines above: {ratios}")


if __name__ == "__main__":
    main()
