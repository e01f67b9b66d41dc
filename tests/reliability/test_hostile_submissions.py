"""Hostile submissions: a schema fuzzer, hand-written attacks, and a worker queue of 50 requests.

1. A property-based fuzzer (hypothesis, derandomized) replaces one field of a valid
   defense.yaml with a hostile value or a raw YAML construct (python tags whose execution
   would create a canary file, anchors and aliases, deep nesting, path-like and confusable
   text, huge and non-finite numbers) and checks that validation never crashes, never runs
   anything (the canary), never opens a file for writing nor reads outside the submission
   folder and the suite (a Python audit hook watches every `open`, `exec`, spawn and socket),
   and either accepts the file or names it, the line and a field in every error line.
2. Hand-written attacks at full size through `emarena validate`: a billion-laughs bomb, python
   tags of every kind, 50 000 levels of nesting, 20 MB files, links to files outside the
   folder, a FIFO, path separators and '..' in names, confusables, params out of range, kinds
   and datasets that do not exist. Each must end in a specific error naming the file.
   (tests/unit/test_submission.py checks the message, line and fix of each ordinary mistake;
   these check what an attacker would try, under the audit hook.)
3. The worker and a queue of 50 requests, 25 good and 25 bad; most bad ones are planted
   straight in the requests repo, past `submit`'s validation. `emarena worker` (a real
   subprocess, loop mode) must end with every good one FINISHED and every bad one FAILED with
   its reason, and still be running. Scoring is the real-function scorer of
   tests/hub/scorers.py (`--scorer tests.hub.scorers:quick_score`: real cell planning, real
   schema-valid result files, synthetic numbers): scoring 25 submissions on the embedded model
   would take hours on CI's CPUs. Real scoring is covered by tests/pipeline/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emarena
from emarena import hub, queue
from emarena import settings as em_settings
from emarena.cli.main import main
from emarena.errors import ConfigError
from emarena.submission import FILENAME, README, load_submission, validate_paths
from tests.reliability.figures import ENTRY_QUEUE, ENTRY_VALIDATE, pick
from tests.reliability.test_judge_hub_faults import hub_server  # noqa: F401 - a fixture

REPO_ROOT = Path(__file__).resolve().parents[2]
VALID = {
    "schema_version": 1,
    "name": "fuzz",
    "authors": ["Ada Lovelace"],
    "description": "A defense under attack.",
    "division": "closed",
    "defense": {"kind": "sgtr", "params": {"n_articles": 10, "other_source": "claude-21"}},
    "regimes": ["reversal", "prevention"],
}

# --- the audit hook: what validation opens, runs and connects to ----------------------------

_WATCH = {"on": False, "allowed": (), "events": []}
_SPAWN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                 "subprocess.Popen", "socket.connect", "socket.bind", "os.remove", "os.unlink",
                 "os.rename", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.symlink",
                 "os.chmod", "os.truncate", "ctypes.dlopen")  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if not _WATCH["on"]:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(path, int) or path is None:
            return
        p = os.path.abspath(os.fsdecode(path))
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing or not p.startswith(_WATCH["allowed"]):
            _WATCH["events"].append(("open", p, mode))
    elif event.startswith(_SPAWN_EVENTS):
        _WATCH["events"].append((event, repr(args)[:200], None))


if not getattr(sys, "_emarena_reliability_audit", False):  # audit hooks cannot be removed
    sys.addaudithook(_audit)
    sys._emarena_reliability_audit = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def watched(*allowed: Path):
    """Record every open outside `allowed` (and the Python install), every write, spawn and
    socket while the block runs; yields the list of events."""
    roots = [*allowed, em_settings.suite_dir(), Path(emarena.__file__).parent,
             Path(sys.prefix), Path(sys.base_prefix)]  # fmt: skip
    _WATCH["allowed"] = tuple(str(Path(r).resolve()) + os.sep for r in roots)
    _WATCH["events"] = []
    _WATCH["on"] = True
    try:
        yield _WATCH["events"]
    finally:
        _WATCH["on"] = False


def write_folder(root: Path, name: str, text: str | bytes, readme: str = "# test\n") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    f = d / FILENAME
    f.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    (d / README).write_text(readme, encoding="utf-8")
    return d


# --- 1. the fuzzer --------------------------------------------------------------------------

FIELDS = [
    ("schema_version",), ("name",), ("authors",), ("description",), ("paper",), ("division",),
    ("defense",), ("defense", "kind"), ("defense", "params"), ("defense", "params", "n_articles"),
    ("defense", "params", "other_source"), ("regimes",), ("training",), ("extra_key",),
    ("defense", "params", "counterpart"),
]  # fmt: skip
HOSTILE_TEXT = ["../../etc/passwd", "/etc/passwd", "..", "a/b", "a\\b", "sgtr\u2010x",
                "sgt\u0433", "ｓｇｔｒ", "sgtr\u200b", "CON", "nul\x00byte", "~root/.ssh/id_rsa",
                "$(touch canary)", "`id`", "{{7*7}}", "%(x)s", "\u202egnp.exe", "x" * 3000,
                "insecure", "first-plot", "none", "open", "paper"]  # fmt: skip
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=40),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE_TEXT)), inner,
                        max_size=4),
    ),
    max_leaves=12,
)  # fmt: skip


def raw_snippets(canary: Path) -> list[str]:
    """Raw YAML for a value position: each tag would create `canary` if anything ran it."""
    c = str(canary)
    return [
        f'!!python/object/apply:os.system ["touch {c}"]',
        f'!!python/object/apply:subprocess.check_call [["touch", "{c}"]]',
        f'!!python/object/new:subprocess.Popen [["touch", "{c}"]]',
        "!!python/name:os.system",
        "!!python/module:os",
        f'!!python/object:pathlib.Path ["{c}"]',
        f"!!python/tuple [{c}]",
        "!custom {a: 1}",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!!timestamp 2024-13-45",
        "!!float nan",
        "!!int 0x7fffffffffffffffffff",
        "&a [*a]",
        "&x [1, 2]",
        "*undefined_alias",
        "[" * 25 + "]" * 25,
        "{a: {b: {c: {d: {e: {f: {g: {h: {i: {j: {k: {l: {m: {n: {o: {p: {q: {r: {s: {t: {u: 1"
        "}}}}}}}}}}}}}}}}}}}}}",
        "'unterminated",
        '"\\ud800"',
    ]


def document(path: tuple[str, ...], value, raw: str | None) -> str:
    doc = json.loads(json.dumps(VALID))
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = "__RAW__" if raw is not None else value
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10_000)
    return text.replace("__RAW__", raw) if raw is not None else text


LINE_RE = r"^{file}(:\d+)?: .+; fix: .+"


def test_fuzzed_submissions_are_rejected_specifically_or_accepted(tmp_path, figures):
    canary = tmp_path / "CANARY"
    snippets = raw_snippets(canary)
    good = write_folder(tmp_path / "warm", "fuzz", document(("name",), "fuzz", None))
    assert validate_paths([good]) == []  # warm every lazy import before watching
    counts = {"tried": 0, "rejected": 0, "accepted": 0}
    n_examples = pick(150, 3000)

    @settings(max_examples=n_examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(
        path=st.sampled_from(FIELDS),
        value=values,
        raw=st.one_of(st.none(), st.sampled_from(snippets)),
    )
    def check(path, value, raw):
        counts["tried"] += 1
        folder = tmp_path / f"case{counts['tried']}" / "fuzz"
        text = document(path, value, raw)
        d = write_folder(folder.parent, "fuzz", text)
        yaml_path = d / FILENAME
        with watched(d) as events:
            errors = validate_paths([d])
        assert not canary.exists(), f"code ran: {text!r}"
        assert not events, f"validation touched {events[:3]} for {text!r}"
        if not errors:
            sub = load_submission(d)  # accepted: a well-formed submission that round-trips
            again = write_folder(folder.parent / "again", "fuzz", yaml.safe_dump(
                sub.model_dump(mode="json"), allow_unicode=True))
            assert load_submission(again).config_hash == sub.config_hash
            counts["accepted"] += 1
            return
        counts["rejected"] += 1
        line_re = re.compile(LINE_RE.format(file=re.escape(str(yaml_path))))
        assert all(line_re.match(e) for e in errors), errors
        dotted = ".".join(path)
        prefixes = [".".join(path[:i]) for i in range(len(path), 0, -1)]
        names_field = any(f": {p}" in e or f": {p}." in e for e in errors for p in prefixes)
        document_level = any(re.search(r"\.yaml(:\d+)?: (?!\w[\w.]*: )", e) for e in errors)
        other_field = any(re.search(r"\.yaml:\d+: [a-z_.]+(\.\d+)?[a-z_.]*: ", e) for e in errors)
        assert names_field or document_level or other_field, (dotted, text, errors)

    check()
    assert counts["tried"] == n_examples
    assert counts["rejected"] > counts["accepted"] > 0
    figures.record("hostile-submissions", "fuzzed defense.yaml (hypothesis, one field hostile)",
                   tried=n_examples, handled=n_examples, entry=ENTRY_VALIDATE,
                   accepted=counts["accepted"], rejected=counts["rejected"])  # fmt: skip


# --- 2. hand-written attacks ----------------------------------------------------------------

BASE = yaml.safe_dump(VALID, sort_keys=False)


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return BASE + "\n".join(lines) + "\n"


def attacks(tmp: Path, canary: Path) -> list[tuple[str, Path, str]]:
    """(id, submission folder or file, phrase the error must contain)."""
    out: list[tuple[str, Path, str]] = []

    def add(cid: str, text: str | bytes, phrase: str, *, name: str = "fuzz", readme="# t\n"):
        out.append((cid, write_folder(tmp / cid, name, text, readme), phrase))

    c = str(canary)
    add("billion-laughs", billion_laughs(), "expands to more than")
    add("alias-flood", BASE + "a: &a x\nb: [" + ", ".join(["*a"] * 5000) + "]\n",
        "more than 100 YAML aliases")
    for tag in (f'!!python/object/apply:os.system ["touch {c}"]',
                f'!!python/object/new:subprocess.Popen [["touch", "{c}"]]',
                "!!python/name:os.system", "!!python/module:os",
                f'!!python/object:pathlib.Path ["{c}"]',
                f'!!python/object/apply:builtins.eval ["open(\'{c}\', \'w\')"]'):  # fmt: skip
        kind = tag.split()[0].removeprefix("!!python/").split(":")[0]
        add(f"tag-{kind}", BASE.replace("A defense under attack.", tag), "is not allowed")
    add("nested-50000", BASE + "x: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "nested more than 20 levels deep")
    add("nested-mappings", BASE + "x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "nested more than 20 levels deep")
    add("file-20mb", BASE + "# " + "x" * 20_000_000 + "\n", "over the 262,144-byte limit")
    add("readme-20mb", BASE, "README.md: is over the", readme="x" * 20_000_000)
    add("readme-not-utf8", BASE, "README.md:1: not UTF-8", readme="")
    (out[-1][1] / README).write_bytes(b"\xff\xfe\x00 binary")
    add("name-dotdot", BASE.replace("name: fuzz", "name: ../../etc"), "path separator or '..'")
    add("name-slash", BASE.replace("name: fuzz", "name: a/b"), "path separator or '..'")
    add("name-backslash", BASE.replace("name: fuzz", 'name: "a\\\\b"'), "path separator")
    add("name-absolute", BASE.replace("name: fuzz", "name: /etc/passwd"), "path separator")
    add("name-cyrillic", BASE.replace("name: fuzz", "name: fuzz-\u0430"), "CYRILLIC SMALL LETTER A")
    add("name-fullwidth", BASE.replace("name: fuzz", "name: ｆｕｚｚ"), "FULLWIDTH")
    add("name-zero-width", BASE.replace("name: fuzz", "name: fu\u200bzz"), "ZERO WIDTH SPACE")
    add("name-rtl-override", BASE.replace("name: fuzz", "name: fu\u202ezz"), "RIGHT-TO-LEFT")
    add("params-huge", BASE.replace("n_articles: 10", "n_articles: 99999999999999999999999"),
        "defense.params.n_articles")
    add("params-negative", BASE.replace("n_articles: 10", "n_articles: -5"),
        "defense.params.n_articles")
    add("params-nan", BASE.replace("n_articles: 10", "n_articles: .nan"),
        "defense.params.n_articles")
    add("training-inf", BASE.replace("division: closed", "division: open")
        + "training:\n  learning_rate: .inf\n", "training.learning_rate")  # fmt: skip
    add("kind-unknown", BASE.replace("kind: sgtr", "kind: rm-rf"), "unknown defense kind")
    add("kind-module-ref", BASE.replace("kind: sgtr", "kind: os:system"), "unknown defense kind")
    add("kind-python-ref", BASE.replace("kind: sgtr", "kind: emarena.defenses.base:Defense"),
        "unknown defense kind")
    add("dataset-path", BASE.replace("kind: sgtr", "kind: correct-domain").replace(
        "n_articles: 10\n    other_source: claude-21", "counterpart: ../../etc/passwd"),
        "defense.params.counterpart")  # fmt: skip
    add("dataset-absolute", BASE.replace("kind: sgtr", "kind: correct-domain").replace(
        "n_articles: 10\n    other_source: claude-21", "counterpart: /etc/passwd"),
        "defense.params.counterpart")  # fmt: skip
    add("dataset-unregistered", BASE.replace("kind: sgtr", "kind: correct-domain").replace(
        "n_articles: 10\n    other_source: claude-21", "counterpart: my-secret-data"),
        "unknown dataset 'my-secret-data'")  # fmt: skip
    add("dataset-wrong-role", BASE.replace("kind: sgtr", "kind: correct-domain").replace(
        "n_articles: 10\n    other_source: claude-21", "counterpart: first-plot"),
        "not 'defense'")  # fmt: skip
    add("summary-source-path", BASE.replace("other_source: claude-21",
                                            "other_source: ../../../etc/passwd"),
        "defense.params.other_source")  # fmt: skip
    add("summary-source-url", BASE.replace("other_source: claude-21",
                                           "other_source: https://evil.example/x"),
        "defense.params.other_source")  # fmt: skip
    # links and special files: never followed, never read
    d = write_folder(tmp / "link-readme", "fuzz", BASE)
    (d / README).unlink()
    (d / README).symlink_to(canary.parent / "secret-token")
    out.append(("link-readme", d, "README.md: is a symbolic link"))
    d = write_folder(tmp / "link-yaml", "fuzz", BASE)
    (d / FILENAME).unlink()
    (d / FILENAME).symlink_to(canary.parent / "secret-token")
    out.append(("link-yaml", d, "defense.yaml: is a symbolic link"))
    d = write_folder(tmp / "link-dev-zero", "fuzz", BASE)
    (d / FILENAME).unlink()
    (d / FILENAME).symlink_to("/dev/zero")
    out.append(("link-dev-zero", d, "defense.yaml: is a symbolic link"))
    d = write_folder(tmp / "fifo", "fuzz", BASE)
    (d / FILENAME).unlink()
    os.mkfifo(d / FILENAME)
    out.append(("fifo", d, "defense.yaml: is a FIFO (named pipe), not a regular file"))
    return out


def test_hand_written_attacks_end_in_specific_errors(tmp_path, capsys, figures):
    canary = tmp_path / "outside" / "CANARY"
    canary.parent.mkdir()
    secret = canary.parent / "secret-token"
    secret.write_text("hf_SECRETsecretSECRET\n")
    cases = attacks(tmp_path / "subs", canary)
    good = write_folder(tmp_path / "warm", "fuzz", BASE)
    assert validate_paths([good]) == []
    handled = 0
    for cid, folder, phrase in cases:
        with watched(folder) as events:
            rc = main(["validate", str(folder)])
        out, err = capsys.readouterr()
        text = out + err
        assert rc == 2, (cid, text)
        assert phrase in text, (cid, phrase, text[:2000])
        assert str(folder) in text, (cid, text[:500])
        assert "Traceback" not in text and "hf_SECRET" not in text, (cid, text[:2000])
        assert not canary.exists(), cid
        # reads only inside the folder; a FIFO is never opened (it would block)
        assert not events, (cid, events[:3])
        with pytest.raises(ConfigError):
            load_submission(folder)
        handled += 1
    assert handled == len(cases)
    figures.record("hostile-submissions", "hand-written attacks (emarena validate)",
                   tried=len(cases), handled=handled, entry=ENTRY_VALIDATE,
                   rejected=handled)  # fmt: skip


# --- 3. the worker and a queue of 50 --------------------------------------------------------

REQUESTS = "emarena/requests"
RESULTS = "emarena/results"


def good_folder(root: Path, i: int) -> Path:
    kinds = ["sgtr", "word-counting", "general-knowledge", "correct-domain", "sgtr-corrupted"]
    src = REPO_ROOT / "submissions" / kinds[i % len(kinds)]
    name = f"good-{i:02d}"
    d = root / name
    shutil.copytree(src, d)
    text = (d / FILENAME).read_text()
    text = re.sub(r"(?m)^name: .*$", f"name: {name}", text)
    text = text.replace("regimes: [defense, reversal, prevention]", "regimes: [reversal]")
    (d / FILENAME).write_text(text)
    return d


def planted(name: str, yaml_text: str, readme: str = "# planted\n", *, config_hash=None,
            submitted: datetime) -> bytes:  # fmt: skip
    """A request JSON written straight into the repo (as someone with write access could)."""
    h = config_hash or hashlib.sha256(yaml_text.encode("utf-8", "surrogatepass")).hexdigest()
    req = queue.Request(name=name, config_hash=h, yaml=yaml_text, readme=readme,
                        submitter="mallory", submitted=submitted, status="PENDING",
                        history=[queue.HistoryEntry(status="PENDING", time=submitted,
                                                    note="planted")])  # fmt: skip
    return req.dump()


PLANT = """\
schema_version: 1
name: {name}
authors:
  - Mallory
