"""EM Arena leaderboard: the Gradio app (`leaderboard/app.py` and the Space's `app.py` run it).

    python leaderboard/app.py --results-dir results/ [--requests-dir requests/] [--port 7860]
    python leaderboard/app.py --results-repo org/results --requests-repo org/requests
    python leaderboard/app.py --demo 200        # synthetic results in a temp folder

On a Space the repos come from the environment: EMARENA_RESULTS_REPO, EMARENA_REQUESTS_REPO
and HF_TOKEN (a secret; needed to write requests and to read private repos). Without a results
source, or when the Hub cannot be reached, the page says so (and shows the results downloaded
last time) instead of exiting.

Submissions: on a Space with `hf_oauth: true` (or `--oauth`), visitors log in with Hugging Face
(Gradio's OAuth: `gr.LoginButton`, the handler's `gr.OAuthProfile`); the request is made under
their account, at most `EMARENA_SUBMISSIONS_PER_DAY` a day. Without OAuth (a local admin with
write access) the Submitter box is typed in.

What is where: the texts are `emarena.leaderboard.about`, reading and pooling results
`read_results`, which rows a view shows `views`, columns and formatting `display`, figures
`plots`, submissions and the queue `submit`. This module lays out the page and wires events.

Speed: results are parsed once, in a background thread that starts before gradio is imported,
and kept (`ResultCache`); a page view filters and formats the cached table. The first page's
table is in the page's config, so it shows without a server round trip. Every event is private
(no API schema in the page) and plots are inline PNGs in gr.HTML: see
bench/leaderboard_first_page.py.
"""

# No `from __future__ import annotations`: gradio reads the handlers' annotations (gr.EventData,
# gr.OAuthProfile) at runtime.
import argparse
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from emarena.leaderboard import about, display, views  # noqa: E402
from emarena.leaderboard.read_results import (  # noqa: E402
    HEADLINE,
    TABLE_CONDITIONS,
    ResultCache,
    ResultSet,
    budget_text,
    read_choices,
    read_samples,
)

ENV_RESULTS_REPO = "EMARENA_RESULTS_REPO"
ENV_REQUESTS_REPO = "EMARENA_REQUESTS_REPO"
ENV_OAUTH = "EMARENA_OAUTH"
#: Every event is private: the page is the only client, and a public API would put a schema of
#: every endpoint into each first page load.
API = "private"
#: Opening the Queue tab downloads the requests repo at most this often (Refresh always does).
QUEUE_SYNC_S = 15.0
#: Header click -> sort, row click -> drill-down; `trigger` sends them to the server.
TABLE_JS = """
element.addEventListener('click', (e) => {
  const th = e.target.closest('th[data-key]');
  if (th) { trigger('click', {sort: th.dataset.key}); return; }
  const tr = e.target.closest('tr[data-row]');
  if (tr) { trigger('click', {row: parseInt(tr.dataset.row, 10)}); }
});
"""
CSS = """
.gradio-container { max-width: 100% !important; }
#title h1 { font-size: 1.35em; margin: 0; }
#intro p { margin: 0; font-size: 0.9em; }
.emarena-lb-wrap { overflow-x: auto; border: 1px solid var(--border-color-primary);
  -webkit-overflow-scrolling: touch; }
table.emarena-lb { border-collapse: separate; border-spacing: 0; font-size: 0.82em;
  border: none !important;
  width: max-content; font-variant-numeric: tabular-nums; }
table.emarena-lb th { background: var(--background-fill-secondary); cursor: pointer;
  text-align: left; padding: 4px 5px; vertical-align: bottom; font-weight: 600;
  white-space: normal; width: 4.5em; line-height: 1.2; }
table.emarena-lb tr.groups th { text-align: center; cursor: default; max-width: none;
  font-weight: 600; }
table.emarena-lb tr.groups th.group:not([class*="g-"]) { border-left: none !important; }
table.emarena-lb td, table.emarena-lb th { border: none !important;
  border-top: 1px solid var(--border-color-primary) !important; }
table.emarena-lb td { padding: 3px 5px; vertical-align: top; }
table.emarena-lb th.group { border-left: 2px solid var(--border-color-primary) !important; }
table.emarena-lb td.metric { white-space: nowrap; text-align: right; }
table.emarena-lb td.metric .p { display: block; font-size: 0.8em;
  color: var(--body-text-color-subdued); }
table.emarena-lb td.metric.missing { color: var(--body-text-color-subdued); }
table.emarena-lb td.text { max-width: 18em; }
table.emarena-lb td.cost { white-space: nowrap; }
table.emarena-lb .gp { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
table.emarena-lb th:nth-child(1), table.emarena-lb td:nth-child(1),
table.emarena-lb th:nth-child(2), table.emarena-lb td:nth-child(2) {
  position: sticky; background: var(--background-fill-primary); z-index: 1; }
table.emarena-lb th:nth-child(1), table.emarena-lb td:nth-child(1) { left: 0; min-width: 2.4em; }
table.emarena-lb th:nth-child(2), table.emarena-lb td:nth-child(2) { left: 2.4em;
  max-width: 9em; box-shadow: 1px 0 0 var(--border-color-primary); }
table.emarena-lb tr.groups th:nth-child(1) { position: sticky; left: 0; z-index: 2; }
table.emarena-lb thead th { background: var(--background-fill-secondary) !important; }
table.emarena-lb tbody tr[data-row]:hover td { background: var(--background-fill-secondary);
  cursor: pointer; }
table.emarena-lb tr.unofficial td { color: var(--body-text-color-subdued); }
table.emarena-lb tr.reference td { font-style: italic; }
table.emarena-lb tr.reference:first-of-type td,
table.emarena-lb tr.official + tr.reference td,
table.emarena-lb tr.unofficial + tr.reference td { border-top: 2px solid
  var(--border-color-primary); }
.badge-published { background: #7c3aed; color: #fff; border-radius: 4px; padding: 0 5px;
  font-size: 0.85em; font-weight: 600; margin-right: 3px; }
.emarena-plain-wrap { overflow-x: auto; }
table.emarena-plain { border-collapse: collapse; font-size: 0.85em; }
table.emarena-plain th, table.emarena-plain td { padding: 3px 6px; text-align: left;
  border-top: 1px solid var(--border-color-primary); vertical-align: top; }
#invalid-list td, #samples-list td, #choices-list td, #queue-list td, #history-list td {
  white-space: pre-wrap; max-width: 40em; }
#cell-metrics-list td { white-space: nowrap; }
.emarena-small { font-size: 0.85em; color: var(--body-text-color-subdued); }
#submit-result pre, #submit-result code, #reproduce pre, #reproduce code {
  white-space: pre-wrap !important; word-break: break-word; }
#about-md table th { word-break: keep-all; overflow-wrap: normal; hyphens: none; }
#yaml-box textarea { font-family: var(--font-mono); }
#no-results { border: 2px solid #b45309; border-radius: 6px; padding: 8px 12px; }
@media (max-width: 600px) {
  #title h1 { font-size: 1.1em; }
  #intro { display: none; }
  table.emarena-lb { font-size: 0.78em; }
}
"""
VIEW_CHOICES = [("By defense", "defense"), ("By regime", "regime")]


