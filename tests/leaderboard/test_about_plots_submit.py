"""about (texts from the metrics registry), plots (figures with CI bars, missing values named),
submit (pasted YAML validated like `emarena validate`, queued once per configuration)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from emarena.leaderboard import about, display, plots, views
from emarena.leaderboard import submit as sub
from emarena.leaderboard.read_results import read_results

REPO = Path(__file__).resolve().parents[2]
SGTR_YAML = (REPO / "submissions" / "sgtr" / "defense.yaml").read_text()
README = "# sgtr\n\nSelf-generated text recognition.\n"


# --- about --------------------------------------------------------------------------------


def test_metric_definitions_come_from_the_registry():
    from emarena.eval.metrics.definitions import DELTAS, METRICS, ORDER

    defs = {name: desc for name, _, desc in about.metric_definitions()}
    for name in ORDER:
        assert defs[name] == METRICS.get(name).description
    assert defs["em_reduction"] == DELTAS.get("em_reduction").description
    md = about.about_markdown()
    assert METRICS.get("misalignment_rate").description in md
    for shown in ("Betley", "Turner", "Soligo", "Panickssery", "atagade/sgtr-em", "Chen",
                  "TruthfulQA", "Hendrycks", "docker run", "emarena score"):
        assert shown in md, shown


def test_every_metric_column_is_defined():
    defined = {name for name, _, _ in about.metric_definitions()}
    for view in (views.View(), views.View(group_by="regime")):
        metric_cols = {c.metric for c in display.columns_for(view) if c.kind == "metric"}
        assert metric_cols <= defined
        assert all(c.help for c in display.columns_for(view) if c.kind == "metric")


def test_reproduce_command():
    cmd = about.reproduce_command(submission="sgtr", model="qwen2.5-7b-instruct",
                                  em_dataset="insecure", regime="reversal", seeds=[0, 1, 2],
                                  preset="paper", image="emarena@sha256:abc")
    assert cmd.startswith("docker run --gpus all")
    assert '-v "$PWD/runs:/runs" -v "$PWD/hf:/hf"' in cmd  # the image's volumes
    assert ("emarena@sha256:abc score submissions/sgtr --model qwen2.5-7b-instruct "
            "--em-dataset insecure --regimes reversal --seeds 0 --seeds 1 --seeds 2 "
            "--preset paper") in cmd
    control = about.reproduce_command(submission=None, model="m", em_dataset="insecure",
                                      regime="em", seed=0, preset="paper")
    assert "submissions/none" in control
    assert "--suite" not in control and "--judge" not in control
    v1 = about.reproduce_command(submission="sgtr", model="m", em_dataset="insecure",
                                 regime="reversal", seed=0, preset="paper", suite="v1",
                                 em_system_turn="none", judge_mode="text")
    assert v1.endswith("--preset paper --suite v1 --em-system-turn none --judge openai-text")


def test_reproduce_markdown_names_the_image_or_the_commit(clean_results):
    rs = read_results(clean_results)
    r = next(x.result for x in rs.cells.values() if x.result.cell.regime == "reversal")
    md = about.reproduce_markdown(r, [0, 1, 2])
    assert "--seeds 0 --seeds 1 --seeds 2" in md and f"suite `{r.cell.suite}`" in md
    assert f"--suite {r.cell.suite}" in md  # a v1 record is not reproduced by the default suite
    assert "no image digest recorded: build the image at git commit" in md
    digest = r.model_copy(update={"provenance": r.provenance.model_copy(
        update={"image_digest": "sha256:" + "e" * 64})})
    assert f"emarena@sha256:{'e' * 64} score" in about.reproduce_markdown(digest, [0])


# --- plots ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defense_rows(tmp_path_factory):
    from emarena.leaderboard.synthetic import write_synthetic_results

    root = tmp_path_factory.mktemp("plots")
    write_synthetic_results(root / "a", 120)
    write_synthetic_results(root / "b", 60, seeds=1, preset="cpu-demo", official_judge=False)
    t = read_results(root).table()
    model, em = views.default_selection(t)
    return views.apply_view(t, views.View(model=model, em_dataset=em))


def _label_boxes(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    ax = fig.axes[0]
    return [(t.get_text(), t.get_window_extent(r)) for t in ax.texts]


def test_plots_one_point_per_defense_official_only_labels_apart(defense_rows):
    fig = plots.prevention_vs_reversal(defense_rows, "t")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("EM reduction, prevention")
    labels = _label_boxes(fig)
    official = defense_rows[defense_rows.official.astype(bool)
                            & ~defense_rows.reference.astype(bool)]
    assert sorted(t for t, _ in labels) == sorted(official.defense)  # one each, no unofficial
    for i, (a, ba) in enumerate(labels):
        for b, bb in labels[i + 1:]:
            assert not ba.overlaps(bb), f"labels {a!r} and {b!r} collide"
    with_all = plots.prevention_vs_reversal(defense_rows, "t", include_unofficial=True)
    assert len(_label_boxes(with_all)) > len(labels)
    trade = plots.misalignment_vs_capability(defense_rows, "t", regime="reversal",
                                             capability="mmlu_accuracy")
    texts = [t for t, _ in _label_boxes(trade)]
    # the reference points: the official group's EM-only control and base model, once each
    assert texts.count("(EM only)") == 1 and texts.count("(base model)") == 1
    for f in (fig, trade):
        img = plots.figure_html(f, 'a "plot" <x>')
        assert img.startswith('<img alt="a &quot;plot&quot; &lt;x&gt;" src="data:image/png;base64,')
        png = base64.b64decode(img.split("base64,")[1].split('"')[0])
        assert png.startswith(b"\x89PNG")


def test_plots_empty_selection(defense_rows):
    fig = plots.prevention_vs_reversal(defense_rows.iloc[0:0], "nothing")
    assert "No official defense rows" in fig.axes[0].texts[0].get_text()


# --- submit ---------------------------------------------------------------------------------


def test_validate_valid_yaml():
    v = sub.validate_text(SGTR_YAML, README)
    assert v.ok and v.name == "sgtr" and len(v.config_hash or "") == 64
    assert "Valid" in v.markdown()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda y: y.replace("corpus: xsum", "corpus: xsum\n    bogus: 1"), "bogus"),
        (lambda y: y.replace("kind: sgtr", "kind: sgtrr"), "did you mean 'sgtr'"),
        (lambda y: y.replace("division: closed", "division: shut"), "division"),
        (lambda y: y.replace("name: sgtr", "name: Bad Name"), "does not match"),
        (lambda y: "name: [unclosed", "not valid YAML"),
        (lambda y: "- a\n- b\n", "expected a mapping"),
        (lambda y: "", "empty"),
    ],
)
def test_validate_invalid_yaml_reports_each_problem(edit, message):
    v = sub.validate_text(edit(SGTR_YAML), README)
    assert not v.ok
    joined = "\n".join(v.errors)
    assert message in joined
    assert "/tmp" not in joined and "emarena-submit-" not in joined  # no temp paths shown
    assert "problem" in v.markdown()


def test_validate_requires_a_readme():
    v = sub.validate_text(SGTR_YAML, "  ")
    assert not v.ok
    assert any("README" in e for e in v.errors)


def test_queue_local_folder(tmp_path):
    out = sub.queue_text(SGTR_YAML, README, "alice", requests_dir=tmp_path)
    assert out.ok and out.created and out.status == "PENDING"
    path = tmp_path / out.request_id
    data = json.loads(path.read_text())
    assert data["status"] == "PENDING" and data["name"] == "sgtr"
    assert data["yaml"] == SGTR_YAML and data["readme"] == README
    assert data["history"][0]["status"] == "PENDING"
    again = sub.queue_text(SGTR_YAML, README, "bob", requests_dir=tmp_path)
    assert again.ok and not again.created and "already PENDING" in again.message
    # a FAILED request may be queued again, keeping its history
    data["status"] = "FAILED"
    data["error"] = "boom"
    path.write_text(json.dumps(data))
    third = sub.queue_text(SGTR_YAML, README, "carol", requests_dir=tmp_path)
    assert third.created
    final = json.loads(path.read_text())
    assert final["status"] == "PENDING" and final["error"] is None
    assert [h["status"] for h in final["history"]] == ["PENDING", "PENDING"]
    reqs, bad = sub.read_queue(tmp_path)
    assert [r.name for r in reqs] == ["sgtr"] and bad == []


def test_queue_refuses_invalid_and_anonymous(tmp_path):
    bad = sub.queue_text("name: x", README, "alice", requests_dir=tmp_path)
    assert not bad.ok and bad.errors
    nobody = sub.queue_text(SGTR_YAML, README, "  ", requests_dir=tmp_path)
    assert not nobody.ok and "Submitter" in nobody.message
    nowhere = sub.queue_text(SGTR_YAML, README, "alice")
    assert not nowhere.ok and "no requests repo" in nowhere.message
    assert not (tmp_path / "requests").exists()


def test_queue_hub_repo_goes_through_emarena_queue(tmp_path, monkeypatch):
    import emarena.queue as q

    seen = {}

    def fake_submit(path, requests_repo, submitter):
        folder = Path(path)
        seen.update(folder=folder.name, files=sorted(p.name for p in folder.iterdir()),
                    repo=requests_repo, submitter=submitter)
        return sub_local(folder, tmp_path, submitter)

    sub_local = sub.submit_local
    monkeypatch.setattr(q, "submit", fake_submit)
    out = sub.queue_text(SGTR_YAML, README, "alice", requests_repo="org/requests")
    assert out.ok
    assert seen == {"folder": "sgtr", "files": ["README.md", "defense.yaml"],
                    "repo": "org/requests", "submitter": "alice"}


def test_read_queue_lists_unreadable_files(tmp_path):
    (tmp_path / "requests").mkdir()
    (tmp_path / "requests" / "0123456789abcdef.json").write_text("{not json")
    reqs, bad = sub.read_queue(tmp_path)
    assert reqs == [] and len(bad) == 1 and bad[0].path.endswith("0123456789abcdef.json")
