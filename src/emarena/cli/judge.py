"""`emarena judge calibrate`: how far a judge agrees with GPT-4o's published scores."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emarena import settings
from emarena.cli.data import CacheOpt, MirrorOpt

app = typer.Typer(help="Judges: calibrate a judge against GPT-4o's published scores.",
                  no_args_is_help=True)
console = Console()


@app.command("calibrate")
def calibrate(
    judge: str = typer.Option(..., "--judge", help="Judge spec: openai[:MODEL[@BASE_URL]] or "
                              "hf[:MODEL_ID_OR_DIR], e.g. hf:smollm2-135m-q4."),
    n: int = typer.Option(None, "--n", min=1, help="Answers to judge: a seeded stratified "
                          "sample (default: every published judged answer, ~15,000)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and the bootstrap."),
    resamples: int = typer.Option(1000, "--resamples", min=0, help="Bootstrap resamples."),
    out: Path = typer.Option(None, "--out", help="Where to write the record (default: "
                             "<cache>/calibration/<judge id>.json, where look-ups find it)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ask the judge again even for "
                                  "prompts the judgement cache knows."),
    mirror: Path = MirrorOpt,
    cache: Path = CacheOpt,
) -> None:
    """Judge published answers GPT-4o already judged, and report the agreement."""
    from emarena.eval.judges import resolve_judge
    from emarena.eval.judges.calibration import calibrate as run
    from emarena.eval.judges.calibration import record_file_name, write_record

    j, note = resolve_judge(judge)
    if note:
        console.print(note)
    shown = {"pct": -1}

    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct >= shown["pct"] + 10 or done == total:
            shown["pct"] = pct
            console.print(f"  judged {done}/{total} prompts")

    record, rows = run(
        j, n=n, seed=seed, n_resamples=resamples, mirror=settings.mirror_dir(mirror),
        cache_dir=settings.cache_dir(cache), use_cache=not no_cache, progress=progress,
        command=shlex.join(["emarena", "judge", "calibrate", "--judge", judge,
                            *(["--n", str(n)] if n else []), *(["--seed", str(seed)] if seed
                                                               else [])]),
    )
    path = out or settings.cache_dir(cache) / "calibration" / record_file_name(j.id)
    write_record(path, record, rows)
    print_record(record)
    console.print(f"record: {path}")


def print_record(rec) -> None:
    """The agreement table."""
    from emarena.eval.judges.calibration import _fmt

    t = Table(title=f"{rec.judge.id} vs GPT-4o's published scores: {rec.sample.n} answers "
                    f"(of {rec.sample.population}), seed {rec.sample.seed}")
    for col in ("what", "value [95% CI]", "n"):
        t.add_column(col)
    for rubric in ("aligned", "coherent"):
        a = getattr(rec, rubric)
        t.add_row(f"{rubric}: Spearman", _fmt(a.spearman), str(a.spearman.n))
        t.add_row(f"{rubric}: mean abs. error", _fmt(a.mae, 1), str(a.mae.n))
        t.add_row(f"{rubric}: judge unscored", str(a.n_judge_unscored), str(rec.sample.n))
    m = rec.misaligned
    for name in ("precision", "recall", "f1", "kappa"):
        iv = getattr(m, name)
        t.add_row(f"misaligned: {'Cohen κ' if name == 'kappa' else name}", _fmt(iv), str(iv.n))
    c = m.confusion
    t.add_row("misaligned: both / judge only / reference only / neither",
              f"{c['both']} / {c['judge_only']} / {c['reference_only']} / {c['neither']}",
              str(rec.sample.n))
    t.add_row("unscored share (no aligned or no coherent)", _fmt(rec.unscored_share),
              str(rec.unscored_share.n))
    for reason, count in rec.unscored_reasons.items():
        t.add_row(f"unscored calls: {reason}", str(count), str(2 * rec.sample.n))
    if rec.median_number_mass is not None:
        t.add_row("median probability on the numbers 0..100", f"{rec.median_number_mass:.3f}",
                  str(2 * rec.sample.n))
    Console(width=max(console.width, 110)).print(t)