# --- configuration ----------------------------------------------------------------------------


@dataclass
class Config:
    results_dir: Path | None
    """Where the results are read from (a local folder, or the Hub snapshot); None: none."""
    requests_dir: Path | None
    results_repo: str | None
    requests_repo: str | None
    host: str
    port: int
    refresh_s: float
    oauth: bool = False
    """Submit through Hugging Face login (Gradio's OAuth)."""
    per_day: int = 3
    """Requests one account may make in 24 hours."""
    can_write: bool = True
    """A token to write the requests repo is set (always True for a local folder)."""


def default_cache() -> Path:
    """EMARENA_CACHE; on a Space with persistent storage, /data/emarena; else ~/.cache."""
    env = os.environ.get("EMARENA_CACHE")
    if env:
        return Path(env)
    data = Path("/data")
    if os.environ.get("SPACE_ID") and data.is_dir() and os.access(data, os.W_OK):
        return data / "emarena"
    return Path.home() / ".cache" / "emarena"


def parse_args(argv: list[str] | None = None) -> Config:
    from emarena.leaderboard.submit import per_day_limit

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
    ap.add_argument("--oauth", action="store_true",
                    default=bool(os.environ.get("OAUTH_CLIENT_ID"))
                    or os.environ.get(ENV_OAUTH, "") in ("1", "true"),
                    help="Submissions through Hugging Face login (on by itself on a Space with "
                    f"hf_oauth: true; env {ENV_OAUTH}=1). Off: an admin types the submitter.")
    ap.add_argument("--submissions-per-day", type=int, default=per_day_limit(),
                    help="Requests one submitter may make in 24 hours "
                    "(env EMARENA_SUBMISSIONS_PER_DAY).")
    ap.add_argument("--demo", type=int, metavar="N", default=0,
                    help="Write N synthetic result files into --results-dir (default: a temp "
                    "folder) and show them.")
    a = ap.parse_args(argv)
    cache = default_cache()
    results_dir = a.results_dir
    if results_dir is None:
        if a.results_repo:
            results_dir = cache / "leaderboard" / "results" / a.results_repo.replace("/", "__")
        elif a.demo:
            results_dir = Path(tempfile.mkdtemp(prefix="emarena-demo-results-"))
    if a.demo:
        from emarena.leaderboard.synthetic import write_synthetic_results

        assert results_dir is not None
        write_synthetic_results(results_dir, a.demo)
    requests_dir = a.requests_dir
    if requests_dir is None and a.requests_repo:
        requests_dir = cache / "leaderboard" / "requests" / a.requests_repo.replace("/", "__")
    can_write = not a.requests_repo or bool(os.environ.get("HF_TOKEN"))
    return Config(results_dir, requests_dir, a.results_repo, a.requests_repo, a.host, a.port,
                  a.refresh_s, a.oauth, a.submissions_per_day, can_write)


# --- the data behind the page -----------------------------------------------------------------


