"""`emarena publish`, `emarena submit`, `emarena worker`: the results and requests repos.

The Hub is $HF_ENDPOINT (default huggingface.co) with the token in $HF_TOKEN; the token is
never printed, logged or written. Layout of both repos: `emarena.hub`. Import-light: nothing
here imports huggingface_hub (or torch) until a command runs.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _echo(line: str) -> None:
    typer.echo(line)


def publish(
    run: Path = typer.Argument(..., help="Run folder (runs/<run>) whose finished cells to upload."),
    results: str = typer.Option(
        ..., "--results", help="Results dataset repo on the Hub, e.g. org/emarena-results."
    ),
    unofficial: bool = typer.Option(
        False,
        "--unofficial",
        help="Also upload results that are not official (a preset other than 'paper', or not "
        "the official judge); they stay marked `official: false`.",
    ),
) -> None:
    """Upload every finished cell of a run (result + samples) as one commit; idempotent."""
    from emarena.hub import publish_run

    rep = publish_run(run, results, unofficial=unofficial, echo=_echo)
    marked = f" ({len(rep.unofficial)} marked unofficial)" if rep.unofficial else ""
    if rep.commit is None:
        typer.echo(f"{len(rep.cells)} cell(s){marked} already published in {results}: no change")
    else:
        typer.echo(
            f"published {len(rep.cells)} cell(s){marked} to {results}: commit {rep.commit[:12]}, "
            f"{len(rep.changed)} file(s) changed"
        )


def submit(
    path: Path = typer.Argument(..., help="Submission folder (or its defense.yaml)."),
    requests: str = typer.Option(
        ..., "--requests", help="Requests dataset repo on the Hub, e.g. org/emarena-requests."
    ),
    submitter: str = typer.Option(
        "anonymous", "--submitter", help="Your name or Hub user name, shown in the queue."
    ),
) -> None:
    """Validate a submission and queue it (PENDING); an identical configuration is not re-queued."""
    from emarena.queue import submit as queue_submit

    out = queue_submit(path, requests, submitter)
    typer.echo(out.message)


def worker(
    requests: str = typer.Option(..., "--requests", help="Requests dataset repo."),
    results: str = typer.Option(..., "--results", help="Results dataset repo."),
    once: bool = typer.Option(False, "--once", help="Process at most one request, then exit."),
    preset: str = typer.Option("paper", "--preset", help="Preset (paper, cpu-demo)."),
    model: str = typer.Option(None, "--model", help="Model id (default: the embedded model)."),
    em_dataset: str = typer.Option("insecure", "--em-dataset", help="EM-induction dataset id."),
    seeds: list[int] = typer.Option(None, "--seeds", help="Seeds; repeatable (default: 0)."),
    run_root: Path = typer.Option(
        Path("runs"), "--run-root", help="Local folder for submissions, runs and logs."
    ),
    unofficial: bool = typer.Option(
        False, "--unofficial", help="Publish unofficial results (marked) instead of failing."
    ),
    worker_id: str = typer.Option(
        None, "--worker-id", help="Name in the queue's history (default: <host>-<pid>)."
    ),
    heartbeat_s: float = typer.Option(
        120.0, "--heartbeat-s", help="Seconds between heartbeats of a running request."
    ),
    stale_after_s: float = typer.Option(
        900.0,
        "--stale-after-s",
        help="A RUNNING request without a heartbeat for this long is re-queued (worker died).",
    ),
    max_attempts: int = typer.Option(
        3, "--max-attempts", help="Claims per request before a dying worker's request FAILs."
    ),
    poll_s: float = typer.Option(30.0, "--poll-s", help="Seconds between polls of an empty queue."),
    scorer: str = typer.Option(
        "emarena.protocol.score:score",
        "--scorer",
        help="module:attr of the scoring function (default: the benchmark's `score`).",
    ),
    judge: str = typer.Option(
        None, "--judge", help="openai[:MODEL[@BASE_URL]] or hf[:MODEL] (default: the reference "
        "API judge when OPENAI_API_KEY is set, else a local hf judge, unofficial)."),
    store: Path = typer.Option(
        None, "--store", help="The shared store (default: EMARENA_STORE, else <cache>/store): "
        "what any request or run already trained or evaluated is reused."),
) -> None:
    """Claim queued submissions oldest first, score them, publish, mark FINISHED or FAILED."""
    from emarena.queue import WorkerConfig, default_worker_id, load_scorer, work

    cfg = WorkerConfig(
        requests_repo=requests,
        results_repo=results,
        worker_id=worker_id or default_worker_id(),
        run_root=run_root,
        preset=preset,
        model=model,
        em_dataset=em_dataset,
        seeds=list(seeds) if seeds else None,
        unofficial=unofficial,
        heartbeat_s=heartbeat_s,
        stale_after_s=stale_after_s,
        max_attempts=max_attempts,
        poll_s=poll_s,
        scorer=load_scorer(scorer),
        judge=judge,
        store=store,
    )
    typer.echo(f"worker {cfg.worker_id}: requests {requests}, results {results}")
    for o in work(cfg, once=once, echo=_echo):
        typer.echo(f"{o.request.name} ({o.request.key}): {o.status}: {o.detail} (log {o.log})")
