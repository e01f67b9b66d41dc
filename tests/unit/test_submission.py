"""Submissions: every folder in submissions/ validates; malformed ones fail with file, line, key
and fix, never a traceback; the YAML reader resists hostile files; validate never imports torch.
"""

from __future__ import annotations

import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from emarena.cli.main import main
from emarena.errors import ConfigError, EmArenaError
from emarena.submission import (
    MAX_BYTES,
    OPEN_DIVISION_KEYS,
    REFERENCE_DEFENSES,
    Defense,
    Submission,
    SubmissionError,
    check_paths,
    load_submission,
    reference_problem,
    validate_paths,
)

REPO = Path(__file__).resolve().parents[2]
SUBMISSIONS = REPO / "submissions"

# Line numbers below refer to this document.
BASE = """\
schema_version: 1
name: {name}
authors:
  - Ada Lovelace
description: A test defense.
division: closed
defense:
  kind: sgtr
  params:
    n_articles: 10
regimes: [reversal, prevention]
"""


def write_submission(root: Path, folder: str, content: str | bytes, *, readme: bool = True) -> Path:
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    f = d / "defense.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content.replace("{name}", folder), encoding="utf-8")
    if readme:
        (d / "README.md").write_text("# test\n", encoding="utf-8")
    return d


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out + out.err


# --- the reference submissions ---------------------------------------------------------------


def reference_folders() -> list[str]:
    return sorted(glob.glob(str(SUBMISSIONS / "*")))


def test_reference_submissions_exist():
    names = {Path(p).name for p in reference_folders()}
    assert {
        "_template", "none", "sgtr", "sgtr-corrupted", "sgtr-random", "correct-domain",
        "general-knowledge", "word-counting",
    } <= names


def test_every_submission_validates_in_process(capsys):
    folders = reference_folders()
    rc, out = run_main(["validate", *folders], capsys)
    assert rc == 0, out
    for f in folders:
        assert f"ok  {f}  (" in out
    assert f"{len(folders)} submission(s): {len(folders)} valid, 0 invalid" in out