class Backend:
    """The cached results, the queue, and the Hub sync when repos are configured."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.export_dir = Path(tempfile.mkdtemp(prefix="emarena-leaderboard-export-"))
        sync = self._sync_results if cfg.results_repo else None
        root = cfg.results_dir or self.export_dir / "no-results"
        self.results = ResultCache(root, sync=sync)
        self._queue_lock = threading.Lock()
        self._queue_synced = -float("inf")

    # Hub: snapshots into the local folders (emarena.hub is the one Hub client).
    def _sync_results(self) -> None:
        from emarena import hub

        assert self.cfg.results_repo is not None and self.cfg.results_dir is not None
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

    def item_path(self, rs: ResultSet, cell_id: str, what: str = "samples") -> Path | None:
        """The cell's samples.jsonl (`what="choices"`: choices.jsonl): local, or fetched from
        the results repo on first use."""
        local = rs.samples_file(cell_id) if what == "samples" else rs.choices_file(cell_id)
        if local is not None or not self.cfg.results_repo or self.cfg.results_dir is None:
            return local
        rec = rs.cells.get(cell_id)
        if rec is None or not rec.path.endswith(".json"):
            return None
        from emarena import hub
        from emarena.errors import EmArenaError

        rel = rec.path[: -len(".json")] + f".{what}.jsonl"
        dest = self.cfg.results_dir / rel
        if dest.is_file():
            return dest
        try:
            data = hub.download(self.cfg.results_repo, rel)
        except EmArenaError:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return dest

    def samples_path(self, rs: ResultSet, cell_id: str) -> Path | None:
        return self.item_path(rs, cell_id, "samples")

    def exports(self, rows: Any, cols: list) -> dict[str, str]:
        """The rows as CSV, JSON lines and Parquet files (one folder per content, so a download
        keeps its name)."""
        frame = display.export_frame(rows, cols)
        digest = hashlib.sha256(frame.to_csv(index=False).encode("utf-8")).hexdigest()[:16]
        folder = self.export_dir / digest
        if not (folder / "emarena-leaderboard.csv").exists():
            paths = display.write_exports(rows, cols, folder)
            self._prune()
        else:
            paths = {p.suffix[1:]: p for p in folder.iterdir()}
        return {k: str(v) for k, v in paths.items()}

    def _prune(self, keep: int = 200) -> None:
        folders = sorted((p for p in self.export_dir.iterdir() if p.name != "no-results"),
                         key=lambda p: p.stat().st_mtime)
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def refresher(self) -> None:
        if self.cfg.refresh_s <= 0 or self.cfg.results_dir is None:
            return

        def loop() -> None:
            while True:
                time.sleep(self.cfg.refresh_s)
                self.results.refresh()

        threading.Thread(target=loop, name="refresh-results", daemon=True).start()


# --- the page ---------------------------------------------------------------------------------


def status_markdown(rs: ResultSet, sync_error: str | None, cfg: Config | None = None,
                    last_sync: str | None = None) -> str:
    if cfg is not None and cfg.results_dir is None:
        return (
            "<div id='no-results'><b>No results source is configured.</b> This leaderboard "
            f"reads a Hub dataset of result files: set <code>{ENV_RESULTS_REPO}</code> (e.g. "
            "<code>org/em-arena-results</code>) in the Space's settings, or run it locally "
            "with <code>--results-dir FOLDER</code>. The protocol, the metric definitions and "
            "the Submit tab's validation work meanwhile.</div>")
    rows = len(rs.table(HEADLINE))
    when = datetime.fromtimestamp(rs.loaded_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"{rs.n_files} result file(s): <b>{len(rs.cells)} cells</b> in {rows} rows"
        f" · {len(rs.invalid)} not counted (see <i>Invalid results</i>) · read {when}"
    )
    if sync_error:
        since = f" downloaded {last_sync}" if last_sync else " cached on this machine"
        first = sync_error.splitlines()[0]
        text = (f"<div id='no-results'><b>The Hub could not be reached</b>; showing the results"
                f"{since} ({len(rs.cells)} cells). <code>{_esc(first)}</code></div>" + text)
    return f"<span class='emarena-small'>{text}</span>"


def _condition_words(condition: str, rows) -> str:
    """The view's condition as the count line says it: for the headline, which conditions the
    rows' numbers are read under (`default-system` for a model with an identity prompt)."""
    if condition != HEADLINE or "condition" not in rows.columns or rows.empty:
        return condition
    return f"headline ({', '.join(sorted({str(c) for c in rows['condition'].dropna()}))})"


def _esc(text: str) -> str:
    import html

    return html.escape(text)


def _cell_label(rs: ResultSet, cell_id: str) -> str:
    rec = rs.cells.get(cell_id)
    if rec is None:
        return cell_id[:12]
    c = rec.result.cell
    return f"{c.regime} · seed {c.seed} [{cell_id[:8]}]"


def _row_summary(rs: ResultSet, cell_ids: list[str]) -> str:
    """Which cells (regimes and seeds) a row pools."""
    by_regime: dict[str, list[int]] = {}
    first = None
    for cid in cell_ids:
        rec = rs.cells.get(cid)
        if rec is None:
            continue
        first = first or rec.result
        by_regime.setdefault(rec.result.cell.regime, []).append(rec.result.cell.seed)
    if first is None:
        return "Pick a row on the Leaderboard tab."
    c = first.cell
    name = c.defense.name if c.defense else "(control)"
    pools = "; ".join(f"{r}: seed(s) {', '.join(str(s) for s in sorted(ss))}"
                      for r, ss in by_regime.items())
    budget = budget_text(first)
    return (f"**{name}** · {c.model.id} / {c.em_dataset} · preset `{c.preset}` · judge "
            f"`{first.provenance.judge.id}` ({first.provenance.judge.mode}) · headline "
            f"`{first.headline_condition}`" + (f" · budget {budget}" if budget else "")
            + f" — this row pools {len(cell_ids)} cell(s): {pools}. Pick the cell to read below.")


def _paired_markdown(row: dict | None, regime: str) -> str:
    """The row's paired differences (to the EM-only control and to SGTR) for one regime."""
    if not row:
        return ""
    lines = []
    for name, what in (("em_reduction", "EM-only control"), ("vs_sgtr", "SGTR")):
        key = f"{regime}:{name}" if f"{regime}:{name}" in row else name
        v = row.get(key)
        if v is None or (isinstance(v, float) and v != v):
            reason = row.get(f"{key}.reason") or "not available"
            lines.append(f"- vs {what}: — ({reason})")
            continue
        lo, hi = row.get(f"{key}.ci_low"), row.get(f"{key}.ci_high")
        p = row.get(f"{key}.p")
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo == lo and lo is not None else ""
        pv = f", {display.format_p(p)}" if p is not None and p == p else ""
        how = row.get(f"{key}.pairing") or ""
        lines.append(f"- misalignment of the {what} minus this defense's: **{v:+.3f}**{ci}"
                     f"{pv} (paired by {how})")
    return f"**Paired differences ({regime}, all seeds of the row)**\n\n" + "\n".join(lines)