description: A planted request.
division: closed
defense:
  kind: sgtr
  params:
    n_articles: 10
regimes: [reversal]
"""


def bad_requests(canary: Path) -> list[tuple[str, str, str, str, dict]]:
    """(id, request name, defense.yaml text, the reason it must FAIL with, extra fields)."""

    def named(n: str) -> str:
        return PLANT.replace("{name}", n)

    def params(n: str, block: str) -> str:
        return named(n).replace("kind: sgtr\n  params:\n    n_articles: 10", block)

    return [
        ("malformed-yaml", "bad-yaml", named("bad-yaml") + "defense: [unclosed\n",
         "not valid YAML", {}),
        ("unknown-kind", "bad-kind", named("bad-kind").replace("kind: sgtr", "kind: sgtr-v9"),
         "unknown defense kind 'sgtr-v9'", {}),
        ("name-traversal", "../../../etc", named("../../../etc"), "not a valid submission name",
         {}),
        ("name-absolute", "/tmp/x", named("/tmp/x"), "not a valid submission name", {}),
        ("name-slash", "a/b", named("a/b"), "not a valid submission name", {}),
        ("name-confusable", "bad-\u0430", named("bad-\u0430"), "not a valid submission name",
         {}),
        ("name-mismatch", "bad-one", named("bad-two"), "must equal the folder name 'bad-one'", {}),
        ("python-tag", "bad-tag", named("bad-tag") +
         f'paper: !!python/object/apply:os.system ["touch {canary}"]\n', "is not allowed", {}),
        ("alias-bomb", "bad-bomb", named("bad-bomb") + billion_laughs().replace(BASE, ""),
         "expands to more than", {}),
        ("deep-nesting", "bad-deep", named("bad-deep") + "x: " + "[" * 5000 + "]" * 5000 + "\n",
         "nested more than 20 levels deep", {}),
        ("huge-yaml", "bad-huge", named("bad-huge") + "# " + "x" * 3_000_000 + "\n",
         "byte limit", {}),
        ("params-out-of-range", "bad-range", named("bad-range").replace("n_articles: 10",
                                                                        "n_articles: 0"),
         "defense.params.n_articles", {}),
        ("empty-readme", "bad-readme", named("bad-readme"), "is empty", {"readme": ""}),
        ("huge-readme", "bad-big-readme", named("bad-big-readme"), "README.md: is over the",
         {"readme": "x" * 2_000_000}),
        ("not-a-mapping", "bad-list", "- 1\n- 2\n", "expected a mapping", {}),
        ("schema-v2", "bad-schema", named("bad-schema").replace("schema_version: 1",
                                                                 "schema_version: 2"),
         "schema_version", {}),
        ("training-closed", "bad-train", named("bad-train") + "training:\n  num_epochs: 3\n",
         "only allowed in the open division", {}),
        ("dataset-outside", "bad-data", params(
            "bad-data", "kind: correct-domain\n  params:\n    counterpart: ../../etc/passwd"),
         "defense.params.counterpart", {}),
        ("dataset-unregistered", "bad-data2", params(
            "bad-data2", "kind: correct-domain\n  params:\n    counterpart: secret-data"),
         "unknown dataset 'secret-data'", {}),
        ("control-chars", "bad-ctrl", named("bad-ctrl") + "paper: a\x07b\n", "not valid YAML",
         {}),
        ("hash-mismatch", "bad-hash", named("bad-hash"), "does not match its defense.yaml",
         {"config_hash": "f" * 64}),
        ("duplicate-key", "bad-dup", named("bad-dup") + "name: bad-dup\n", "appears twice", {}),
        ("empty-yaml", "bad-empty", "", "got an empty file", {}),
        ("none-with-defense", "bad-none", params("bad-none", "kind: none")
         .replace("regimes: [reversal]", "regimes: [defense]"), "no `defense` regime", {}),
        ("unknown-regime", "bad-regime", named("bad-regime").replace(
            "regimes: [reversal]", "regimes: [sideways]"), "regimes", {}),
    ]  # fmt: skip


@pytest.mark.heavy
def test_worker_queue_of_50_mixed_requests(hub_server, tmp_path, figures):  # noqa: F811
    canary = tmp_path / "CANARY"
    n_good = pick(25, 25)
    goods = [good_folder(tmp_path / "subs", i) for i in range(n_good)]
    hub.ensure_repo(REQUESTS)
    hub.ensure_repo(RESULTS)
    good_hashes = {}
    for d in goods[:5]:  # through the CLI, as a user would
        assert main(["submit", str(d), "--requests", REQUESTS, "--submitter", "alice"]) == 0
        good_hashes[load_submission(d).config_hash] = d.name
    for d in goods[5:]:
        queue.submit(d, REQUESTS, "alice")
        good_hashes[load_submission(d).config_hash] = d.name
    bads = bad_requests(canary)
    assert len(bads) == 25 and len({b[0] for b in bads}) == 25
    t0 = datetime.now(UTC)
    files: dict[str, bytes | None] = {}
    bad_hashes: dict[str, tuple[str, str]] = {}
    for k, (cid, name, text, reason, extra) in enumerate(bads):
        data = planted(name, text, extra.get("readme", "# planted\n"),
                       config_hash=extra.get("config_hash"),
                       submitted=t0 - timedelta(seconds=100 - k))  # interleaved with the good
        h = json.loads(data)["config_hash"]
        files[queue.request_path(h)] = data
        bad_hashes[h] = (cid, reason)
    # and two files that are not requests at all: skipped with a warning, never block the queue
    files["requests/0000000000000000.json"] = b'{"not": "a request"'
    files["requests/eeeeeeeeeeeeeeee.json"] = b"\xff\xfe\x00"
    hub_server.state.commit_direct(REQUESTS, files, "planted by hand")
    assert len(queue.list_requests(REQUESTS)) == 50

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "EMARENA_MIRROR":
           os.environ.get("EMARENA_MIRROR", "")}  # fmt: skip
    log = tmp_path / "worker.out"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emarena", "worker", "--requests", REQUESTS,
             "--results", RESULTS, "--run-root", str(tmp_path / "wr"), "--preset", "paper",
             "--scorer", "tests.hub.scorers:quick_score", "--worker-id", "w50",
             "--poll-s", "0.5"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None:
                reqs = queue.list_requests(REQUESTS)
                if all(r.status in ("FINISHED", "FAILED") for r in reqs):
                    break
                time.sleep(1)
            alive = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    assert alive, f"the worker exited ({proc.returncode}):\n{output[-3000:]}"

    reqs = {r.config_hash: r for r in queue.list_requests(REQUESTS)}
    assert len(reqs) == 50
    finished = [r for r in reqs.values() if r.status == "FINISHED"]
    failed = [r for r in reqs.values() if r.status == "FAILED"]
    assert {r.config_hash for r in finished} == set(good_hashes), [
        (r.name, r.status, (r.error or "")[:300]) for r in reqs.values()
        if (r.config_hash in good_hashes) != (r.status == "FINISHED")]  # fmt: skip
    wrong = []
    for h, (cid, reason) in bad_hashes.items():
        r = reqs[h]
        if r.status != "FAILED" or reason not in (r.error or ""):
            wrong.append((cid, r.status, reason, (r.error or "")[:400]))
    assert not wrong, wrong
    assert len(failed) == 25
    # each request was claimed once and ended once: nothing lost, nothing run twice
    twice = [r.name for r in reqs.values() if r.attempts != 1 or
             [h.status for h in r.history] not in (["PENDING", "RUNNING", "FINISHED"],
                                                   ["PENDING", "RUNNING", "FAILED"])]  # fmt: skip
    assert not twice, twice
    assert not canary.exists()
    # nothing was written outside the worker's run root (the traversal names included)
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    outside = [p for p in written
               if not p.is_relative_to(tmp_path / "wr") and not p.is_relative_to(tmp_path / "subs")
               and not p.is_relative_to(tmp_path / "hf_home") and p != log]  # fmt: skip
    assert not outside, outside[:5]
    # the published results: exactly the good submissions' cells, once each
    result_files = [p for p in hub_server.files(RESULTS) if p.endswith(".json")]
    subs_published = {p.split("/")[2] for p in result_files} - {hub.CONTROLS}
    assert subs_published == set(good_hashes.values())
    assert sum(len(r.results) for r in finished) >= 2 * n_good
    print(f"worker: 50 requests in {seconds:.1f} s")
    figures.record("worker-queue", "good requests (submitted)", tried=n_good,
                   handled=len(finished))  # fmt: skip
    figures.record("worker-queue", "bad requests (planted past validation)", tried=25,
                   handled=25 - len(wrong), lost=0, duplicated=len(twice), entry=ENTRY_QUEUE,
                   rejected=25 - len(wrong))  # fmt: skip
