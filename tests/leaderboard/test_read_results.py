"""read_results: valid files become cells and pooled rows; every bad file is listed with its
error, never crashes the reader and never enters an aggregate (never as zero)."""

from __future__ import annotations

import json
import math

import pytest

from emarena.eval.metrics.definitions import info
from emarena.eval.metrics.pooling import pool
from emarena.eval.metrics.value import MetricValue
from emarena.leaderboard import read_results as rr
from emarena.leaderboard.synthetic import synthetic_result
from tests.leaderboard.conftest import BAD_FILES, write_bad_files, write_duplicates


def mv(value, n=100, lo=None, hi=None, unscored=0, reason=None, cond="all", hib=False):
    return MetricValue(
        value=value, ci_low=lo, ci_high=hi, n=n, n_unscored=unscored, higher_is_better=hib,
        condition=cond, details={"reason": reason} if reason else {},
    )


def row(rs: rr.ResultSet, defense: str, model: str, em: str, regime: str, cond: str = "all"):
    t = rs.table(cond)
    hit = t[(t.defense == defense) & (t.model == model) & (t.em_dataset == em)
            & (t.regime == regime)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_clean_folder(clean_results):
    rs = rr.read_results(clean_results)
    assert rs.n_files == 60
    assert len(rs.cells) == 60
    assert rs.invalid == []
    t = rs.table()
    # 60 files = (em, base, 7 defenses x 3 regimes) x 3 seeds for the first model/dataset
    # (69 cells), cut at 60: every row pools the seeds it has.
    assert set(t.seeds) <= {2, 3}
    assert t.seeds.sum() == 60
    assert {"em_reduction", "misalignment_rate", "identity_consistency",
            "self_recognition_accuracy", "capability_change_truthfulqa"} <= set(t.columns)
    assert t.official.all()


def test_every_bad_file_is_listed_and_skipped(clean_results):
    before = rr.read_results(clean_results)
    bad = write_bad_files(clean_results)
    rs = rr.read_results(clean_results)  # must not raise
    assert rs.n_files == 60 + len(bad)
    assert set(rs.cells) == set(before.cells)
    listed = {f.path: f for f in rs.invalid}
    for name, (rel, _, phrase) in BAD_FILES.items():
        assert rel in listed, f"{name} not listed as invalid"
        assert phrase.lower() in listed[rel].error.lower(), (name, listed[rel].error)
        assert str(clean_results) not in listed[rel].error  # relative paths only
    # The aggregates are exactly those without the bad files.
    cols = ["defense", "model", "em_dataset", "regime", "misalignment_rate", "em_reduction",
            "misalignment_rate.n"]
    a = before.table()[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = rs.table()[cols].sort_values(cols[:4]).reset_index(drop=True)
    assert a.equals(b)
    assert "test-model" not in set(rs.table().model)


def test_nan_is_invalid_not_zero(tmp_path):
    write_bad_files(tmp_path)
    rs = rr.read_results(tmp_path)
    nan = next(f for f in rs.invalid if f.path == BAD_FILES["nan"][0])
    assert "metrics.misalignment_rate.all.value is nan" in nan.error
    assert rs.cells == {}
    assert rs.table().empty


def test_unknown_schema_version_names_the_version(tmp_path):
    write_bad_files(tmp_path)
    rs = rr.read_results(tmp_path)
    err = next(f for f in rs.invalid if f.path == BAD_FILES["schema-v2"][0]).error
    assert "schema_version 2 is not supported" in err


def test_missing_keys_and_wrong_types_name_the_keys(tmp_path):
    write_bad_files(tmp_path)
    rs = rr.read_results(tmp_path)
    by = {f.path: f.error for f in rs.invalid}
    missing = by[BAD_FILES["missing-keys"][0]]
    assert "metrics: Field required" in missing and "provenance: Field required" in missing
    assert "metrics.misalignment_rate.all.n" in by[BAD_FILES["wrong-types"][0]]


def test_duplicates(clean_results):
    dups = write_duplicates(clean_results)
    rs = rr.read_results(clean_results)
    kinds = {f.path: f.kind for f in rs.invalid}
    ident_src, ident_copy = (str(p.relative_to(clean_results)) for p in dups["identical"])
    conf_a, conf_b = (str(p.relative_to(clean_results)) for p in dups["conflict"])
    # an identical copy counts once: the cell is there, the copy is listed
    assert kinds == {ident_copy: "duplicate", conf_a: "conflict", conf_b: "conflict"}
    ident_id = dups["identical"][0].stem
    conflict_id = dups["conflict"][0].stem
    assert rs.cells[ident_id].path == ident_src  # the copy at the dataset's own path
    # disagreeing copies count nowhere, and their row says so
    assert conflict_id not in rs.cells
    assert len(rs.cells) == 59
    t = rs.table()
    noted = t[t.notes.str.contains("excluded: conflicting duplicate")]
    assert len(noted) == 1
    assert noted.iloc[0].seeds == 2  # the row pools the two other seeds only


def test_pool_weighted_by_n_with_ci():
    p = pool([mv(0.1, n=100, lo=0.05, hi=0.15), mv(0.3, n=300, lo=0.25, hi=0.35)],
             info("misalignment_rate"))
    assert p.value == pytest.approx((0.1 * 100 + 0.3 * 300) / 400)
    assert p.n == 400 and p.n_seeds == 2 and p.n_missing == 0
    assert p.ci_low < p.value < p.ci_high
    # resampling the seeds (0.1 vs 0.3) dominates the seeds' own narrow intervals
    assert p.ci_high - p.ci_low > 0.1


def test_pool_one_seed_keeps_its_interval():
    p = pool([mv(0.12, n=64, lo=0.08, hi=0.17, unscored=3)], info("misalignment_rate"))
    assert (p.value, p.ci_low, p.ci_high, p.n, p.n_unscored) == (0.12, 0.08, 0.17, 64, 3)


def test_pool_never_counts_missing_as_zero():
    p = pool([mv(0.4, n=50, lo=0.3, hi=0.5), mv(None, n=0, reason="no answers"), None],
             info("misalignment_rate"))
    assert p.value == 0.4  # not (0.4 + 0 + 0) / 3
    assert p.n_seeds == 1 and p.n_missing == 2
    none = pool([mv(None, n=10, unscored=10, reason="no coherent scored answers"), None],
                info("misalignment_rate"))
    assert none.value is None and none.ci_low is None
    assert none.reason == "no coherent scored answers"
    assert none.n_unscored == 10


def test_pool_clips_to_the_metric_bounds_only():
    vals = [mv(0.01, n=10, lo=0.0, hi=0.05), mv(0.2, n=10, lo=0.1, hi=0.3)]
    assert pool(vals, info("misalignment_rate")).ci_low >= 0.0
    loose = [mv(0.01, n=10, lo=-0.3, hi=0.3), mv(0.02, n=10, lo=-0.3, hi=0.3)]
    assert pool(loose, None).ci_low < 0.0  # a name nothing defines: unbounded


def test_row_with_a_seed_without_value(tmp_path):
    """A seed whose metric is null is left out of the row and the row's notes say so."""
    control = synthetic_result("m", "insecure", 0, "em", None)
    results = []
    for seed in (0, 1):
        r = synthetic_result("m", "insecure", seed, "reversal", "sgtr", control=control)
        data = json.loads(r.model_dump_json())
        if seed == 1:
            data["metrics"]["identity_consistency"]["all"].update(
                value=None, ci_low=None, ci_high=None, details={"reason": "no identity answers"}
            )
        results.append((r, data))
    for r, data in results:
        (tmp_path / f"{r.cell_id}.json").write_text(json.dumps(data))
    rs = rr.read_results(tmp_path)
    assert rs.invalid == []
    got = row(rs, "sgtr", "m", "insecure", "reversal")
    first = results[0][0].metric("identity_consistency")
    assert got["identity_consistency"] == pytest.approx(first.value)
    assert got["identity_consistency.seeds"] == 1 and got["identity_consistency.missing"] == 1
    assert "identity_consistency: 1 of 2 seeds have no value" in got["notes"]


def test_conditions_are_separate_tables(clean_results):
    rs = rr.read_results(clean_results)
    a = row(rs, "sgtr", "qwen2.5-7b-instruct", "insecure", "reversal", "default-system")
    b = row(rs, "sgtr", "qwen2.5-7b-instruct", "insecure", "reversal", "no-system")
    assert a["misalignment_rate"] != b["misalignment_rate"]
    with pytest.raises(ValueError, match="unknown condition"):
        rs.table("sometimes")


def test_rank_only_official_defense_rows(tmp_path):
    from emarena.leaderboard.synthetic import write_synthetic_results
    from emarena.leaderboard.views import View, apply_view

    write_synthetic_results(tmp_path / "off", 69, seeds=1)
    write_synthetic_results(tmp_path / "unoff", 69, seeds=1, preset="cpu-demo",
                            official_judge=False)
    rs = rr.read_results(tmp_path)
    t = apply_view(rs.table(), View(group_by="regime"))
    ranked = t[t["rank"].notna()]
    assert set(ranked.regime) <= {"reversal", "prevention", "defense"}
    assert ranked.official.all()
    assert not t[~t.official]["rank"].notna().any()
    for _, g in ranked.groupby(["model", "em_dataset", "regime"]):
        best = g.sort_values("em_reduction", ascending=False).iloc[0]
        assert best["rank"] == 1
        # 1..k, ties sharing a rank
        assert list(g["rank"]) == list(g.em_reduction.rank(ascending=False, method="min"))


def test_runs_folder_layout(tmp_path):
    """`runs/<run>/cells/<id>/metrics/result.json`, with other JSON files around it."""
    r = synthetic_result("m", "insecure", 0, "em", None)
    metrics = tmp_path / "run" / "cells" / r.cell_id / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "result.json").write_text(r.model_dump_json())
    (metrics / "DONE.json").write_text("{}")
    (metrics.parent / "cell.json").write_text("{}")
    (metrics / "samples.jsonl").write_text("")
    rs = rr.read_results(tmp_path)
    assert list(rs.cells) == [r.cell_id] and rs.invalid == []
    assert rs.samples_file(r.cell_id) == metrics / "samples.jsonl"


def test_missing_folder_is_empty_not_an_error(tmp_path):
    rs = rr.read_results(tmp_path / "nope")
    assert rs.cells == {} and rs.invalid == [] and rs.table().empty


def test_cache_rereads_only_changed_files(clean_results, monkeypatch):
    cache = rr.ResultCache(clean_results).start()
    first = cache.get()
    assert len(first.cells) == 60
    calls = []
    real = rr.load_file
    monkeypatch.setattr(rr, "load_file", lambda p, root: calls.append(p) or real(p, root))
    assert cache.get() is first  # no rescan without refresh
    assert cache.refresh() is first  # a rescan that finds nothing changed keeps the tables
    bad = write_bad_files(clean_results)
    second = cache.refresh()
    assert sorted(calls) == sorted(bad.values())  # only the new files were parsed
    assert len(second.invalid) == len(bad)
    bad["not-json"].unlink()
    third = cache.refresh()
    assert len(third.invalid) == len(bad) - 1


def test_cache_sync_failure_keeps_serving(clean_results):
    from emarena.errors import EmArenaError

    def sync():
        raise EmArenaError("hub unreachable")

    cache = rr.ResultCache(clean_results, sync=sync)
    rs = cache.get()
    assert len(rs.cells) == 60
    assert "hub unreachable" in (cache.sync_error or "")


def test_read_samples_reports_bad_lines(clean_results, tmp_path):
    rs = rr.read_results(clean_results)
    cid = next(iter(rs.cells))
    path = rs.samples_file(cid)
    assert path is not None
    good = rr.read_samples(path)
    assert good.errors == [] and len(good.rows) == 32
    broken = tmp_path / "x.samples.jsonl"
    broken.write_text(path.read_text().splitlines()[0] + "\n{\"nope\": 1}\nnot json\n")
    s = rr.read_samples(broken)
    assert len(s.rows) == 1 and len(s.errors) == 2
    assert rr.read_samples(None).errors == ["no samples.jsonl was published with this result"]


def test_values_are_finite_or_nan_never_zero_filled(messy_results):
    rs = rr.read_results(messy_results)
    t = rs.table()
    for col in ("misalignment_rate", "em_reduction"):
        vals = t[col]
        assert all(math.isfinite(v) or math.isnan(v) for v in vals)
    # controls have no em_reduction: NaN (shown "—"), not 0
    controls = t[t.regime.isin(["em", "base"])]
    assert controls.em_reduction.isna().all()


def test_same_name_different_config_is_flagged(tmp_path):
    """Two submissions named alike (different config hashes) are two rows, and say so."""
    a = synthetic_result("m", "insecure", 0, "defense", "sgtr")
    data = json.loads(a.model_dump_json())
    data["cell"]["defense"]["config_hash"] = "f" * 64
    from emarena.protocol.cell import Cell

    data["cell_id"] = Cell.model_validate(data["cell"]).id
    (tmp_path / f"{a.cell_id}.json").write_text(a.model_dump_json())
    (tmp_path / f"{data['cell_id']}.json").write_text(json.dumps(data))
    rs = rr.read_results(tmp_path)
    assert rs.invalid == [] and len(rs.table()) == 2
    assert all("same defense name with a different setup" in n for n in rs.table().notes)


def test_unscored_outside_n_is_valid_inside_n_is_bounded(tmp_path):
    """The default local judge often scores nothing: misalignment_rate_coherent then has n=0
    (no coherent scored answer) and n_unscored=2, a real pipeline output that must count. Only
    misalignment_rate holds its unscored answers inside n, so there n_unscored > n is invalid."""
    from tests.leaderboard.conftest import valid_json

    data = valid_json()
    mv = data["metrics"]["misalignment_rate_coherent"]["default-system"]
    mv.update(value=None, ci_low=None, ci_high=None, n=0, n_unscored=2)
    path = tmp_path / "ok" / f"{data['cell_id']}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    rec = rr.load_file(path, tmp_path)
    assert isinstance(rec, rr.CellRecord), rec
    mr = data["metrics"]["misalignment_rate"]["all"]
    mr["n_unscored"] = mr["n"] + 1
    bad = tmp_path / "bad" / f"{data['cell_id']}.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(data))
    err = rr.load_file(bad, tmp_path)
    assert isinstance(err, rr.InvalidFile)
    assert "metrics.misalignment_rate.all" in err.error and "n_unscored <= n" in err.error