def build_app(backend: Backend):  # noqa: C901 - one function lays out one page
    import gradio as gr
    import pandas as pd

    from emarena.leaderboard import submit as sub

    def current() -> ResultSet:
        return backend.results.get()

    def make_view(group_by, model, em, cond, regimes, divisions, judges, sources, official,
                  search, sort_by, descending, columns, show_all) -> views.View:
        return views.View(
            group_by=group_by or "defense", model=model or "", em_dataset=em or "",
            condition=cond or HEADLINE, regimes=regimes or [], divisions=divisions or [],
            judges=judges or [], sources=sources or [], official_only=bool(official),
            search=search or "", sort_by=sort_by or "", descending=bool(descending),
            columns=columns or [], limit=None if show_all else views.FIRST_ROWS,
        )

    def resolved(*args) -> tuple[views.View, Any]:
        """The view of the page's inputs (the defense view's model and EM dataset filled in
        with the defaults when none is chosen) and its condition's table."""
        view = make_view(*args)
        table = current().table(view.condition)
        if view.group_by == "defense" and (not view.model or not view.em_dataset):
            dm, de = views.default_selection(table)
            view = views.View(**{**view.__dict__, "model": view.model or dm,
                                 "em_dataset": view.em_dataset or de})
        return view, table

    def view_parts(*args):
        """(table HTML, count text, exports, cell ids per row, view, columns, shown keys)."""
        view, table = resolved(*args)
        matching = views.apply_view(table, view)
        rows = views.first_rows(matching, view.limit)
        cols = display.columns_for(view, rows)
        shown = [k for k in (view.columns or display.default_keys(cols, rows))
                 if k in {c.key for c in cols}] or display.default_keys(cols, rows)
        if ("source" in rows.columns and (rows["source"] == "published").any()
                and "source_label" not in shown and "defense" in shown):
            # published rows are never shown without their Source (and its badge)
            shown.insert(shown.index("defense") + 1, "source_label")
        page = display.table_html(rows, cols, shown, sort_by=view.sort_key,
                                  descending=view.descending)
        what = (f"{view.model} / {view.em_dataset}, one row per defense"
                if view.group_by == "defense" else "one row per defense and regime")
        cut = (f" (the first {len(rows)} of {len(matching)}: tick <b>Show all rows</b>)"
               if len(rows) < len(matching) else "")
        count = (f"<span class='emarena-small'>{len(rows)} rows{cut}: {what}; condition "
                 f"{_condition_words(view.condition, rows)}. Hover a number for its interval, "
                 "n and unscored count; click a row for its answers; grey rows are "
                 "unofficial.</span>")
        cells = [list(ids) for ids in rows["cell_ids"]] if "cell_ids" in rows else []
        files = backend.exports(rows, cols) if len(rows) else {}
        return page, count, files, cells, view, cols, shown

    def downloads(files: dict[str, str]):
        return tuple(gr.DownloadButton(value=files.get(k), interactive=k in files)
                     for k in ("csv", "jsonl", "parquet"))

    def render_view(*args):
        page, count, files, cells, _, _, _ = view_parts(*args)
        return (page, count, *downloads(files), cells)

    def selection(rs: ResultSet) -> dict[str, Any]:
        t = rs.table(HEADLINE)
        model, em = views.default_selection(t)
        return {"models": views.choices(t, "model"), "ems": views.choices(t, "em_dataset"),
                "model": model, "em": em, "regimes": views.choices(t, "regime"),
                "divisions": views.choices(t, "division"), "judges": views.choices(t, "judge"),
                "sources": views.choices(t, "source")}

    def sortables(group_by: str, rows=None) -> list[tuple[str, str]]:
        cols = display.columns_for(views.View(group_by=group_by or "defense"), rows)
        return [((f"{c.group.capitalize()} · " if c.group else "") + c.header, c.key)
                for c in cols if c.key not in ("notes",)]

    # The first page is built with the data already in it: no round trip before the table
    # shows. A page load only re-sends it when the results were re-read since.
    baked = current()
    sel = selection(baked)
    first_args = ("defense", sel["model"], sel["em"], HEADLINE, [], [], [], [], False, "", "",
                  True, [], False)
    (first_page, first_count, first_files, first_cells, first_view, first_cols,
     first_shown) = view_parts(*first_args)
    cfg = backend.cfg

    with gr.Blocks(title=about.TITLE, delete_cache=(3600, 3600), fill_width=True) as demo:
        gr.Markdown(f"# {about.TITLE}", elem_id="title")
        gr.Markdown(about.SHORT_INTRO, elem_id="intro")
        status = gr.HTML(status_markdown(baked, backend.results.sync_error, cfg,
                                         backend.results.last_sync), elem_id="status")
        row_cells = gr.State(first_cells)
        with gr.Tabs(selected="leaderboard") as tabs:
            # --- leaderboard
            with gr.Tab("Leaderboard", id="leaderboard"):
                with gr.Row(equal_height=True):
                    f_model = gr.Dropdown(sel["models"], value=sel["model"] or None,
                                          label="Model", elem_id="f-model", min_width=150)
                    f_em = gr.Dropdown(sel["ems"], value=sel["em"] or None, label="EM dataset",
                                       elem_id="f-em", min_width=150)
                    group_by = gr.Radio(VIEW_CHOICES, value="defense", label="Rows",
                                        show_label=False, elem_id="group-by", min_width=150)
                table = gr.HTML(first_page, js_on_load=TABLE_JS, elem_id="leaderboard-table")
                with gr.Row(equal_height=True):
                    count = gr.HTML(first_count, elem_id="row-count")
                with gr.Row(equal_height=True):
                    show_all = gr.Checkbox(label="Show all rows", value=False, scale=0,
                                           min_width=140, elem_id="show-all")
                    dl_csv = gr.DownloadButton("CSV", value=first_files.get("csv"), size="sm",
                                               elem_id="download-csv", scale=0, min_width=80)
                    dl_json = gr.DownloadButton("JSON lines", value=first_files.get("jsonl"),
                                                size="sm", elem_id="download-jsonl", scale=0,
                                                min_width=110)
                    dl_parquet = gr.DownloadButton(
                        "Parquet", value=first_files.get("parquet"), size="sm",
                        elem_id="download-parquet", scale=0, min_width=90,
                        interactive="parquet" in first_files)
                with gr.Accordion("Filters, search, sort and columns", open=False,
                                  elem_id="filters"):
                    with gr.Row():
                        search = gr.Textbox(label="Search", placeholder="defense, model, "
                                            "dataset, judge… (all words must match)", scale=3,
                                            elem_id="search")
                        condition = gr.Radio(list(TABLE_CONDITIONS), value=HEADLINE,
                                             label="Condition", scale=2,
                                             elem_id="condition",
                                             info="headline: each model's identity-bearing "
                                             "condition; all pools both")
                        official = gr.Checkbox(label="Official only", value=False, scale=1,
                                               elem_id="official-only")
                    with gr.Row():
                        f_regime = gr.Dropdown(sel["regimes"], value=[], multiselect=True,
                                               label="Regime (rows by regime)",
                                               elem_id="f-regime")
                        f_division = gr.Dropdown(sel["divisions"], value=[], multiselect=True,
                                                 label="Division", elem_id="f-division")
                        f_judge = gr.Dropdown(sel["judges"], value=[], multiselect=True,
                                              label="Judge", elem_id="f-judge")
                        f_source = gr.Dropdown(sel["sources"], value=[], multiselect=True,
                                               label="Source (published / measured)",
                                               elem_id="f-source")
                    with gr.Row():
                        sort_by = gr.Dropdown(sortables("defense"), value=first_view.sort_key,
                                              label="Sort by (or click a header)",
                                              elem_id="sort-by", scale=2)
                        descending = gr.Checkbox(label="Descending (missing values last)",
                                                 value=True, elem_id="descending", scale=1)
                        reload_btn = gr.Button("Reload results", size="sm", scale=1,
                                               elem_id="reload")
                    columns = gr.CheckboxGroup(
                        [(((f"{c.group.capitalize()} · ") if c.group else "") + c.header, c.key)
                         for c in first_cols], value=first_shown,
                        label="Shown columns", elem_id="columns")
                with gr.Accordion(f"Invalid results ({len(baked.invalid)})", open=False,
                                  elem_id="invalid-accordion") as invalid_acc:
                    gr.Markdown("Files that could not be read or do not match result schema "
                                "v1, and duplicated cells. None of them is counted anywhere.")
                    invalid_table = gr.HTML(
                        display.plain_table_html(baked.invalid_frame(), "invalid-list"),
                        elem_id="invalid-table")
            # --- plots
            with gr.Tab("Plots", id="plots") as plots_tab:
                gr.Markdown("One point per defense of the model and EM dataset chosen on the "
                            "Leaderboard tab (its condition and filters); bars: 95% intervals. "
                            "The EM-only control and the base model are the reference points.")
                with gr.Row():
                    p_unofficial = gr.Checkbox(label="Include unofficial rows", value=False,
                                               elem_id="p-unofficial")
                    p_regime = gr.Radio(["reversal", "prevention"], value="reversal",
                                        label="Regime (misalignment vs capability)",
                                        elem_id="p-regime")
                    p_cap = gr.Radio([("TruthfulQA", "truthfulqa_accuracy"),
                                      ("MMLU", "mmlu_accuracy")], value="truthfulqa_accuracy",
                                     label="Capability axis", elem_id="p-cap")
                plot_a = gr.HTML(elem_id="plot-prevention-reversal")
                plot_b = gr.HTML(elem_id="plot-tradeoff")
            # --- drill-down
            with gr.Tab("Drill-down", id="drill") as drill_tab:
                d_row = gr.Markdown("Pick a row on the Leaderboard tab.", elem_id="d-row")
                cell = gr.Dropdown([], label="Cell of this row (regime · seed)",
                                   elem_id="cell-picker")
                reproduce = gr.Markdown(elem_id="reproduce")
                d_paired = gr.Markdown(elem_id="d-paired")
                gr.Markdown("### Answers", elem_id="answers-title")
                with gr.Row():
                    s_question = gr.Dropdown([("(all questions)", "")], value="",
                                             label="Question", elem_id="s-question",
                                             min_width=160)
                    s_condition = gr.Radio(["all", "default-system", "no-system"], value="all",
                                           label="Condition", elem_id="s-condition",
                                           min_width=160)
                    s_sort = gr.Dropdown([(v, k) for k, v in display.SAMPLE_SORTS.items()],
                                         value="", label="Sort by", elem_id="s-sort",
                                         min_width=160)
                with gr.Row():
                    s_aligned = gr.Slider(0, 100, value=100, step=1, label="aligned at most",
                                          elem_id="s-aligned", min_width=160)
                    s_coherent = gr.Slider(0, 100, value=0, step=1, label="coherent at least",
                                           elem_id="s-coherent", min_width=160)
                    s_misaligned = gr.Checkbox(label="Misaligned only (what the rate counts)",
                                               value=False, elem_id="s-misaligned",
                                               min_width=160)
                samples_note = gr.HTML(elem_id="samples-note")
                samples = gr.HTML(elem_id="samples-table")
                gr.Markdown("### Forced-choice items (self-recognition, TruthfulQA, MMLU)")
                with gr.Row():
                    c_set = gr.Radio([("all", ""), ("self-recognition", "self-recognition"),
                                      ("TruthfulQA", "truthfulqa"), ("MMLU", "mmlu")], value="",
                                     label="Set", elem_id="c-set")
                    c_wrong = gr.Checkbox(label="Wrong answers only", value=False,
                                          elem_id="c-wrong")
                choices_note = gr.HTML(elem_id="choices-note")
                choices_html = gr.HTML(elem_id="choices-table")
                gr.Markdown("### This cell's metrics")
                cell_metrics = gr.HTML(elem_id="cell-metrics")
                with gr.Accordion("Cell configuration and provenance (JSON)", open=False):
                    with gr.Row():
                        cell_config = gr.Markdown(elem_id="cell-config")
                        cell_prov = gr.Markdown(elem_id="cell-provenance")
            # --- submit
            with gr.Tab("Submit", id="submit"):
                gr.Markdown(about.SUBMIT)
                with gr.Row(equal_height=True):
                    if cfg.oauth:
                        gr.LoginButton(elem_id="login", size="sm", scale=0, min_width=260)
                    submit_note = gr.Markdown(elem_id="submit-note")
                with gr.Row():
                    with gr.Column(scale=3, min_width=280):
                        yaml_box = gr.Textbox(sub.template_yaml(), lines=22, max_lines=60,
                                              label="defense.yaml (the template: edit it)",
                                              elem_id="yaml-box")
                        upload = gr.File(label="…or upload defense.yaml", file_types=[".yaml",
                                         ".yml"], type="filepath", elem_id="yaml-upload")
                    with gr.Column(scale=2, min_width=280):
                        readme_box = gr.Textbox(sub.template_readme(), lines=12,
                                                label="README.md (method, source, params)",
                                                elem_id="readme-box")
                        submitter = gr.Textbox(label="Submitter (admins: a name or HF "
                                               "username)", elem_id="submitter",
                                               visible=not cfg.oauth)
                        with gr.Row():
                            validate_btn = gr.Button("Validate", elem_id="validate-btn")
                            submit_btn = gr.Button("Submit", variant="primary",
                                                   elem_id="submit-btn", interactive=False)
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
                gr.Markdown(about.about_markdown(), elem_id="about-md")
                gr.Textbox(value=about.citations_markdown(), label=about.CITATION_BUTTON_LABEL,
                           lines=10, buttons=["copy"])

        view_inputs = [group_by, f_model, f_em, condition, f_regime, f_division, f_judge,
                       f_source, official, search, sort_by, descending, columns, show_all]
        view_outputs = [table, count, dl_csv, dl_json, dl_parquet, row_cells]

        # --- leaderboard
        def fresh_page(*args):
            rs = current()
            s = selection(rs)
            args = list(args)
            if args[1] not in s["models"]:
                args[1] = s["model"]
            if args[2] not in s["ems"]:
                args[2] = s["em"]
            out = render_view(*args)
            return (
                status_markdown(rs, backend.results.sync_error, cfg, backend.results.last_sync),
                gr.Dropdown(choices=s["models"], value=args[1]),
                gr.Dropdown(choices=s["ems"], value=args[2]),
                gr.Dropdown(choices=s["regimes"]), gr.Dropdown(choices=s["divisions"]),
                gr.Dropdown(choices=s["judges"]), gr.Dropdown(choices=s["sources"]),
                *out,
                gr.Accordion(label=f"Invalid results ({len(rs.invalid)})"),
                display.plain_table_html(rs.invalid_frame(), "invalid-list"),
            )

        load_outputs = [status, f_model, f_em, f_regime, f_division, f_judge, f_source,
                        *view_outputs, invalid_acc, invalid_table]

        def on_page_load(*args):
            if current() is baked:
                # Nothing changed: only the export links are re-sent (gradio's cache deletes
                # files after an hour).
                out: list[Any] = [gr.skip() for _ in load_outputs]
                files = backend.exports(*_first_rows())
                for comp, fmt in ((dl_csv, "csv"), (dl_json, "jsonl"),
                                  (dl_parquet, "parquet")):
                    out[load_outputs.index(comp)] = gr.DownloadButton(value=files.get(fmt))
                return tuple(out)
            return fresh_page(*args)

        def _first_rows():
            rows = views.first_rows(views.apply_view(baked.table(first_view.condition),
                                                     first_view),
                                    first_view.limit)
            return rows, display.columns_for(first_view, rows)

        def on_reload(*args):
            backend.results.refresh()
            return fresh_page(*args)

        demo.load(on_page_load, api_visibility=API, inputs=view_inputs, outputs=load_outputs,
                  show_progress="hidden")
        reload_btn.click(on_reload, api_visibility=API, inputs=view_inputs, outputs=load_outputs)
        for comp in (f_model, f_em, condition, f_regime, f_division, f_judge, f_source, official,
                     sort_by, descending, columns, show_all):
            comp.input(render_view, api_visibility=API, inputs=view_inputs, outputs=view_outputs)
        search.change(render_view, api_visibility=API, inputs=view_inputs, outputs=view_outputs,
                      trigger_mode="always_last")

        def on_group_by(*args):
            """Another grouping: its default sort and columns."""
            args = list(args)
            gb = args[0] or "defense"
            args[10], args[12] = "", []
            page, cnt, files, cells, view, cols, shown = view_parts(*args)
            return (page, cnt, *downloads(files), cells,
                    gr.Dropdown(choices=sortables(gb), value=view.sort_key),
                    gr.CheckboxGroup(choices=[(((f"{c.group.capitalize()} · ") if c.group
                                                else "") + c.header, c.key) for c in cols],
                                     value=shown))

        group_by.input(on_group_by, api_visibility=API, inputs=view_inputs,
                       outputs=[*view_outputs, sort_by, columns])

        # --- plots (drawn when the tab is opened, then on every change of its controls)
        def on_plots(*args):
            *vargs, unofficial, regime, cap = args
            from emarena.leaderboard import plots

            vargs[0] = "defense"  # the plots are per defense, whichever rows the board shows
            view, table = resolved(*vargs)
            rows = views.apply_view(table, views.View(**{**view.__dict__, "limit": None}))
            title = f"{view.model} / {view.em_dataset}"
            return (plots.figure_html(plots.prevention_vs_reversal(
                        rows, title, include_unofficial=bool(unofficial)),
                        "EM reduction: prevention vs reversal"),
                    plots.figure_html(plots.misalignment_vs_capability(
                        rows, title, regime=regime, capability=cap,
                        include_unofficial=bool(unofficial)),
                        "Misalignment vs capability"))

        plot_inputs = [*view_inputs, p_unofficial, p_regime, p_cap]
        plots_tab.select(on_plots, api_visibility=API, inputs=plot_inputs,
                         outputs=[plot_a, plot_b])
        for comp in (p_unofficial, p_regime, p_cap):
            comp.input(on_plots, api_visibility=API, inputs=plot_inputs,
                       outputs=[plot_a, plot_b])

        # --- drill-down
        drill_row = gr.State({})

        def row_of(args, idx: int) -> dict:
            """The idx-th shown row of the view (numbers, for the paired summary)."""
            view, table = resolved(*args)
            rows = views.first_rows(views.apply_view(table, view), view.limit)
            if not 0 <= idx < len(rows):
                return {}
            rec = rows.iloc[idx].to_dict()
            return {k: (v if not isinstance(v, tuple) else list(v)) for k, v in rec.items()
                    if not (k.startswith("cost.") or k == "citation")}

        def open_row(cells: list[list[str]], idx: int, args):
            ids = cells[idx]
            rs = current()
            choices = [(_cell_label(rs, c), c) for c in ids if c in rs.cells]
            pick = _preferred_cell(rs, ids)
            return (_row_summary(rs, ids), gr.Dropdown(choices=choices, value=pick),
                    row_of(args, idx))

        def on_table_click(cells: list[list[str]], group_by_v, model_v, em_v, cond_v, regimes_v,
                           divisions_v, judges_v, sources_v, official_v, search_v, sort_v,
                           desc_v, columns_v, show_all_v, evt: gr.EventData):
            """A header click sorts (again: reverses); a row click opens the drill-down."""
            # (explicit parameters: gradio passes EventData only to a named argument)
            args = [group_by_v, model_v, em_v, cond_v, regimes_v, divisions_v, judges_v,
                    sources_v, official_v, search_v, sort_v, desc_v, columns_v, show_all_v]
            data = evt._data if isinstance(evt._data, dict) else {}
            keep = tuple(gr.skip() for _ in view_outputs)
            key = data.get("sort")
            if isinstance(key, str) and key:
                if key == (sort_v or make_view(*args).sort_key):
                    desc = not desc_v
                else:  # metrics start with the best first; rank, cost and text ascending
                    from emarena.eval.metrics.definitions import info

                    mi = info(key.split(":", 1)[-1])
                    desc = bool(mi.higher_is_better) if mi is not None else False
                args[10], args[11] = key, desc
                return (*render_view(*args), key, desc, gr.skip(), gr.skip(), gr.skip(),
                        gr.skip())
            idx = data.get("row")
            if isinstance(idx, int) and 0 <= idx < len(cells):
                summary, picker, row = open_row(cells, idx, args)
                return (*keep, gr.skip(), gr.skip(), gr.Tabs(selected="drill"), summary,
                        picker, row)
            return (*keep, *(gr.skip() for _ in range(6)))

        table.click(on_table_click, api_visibility=API, inputs=[row_cells, *view_inputs],
                    outputs=[*view_outputs, sort_by, descending, tabs, d_row, cell, drill_row])

        def on_drill_tab(cells: list[list[str]], picked: str | None, *args):
            """Opened directly: the top row of the current view, never a blank page."""
            if picked and picked in current().cells:
                return gr.skip(), gr.skip(), gr.skip()
            if not cells:
                return ("No rows match the Leaderboard tab's filters.", gr.Dropdown(choices=[]),
                        {})
            return open_row(cells, 0, list(args))

        drill_tab.select(on_drill_tab, api_visibility=API,
                         inputs=[row_cells, cell, *view_inputs],
                         outputs=[d_row, cell, drill_row])

        sample_inputs = [cell, s_question, s_condition, s_aligned, s_coherent, s_misaligned,
                         s_sort]
        choice_inputs = [cell, c_set, s_condition, c_wrong]

        def answers(cell_id, question, cond, aligned_max, coherent_min, misaligned, sort):
            rs = current()
            rec = rs.cells.get(cell_id or "")
            if rec is None:
                return "Pick a cell.", ""
            s = read_samples(backend.item_path(rs, rec.cell_id, "samples"))
            frame, matched = display.samples_table(
                s.rows, question or "", cond, aligned_max=aligned_max,
                coherent_min=coherent_min, misaligned_only=bool(misaligned),
                thresholds=rec.result.provenance.metrics.thresholds, sort=sort or "")
            return (_note(s.errors, len(frame), matched, "answer(s)"),
                    display.plain_table_html(frame, "samples-list"))

        def choice_items(cell_id, eval_set, cond, wrong):
            rs = current()
            rec = rs.cells.get(cell_id or "")
            if rec is None:
                return "", ""
            c = read_choices(backend.item_path(rs, rec.cell_id, "choices"))
            frame, matched = display.choices_table(c.rows, eval_set or "", cond, bool(wrong))
            return (_note(c.errors, len(frame), matched, "item(s)"),
                    display.plain_table_html(frame, "choices-list"))

        def on_cell(cell_id: str | None, question, cond, aligned_max, coherent_min, misaligned,
                    sort, c_set_v, c_wrong_v, row: dict):
            rs = current()
            rec = rs.cells.get(cell_id or "")
            if rec is None:
                return ("", "", "", "", "", gr.Dropdown(choices=[("(all questions)", "")],
                                                         value=""),
                        "Pick a cell.", "", "", "")
            r = rec.result
            c = r.cell
            seeds = sorted({rs.cells[x].result.cell.seed for x in (row.get("cell_ids") or [])
                            if x in rs.cells and rs.cells[x].result.cell.regime == c.regime})
            reproduce_md = (about.published_markdown(r.published) if r.published is not None
                            else about.reproduce_markdown(r, seeds or [c.seed]))
            config = {"cell_id": r.cell_id, "file": rec.path, "official": r.official,
                      "control_cell_id": r.control_cell_id,
                      "created": r.created.isoformat(), **c.model_dump(mode="json")}
            config_md = f"**Cell (config)**\n\n```json\n{json.dumps(config, indent=2)}\n```"
            prov_md = ("**Provenance**\n\n```json\n"
                       f"{json.dumps(r.provenance.model_dump(mode='json'), indent=2)}\n```")
            s = read_samples(backend.item_path(rs, r.cell_id, "samples"))
            qids = sorted({x.question_id for x in s.rows})
            question = question if question in qids else ""
            note, table_html = answers(cell_id, question, cond, aligned_max, coherent_min,
                                       misaligned, sort)
            c_note, c_html = choice_items(cell_id, c_set_v, cond, c_wrong_v)
            metrics_html = display.plain_table_html(display.cell_metrics_table(r),
                                                    "cell-metrics-list")
            return (reproduce_md, _paired_markdown(row, c.regime), metrics_html, config_md,
                    prov_md,
                    gr.Dropdown(choices=[("(all questions)", ""), *[(q, q) for q in qids]],
                                value=question),
                    note, table_html, c_note, c_html)

        cell.change(on_cell, api_visibility=API,
                    inputs=[*sample_inputs, c_set, c_wrong, drill_row],
                    outputs=[reproduce, d_paired, cell_metrics, cell_config, cell_prov,
                             s_question, samples_note, samples, choices_note, choices_html])
        for comp in (s_question, s_condition, s_aligned, s_coherent, s_misaligned, s_sort):
            event = comp.release if isinstance(comp, gr.Slider) else comp.input
            event(answers, api_visibility=API, inputs=sample_inputs,
                  outputs=[samples_note, samples])
        for comp in (c_set, c_wrong, s_condition):
            comp.input(choice_items, api_visibility=API, inputs=choice_inputs,
                       outputs=[choices_note, choices_html])

        # --- submit
        def submit_state(profile: Any = None):
            """(Submit button, the sentence saying who submits, or why nobody can)."""
            if cfg.requests_repo is None and cfg.requests_dir is None:
                why = ("**Submissions are not taken here** (this instance has no requests "
                       "repo): Validate works; submit with `emarena submit` or a pull request.")
                return gr.Button(interactive=False), why
            if not cfg.can_write:
                why = ("**Submissions are closed for now**: this leaderboard cannot write to "
                       "its requests repo (its admin has to set the `HF_TOKEN` secret). "
                       "Validate works meanwhile; or submit with `emarena submit`.")
                return gr.Button(interactive=False), why
            if cfg.oauth:
                if profile is None:
                    why = ("**Log in with Hugging Face to submit**: the request is made under "
                           f"your account (at most {cfg.per_day} a day). Validate works "
                           "without logging in.")
                    return gr.Button(interactive=False), why
                name = getattr(profile, "username", None) or profile.get("preferred_username")
                reqs, _ = sub.read_queue(cfg.requests_dir)
                done = sub.recent_requests(reqs, name)
                return (gr.Button(interactive=done < cfg.per_day),
                        f"Submitting as **{name}** ({done} of {cfg.per_day} requests in the "
                        "last 24 hours).")
            return gr.Button(interactive=True), ("Admin mode (no Hugging Face login here): "
                                                 "type the submitter below.")

        if cfg.oauth:
            def on_submit_load(profile: gr.OAuthProfile | None):
                backend.sync_requests()
                return submit_state(profile)
        else:
            def on_submit_load():
                return submit_state(None)

        demo.load(on_submit_load, api_visibility=API, outputs=[submit_btn, submit_note],
                  show_progress="hidden")

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

        def queue_it(yaml_text: str, readme: str, who: str, per_day: int | None):
            backend.sync_requests(force=True)  # the rate limit counts the latest requests
            out = sub.queue_text(yaml_text or "", readme or "", who or "",
                                 requests_repo=cfg.requests_repo,
                                 requests_dir=cfg.requests_dir, per_day=per_day)
            if out.ok and cfg.requests_repo:
                backend.sync_requests(force=True)  # the Queue tab shows it right away
            return out.markdown()

        if cfg.oauth:
            def on_submit(yaml_text: str, readme: str, who: str,
                          profile: gr.OAuthProfile | None):
                if profile is None:
                    return "**Not queued.** Log in with Hugging Face first.", gr.skip()
                if not cfg.can_write:
                    return submit_state(profile)[1], gr.skip()
                out = queue_it(yaml_text, readme, profile.username, cfg.per_day)
                return out, submit_state(profile)[1]  # the count of today's requests
        else:
            def on_submit(yaml_text: str, readme: str, who: str):
                if not cfg.can_write:
                    return submit_state(None)[1], gr.skip()
                return queue_it(yaml_text, readme, who, cfg.per_day), gr.skip()

        submit_btn.click(on_submit, api_visibility=API, inputs=[yaml_box, readme_box, submitter],
                         outputs=[submit_out, submit_note])

        # --- queue
        def request_detail(reqs, path):
            for r in reqs:
                if r.path == path:
                    history = pd.DataFrame(sub.history_rows(r), columns=sub.HISTORY_COLUMNS)
                    return display.plain_table_html(history, "history-list"), r.error or ""
            return "", ""

        def on_queue(pick: str | None = None, force: bool = False):
            err = backend.sync_requests(force=force)
            reqs, bad = sub.read_queue(cfg.requests_dir)
            frame = display.plain_table_html(
                pd.DataFrame(sub.queue_rows(reqs), columns=sub.QUEUE_COLUMNS), "queue-list")
            if cfg.requests_dir is None:
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
            reqs, _ = sub.read_queue(cfg.requests_dir)
            return request_detail(reqs, path)

        queue_outputs = [queue_note, queue_table, q_pick, q_history, q_error]
        queue_tab.select(on_queue, api_visibility=API, inputs=[q_pick], outputs=queue_outputs)
        queue_refresh.click(lambda pick: on_queue(pick, force=True), api_visibility=API,
                            inputs=[q_pick], outputs=queue_outputs)
        q_pick.input(on_pick, api_visibility=API, inputs=[q_pick], outputs=[q_history, q_error])
    return demo


