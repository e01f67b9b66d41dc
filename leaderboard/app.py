"""EM Arena leaderboard: the Gradio app (deployable as a Hugging Face Space as is).

    python leaderboard/app.py --results-dir results/ [--requests-dir requests/] [--port 7860]
    python leaderboard/app.py --results-repo org/results --requests-repo org/requests
    python leaderboard/app.py --demo 200        # synthetic results in a temp folder

On a Space the repos come from the environment: EMARENA_RESULTS_REPO, EMARENA_REQUESTS_REPO
and HF_TOKEN (a secret; needed to write requests and to read private repos).

What is where: the texts are `emarena.leaderboard.about`, reading and pooling results
`read_results`, columns and formatting `display`, figures `plots`, submissions and the queue
`submit`. This file only lays out the page and wires events to those functions.

Speed: results are parsed once, in a background thread that starts before gradio is imported,
and kept (`ResultCache`); a page view filters and formats the cached table. Samples are read
when a cell is opened in the drill-down, plots when the Plots tab is opened. The first page's
table (its first 100 rows) is in the page's config, so it shows without a server round trip.
A first visit's time is mostly gradio's frontend fetching its ~90 JS/CSS modules (one set per
component type on the page, hidden tabs included) from this server: hence every event is
private (no API schema in the page) and plots are inline PNGs in gr.HTML (no plot and image
modules); see bench/leaderboard_first_page.py.
"""

# No `from __future__ import annotations`: gradio reads the handlers' annotations (gr.EventData)
# at runtime.
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# A checkout without `pip install -e .`: import emarena from ../src.
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    try:
        import emarena  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(_SRC))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from emarena.leaderboard import about, display  # noqa: E402
from emarena.leaderboard.read_results import (  # noqa: E402
    ResultCache,
    ResultSet,
    read_samples,
)

ENV_RESULTS_REPO = "EMARENA_RESULTS_REPO"
ENV_REQUESTS_REPO = "EMARENA_REQUESTS_REPO"
#: Every event is private: the page is the only client, and a public API would put a schema of
#: every endpoint (~250 kB for this page) into each first page load.
API = "private"
#: Opening the Queue tab downloads the requests repo at most this often (Refresh always does).
QUEUE_SYNC_S = 15.0
#: The table is an HTML table sorted and filtered by the server, so the CSV is exactly what is
#: shown (and it renders much faster than gradio's Dataframe). Clicks: header -> sort, row ->
#: drill-down; `trigger` sends them to the server as a `click` event with data.
TABLE_JS = """
element.addEventListener('click', (e) => {
  const th = e.target.closest('th[data-key]');
  if (th) { trigger('click', {sort: th.dataset.key}); return; }
  const tr = e.target.closest('tr[data-row]');
  if (tr) { trigger('click', {row: parseInt(tr.dataset.row, 10)}); }
});
"""
CSS = """
.emarena-lb-wrap { max-height: 820px; overflow: auto;
  border: 1px solid var(--border-color-primary); }
table.emarena-lb { border-collapse: collapse; font-size: 0.85em; width: max-content; }
table.emarena-lb th { position: sticky; top: 0; background: var(--background-fill-secondary);
  cursor: pointer; text-align: left; padding: 6px 8px; white-space: nowrap; z-index: 1; }
table.emarena-lb td { padding: 4px 8px; border-top: 1px solid var(--border-color-primary);
  vertical-align: top; }
table.emarena-lb td.metric { white-space: nowrap; font-family: var(--font-mono); }
table.emarena-lb td.text { max-width: 28em; }
#invalid-list td { white-space: pre-wrap; max-width: 60em; font-family: var(--font-mono); }
#samples-list td, #queue-list td, #history-list td { white-space: pre-wrap; max-width: 40em; }
#cell-metrics-list td { white-space: nowrap; font-family: var(--font-mono); }
#yaml-box textarea { font-family: var(--font-mono); }
table.emarena-lb tbody tr[data-row]:hover { background: var(--background-fill-secondary);
  cursor: pointer; }
table.emarena-lb tr.unofficial td { color: var(--body-text-color-subdued); }
.badge-published { background: #7c3aed; color: #fff; border-radius: 4px; padding: 0 5px;
  font-size: 0.85em; font-weight: 600; }
.emarena-small { font-size: 0.85em; color: #555; }
#submit-result pre, #reproduce pre { white-space: pre-wrap; }
"""


