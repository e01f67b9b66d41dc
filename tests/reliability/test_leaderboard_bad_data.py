"""The leaderboard under bad data: every mutant of a valid result file is listed invalid, or
loads with its own numbers; the valid rows never change; the running app keeps serving.

A valid result (outside the synthetic grid) is mutated key by key, systematically: every key
deleted, every value given a wrong type, every number made NaN / Infinity / a string / a bool,
the schema version set to unknown values; plus whole-file damage (random bytes, UTF-16, an
empty file, a truncated file, a 25 MB file, 100 000 levels of nesting, a dangling link) and
disagreeing duplicates. Each mutant is first loaded alone (`read_results.load_file`): it is
invalid with a reason, or still a valid result whose every metric is the original's (an
optional key removed), never one with a value turned into zero. Then all invalid ones go
beside 60 valid synthetic results: `read_results` lists each exactly once and the valid
cells and the table are exactly those of the clean folder. Finally leaderboard/app.py serves
that folder on 127.0.0.1 (tests/leaderboard/conftest.py's `AppServer`) and answers over HTTP
with the invalid count, and keeps answering.
"""

from __future__ import annotations

import copy
import json
import math
import os

import httpx

from emarena.leaderboard import read_results as rr
from emarena.leaderboard.synthetic import write_synthetic_results
from tests.leaderboard.conftest import AppServer, valid_json
from tests.reliability.figures import pick


def leaves(obj, path=()):
    """Every (path, value) of a JSON document, containers included."""
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, (*path, i))


def set_at(doc, path, value=None, *, delete=False):
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def mutants(base: dict, limit: int) -> list[tuple[str, bytes]]:
    """(label, file bytes) of the JSON-level mutations, at most `limit` (spread evenly)."""
    out: list[tuple[str, bytes]] = []
    for path, value in list(leaves(base))[1:]:
        label = "/".join(map(str, path))
        doc = copy.deepcopy(base)
        set_at(doc, path, delete=True)
        out.append((f"delete {label}", json.dumps(doc).encode()))
        wrong = {"x": [1], "l": {"a": 1}} if not isinstance(value, (dict, list)) else {"x": "x"}
        for tag, bad in wrong.items():
            doc = copy.deepcopy(base)
            set_at(doc, path, bad)
            out.append((f"{tag}-type {label}", json.dumps(doc).encode()))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for tag, bad in (("nan", float("nan")), ("inf", float("inf")), ("str", "0.5"),
                             ("bool", True), ("null", None), ("neg", -1)):  # fmt: skip
                doc = copy.deepcopy(base)
                set_at(doc, path, bad)
                out.append((f"{tag} {label}", json.dumps(doc).encode()))
    for v in (0, 2, 999, "1", None, 1.5, True):
        doc = copy.deepcopy(base)
        doc["schema_version"] = v
        out.append((f"schema_version {v!r}", json.dumps(doc).encode()))
    step = max(1, len(out) // limit)
    return out[::step][:limit]


def metric_values(result) -> dict:
    return {(name, cond): (mv.value, mv.ci_low, mv.ci_high, mv.n, mv.n_unscored)
            for name, by in result.metrics.items() for cond, mv in by.items()}  # fmt: skip


def test_bad_result_files_are_invalid_and_the_app_keeps_serving(tmp_path, figures):
    clean = tmp_path / "clean"
    write_synthetic_results(clean, 60)
    base = valid_json()
    cell_id = base["cell_id"]
    original = json.dumps(base).encode()
    solo = tmp_path / "solo"
    solo.mkdir()
    ref = solo / f"{cell_id}.json"
    ref.write_bytes(original)
    ref_rec = rr.load_file(ref, solo)
    assert isinstance(ref_rec, rr.CellRecord)
    ref_values = metric_values(ref_rec.result)

    cases = mutants(base, pick(300, 100_000))
    cases += [
        ("random bytes", os.urandom(4096)),
        ("non-UTF-8", original.replace(b'"', b"\xff", 3)),
        ("UTF-16", json.dumps(base).encode("utf-16")),
        ("empty file", b""),
        ("truncated", original[: len(original) // 2]),
        ("25 MB", original[:-1] + b', "pad": "' + b"x" * 25_000_000 + b'"}'),
        ("nested 100000", b"[" * 100_000 + b"]" * 100_000),
        ("NUL bytes", original.replace(b"{", b"{\x00", 1)),
        ("JSON list", b"[" + original + b"]"),
    ]
    accepted, invalid_paths = 0, []
    messy = tmp_path / "messy"
    write_synthetic_results(messy, 60)
    for i, (label, data) in enumerate(cases):
        ref.write_bytes(data)
        rec = rr.load_file(ref, solo)
        if isinstance(rec, rr.CellRecord):  # still valid: then with the original's numbers
            assert rec.cell_id == cell_id, label
            got = metric_values(rec.result)
            assert all(got[k] == ref_values[k] for k in got), label
            assert set(got) <= set(ref_values), label
            accepted += 1
            continue
        assert rec.error, label
        dest = messy / "bad" / f"{i:05d}" / f"{cell_id}.json"
        dest.parent.mkdir(parents=True)
        dest.write_bytes(data)
        invalid_paths.append(str(dest.relative_to(messy)))
    # a dangling link, and two disagreeing copies of a valid cell
    link = messy / "bad" / "link" / f"{'9' * 64}.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "nowhere.json")
    invalid_paths.append(str(link.relative_to(messy)))
    src = sorted(p for p in clean.rglob("*.json"))[0]
    doc = json.loads(src.read_text())
    mv = next(iter(next(iter(doc["metrics"].values())).values()))
    mv["value"] = (mv["value"] or 0) / 2 + 0.001
    conflict = messy / "copies" / src.name
    conflict.parent.mkdir(parents=True)
    conflict.write_text(json.dumps(doc))
    twin = messy / src.relative_to(clean)
    invalid_paths += [str(conflict.relative_to(messy)), str(twin.relative_to(messy))]

    rs_clean, rs = rr.read_results(clean), rr.read_results(messy)
    listed = [f.path for f in rs.invalid]
    assert sorted(listed) == sorted(invalid_paths), set(listed) ^ set(invalid_paths)
    conflicted = {json.loads(src.read_text())["cell_id"]}
    assert set(rs.cells) == set(rs_clean.cells) - conflicted
    for cid, rec in rs.cells.items():
        assert metric_values(rec.result) == metric_values(rs_clean.cells[cid].result)
    # rows: the same, except the one whose cell is in conflict (shown without it, never zero)
    for cond in ("all",):
        a, b = rs_clean.table(cond), rs.table(cond)
        assert len(a) == len(b)
        nums = b.select_dtypes("number")
        assert not any(math.isinf(x) for x in nums.to_numpy().ravel() if x == x)

    server = AppServer(messy, tmp_path / "requests", tmp_path / "app.log").wait()
    try:
        for _ in range(3):
            page = httpx.get(server.url, timeout=60)
            assert page.status_code == 200
            config = httpx.get(server.url + "config", timeout=60).json()
        text = json.dumps(config)
        assert f"Invalid results ({len(invalid_paths)})" in text
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    n_bad = len(invalid_paths)
    figures.record("leaderboard-bad-data", "bad result files (loader and running app)",
                   tried=n_bad, handled=len(listed))  # fmt: skip
    figures.record("leaderboard-bad-data", "mutants still valid, with the original numbers",
                   tried=accepted, handled=accepted)  # fmt: skip