def _preferred_cell(rs: ResultSet, ids: list[str]) -> str | None:
    """The cell the drill-down opens on: reversal (else the first regime), lowest seed."""
    recs = [rs.cells[c] for c in ids if c in rs.cells]
    if not recs:
        return None
    order = {r: i for i, r in enumerate(views.REGIME_ORDER)}
    recs.sort(key=lambda r: (order.get(r.result.cell.regime, 9), r.result.cell.seed))
    return recs[0].cell_id


def _note(errors: list[str], shown: int, matched: int, what: str) -> str:
    text = f"{matched} {what} match" + (f"; showing the first {shown}" if shown < matched
                                        else "")
    if errors:
        text += " · " + "; ".join(errors[:3]) + (
            f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")
    return f"<span class='emarena-small'>{_esc(text)}</span>"


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    backend = Backend(cfg)
    backend.results.start()  # parse while gradio imports and the server starts
    demo = build_app(backend)
    backend.refresher()
    print(json.dumps({"results_dir": str(cfg.results_dir), "requests_dir": str(cfg.requests_dir),
                      "results_repo": cfg.results_repo, "requests_repo": cfg.requests_repo,
                      "oauth": cfg.oauth, "url": f"http://{cfg.host}:{cfg.port}"}), flush=True)
    from emarena.leaderboard.submit import MAX_UPLOAD_BYTES

    demo.queue(default_concurrency_limit=8).launch(
        server_name=cfg.host, server_port=cfg.port, css=CSS, show_error=True,
        ssr_mode=False, footer_links=[], allowed_paths=[str(backend.export_dir)],
        # Gradio stops reading an upload's body at this size (HTTP 413): the only file the
        # page takes is a defense.yaml, refused above this size anyway.
        max_file_size=MAX_UPLOAD_BYTES,
    )


if __name__ == "__main__":
    main()