# --- configuration ----------------------------------------------------------------------------


@dataclass
class Config:
    results_dir: Path
    requests_dir: Path | None
    results_repo: str | None
    requests_repo: str | None
    host: str
    port: int
    refresh_s: float


def parse_args(argv: list[str] | None = None) -> Config:
    ap = argparse.ArgumentParser(
        prog="leaderboard/app.py",
        description="EM Arena leaderboard (Gradio). Reads result files from a folder or a Hub "
        "dataset; takes submissions into a requests folder or a Hub dataset.",
    )
    ap.add_argument("--results-dir", type=Path, help="Folder of result files (the results "
                    "dataset's layout, or runs/); with --results-repo: where it is downloaded.")
    ap.add_argument("--requests-dir", type=Path, help="Folder of requests "
                    "(requests/<hash>.json); with --requests-repo: where it is downloaded.")
    ap.add_argument("--results-repo", default=os.environ.get(ENV_RESULTS_REPO) or None,
                    help=f"Hub dataset of results (env {ENV_RESULTS_REPO}).")
    ap.add_argument("--requests-repo", default=os.environ.get(ENV_REQUESTS_REPO) or None,
                    help=f"Hub dataset of requests (env {ENV_REQUESTS_REPO}).")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME")
                    or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    ap.add_argument("--refresh-s", type=float, default=600.0,
                    help="Re-read the results every N seconds (0: only on Reload).")
    ap.add_argument("--demo", type=int, metavar="N", default=0,
                    help="Write N synthetic result files into --results-dir (default: a temp "
                    "folder) and show them.")
    a = ap.parse_args(argv)
    cache = Path(os.environ.get("EMARENA_CACHE", Path.home() / ".cache" / "emarena"))
    results_dir = a.results_dir
    if results_dir is None:
        if a.results_repo:
            results_dir = cache / "leaderboard" / "results" / a.results_repo.replace("/", "__")
        elif a.demo:
            results_dir = Path(tempfile.mkdtemp(prefix="emarena-demo-results-"))
        else:
            ap.error(f"give --results-dir, --results-repo or ${ENV_RESULTS_REPO}, or --demo N")
    if a.demo:
        from emarena.leaderboard.synthetic import write_synthetic_results

        write_synthetic_results(results_dir, a.demo)
    requests_dir = a.requests_dir
    if requests_dir is None and a.requests_repo:
        requests_dir = cache / "leaderboard" / "requests" / a.requests_repo.replace("/", "__")
    return Config(results_dir, requests_dir, a.results_repo, a.requests_repo, a.host, a.port,
                  a.refresh_s)


# --- the data behind the page -----------------------------------------------------------------