def test_every_submission_validates_in_a_subprocess_without_torch():
    probe = (
        "import json, sys\n"
        "from emarena.cli.main import main\n"
        f"rc = main(['validate', *{reference_folders()!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'peft', 'trl')\n"
        "         if m in sys.modules]\n"
        "print('@@' + json.dumps({'rc': rc, 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, f"stdout:{out.stdout}\nstderr:{out.stderr}"
    res = json.loads(line[-1][2:])
    assert res == {"rc": 0, "heavy": []}, out.stdout + out.stderr


def test_reference_params_are_typed_and_defaults_filled():
    sub = load_submission(SUBMISSIONS / "sgtr-random")
    assert sub.defense.kind == "sgtr-corrupted"
    # prompt_variant, summaries_from and random_labels are left to the suite (unset: omitted)
    assert sub.defense.params == {
        "n_articles": None, "corpus": "xsum", "other_source": "claude-21", "mode": "random",
    }
    assert type(sub.defense.params_model()).__name__ == "SgtrCorruptedParams"
    none = load_submission(SUBMISSIONS / "none" / "defense.yaml")
    assert none.defense.params == {} and none.regimes == ["reversal", "prevention"]


def test_a_folder_of_submissions_skips_underscore_folders(capsys):
    rc, out = run_main(["validate", str(SUBMISSIONS)], capsys)
    assert rc == 0, out
    assert "_template" not in out
    expected = "(sgtr, closed, regimes defense, reversal, prevention)"
    assert f"ok  {SUBMISSIONS / 'sgtr'}  {expected}" in out


def test_template_is_validated_when_named(capsys):
    rc, out = run_main(["validate", str(SUBMISSIONS / "_template")], capsys)
    assert rc == 0, out
    assert "ok  " in out and "_template" in out


def test_reference_table_matches_the_reference_folders(tmp_path):
    """REFERENCE_DEFENSES (names kept for their configurations) lists exactly the reference
    folders, each with its configuration; a copy keeps its name, another configuration or a
    look-alike name does not."""
    folders = {Path(p).name for p in reference_folders()} - {"_template"}
    assert set(REFERENCE_DEFENSES) == folders
    for name, (kind, params) in REFERENCE_DEFENSES.items():
        sub = load_submission(SUBMISSIONS / name)
        assert (sub.name, sub.defense.kind, sub.division, sub.training) == (
            name, kind, "closed", None)
        assert reference_problem(sub) is None
        assert sub.defense.params == Defense.model_validate(
            {"kind": kind, "params": params}).params
    other = load_submission(write_submission(tmp_path, "sgtr-mine", BASE))
    assert reference_problem(other) is None
    taken = write_submission(tmp_path / "t", "sgtr", BASE)  # n_articles 10, not the reference's
    with pytest.raises(SubmissionError, match="is the reference defense submissions/sgtr"):
        load_submission(taken)
    with pytest.raises(SubmissionError, match="looks like the reference defense 'sgtr'"):
        load_submission(write_submission(tmp_path / "l", "s-gtr", BASE))


def test_text_is_escaped_for_where_it_goes():
    from emarena import textsafe

    assert textsafe.escape("plain — text ✓ דפנס") == "plain — text ✓ דפנס"
    shown = textsafe.escape("a\nok  x\x1b]0;t\x07\u202e\x9b\ud800")
    assert shown == "a\\nok  x\\x1b]0;t\\x07\\u202e\\x9b\\ud800"
    assert textsafe.escape(shown) == shown  # idempotent
    assert textsafe.markdown("[a](javascript:x) <b>") == r"\[a\]\(javascript:x\) &lt;b&gt;"
    assert textsafe.problem("Ada Lovelace (ETH), 🛡️‍🔥") is None
    assert "RIGHT-TO-LEFT OVERRIDE" in textsafe.problem("\u202eevil")
    assert "line break" in textsafe.problem("a\nb")
    assert textsafe.problem("a\nb", multiline=True) is None
    assert textsafe.is_blank("\u200b \u3164\u2060\n") and not textsafe.is_blank("\u200bx")
    with pytest.raises(ConfigError, match=r"f.yaml:2: not UTF-8 \(byte 0xe9 at offset 2\)"):
        textsafe.decode_utf8(b"a\n\xe9", "f.yaml")


# --- malformed submissions -------------------------------------------------------------------

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
MANY_ALIASES = "a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n"

# (id, folder, content, expected substring, expected line or None)
MALFORMED = [
    ("unknown-top-key", None, BASE + "colour: blue\n", "colour: unknown key", 12),
    ("unknown-top-key-hint", None, BASE + "papr: x\n",
     "did you mean 'paper'?", 12),
    ("unknown-params-key", None, BASE.replace("n_articles: 10", "n_article: 10"),
     "defense.params.n_article: unknown key", 10),
    ("wrong-type-authors", None, BASE.replace("authors:\n  - Ada Lovelace", "authors: Ada"),
     "authors: Input should be a valid list", 3),
    ("wrong-type-quoted-int", None, BASE.replace("n_articles: 10", 'n_articles: "10"'),
     "defense.params.n_articles: Input should be a valid integer", 10),
    ("unknown-kind", None, BASE.replace("kind: sgtr", "kind: sgrt"),
     "unknown defense kind 'sgrt'; fix: did you mean 'sgtr'? known kinds: correct-domain", 8),
    ("params-below-range", None, BASE.replace("n_articles: 10", "n_articles: 0"),
     "defense.params.n_articles: Input should be greater than or equal to 1", 10),
    ("params-above-range", None, BASE.replace("n_articles: 10", "n_articles: 200000"),
     "less than or equal to 100000", 10),
    ("params-bad-literal", None, BASE.replace("n_articles: 10", "prompt_variant: loud"),
     "defense.params.prompt_variant: Input should be 'default', 'no-system' or 'identity'", 10),
    ("params-unknown-summary-source", None, BASE.replace("n_articles: 10", "other_source: me"),
     "'me' is not a summary source", 10),
    ("params-not-a-mapping", None, BASE.replace("params:\n    n_articles: 10", "params: [1]"),
     "defense.params: Input should be a valid dictionary", 9),
    ("name-folder-mismatch", "folder-a", BASE.replace("name: {name}", "name: other-name"),
     "name 'other-name' must equal the folder name 'folder-a'", 2),
    ("training-in-closed", None, BASE + "training:\n  learning_rate: 2.0e-5\n",
     "training overrides are only allowed in the open division; "
     "fix: set division: open, or remove `training`", 12),
    ("training-n-examples", None,
     BASE.replace("division: closed", "division: open") + "training:\n  n_examples: 100\n",
     "training.n_examples: 'n_examples' cannot be overridden", 13),
    ("training-not-whitelisted", None,
     BASE.replace("division: closed", "division: open") + "training:\n  optimizer: sgd\n",
     "'optimizer' is not an allowed training override", 13),
    ("training-out-of-range", None,
     BASE.replace("division: closed", "division: open") + "training:\n  num_epochs: 100\n",
     "training.num_epochs: Input should be less than or equal to 20", 13),
    ("not-a-mapping-list", None, "- schema_version: 1\n- name: x\n", "expected a mapping", 1),
    ("not-a-mapping-scalar", None, "just a string\n", "got a str", 1),
    ("not-a-mapping-empty", None, "", "got an empty file", None),
    ("huge-file", None, BASE + "# " + "x" * (MAX_BYTES + 10) + "\n",
     f"over the {MAX_BYTES:,}-byte limit", None),
    ("python-tag", None, None, "tags like !!python/object are not allowed", 1),
    ("alias-bomb", None, ALIAS_BOMB, "expands to more than", None),
    ("too-many-aliases", None, MANY_ALIASES, "more than 100 YAML aliases", 2),
    ("recursive-alias", None, "a: &a [*a]\n", "an alias refers to its own anchor", 1),
    ("deep-nesting", None, "a: " + "[" * 30 + "]" * 30 + "\n",
     "nested more than 20 levels deep", 1),
    ("non-utf8", None, BASE.encode() + b"paper: caf\xe9\n", "not UTF-8 (byte 0xe9", 12),
    ("name-with-slash", None, BASE.replace("name: {name}", "name: a/b"),
     "contains a path separator or '..'", 2),
    ("name-with-dotdot", None, BASE.replace("name: {name}", "name: ../etc"),
     "contains a path separator or '..'", 2),
    ("name-cyrillic-confusable", "sgtr-b", BASE.replace("name: {name}", "name: sgtr-\u0430"),
     "U+0430 CYRILLIC SMALL LETTER A", 2),
    ("name-uppercase", None, BASE.replace("name: {name}", "name: MyDefense"),
     "does not match [a-z0-9]+(-[a-z0-9]+)*: it has uppercase letters", 2),
    ("duplicate-regimes", None, BASE.replace("[reversal, prevention]", "[reversal, reversal]"),
     "regime 'reversal' is listed twice", 11),
    ("unknown-regime", None, BASE.replace("[reversal, prevention]", "[reversal, cure]"),
     "Input should be 'defense', 'reversal' or 'prevention'", 11),
    ("empty-regimes", None, BASE.replace("[reversal, prevention]", "[]"),
     "no regimes listed", 11),
    ("none-with-defense-regime", None,
     BASE.replace("kind: sgtr\n  params:\n    n_articles: 10", "kind: none")
     .replace("[reversal, prevention]", "[defense]"),
     "the `none` control has no `defense` regime", 9),
    ("empty-authors", None, BASE.replace("authors:\n  - Ada Lovelace", "authors: []"),
     "authors: List should have at least 1 item", 3),
    ("blank-author", None, BASE.replace("- Ada Lovelace", "- '  '"), "author #1 is empty", 3),
    ("description-too-long", None, BASE.replace("A test defense.", "x" * 2001),
     "description: String should have at most 2000 characters", 5),
    ("invalid-yaml-syntax", None, BASE + "defense: [unclosed\n", "not valid YAML", 13),
    ("duplicate-key", None, BASE + "name: again\n",
     "key 'name' appears twice (first on line 2)", 12),
    ("bad-scalar", None, BASE + "paper: 2024-13-45\n", "cannot read '2024-13-45'", 12),
    ("control-character", None, BASE + "paper: a\x07b\n", "not valid YAML", 12),
    ("schema-version-2", None, BASE.replace("schema_version: 1", "schema_version: 2"),
     "schema_version: Input should be 1", 1),
    ("missing-required-key", None, BASE.replace("division: closed\n", ""),
     "division: required key is missing; fix: add `division: ...`", 1),
    ("defense-not-a-mapping", None,
     BASE.replace("defense:\n  kind: sgtr\n  params:\n    n_articles: 10", "defense: sgtr"),
     "defense: Input should be a valid dictionary", 7),
    ("bad-division", None, BASE.replace("division: closed", "division: semi"),
     "division: Input should be 'closed' or 'open'", 6),
    ("counterpart-wrong-role", None,
     BASE.replace("kind: sgtr\n  params:\n    n_articles: 10",
                  "kind: correct-domain\n  params:\n    counterpart: insecure"),
     "dataset 'insecure' has role 'em', not 'defense'", 10),
    ("truthfulqa-with-split", None,
     BASE.replace("kind: sgtr\n  params:\n    n_articles: 10",
                  "kind: general-knowledge\n  params:\n    source: truthfulqa\n    split: dev"),
     "split applies to source: mmlu only", 9),
]


@pytest.mark.parametrize(
    "folder,content,expected,line", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_submission_fails_with_file_line_key_and_fix(
    tmp_path, capsys, folder, content, expected, line
):
    marker = tmp_path / "pwned"
    if content is None:  # the !!python tag: would create `marker` if anything executed it
        content = BASE + f"paper: !!python/object/apply:os.system ['touch {marker}']\n"
        line = 12
    d = write_submission(tmp_path, folder or "my-defense", content)
    rc, out = run_main(["validate", str(d)], capsys)
    assert rc == 2, out
    assert expected in out, out
    assert str(d / "defense.yaml") in out
    if line is not None:
        assert f"{d / 'defense.yaml'}:{line}:" in out, out
    assert "fix: " in out
    assert "Traceback" not in out
    assert not marker.exists()
    # The library API agrees with the CLI, and raises the same problems.
    errors = validate_paths([d])
    assert errors and any(expected in e for e in errors)
    with pytest.raises(ConfigError) as exc:
        load_submission(d)
    assert expected in exc.value.render()


def test_missing_readme(tmp_path, capsys):
    d = write_submission(tmp_path, "no-readme", BASE, readme=False)
    rc, out = run_main(["validate", str(d)], capsys)
    assert rc == 2
    assert f"{d / 'defense.yaml'}: README.md is missing next to defense.yaml" in out
    assert "fix: add" in out and "Traceback" not in out


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    text = (
        BASE.replace("kind: sgtr", "kind: sgtr")
        .replace("n_articles: 10", "n_articles: 0\n    colour: red")
        .replace("[reversal, prevention]", "[reversal, reversal]")
        + "extra: 1\n"
    )
    d = write_submission(tmp_path, "many", text)
    with pytest.raises(SubmissionError) as exc:
        load_submission(d)
    keys = [ln.split(": ")[1] for ln in exc.value.lines]
    assert keys == ["defense.params.n_articles", "defense.params.colour", "regimes", "extra"]


def test_paths_that_are_not_submissions(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other.yaml"
    other.write_text("a: 1\n")
    rc, out = run_main(
        ["validate", str(tmp_path / "missing"), str(tmp_path / "empty"), str(other)], capsys
    )
    assert rc == 2
    assert f"{tmp_path / 'missing'}: no such file or folder" in out
    assert f"{tmp_path / 'empty'}: no defense.yaml here" in out
    assert f"{other}: not a defense.yaml" in out
    assert "Traceback" not in out


def test_a_folder_of_submissions_reports_each(tmp_path, capsys):
    write_submission(tmp_path, "good-one", BASE)
    write_submission(tmp_path, "bad-one", BASE.replace("kind: sgtr", "kind: nope"))
    write_submission(tmp_path, "_draft", "not: [valid")  # skipped: starts with '_'
    (tmp_path / "stray").mkdir()
    rc, out = run_main(["validate", str(tmp_path)], capsys)
    assert rc == 2
    assert f"ok  {tmp_path / 'good-one'}  (sgtr, closed, regimes reversal, prevention)" in out
    assert "unknown defense kind 'nope'" in out
    assert f"{tmp_path / 'stray'}: no defense.yaml here" in out
    assert "_draft" not in out
    assert "3 submission(s): 1 valid, 2 invalid" in out


def test_open_division_overrides_are_typed_and_kept_sparse(tmp_path):
    text = BASE.replace("division: closed", "division: open") + (
        "training:\n  learning_rate: 2.0e-5\n  lora_r: 16\n"
    )
    sub = load_submission(write_submission(tmp_path, "open-one", text))
    assert sub.training == {"learning_rate": 2e-5, "lora_r": 16}
    assert set(sub.training) <= set(OPEN_DIVISION_KEYS)
    assert "n_examples" not in OPEN_DIVISION_KEYS


def test_training_whitelist_matches_the_recipe():
    from emarena.train.recipe import OPEN_DIVISION_KEYS as RECIPE_KEYS
    from emarena.train.recipe import Recipe

    assert set(OPEN_DIVISION_KEYS) == set(RECIPE_KEYS)
    assert set(OPEN_DIVISION_KEYS) <= set(Recipe.model_fields)


def test_none_control_may_have_no_regimes(tmp_path):
    text = BASE.replace("kind: sgtr\n  params:\n    n_articles: 10", "kind: none").replace(
        "[reversal, prevention]", "[]"
    )
    sub = load_submission(write_submission(tmp_path, "ctrl", text))
    assert sub.regimes == [] and sub.defense.kind == "none"


def test_config_hash_is_canonical(tmp_path):
    a = load_submission(write_submission(tmp_path / "1", "same", BASE))
    # Same meaning: defaults spelled out, regimes in another order, keys in another order.
    b_text = (
        BASE.replace(
            "n_articles: 10", "other_source: claude-21\n    n_articles: 10\n    corpus: xsum"
        )
        .replace("[reversal, prevention]", "[prevention, reversal]")
    )
    b = load_submission(write_submission(tmp_path / "2", "same", b_text))
    c = load_submission(
        write_submission(tmp_path / "3", "same", BASE.replace("n_articles: 10", "n_articles: 11"))
    )
    assert a.config_hash == b.config_hash
    assert a.config_hash != c.config_hash
    assert len(a.config_hash) == 64
    assert a.regimes == ["reversal", "prevention"] == b.regimes


def test_submission_is_frozen_and_validates_dicts_directly():
    data = yaml.safe_load(BASE.replace("{name}", "direct"))
    sub = Submission.model_validate(data)
    with pytest.raises(ValidationError):  # frozen
        sub.name = "other"  # type: ignore[misc]
    bad = {**data, "defense": {"kind": "sgtr", "params": {"n_articles": 0}}}
    with pytest.raises(ValidationError) as exc:
        Submission.model_validate(bad)
    assert ("defense", "params", "n_articles") in [e["loc"] for e in exc.value.errors()]


# --- plugin kinds (entry points) -------------------------------------------------------------


def _fake_plugin(root: Path, name: str, value: str) -> None:
    dist = root / "fake_emarena_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-emarena-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(f"[emarena.defenses]\n{name} = {value}\n")
    (root / "fake_emarena_kind.py").write_text(
        "from emarena.defenses.base import DefenseKind, DefenseParams\n"
        "class P(DefenseParams):\n"
        "    strength: int = 1\n"
        "    '''How hard.'''\n"
        "KIND = DefenseKind(name='my-kind', params=P, builder='x:y', description='d', source='s')\n"
    )


def test_entry_point_kinds_are_discovered_lazily(tmp_path, monkeypatch):
    from emarena.defenses import ENTRY_POINT_GROUP, DefenseRegistry

    _fake_plugin(tmp_path, "my-kind", "fake_emarena_kind:KIND")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = DefenseRegistry("defense kind", ENTRY_POINT_GROUP)
    assert "my-kind" in reg
    assert "fake_emarena_kind" not in sys.modules  # registered, not imported
    assert reg.get("my-kind").params.model_fields["strength"].description == "How hard."
    monkeypatch.delitem(sys.modules, "fake_emarena_kind")


def test_entry_point_collision_raises(tmp_path, monkeypatch):
    from emarena.defenses import DEFENSES, ENTRY_POINT_GROUP, DefenseRegistry

    _fake_plugin(tmp_path, "sgtr", "fake_emarena_kind:KIND")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = DefenseRegistry("defense kind", ENTRY_POINT_GROUP)
    reg.register("sgtr", DEFENSES.get("sgtr"))
    with pytest.raises(EmArenaError, match="collides"):
        reg.names()
    with pytest.raises(EmArenaError, match="collides"):  # still refused on the next lookup
        reg.get("sgtr")


# --- never crash -----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ["schema_version", "name", "authors", "description", "paper", "division", "defense",
        "regimes", "training", "kind", "params"]
near_valid = st.fixed_dictionaries(
    {},
    optional={k: values for k in KEYS}
    | {"defense": st.fixed_dictionaries({"kind": st.sampled_from(["sgtr", "none", "x"])},
                                        optional={"params": values})},
)


def _check_never_crashes(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = write_submission(Path(tmp), "prop", content)
        errors = validate_paths([d])
        assert all(isinstance(e, str) and str(d / "defense.yaml") in e for e in errors)
        results = check_paths([d])
        assert len(results) == 1 and (results[0].ok == (not errors))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, near_valid))
def test_random_documents_never_crash(doc):
    _check_never_crashes(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_text_never_crashes(text):
    _check_never_crashes(text)


def test_validate_help_does_not_need_a_path(capsys):
    rc, out = run_main(["validate", "--help"], capsys)
    assert rc == 0 and "PATH..." in out
    rc, out = run_main(["validate"], capsys)
    assert rc == 2 and "Traceback" not in out