class Backend:
    """The cached results, the queue, and the Hub sync when repos are configured."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.csv_dir = Path(tempfile.mkdtemp(prefix="emarena-leaderboard-csv-"))
        sync = self._sync_results if cfg.results_repo else None
        self.results = ResultCache(cfg.results_dir, sync=sync)
        self._queue_lock = threading.Lock()
        self._queue_synced = -float("inf")

    # Hub: snapshots into the local folders (emarena.hub is the one Hub client).
    def _sync_results(self) -> None:
        from emarena import hub

        assert self.cfg.results_repo is not None
        hub.snapshot(self.cfg.results_repo, self.cfg.results_dir, allow_patterns=["*.json"])

    def sync_requests(self, *, force: bool = False) -> str | None:
        """Download the requests repo (if any; at most every QUEUE_SYNC_S seconds unless
        `force`); the error text when that failed."""
        if not self.cfg.requests_repo or self.cfg.requests_dir is None:
            return None
        from emarena import hub
        from emarena.errors import EmArenaError

        with self._queue_lock:
            if not force and time.monotonic() - self._queue_synced < QUEUE_SYNC_S:
                return None
            try:
                hub.snapshot(self.cfg.requests_repo, self.cfg.requests_dir,
                             allow_patterns=[f"{hub.REQUESTS_DIR}/*.json"])
            except EmArenaError as e:
                return e.render()
            self._queue_synced = time.monotonic()
        return None

    def samples_path(self, rs: ResultSet, cell_id: str) -> Path | None:
        """The cell's samples.jsonl: local, or fetched from the results repo on first use."""
        local = rs.samples_file(cell_id)
        if local is not None or not self.cfg.results_repo:
            return local
        rec = rs.cells.get(cell_id)
        if rec is None or not rec.path.endswith(".json"):
            return None
        from emarena import hub
        from emarena.errors import EmArenaError

        rel = rec.path[: -len(".json")] + ".samples.jsonl"
        try:
            data = hub.download(self.cfg.results_repo, rel)
        except EmArenaError:
            return None
        dest = self.cfg.results_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest

    def csv_file(self, frame: Any) -> str:
        """The shown table as a CSV file (one folder per content, so a download keeps the
        name emarena-leaderboard.csv)."""
        text = frame.to_csv(index=False)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        folder = self.csv_dir / digest
        path = folder / "emarena-leaderboard.csv"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            display.write_csv(frame, path)
            self._prune_csv()
        return str(path)

    def _prune_csv(self, keep: int = 200) -> None:
        folders = sorted(self.csv_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def refresher(self) -> None:
        if self.cfg.refresh_s <= 0:
            return

        def loop() -> None:
            while True:
                time.sleep(self.cfg.refresh_s)
                self.results.refresh()

        threading.Thread(target=loop, name="refresh-results", daemon=True).start()


# --- the page ---------------------------------------------------------------------------------


def status_markdown(rs: ResultSet, sync_error: str | None) -> str:
    rows = len(rs.table("all"))
    when = datetime.fromtimestamp(rs.loaded_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"{rs.n_files} result file(s): **{len(rs.cells)} cells** in **{rows} rows**"
        f" · {len(rs.invalid)} not counted (see *Invalid results*) · read {when}"
        f" in {rs.seconds:.1f} s"
    )
    if sync_error:
        text += ("\n\n**Warning:** the last download from the Hub failed; showing the previous "
                 f"data. `{sync_error.splitlines()[0]}`")
    return f"<span class='emarena-small'>{text}</span>"


def _cell_choices(rs: ResultSet, cell_ids: list[str] | None = None) -> list[tuple[str, str]]:
    ids = cell_ids if cell_ids is not None else list(rs.cells)
    recs = [rs.cells[c] for c in ids if c in rs.cells]
    recs.sort(key=lambda r: r.label)
    return [(r.label, r.cell_id) for r in recs]


def build_app(backend: Backend):  # noqa: C901 - one function lays out one page
    import gradio as gr
    import pandas as pd

    header_choices = [(c.header, c.key) for c in display.COLUMNS]
    sortable = [(c.header, c.key) for c in display.COLUMNS if c.key not in ("notes",)]

    def current() -> ResultSet:
        return backend.results.get()

    def make_view(cond, models, ems, regimes, divisions, judges, official, search, sort_by,
                  descending, columns, show_all, sources=None) -> display.View:
        return display.View(
            condition=cond or "headline", models=models or [], em_datasets=ems or [],
            regimes=regimes or [], divisions=divisions or [], judges=judges or [],
            sources=sources or [],
            official_only=bool(official), search=search or "", sort_by=sort_by or "em_reduction",
            descending=bool(descending), columns=columns or display.DEFAULT_COLUMNS,
            limit=None if show_all else display.FIRST_ROWS,
        )

    def render_view(*args):
        frame, page, count, row_cells = view_parts(*args)
        return page, backend.csv_file(frame), count, row_cells

    def view_parts(*args):
        """(shown strings, table HTML, row count text, cell ids per row) of a view."""
        rs = current()
        view = make_view(*args)
        matching = display.apply_view(rs.table(view.condition), view)
        rows = display.first_rows(matching, view.limit)
        frame = display.format_table(rows, view.columns)
        total = len(rs.table(view.condition))
        cut = (f" (the first {len(rows)} of {len(matching)} that match: tick <b>Show all "
               "rows</b> to see and download all)" if len(rows) < len(matching) else "")
        count = (f"<span class='emarena-small'>Showing {len(frame)} of {total} rows{cut}; "
                 f"condition: {view.condition}; unofficial rows in grey.</span>")
        row_cells = [list(ids) for ids in rows["cell_ids"]] if "cell_ids" in rows else []
        official_rows = [bool(x) for x in rows["official"]] if "official" in rows else None
        page = display.table_html(frame, view.columns, sort_by=view.sort_by,
                                  descending=view.descending, official=official_rows)
        return frame, page, count, row_cells

    def page_values(rs: ResultSet) -> dict[str, Any]:
        """Everything the first page shows for `rs` with the default view."""
        d = display.View()
        frame, page, cnt, cells = view_parts(
            d.condition, [], [], [], [], [], d.official_only, d.search, d.sort_by, d.descending,
            list(d.columns), False, [],
        )
        t = rs.table("all")
        return {
            "status": status_markdown(rs, backend.results.sync_error),
            "models": display.choices(t, "model"),
            "ems": display.choices(t, "em_dataset"),
            "regimes": display.choices(t, "regime"),
            "divisions": display.choices(t, "division"),
            "judges": display.choices(t, "judge"),
            "sources": display.choices(t, "source"),
            "frame": frame, "table": page, "csv": backend.csv_file(frame), "count": cnt,
            "cells": cells,
            "invalid": rs.invalid_frame(),
        }

    # The first page is built with the data already in it: no round trip before the table
    # shows. A page load only re-sends it when the results were re-read since.
    baked = current()
    first = page_values(baked)

    with gr.Blocks(title=about.TITLE, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {about.TITLE}")
        gr.Markdown(about.INTRODUCTION)
        status = gr.Markdown(first["status"], elem_id="status")
        row_cells = gr.State(first["cells"])
        with gr.Tabs(selected="leaderboard") as tabs:
            # --- leaderboard
            with gr.Tab("Leaderboard", id="leaderboard"):
                with gr.Row():
                    search = gr.Textbox(label="Search", placeholder="defense, model, dataset, "
                                        "regime, judge… (all words must match)", scale=3,
                                        elem_id="search")
                    condition = gr.Radio(["headline", "default-system", "no-system", "all"],
                                         value="headline", label="Condition", scale=2,
                                         elem_id="condition")
                    official = gr.Checkbox(label="Official only", value=False, scale=1,
                                           elem_id="official-only")
                with gr.Row():
                    f_model = gr.Dropdown(first["models"], value=[], multiselect=True,
                                          label="Model", elem_id="f-model")
                    f_em = gr.Dropdown(first["ems"], value=[], multiselect=True,
                                       label="EM dataset", elem_id="f-em")
                    f_regime = gr.Dropdown(first["regimes"], value=[], multiselect=True,
                                           label="Regime", elem_id="f-regime")
                    f_division = gr.Dropdown(first["divisions"], value=[], multiselect=True,
                                             label="Division", elem_id="f-division")
                    f_judge = gr.Dropdown(first["judges"], value=[], multiselect=True,
                                          label="Judge", elem_id="f-judge")
                    f_source = gr.Dropdown(first["sources"], value=[], multiselect=True,
                                           label="Source (published / measured)",
                                           elem_id="f-source")
                with gr.Row():
                    sort_by = gr.Dropdown(sortable, value="em_reduction", label="Sort by",
                                          elem_id="sort-by", scale=2)
                    descending = gr.Checkbox(label="Descending (missing values last)",
                                             value=True, elem_id="descending", scale=1)
                    reload_btn = gr.Button("Reload results", size="sm", scale=1,
                                           elem_id="reload")
                with gr.Accordion("Columns", open=False):
                    columns = gr.CheckboxGroup(header_choices, value=display.DEFAULT_COLUMNS,
                                               label="Shown columns", elem_id="columns")
                gr.Markdown("<span class='emarena-small'>Click a header to sort, a row to open "
                            "its cells in the drill-down.</span>")
                table = gr.HTML(first["table"], js_on_load=TABLE_JS, elem_id="leaderboard-table")
                with gr.Row():
                    count = gr.Markdown(first["count"], elem_id="row-count")
                    show_all = gr.Checkbox(label="Show all rows", value=False, scale=0,
                                           min_width=160, elem_id="show-all")
                    download = gr.DownloadButton("Download CSV", value=first["csv"], size="sm",
                                                 elem_id="download-csv")
                with gr.Accordion(f"Invalid results ({len(first['invalid'])})", open=False,
                                  elem_id="invalid-accordion") as invalid_acc:
                    gr.Markdown("Files that could not be read or do not match result schema "
                                "v1, and duplicated cells. None of them is counted anywhere.")
                    invalid_table = gr.HTML(
                        display.plain_table_html(first["invalid"], "invalid-list"),
                        elem_id="invalid-table")
            # --- plots
            with gr.Tab("Plots", id="plots") as plots_tab:
                gr.Markdown("Rows as filtered on the Leaderboard tab (its condition, filters and "
                            "search), for one model and EM dataset. Error bars: 95% intervals.")
                with gr.Row():
                    p_model = gr.Dropdown(first["models"], value=next(iter(first["models"]), None),
                                          label="Model", elem_id="p-model")
                    p_em = gr.Dropdown(first["ems"], value=next(iter(first["ems"]), None),
                                       label="EM dataset", elem_id="p-em")
                    p_cap = gr.Radio([("TruthfulQA", "truthfulqa_accuracy"),
                                      ("MMLU", "mmlu_accuracy")], value="truthfulqa_accuracy",
                                     label="Capability axis")
                    p_metric = gr.Dropdown(
                        [(display.BY_KEY[m].header, m) for m in (
                            "em_reduction", "misalignment_rate", "capability_change_truthfulqa",
                            "capability_change_mmlu", "identity_consistency",
                            "self_recognition_accuracy")],
                        value="em_reduction", label="Bar metric",
                    )
                # gr.HTML with an <img>, not gr.Plot: see plots.figure_html
                scatter = gr.HTML(label="Misalignment vs capability", elem_id="scatter")
                bars = gr.HTML(label="By defense", elem_id="bars")
            # --- drill-down
            with gr.Tab("Drill-down", id="drill") as drill_tab:
                cell = gr.Dropdown([], label="Cell (model / EM dataset / regime / defense / seed "
                                   "/ preset / judge); the rows shown on the Leaderboard tab",
                                   elem_id="cell-picker")
                cell_metrics = gr.HTML(elem_id="cell-metrics")
                reproduce = gr.Markdown(elem_id="reproduce")
                with gr.Row():
                    cell_config = gr.Markdown(elem_id="cell-config")
                    cell_prov = gr.Markdown(elem_id="cell-provenance")
                with gr.Row():
                    s_question = gr.Dropdown([("(all questions)", "")], value="",
                                             label="Question", elem_id="s-question")
                    s_condition = gr.Radio(["all", "default-system", "no-system"], value="all",
                                           label="Condition", elem_id="s-condition")
                samples_note = gr.Markdown(elem_id="samples-note")
                samples = gr.HTML(elem_id="samples-table")
            # --- submit
            with gr.Tab("Submit", id="submit"):
                gr.Markdown(about.SUBMIT)
                if backend.cfg.requests_repo is None and backend.cfg.requests_dir is None:
                    gr.Markdown("**Note:** this instance has no requests repo or folder: you can "
                                "validate here, but not submit.")
                with gr.Row():
                    with gr.Column(scale=3):
                        yaml_box = gr.Textbox(lines=22, max_lines=60, label="defense.yaml",
                                              placeholder="paste defense.yaml here (see "
                                              "submissions/_template/defense.yaml)",
                                              elem_id="yaml-box")
                        upload = gr.File(label="…or upload defense.yaml", file_types=[".yaml",
                                         ".yml"], type="filepath", elem_id="yaml-upload")
                    with gr.Column(scale=2):
                        readme_box = gr.Textbox(lines=12, label="README.md (method, source, "
                                                "params)", elem_id="readme-box")
                        submitter = gr.Textbox(label="Submitter (name or HF username)",
                                               elem_id="submitter")
                        with gr.Row():
                            validate_btn = gr.Button("Validate", elem_id="validate-btn")
                            submit_btn = gr.Button("Submit", variant="primary",
                                                   elem_id="submit-btn")
                        submit_out = gr.Markdown(elem_id="submit-result")
            # --- queue
            with gr.Tab("Queue", id="queue") as queue_tab:
                queue_refresh = gr.Button("Refresh", size="sm", elem_id="queue-refresh")
                queue_note = gr.Markdown(elem_id="queue-note")
                queue_table = gr.HTML(elem_id="queue-table")
                q_pick = gr.Dropdown([], label="Request", elem_id="queue-pick")
                q_history = gr.HTML(elem_id="queue-history")
                q_error = gr.Textbox(label="Error", lines=6, interactive=False,
                                     elem_id="queue-error")
            # --- about
            with gr.Tab("About", id="about"):
                gr.Markdown(about.about_markdown())
                gr.Textbox(value=about.citations_markdown(), label=about.CITATION_BUTTON_LABEL,
                           lines=10, buttons=["copy"])

        view_inputs = [condition, f_model, f_em, f_regime, f_division, f_judge, official,
                       search, sort_by, descending, columns, show_all, f_source]
        view_outputs = [table, download, count, row_cells]
        load_outputs = [status, f_model, f_em, f_regime, f_division, f_judge, f_source,
                        *view_outputs,
                        invalid_acc, invalid_table, p_model, p_em]

        # --- leaderboard
        def fresh_page(*args):
            rs = current()
            v = page_values(rs)
            page, csv, cnt, cells = render_view(*args)
            return (
                v["status"],
                gr.Dropdown(choices=v["models"]), gr.Dropdown(choices=v["ems"]),
                gr.Dropdown(choices=v["regimes"]), gr.Dropdown(choices=v["divisions"]),
                gr.Dropdown(choices=v["judges"]), gr.Dropdown(choices=v["sources"]),
                page, csv, cnt, cells,
                gr.Accordion(label=f"Invalid results ({len(v['invalid'])})"),
                display.plain_table_html(v["invalid"], "invalid-list"),
                gr.Dropdown(choices=v["models"]), gr.Dropdown(choices=v["ems"]),
            )

        def on_page_load(*args):
            if current() is baked:
                # Nothing changed; only the CSV link is re-sent, since gradio's cache deletes
                # files after an hour (delete_cache) and the CSV folder keeps 200 views.
                out = [gr.skip() for _ in load_outputs]
                out[load_outputs.index(download)] = backend.csv_file(first["frame"])
                return tuple(out)
            return fresh_page(*args)

        def on_reload(*args):
            backend.results.refresh()
            return fresh_page(*args)

        demo.load(on_page_load, api_visibility=API, inputs=view_inputs, outputs=load_outputs,
                  show_progress="hidden")
        reload_btn.click(on_reload, api_visibility=API, inputs=view_inputs, outputs=load_outputs)
        for comp in (condition, f_model, f_em, f_regime, f_division, f_judge, official, sort_by,
                     descending, columns, show_all, f_source):
            comp.input(render_view, api_visibility=API, inputs=view_inputs, outputs=view_outputs)
        search.change(render_view, api_visibility=API, inputs=view_inputs, outputs=view_outputs,
                      trigger_mode="always_last")

        # --- plots (drawn when the tab is opened, then on every change of its controls)
        def on_plots(*args):
            *vargs, model, em, cap, metric = args
            from emarena.leaderboard import plots

            rs = current()
            view = make_view(*vargs)
            rows = display.apply_view(rs.table(view.condition), view)
            return (plots.figure_html(plots.misalignment_vs_capability(rows, model, em, cap),
                                      "Misalignment vs capability"),
                    plots.figure_html(plots.defense_bars(rows, metric, model, em),
                                      f"By defense: {metric}"))

        plot_inputs = [*view_inputs, p_model, p_em, p_cap, p_metric]
        plots_tab.select(on_plots, api_visibility=API, inputs=plot_inputs, outputs=[scatter, bars])
        for comp in (p_model, p_em, p_cap, p_metric):
            comp.input(on_plots, api_visibility=API, inputs=plot_inputs, outputs=[scatter, bars])

        # --- drill-down
        def shown_cells(cells: list[list[str]]) -> list[str]:
            return [c for ids in cells for c in ids]

        def on_table_click(cells: list[list[str]], cond, models, ems, regimes, divisions, judges,
                           official_only, query, sort_key, desc, cols, everything, sources,
                           evt: gr.EventData):
            """A header click sorts (again: reverses); a row click opens the drill-down."""
            # (explicit parameters: gradio passes EventData only to a named argument)
            data = evt._data if isinstance(evt._data, dict) else {}
            keep_view = tuple(gr.skip() for _ in view_outputs)
            key = data.get("sort")
            if isinstance(key, str) and key in display.BY_KEY:
                if key == sort_key:
                    desc = not desc
                else:  # metrics start with the best first, rank with 1, text A to Z
                    col = display.BY_KEY[key]
                    desc = col.kind == "metric" and col.key not in display.LOWER_IS_BETTER
                view = (cond, models, ems, regimes, divisions, judges, official_only, query, key,
                        desc, cols, everything, sources)
                return (*render_view(*view), key, desc, gr.skip(), gr.skip())
            idx = data.get("row")
            if isinstance(idx, int) and 0 <= idx < len(cells):
                ids = cells[idx]
                choices = _cell_choices(current(), shown_cells(cells))
                return (*keep_view, gr.skip(), gr.skip(), gr.Tabs(selected="drill"),
                        gr.Dropdown(choices=choices, value=ids[0] if ids else None))
            return (*keep_view, gr.skip(), gr.skip(), gr.skip(), gr.skip())

        table.click(on_table_click, api_visibility=API, inputs=[row_cells, *view_inputs],
                    outputs=[*view_outputs, sort_by, descending, tabs, cell])

        def on_drill_tab(cells: list[list[str]]):
            return gr.Dropdown(choices=_cell_choices(current(), shown_cells(cells)))

        drill_tab.select(on_drill_tab, api_visibility=API, inputs=[row_cells], outputs=[cell])

        def on_cell(cell_id: str | None, question: str, cond: str):
            rs = current()
            rec = rs.cells.get(cell_id or "")
            if rec is None:
                return ("", "", "", "", gr.Dropdown(choices=[("(all questions)", "")], value=""),
                        "Pick a cell.", "")
            r = rec.result
            c = r.cell
            cmd = about.reproduce_command(
                submission=c.defense.name if c.defense else None, model=c.model.id,
                em_dataset=c.em_dataset, regime=c.regime, seed=c.seed, preset=c.preset,
            )
            config = {"cell_id": r.cell_id, "file": rec.path, "official": r.official,
                      "control_cell_id": r.control_cell_id,
                      "created": r.created.isoformat(), **c.model_dump(mode="json")}
            config_md = f"**Cell (config)**\n\n```json\n{json.dumps(config, indent=2)}\n```"
            prov_md = ("**Provenance**\n\n```json\n"
                       f"{json.dumps(r.provenance.model_dump(mode='json'), indent=2)}\n```")
            s = read_samples(backend.samples_path(rs, r.cell_id))
            qids = sorted({row.question_id for row in s.rows})
            question = question if question in qids else ""
            frame, matched = display.samples_table(s.rows, question, cond)
            cmd = f"**Reproduce this cell** (a GPU machine; see About):\n\n```bash\n{cmd}\n```"
            if r.published is not None:
                cmd = about.published_markdown(r.published)
            metrics_html = display.plain_table_html(display.cell_metrics_table(r),
                                                    "cell-metrics-list")
            return (metrics_html, cmd, config_md, prov_md,
                    gr.Dropdown(choices=[("(all questions)", ""), *[(q, q) for q in qids]],
                                value=question),
                    _samples_note(s, len(frame), matched),
                    display.plain_table_html(frame, "samples-list"))

        def on_samples_filter(cell_id: str | None, question: str, cond: str):
            rs = current()
            rec = rs.cells.get(cell_id or "")
            if rec is None:
                return "Pick a cell.", ""
            s = read_samples(backend.samples_path(rs, rec.cell_id))
            frame, matched = display.samples_table(s.rows, question or "", cond)
            return (_samples_note(s, len(frame), matched),
                    display.plain_table_html(frame, "samples-list"))

        cell.change(on_cell, api_visibility=API, inputs=[cell, s_question, s_condition],
                    outputs=[cell_metrics, reproduce, cell_config, cell_prov, s_question,
                             samples_note, samples])
        for comp in (s_question, s_condition):
            comp.input(on_samples_filter, api_visibility=API,
                       inputs=[cell, s_question, s_condition], outputs=[samples_note, samples])

        # --- submit
        from emarena.leaderboard import submit as sub

        def on_upload(path: str | None):
            # Read up to the limit, decoded like `emarena validate` does (submit.read_upload).
            up = sub.read_upload(path)
            return (gr.skip() if up.text is None else up.text), up.note

        upload.upload(on_upload, api_visibility=API, inputs=[upload],
                      outputs=[yaml_box, submit_out])

        def on_validate(yaml_text: str, readme: str) -> str:
            return sub.validate_text(yaml_text or "", readme or "").markdown()

        validate_btn.click(on_validate, api_visibility=API, inputs=[yaml_box, readme_box],
                           outputs=[submit_out])

        def on_submit(yaml_text: str, readme: str, who: str):
            out = sub.queue_text(yaml_text or "", readme or "", who or "",
                                 requests_repo=backend.cfg.requests_repo,
                                 requests_dir=backend.cfg.requests_dir)
            if out.ok and backend.cfg.requests_repo:
                backend.sync_requests(force=True)  # the Queue tab shows it right away
            return out.markdown()

        submit_btn.click(on_submit, api_visibility=API, inputs=[yaml_box, readme_box, submitter],
                         outputs=[submit_out])

        # --- queue
        def request_detail(reqs, path):
            for r in reqs:
                if r.path == path:
                    history = pd.DataFrame(sub.history_rows(r), columns=sub.HISTORY_COLUMNS)
                    return display.plain_table_html(history, "history-list"), r.error or ""
            return "", ""

        def on_queue(pick: str | None = None, force: bool = False):
            err = backend.sync_requests(force=force)
            reqs, bad = sub.read_queue(backend.cfg.requests_dir)
            frame = display.plain_table_html(
                pd.DataFrame(sub.queue_rows(reqs), columns=sub.QUEUE_COLUMNS), "queue-list")
            if backend.cfg.requests_dir is None:
                note = "No requests repo or folder is configured."
            else:
                counts: dict[str, int] = {}
                for r in reqs:
                    counts[r.status] = counts.get(r.status, 0) + 1
                note = f"{len(reqs)} request(s): " + (
                    ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
            if bad:
                note += "\n\nUnreadable request files: " + "; ".join(
                    f"`{b.path}`: {b.error}" for b in bad)
            if err:
                note += ("\n\n**Warning:** could not download the requests repo: "
                         f"`{err.splitlines()[0]}`")
            choices = [(f"{r.name} — {r.status} ({r.path})", r.path) for r in reqs]
            keep = pick if pick in {r.path for r in reqs} else (reqs[0].path if reqs else None)
            return (note, frame, gr.Dropdown(choices=choices, value=keep),
                    *request_detail(reqs, keep))

        def on_pick(path: str | None):
            reqs, _ = sub.read_queue(backend.cfg.requests_dir)
            return request_detail(reqs, path)

        queue_outputs = [queue_note, queue_table, q_pick, q_history, q_error]
        queue_tab.select(on_queue, api_visibility=API, inputs=[q_pick], outputs=queue_outputs)
        queue_refresh.click(lambda pick: on_queue(pick, force=True), api_visibility=API,
                            inputs=[q_pick], outputs=queue_outputs)
        q_pick.input(on_pick, api_visibility=API, inputs=[q_pick], outputs=[q_history, q_error])
    return demo


def _samples_note(s, shown: int, matched: int) -> str:
    text = f"{matched} answer(s) match" + (f"; showing the first {shown}" if shown < matched
                                           else "")
    if s.errors:
        text += " · " + "; ".join(s.errors[:3]) + (
            f" (and {len(s.errors) - 3} more)" if len(s.errors) > 3 else "")
    return f"<span class='emarena-small'>{text}</span>"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    backend = Backend(cfg)
    backend.results.start()  # parse while gradio imports and the server starts
    demo = build_app(backend)
    backend.refresher()
    print(json.dumps({"results_dir": str(cfg.results_dir), "requests_dir": str(cfg.requests_dir),
                      "results_repo": cfg.results_repo, "requests_repo": cfg.requests_repo,
                      "url": f"http://{cfg.host}:{cfg.port}"}), flush=True)
    from emarena.leaderboard.submit import MAX_UPLOAD_BYTES

    demo.queue(default_concurrency_limit=8).launch(
        server_name=cfg.host, server_port=cfg.port, css=CSS, show_error=True,
        ssr_mode=False, footer_links=[], allowed_paths=[str(backend.csv_dir)],
        # Gradio stops reading an upload's body at this size (HTTP 413): the only file the
        # page takes is a defense.yaml, refused above this size anyway.
        max_file_size=MAX_UPLOAD_BYTES,
    )


if __name__ == "__main__":
    main()
