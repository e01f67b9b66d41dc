"""Submission hardening: the classes of hostile submissions that once got through, crashed or
misled, and hostile cases of our own, each through the three entry points.

The classes (each several variants): 1 names that look like another (a final newline, a
reference defense's name, a Windows device name, `_sgtr/`, look-alikes), 2 terminal and log
injection (newlines and escape sequences in keys, values and names), 3 YAML merge keys, 4
strictness (`schema_version: true`, `1e-5`, training overrides for `none`, invisible text), 5
links and files (hard links, symbolic links to folders, FIFOs, links planted where the worker
writes), 6 encoding (non-UTF-8 bytes, lone surrogates, UTF-16, BOMs), 7 limit messages that
name the limit hit, 8 upload size. `OWN` holds more than 50 further cases, written the way a
researcher trying to break a public leaderboard would.

The entry points:

- `emarena validate`, in process (`emarena.cli.main.main`); a real subprocess for what reaches
  a terminal or a pipe (`test_validate_output_reaching_a_pipe_is_escaped`);
- the leaderboard's Submit tab: the functions its Gradio handlers call (`validate_text`,
  `read_upload`, `queue_text`); the upload limit also in the running app, over HTTP
  (`test_running_app_refuses_a_big_upload_while_it_streams`);
- the queue: requests planted straight in the requests repo of the local Hub-compatible
  server, read as the worker reads them and put through the worker's own check
  (`emarena.queue.checked_submission`), which writes the submission and validates it before
  anything is trained; and `emarena submit`'s check before anything is uploaded.

Every case must end in a correct acceptance or a rejection that names the file (or request)
and the fix and contains the case's phrase; none may crash or be accepted wrongly, and nothing
shown may hold a control character, a C1 control or a direction override. Each (class, entry
point) writes tried / accepted / rejected / accepted wrongly / crashed to the reliability
ledger before its assertions, so `bench/reliability.py` shows a failure in its table too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from emarena import hub, queue
from emarena.cli.main import main
from emarena.errors import ConfigError, EmArenaError
from emarena.leaderboard import submit as tab
from emarena.submission import MAX_BYTES
from emarena.textsafe import escape
from tests.hub.conftest import FAKE_TOKEN
from tests.hub.hub_server import HubServer
from tests.reliability.figures import ENTRY_QUEUE, ENTRY_TAB, ENTRY_VALIDATE

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_SGTR = (REPO_ROOT / "submissions" / "sgtr" / "defense.yaml").read_text()
README = "# Hostile\n\nA submission written to break the leaderboard.\n"
FOLDER = "hostile-x"
BASE = """\
schema_version: 1
name: {name}
authors:
  - Mallory
description: A hostile submission.
division: closed
defense:
  kind: sgtr
  params:
    n_articles: 10
regimes: [reversal]
"""
OPEN = BASE.replace("division: closed", "division: open")

CLI, TAB, WORKER = ENTRY_VALIDATE, ENTRY_TAB, ENTRY_QUEUE
ALL = (CLI, TAB, WORKER)


def edit(old: str, new: str, base: str = BASE) -> str:
    assert old in base, old
    return base.replace(old, new)


def named(raw: str) -> str:
    """BASE with `name:` followed by `raw` (YAML as written)."""
    return edit("name: {name}", f"name: {raw}")


def add(text: str, base: str = BASE) -> str:
    return base + text


@dataclass(frozen=True)
class Case:
    cid: str
    yaml: str | bytes
    """defense.yaml; "{name}" becomes the folder name. str may hold lone surrogates (written
    with "surrogatepass", pasted as is into the Submit tab); bytes are a file (the Submit tab
    gets them as an upload)."""
    expect: str | None | dict[str, str | None]
    """The phrase the rejection must contain, or None: accepted. A dict gives it per entry
    point (key "*" for the others)."""
    folder: str = FOLDER
    readme: str | bytes = README
    entries: tuple[str, ...] = ALL
    setup: Callable[[Path, Path], Path] | None = None
    """(submission folder, a folder outside) -> the path to validate (CLI only)."""
    forbid: str | None = None
    """A phrase that must not appear (a misleading message)."""
    sparse: int = 0
    """Make defense.yaml a sparse file of this many bytes (the YAML at its start)."""

    def expected(self, entry: str) -> str | None:
        if isinstance(self.expect, dict):
            return self.expect.get(entry, self.expect.get("*"))
        return self.expect

    def text(self) -> str | bytes:
        return self.yaml.replace("{name}", self.folder) if isinstance(self.yaml, str) else self.yaml


def not_a_name(cli_phrase: str) -> dict[str, str]:
    """A name the validator refuses; the worker refuses it before it becomes a folder."""
    return {"*": cli_phrase, WORKER: "is not a valid submission name"}


def not_json(phrase: str) -> dict[str, str]:
    """Bytes no JSON request can carry: a planted request with them is not a valid request."""
    return {"*": phrase, WORKER: "not a valid request"}


# --- 1. names that look like another ---------------------------------------------------------

NAMES = [
    Case("final-newline-quoted", named('"hostile-x\\n"'), not_a_name("U+000A LINE FEED")),
    Case("final-newline-literal-block", named("|\n  hostile-x"), not_a_name("U+000A LINE FEED")),
    Case("final-newline-folded-block", named(">\n  hostile-x\n"), not_a_name("U+000A LINE FEED")),
    Case("final-crlf", named('"hostile-x\\r\\n"'), not_a_name("U+000D CARRIAGE RETURN")),
    Case("reference-name-other-params", BASE, "is the reference defense submissions/sgtr, but "
         "this is another configuration (defense.params.n_articles is 10", folder="sgtr"),
    Case("reference-name-other-kind", BASE, "defense.kind is 'sgtr', not 'none'", folder="none"),
    Case("reference-name-open-division", edit("division: closed", "division: open",
                                              REFERENCE_SGTR), "division is 'open'",
         folder="sgtr"),
    Case("reference-copy-accepted", REFERENCE_SGTR, None, folder="sgtr"),
    Case("hidden-behind-underscore", named("sgtr"), "is the reference defense submissions/sgtr",
         folder="_sgtr"),
    Case("underscore-reference-copy-accepted", REFERENCE_SGTR, None, folder="_sgtr"),
    Case("windows-nul", BASE, not_a_name("device name Windows reserves (NUL)"), folder="nul"),
    Case("windows-com1", BASE, not_a_name("device name Windows reserves (COM1)"), folder="com1"),
    Case("windows-aux", BASE, not_a_name("device name Windows reserves (AUX)"), folder="aux"),
    Case("lookalike-n0ne", BASE, "looks like the reference defense 'none'", folder="n0ne"),
    Case("lookalike-sgtr-rand0m", BASE, "looks like the reference defense 'sgtr-random'",
         folder="sgtr-rand0m"),
    Case("lookalike-no-hyphen", BASE, "looks like the reference defense 'sgtr-corrupted'",
         folder="sgtrcorrupted"),
    Case("trailing-hyphen", BASE, not_a_name("starts or ends with '-'"), folder="hostile-"),
    Case("double-hyphen", BASE, not_a_name("it has '--'"), folder="hostile--x"),
]  # fmt: skip

# --- 2. terminal and log injection -------------------------------------------------------------

FORGED = "ok  /tmp/forged  (sgtr, closed, regimes reversal)"
INJECTION = [
    Case("key-newline-forges-ok-lines",
         add(f'"x\\n{FORGED}\\n1 submission(s): 1 valid, 0 invalid": 1\n'),
         "unknown key (it contains U+000A LINE FEED"),
    Case("key-clear-screen", add('"\\e[2J\\e[H": 1\n'), "unknown key (it contains U+001B ESCAPE"),
    Case("key-window-title", add('"\\e]0;pwned\\a": 1\n'), "unknown key (it contains U+001B"),
    Case("key-c1-csi", add('"\\x9b2J": 1\n'), "unknown key (it contains U+009B"),
    Case("key-carriage-return-overwrite", add('"colour\\rname": 1\n'),
         "unknown key (it contains U+000D CARRIAGE RETURN"),
    Case("kind-with-colour-codes", edit("kind: sgtr", 'kind: "\\e[32msgtr\\e[0m"'),
         "unknown defense kind '\\x1b[32msgtr\\x1b[0m'"),
    Case("description-erases-line", edit("A hostile submission.", '"ok\\e[2K\\rdone"'),
         "description contains U+001B ESCAPE"),
    Case("author-rtl-override", edit("- Mallory", '- "\\u202eyrollaM"'),
         "author #1 contains U+202E RIGHT-TO-LEFT OVERRIDE"),
    Case("name-window-title", named('"\\e]0;pwned\\a"'), not_a_name("U+001B ESCAPE")),
    Case("paper-bell", add('paper: "see \\a\\a\\a"\n'), "paper contains U+0007 BELL"),
]  # fmt: skip

# --- 3. YAML merge keys ------------------------------------------------------------------------

MERGE = "merge key `<<` is not allowed"
MERGES = [
    Case("merge-then-plain-key", edit("  kind: sgtr\n", "  <<: {kind: none}\n  kind: sgtr\n"),
         MERGE),
    Case("merge-alias-top-level", add("x-base: &b {division: open}\n<<: *b\n"), MERGE),
    Case("merge-list-of-aliases", add("a: &a {regimes: [defense]}\nb: &b {division: open}\n"
                                      "<<: [*a, *b]\n"), MERGE),
    Case("merge-explicit-tag", add("!!merge <<: {division: open}\n"), MERGE),
    Case("merge-in-params", edit("    n_articles: 10", "    <<: {n_articles: 5}\n"
                                                     "    n_articles: 10"), MERGE),
    Case("quoted-merge-is-a-plain-key", edit("  kind: sgtr\n", '  "<<": {kind: none}\n'
                                                               "  kind: sgtr\n"),
         "defense.<<: unknown key"),
]  # fmt: skip

# --- 4. strictness -----------------------------------------------------------------------------

WHOLE_ONE = "schema_version must be the whole number 1"
STRICT = [
    Case("schema-version-true", edit("schema_version: 1", "schema_version: true"), WHOLE_ONE),
    Case("schema-version-float", edit("schema_version: 1", "schema_version: 1.0"), WHOLE_ONE),
    Case("schema-version-string", edit("schema_version: 1", 'schema_version: "1"'), WHOLE_ONE),
    Case("schema-version-yes", edit("schema_version: 1", "schema_version: yes"), WHOLE_ONE),
    Case("schema-version-hex-one", edit("schema_version: 1", "schema_version: 0x1"), None),
    Case("lr-yaml12-float", add("training:\n  learning_rate: 1e-5\n", OPEN), None),
    Case("lr-upper-exponent", add("training:\n  learning_rate: 1E-5\n", OPEN), None),
    Case("lr-signed-dotted", add("training:\n  learning_rate: +1.5e-5\n", OPEN), None),
    Case("lr-not-a-number", add("training:\n  learning_rate: 1e-5x\n", OPEN),
         "YAML reads '1e-5x' as text, not as a number"),
    Case("lr-quoted", add("training:\n  learning_rate: '1e-5'\n", OPEN),
         "it is quoted, so it is text; fix: remove the quotes"),
    Case("epochs-with-decimal-point", add("training:\n  num_epochs: 2.0\n", OPEN),
         "it has a decimal point or an exponent"),
    Case("training-for-none", add("training:\n  num_epochs: 2\n", OPEN.replace(
        "kind: sgtr\n  params:\n    n_articles: 10", "kind: none")),
         "the `none` control has no defense stage"),
    Case("description-zero-width", edit("A hostile submission.", '"\\u200b\\u200b\\u2060"'),
         "description is blank"),
    Case("description-hangul-filler", edit("A hostile submission.", '"\\u3164 \\u3164"'),
         "description is blank"),
    Case("author-word-joiner", edit("- Mallory", '- "\\u2060"'), "author #1 is empty"),
    Case("paper-zero-width", add('paper: "\\u200b"\n'), "paper is blank"),
]  # fmt: skip

# --- 5. links and files (the Submit tab takes text, never a path: not applicable there) --------


def hard_link_readme(folder: Path, outside: Path) -> Path:
    (folder / "README.md").unlink()
    os.link(outside / "secret-token", folder / "README.md")
    return folder


def hard_link_yaml(folder: Path, outside: Path) -> Path:
    real = outside / f"defense-{folder.parent.name}.yaml"
    real.write_bytes((folder / "defense.yaml").read_bytes())
    (folder / "defense.yaml").unlink()
    os.link(real, folder / "defense.yaml")
    return folder


def symlinked_folder(folder: Path, outside: Path) -> Path:
    real = outside / f"real-{folder.parent.name}"
    folder.rename(real)
    folder.symlink_to(real, target_is_directory=True)
    return folder


def symlinked_folder_yaml_path(folder: Path, outside: Path) -> Path:
    return symlinked_folder(folder, outside) / "defense.yaml"


def folder_with_symlinked_subfolder(folder: Path, outside: Path) -> Path:
    """A folder of submissions: one real (valid) submission and one link to a folder outside."""
    parent = folder.parent
    real = outside / "elsewhere" / FOLDER
    real.mkdir(parents=True)
    for f in ("defense.yaml", "README.md"):
        (real / f).write_bytes((folder / f).read_bytes())
    (parent / "linked").symlink_to(real, target_is_directory=True)
    return parent


def readme_is_a_folder(folder: Path, outside: Path) -> Path:
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()
    return folder


def yaml_is_a_fifo(folder: Path, outside: Path) -> Path:
    (folder / "defense.yaml").unlink()
    os.mkfifo(folder / "defense.yaml")
    return folder


def readme_relative_symlink(folder: Path, outside: Path) -> Path:
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(os.path.relpath(outside / "secret-token", folder))
    return folder


LINKS = [
    Case("readme-hard-link-to-a-secret", BASE, "README.md: is a hard link", entries=(CLI,),
         setup=hard_link_readme),
    Case("yaml-hard-link", BASE, "defense.yaml: is a hard link", entries=(CLI,),
         setup=hard_link_yaml),
    Case("folder-is-a-symlink", BASE, "is a symbolic link", entries=(CLI,),
         setup=symlinked_folder),
    Case("yaml-path-through-symlinked-folder", BASE, "is a symbolic link to a folder elsewhere",
         entries=(CLI,), setup=symlinked_folder_yaml_path),
    Case("scan-with-symlinked-subfolder", BASE, "linked: is a symbolic link to a folder "
         "elsewhere", entries=(CLI,), setup=folder_with_symlinked_subfolder),
    Case("readme-is-a-folder", BASE, "README.md: is a folder, not a regular file",
         entries=(CLI,), setup=readme_is_a_folder),
    Case("yaml-is-a-fifo", BASE, "defense.yaml: is a FIFO (named pipe), not a regular file",
         entries=(CLI,), setup=yaml_is_a_fifo),
    Case("readme-relative-symlink", BASE, "README.md: is a symbolic link", entries=(CLI,),
         setup=readme_relative_symlink),
]  # fmt: skip

# --- 6. encoding -------------------------------------------------------------------------------

ENCODING = [
    Case("yaml-latin-1", BASE.replace("{name}", FOLDER).encode() + b"paper: caf\xe9\n",
         not_json("defense.yaml:12: not UTF-8 (byte 0xe9 at offset")),
    Case("yaml-lone-surrogate", add("paper: \ud800\n"),
         not_json("defense.yaml:12: not UTF-8 (byte 0xed")),
    Case("yaml-lone-low-surrogate-in-name", named("hostile-x\udcff"),
         not_json("defense.yaml:2: not UTF-8 (byte 0xed")),
    Case("yaml-utf16", BASE.replace("{name}", FOLDER).encode("utf-16"),
         "the file is UTF-16 (it starts with the byte-order mark 0xff 0xfe)",
         entries=(CLI, TAB)),
    Case("readme-latin-1", BASE, not_json("README.md:1: not UTF-8"), readme=b"caf\xe9\n"),
    Case("readme-lone-surrogate", BASE, not_json("README.md:2: not UTF-8"),
         readme="# Hostile\n\ud83d\n"),
    Case("yaml-utf8-bom-accepted", "\ufeff" + BASE, None),
    Case("yaml-bom-inside-name", named('"\\ufeffhostile-x"'),
         not_a_name("U+FEFF ZERO WIDTH NO-BREAK SPACE")),
    Case("yaml-crlf-accepted", BASE.replace("\n", "\r\n"), None),
    Case("readme-bom-crlf-accepted", BASE, None, readme="\ufeff# Hostile\r\n\r\nText.\r\n"),
]  # fmt: skip

# --- 7. limit messages that name the limit -----------------------------------------------------

SIZE = "has more than 10,000 values (keys, list items and scalars)"


def alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return add("\n".join(lines) + "\n")


LIMITS = [
    Case("5000-unknown-keys", add("".join(f"key{i}: {i}\n" for i in range(5000))), SIZE,
         forbid="alias"),
    Case("100k-item-list", add("x: [" + ",".join(["1"] * 100_000) + "]\n"), SIZE,
         forbid="alias"),
    Case("wide-mapping-in-params", edit("    n_articles: 10", "    n_articles: 10\n" + "".join(
        f"    p{i}: {i}\n" for i in range(5100))), SIZE, forbid="alias"),
    Case("3000-unknown-keys-counted", add("".join(f"key{i}: {i}\n" for i in range(3000))),
         "2,981 more problem(s) not shown", forbid="alias"),
    Case("alias-bomb-named", alias_bomb(), "once aliases are resolved (an alias bomb)"),
    Case("101-aliases", add("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n"),
         "more than 100 YAML aliases"),
    Case("30-levels", add("x: " + "[" * 30 + "]" * 30 + "\n"), "nested more than 20 levels deep"),
    Case("300k-bytes", add("# " + "x" * 300_000 + "\n"), "over the 262,144-byte limit"),
]  # fmt: skip

# --- 8. upload size ----------------------------------------------------------------------------


def exactly(limit: int) -> bytes:
    text = BASE.replace("{name}", FOLDER).encode()
    pad = limit - len(text) - 3
    return text + b"# " + b"x" * pad + b"\n"


UPLOADS = [
    Case("exactly-the-limit", exactly(MAX_BYTES), None),
    Case("one-byte-over", exactly(MAX_BYTES + 1), "over the 262,144-byte limit"),
    Case("sparse-1gb", BASE, "over the 262,144-byte limit", sparse=1 << 30,
         entries=(CLI, TAB)),
    Case("readme-over-1mb", BASE, "README.md: is over the 1,048,576-byte limit",
         readme="x" * (1024 * 1024 + 1)),
]  # fmt: skip

# --- our own hostile cases ---------------------------------------------------------------------

HTML_README = ('# Defense\n\n<script>alert(document.cookie)</script>\n<img src=x onerror=alert(1)>'
               '\n[click me](javascript:alert(1)) [docs](https://evil.example/"onmouseover=x)\n')
OWN = [
    # names: confusables, invisible and control characters, numbers, paths, reserved words
    Case("name-greek-omicron", named("n\u03bfne-x"), not_a_name("GREEK SMALL LETTER OMICRON")),
    Case("name-dotless-i", named("s\u0131gtr-x"), not_a_name("LATIN SMALL LETTER DOTLESS I")),
    Case("name-math-bold", named("\U0001d42c\U0001d420\U0001d42d\U0001d42b"),
         not_a_name("MATHEMATICAL BOLD SMALL S")),
    Case("name-fullwidth-hyphen", named("hostile\uff0dx"), not_a_name("FULLWIDTH HYPHEN-MINUS")),
    Case("name-no-break-space", named('"hostile\\u00a0x"'), not_a_name("NO-BREAK SPACE")),
    Case("name-rtl-override", named('"hostile-x\\u202e"'), not_a_name("RIGHT-TO-LEFT OVERRIDE")),
    Case("name-left-to-right-isolate", named('"\\u2066hostile-x"'),
         not_a_name("LEFT-TO-RIGHT ISOLATE")),
    Case("name-soft-hyphen", named('"hostile\\u00adx"'), not_a_name("SOFT HYPHEN")),
    Case("name-nul-escape", named('"hostile-x\\0"'), not_a_name("U+0000 NULL")),
    Case("name-tab", named('"hostile\\tx"'), not_a_name("CHARACTER TABULATION")),
    Case("name-space", named('"hostile x"'), not_a_name("' ' not allowed")),
    Case("name-uppercase-reference", named("SGTR"), not_a_name("it has uppercase letters"),
         folder="SGTR"),
    Case("name-case-only-folder", REFERENCE_SGTR, {CLI: "must equal the folder name 'Sgtr'",
                                                   "*": None}, folder="Sgtr"),
    Case("name-yaml-int", named("12345"), "YAML reads 12345 as a number"),
    Case("name-yaml-float", named("1.5"), "YAML reads 1.5 as a number"),
    Case("name-yaml-bool-no", named("no"), "YAML reads no as the boolean false"),
    Case("name-yaml-null", named("~"), "YAML reads ~ as null"),
    Case("name-quoted-digits", named('"12345"'), not_a_name("has no letter"), folder="12345"),
    Case("name-date", named("2024-01-01"), "YAML reads 2024-01-01 as a date"),
    Case("name-traversal", named("../hostile-x"), not_a_name("path separator or '..'")),
    Case("name-url-encoded-traversal", named("..%2fhostile"), not_a_name("path separator or")),
    Case("name-windows-traversal", named('"..\\\\hostile"'), not_a_name("path separator")),
    Case("name-home-dir", named("~root"), not_a_name("'~' not allowed")),
    Case("name-dot", named('"."'), not_a_name("path separator or '..'")),
    Case("name-trailing-dot", named("hostile-x."), not_a_name("'.' not allowed")),
    Case("name-65-chars", named("a" * 65), not_a_name("is 65 characters long"), folder="a" * 65),
    Case("name-one-char", named("a"), not_a_name("is 1 characters long"), folder="a"),
    Case("name-leading-hyphen", named('"-hostile"'), not_a_name("starts or ends with '-'"),
         folder="-hostile"),
    Case("name-windows-lpt9", BASE, not_a_name("device name Windows reserves (LPT9)"),
         folder="lpt9"),
    Case("name-list", named("[hostile-x]"), "name: Input should be a valid string"),
    Case("name-mapping", named("{a: 1}"), "name: Input should be a valid string"),
    # free text: markup is text (accepted, shown escaped), control and direction are not
    Case("description-html-script", edit("A hostile submission.",
                                         '"<script>alert(1)</script><img src=x onerror=y>"'),
         None),
    Case("description-markdown-link", edit("A hostile submission.",
                                           '"[click](javascript:alert(1)) **bold** `code`"'),
         None),
    Case("description-nul", edit("A hostile submission.", '"a\\0b"'), "U+0000 NULL"),
    Case("description-rtl-embedding", edit("A hostile submission.", '"a \\u202b b"'),
         "RIGHT-TO-LEFT EMBEDDING"),
    Case("description-tag-characters", edit("A hostile submission.",
                                            '"Nice. \\U000E0069\\U000E0067\\U000E006E"'),
         "an invisible tag character"),
    Case("description-giant-line", edit("A hostile submission.", "x" * 200_000),
         "String should have at most 2000 characters"),
    Case("description-multilingual-accepted", edit("A hostile submission.",
                                                   '"Défense — 防御 — דפנס — 🛡️‍🔥"'), None),
    Case("paper-javascript-url-is-text", add('paper: "javascript:alert(1)"\n'), None),
    Case("author-newline", edit("- Mallory", '- "Mallory\\nok  /forged"'),
         "author #1 contains a line break"),
    Case("readme-html-and-links-accepted", BASE, None, readme=HTML_README),
    Case("readme-terminal-title", BASE, "README.md:3: contains U+001B ESCAPE",
         readme="# Hostile\n\ntext \x1b]0;pwned\x07\n"),
    Case("readme-rtl-override", BASE, "README.md:1: contains U+202E RIGHT-TO-LEFT OVERRIDE",
         readme="# \u202eevil\n"),
    Case("readme-nul", BASE, "README.md:1: contains U+0000 NULL", readme="a\x00b\n"),
    Case("readme-only-zero-width", BASE, "README.md: is empty", readme="\u200b\u200b\n"),
    # YAML structure: documents, anchors, tags, keys
    Case("two-documents", add("---\nname: other\n"), "more than one YAML document"),
    Case("anchor-across-documents", "a: &x 1\n---\n" + BASE + "b: *x\n",
         "more than one YAML document"),
    Case("leading-document-marker-accepted", "---\n" + BASE + "...\n", None),
    Case("only-comments", "# nothing here\n", "got an empty file"),
    Case("empty-document", "---\n...\n", "got an empty file"),
    Case("deep-mixed-flow", add("x: " + "{a: [" * 15 + "1" + "]}" * 15 + "\n"),
         "nested more than 20 levels deep"),
    Case("raw-nul-byte", add("paper: a\x00b\n"), "contains U+0000 NULL, a character YAML does "
         "not allow"),
    Case("raw-escape-byte", add("paper: a\x1b[2Jb\n"), "contains U+001B ESCAPE, a character "
         "YAML does not allow"),
    Case("tag-str-on-schema-version", edit("schema_version: 1", "schema_version: !!str 1"),
         WHOLE_ONE),
    Case("tag-int-on-name", named("!!int 12"), "name: Input should be a valid string"),
    Case("tag-binary-description", edit("A hostile submission.", "!!binary aGk="),
         "description: Input should be a valid string"),
    Case("tag-local", add("paper: !mytag x\n"), "tag '!mytag' is not allowed"),
    Case("tag-verbatim-python", add("paper: !<tag:yaml.org,2002:python/object/apply:os.system>"
                                    " [id]\n"), "is not allowed"),
    Case("tag-set-regimes", edit("regimes: [reversal]", "regimes: !!set {reversal}"),
         "regimes: Input should be a valid list"),
    Case("tag-timestamp-paper", add("paper: !!timestamp 2024-01-01\n"), "paper: Input should "
         "be a valid string"),
    Case("key-capitalised", edit("name: {name}", "Name: {name}"), "did you mean 'name'?"),
    Case("key-cyrillic-a", edit("name: {name}", "n\u0430me: {name}"),
         "CYRILLIC SMALL LETTER A"),
    Case("key-trailing-space", edit("name: {name}", '"name ": {name}'), "name : unknown key"),
    Case("key-zero-width", edit("division: closed", '"divi\\u200bsion": closed'),
         "U+200B ZERO WIDTH SPACE"),
    Case("key-duplicate-through-escape", add('"n\\x61me": other\n'), "key 'name' appears twice"),
    Case("key-int", add("1: x\n"), "write keys as plain words"),
    Case("key-null", add("~: x\n"), "write keys as plain words"),
    Case("key-unhashable", add("? [a, b]\n: x\n"), "not valid YAML (found unhashable key)"),
    Case("key-1200-chars-explicit", add("? " + "k" * 1200 + "\n: 1\n"), "unknown key"),
    Case("regime-case", edit("regimes: [reversal]", "regimes: [Reversal]"),
         "Input should be 'defense', 'reversal' or 'prevention'"),
    Case("kind-uppercase", edit("kind: sgtr", "kind: SGTR"), "did you mean 'sgtr'?"),
    Case("kind-zero-width", edit("kind: sgtr", 'kind: "sgtr\\u200b"'), "unknown defense kind"),
    Case("param-capital-i-for-l", edit("n_articles: 10", "n_articIes: 10"),
         "did you mean 'n_articles'?"),
    Case("param-bool-for-int", edit("n_articles: 10", "n_articles: true"),
         "YAML reads true as a boolean"),
    Case("param-exponent-int", edit("n_articles: 10", "n_articles: 1e3"),
         "it has a decimal point or an exponent"),
    Case("param-underscored-int", edit("n_articles: 10", "n_articles: 1_0"), None),
    Case("lr-hex-float", add("training:\n  learning_rate: 0x1p-16\n", OPEN),
         "YAML reads '0x1p-16' as text"),
    Case("lr-sexagesimal", add("training:\n  learning_rate: 1:30.0\n", OPEN),
         "less than or equal to 0.01"),
    Case("lr-infinity", add("training:\n  learning_rate: .inf\n", OPEN),
         "training.learning_rate"),
    Case("division-yaml-bool", edit("division: closed", "division: off"),
         "YAML reads off as the boolean false"),
]  # fmt: skip

CLASSES = {
    "1 names that look like another": NAMES,
    "2 terminal and log injection": INJECTION,
    "3 YAML merge keys": MERGES,
    "4 strictness": STRICT,
    "5 links and files": LINKS,
    "6 encoding (one decoder)": ENCODING,
    "7 limit messages name the limit": LIMITS,
    "8 upload size": UPLOADS,
    "own hostile cases (beyond the issue's classes)": OWN,
}
ALL_CASES = [c for cases in CLASSES.values() for c in cases]
assert len({c.cid for c in ALL_CASES}) == len(ALL_CASES)
assert len(OWN) >= 50


# --- outcomes ----------------------------------------------------------------------------------

#: Nothing shown may hold these: C0 controls but the newline, DEL, C1 controls, direction
#: overrides and isolates.
_UNSAFE = {chr(c) for c in range(32) if c != 10} | {chr(c) for c in range(0x7F, 0xA0)} | set(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)


def unsafe_chars(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if c in _UNSAFE})


@dataclass
class Tally:
    entry: str
    klass: str
    accepted: int = 0
    rejected: int = 0
    wrongly_accepted: int = 0
    crashed: int = 0
    failures: list[tuple] = field(default_factory=list)

    def judge(self, case: Case, outcome: str, text: str, specific: bool = True) -> None:
        """outcome: accepted | rejected | crashed; `specific`: every line names the file and
        the fix."""
        want = case.expected(self.entry)
        bad = unsafe_chars(text)
        if outcome == "crashed":
            self.crashed += 1
            self.failures.append((case.cid, "crashed", text[-1500:]))
        elif bad:
            self.failures.append((case.cid, f"shown with {bad}", text[:800]))
        elif want is None and outcome == "accepted":
            self.accepted += 1
        elif want is None:
            self.failures.append((case.cid, "rejected wrongly", text[:800]))
        elif outcome == "accepted":
            self.wrongly_accepted += 1
            self.failures.append((case.cid, "accepted wrongly", want))
        elif want not in text or not specific:
            self.failures.append((case.cid, "not the specific message", want, text[:1500]))
        elif case.forbid and case.forbid in text:
            self.failures.append((case.cid, f"misleading: {case.forbid!r}", text[:800]))
        else:
            self.rejected += 1

    def record_and_check(self, figures, tried: int) -> None:
        figures.record(
            "hostile-submissions",
            f"issue 15 class {self.klass}" if self.klass[0].isdigit() else self.klass,
            tried=tried,
            handled=self.accepted + self.rejected, entry=self.entry, accepted=self.accepted,
            rejected=self.rejected, wrongly_accepted=self.wrongly_accepted, crashed=self.crashed,
        )  # fmt: skip
        assert not self.failures, "\n".join(repr(f) for f in self.failures)
        assert self.accepted + self.rejected == tried


def cases_for(klass: str, entry: str) -> list[Case]:
    return [c for c in CLASSES[klass] if entry in c.entries]


def write_case(root: Path, case: Case) -> Path:
    """The submission folder of `case` under `root` (its own folder per case)."""
    folder = root / case.cid / case.folder
    folder.mkdir(parents=True)
    text = case.text()
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    path = folder / "defense.yaml"
    path.write_bytes(data)
    if case.sparse:
        with open(path, "r+b") as f:
            f.truncate(case.sparse)
    readme = case.readme
    (folder / "README.md").write_bytes(
        readme if isinstance(readme, bytes) else readme.encode("utf-8", "surrogatepass")
    )
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret-token").write_text(f"{FAKE_TOKEN}\n")
    return d


# --- entry point 1: emarena validate (in process) ----------------------------------------------


@pytest.mark.parametrize("klass", list(CLASSES))
def test_emarena_validate(klass, tmp_path, outside, capsys, figures):
    cases = cases_for(klass, CLI)
    t = Tally(CLI, klass)
    for case in cases:
        folder = write_case(tmp_path / "subs", case)
        target = case.setup(folder, outside) if case.setup else folder
        started = time.monotonic()
        try:
            rc = main(["validate", str(target)])
        except BaseException as e:  # noqa: BLE001 - a crash is what is counted here
            out = capsys.readouterr()
            t.judge(case, "crashed", f"{type(e).__name__}: {e}\n{out.out}{out.err}")
            continue
        out = capsys.readouterr()
        text = out.out + out.err
        seconds = time.monotonic() - started
        if rc not in (0, 2) or "Traceback" in text or seconds > 20:
            t.judge(case, "crashed", f"rc {rc}, {seconds:.1f} s\n{text}")
            continue
        lines = [ln for ln in text.splitlines() if ln]
        root = str(tmp_path / "subs" / case.cid)
        problems = [ln for ln in lines if not ln.startswith(("error: ", "fix: ", "ok  "))]
        specific = all(ln.startswith(root) and "; fix: " in ln for ln in problems)
        # an `ok` line for each valid submission, never a forged one
        oks = [ln for ln in lines if ln.startswith("ok  ")]
        specific &= all(ln.startswith(f"ok  {root}") for ln in oks) and (rc != 0 or bool(oks))
        t.judge(case, "accepted" if rc == 0 else "rejected", text, specific)
        assert (outside / "secret-token").read_text() == f"{FAKE_TOKEN}\n"
    t.record_and_check(figures, len(cases))


# --- entry point 2: the Submit tab -------------------------------------------------------------


def tab_outcome(case: Case, tmp: Path, requests_dir: Path) -> tuple[str, str, bool]:
    """What the Submit tab does with the case: bytes arrive as an upload (read_upload), text as
    pasted into the boxes (validate_text); an accepted one is also queued (queue_text)."""
    text = case.text()
    readme = case.readme
    if isinstance(readme, bytes):  # what a browser can send for bytes that are not UTF-8
        readme = readme.decode("utf-8", "surrogateescape")
    if isinstance(text, bytes) or case.sparse:
        upload = tmp / case.cid / "defense.yaml"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(text if isinstance(text, bytes) else text.encode())
        if case.sparse:
            with open(upload, "r+b") as f:
                f.truncate(case.sparse)
        up = tab.read_upload(upload)
        if up.text is None:
            lines = [ln for ln in up.note.splitlines() if ln.startswith("defense.yaml")]
            return "rejected", up.note, bool(lines) and all("; fix: " in ln for ln in lines)
        text = up.text
    v = tab.validate_text(text, readme)
    shown = v.markdown()
    if not v.ok:
        specific = all(e.startswith(("defense.yaml", "README.md")) and "; fix: " in e
                       for e in v.errors)  # fmt: skip
        return "rejected", shown + "\n" + "\n".join(v.errors), specific
    q = tab.queue_text(text, readme, "mallory", requests_dir=requests_dir)
    shown += "\n" + q.markdown()
    if not q.ok:
        return "rejected", shown + "\n".join(q.errors), False
    stored = json.loads((requests_dir / q.request_id).read_text())
    verbatim = stored["yaml"] in (text, text + "\n") and stored["readme"] == readme
    return "accepted", shown, verbatim


@pytest.mark.parametrize("klass", [k for k in CLASSES if cases_for(k, TAB)])
def test_submit_tab(klass, tmp_path, figures):
    cases = cases_for(klass, TAB)
    t = Tally(TAB, klass)
    for case in cases:
        try:
            outcome, text, specific = tab_outcome(case, tmp_path / "uploads",
                                                  tmp_path / "requests")
        except Exception as e:  # noqa: BLE001 - a crash is what is counted here
            t.judge(case, "crashed", f"{type(e).__name__}: {e}")
            continue
        t.judge(case, outcome, text, specific)
    t.record_and_check(figures, len(cases))


def test_upload_handler_reads_no_more_than_the_limit(tmp_path):
    """A 1 GB upload (sparse on disk) is refused after reading the limit + 1 byte: the
    handler's memory stays far below the file."""
    big = tmp_path / "defense.yaml"
    big.write_bytes(BASE.replace("{name}", FOLDER).encode())
    with open(big, "r+b") as f:
        f.truncate(1 << 30)
    tracemalloc.start()
    started = time.monotonic()
    up = tab.read_upload(big)
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert up.text is None and "over the 262,144-byte limit" in up.note
    assert peak < 4 * MAX_BYTES, peak
    assert seconds < 2, seconds


def test_submitter_box_is_checked_and_shown_escaped(tmp_path):
    """The Submitter box is free text shown to everyone: control characters and direction
    overrides are refused; Markdown in it is shown as text, never as a link."""
    text = BASE.replace("{name}", FOLDER)
    for who, phrase in (("mallory\x1b]0;pwned\x07", "Submitter contains U+001B ESCAPE"),
                        ("\u202emallory", "RIGHT-TO-LEFT OVERRIDE"),
                        ("\u200b\u200b", "Say who you are"),
                        ("mallory\ud800", "lone surrogate")):  # fmt: skip
        out = tab.queue_text(text, README, who, requests_dir=tmp_path)
        assert not out.ok and phrase in out.message, (who, out.message)
        assert not unsafe_chars(out.markdown())
    assert not (tmp_path / "requests").exists()
    linky = "[admin](https://evil.example) <b>x</b>"
    out = tab.queue_text(text, README, linky, requests_dir=tmp_path)
    assert out.ok
    again = tab.queue_text(text, README, "bob", requests_dir=tmp_path)  # quotes the first one
    shown = again.markdown()
    assert not again.created and r"\[admin\]\(https://evil\.example\)" in shown, shown
    assert "<b>" not in shown and "&lt;b&gt;" in shown
    reqs, bad = tab.read_queue(tmp_path)
    assert bad == [] and tab.queue_rows(reqs)[0]["submitter"] == linky  # HTML-escaped by the app


# --- entry point 3: the queue ------------------------------------------------------------------

REQUESTS = "emarena/hostile-requests"


def request_name(case: Case) -> str:
    """The `name` a planted request carries: the YAML's name when it has one (as `submit`
    would write), else the folder name."""
    text = case.text()
    try:
        data = yaml.safe_load(text if isinstance(text, str) else text.decode("utf-8", "replace"))
    except (yaml.YAMLError, UnicodeError, RecursionError):
        data = None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else case.folder.removeprefix("_")


def planted_request(case: Case, submitted: datetime) -> tuple[str, bytes]:
    """(repo path, bytes) of the request someone with write access could commit for `case`."""
    text = case.text()
    yaml_text = text if isinstance(text, str) else text.decode("utf-8", "surrogateescape")
    readme = case.readme if isinstance(case.readme, str) else case.readme.decode(
        "utf-8", "surrogateescape")
    v = tab.validate_text(yaml_text, readme) if case.expected(WORKER) is None else None
    own = hashlib.sha256(case.cid.encode()).hexdigest()
    digest = (v.config_hash if v is not None and v.ok else None) or own
    record = {
        "schema_version": 1, "name": request_name(case), "config_hash": digest,
        "yaml": yaml_text, "readme": readme, "submitter": "mallory",
        "submitted": submitted.isoformat(), "status": "PENDING",
        "history": [{"status": "PENDING", "time": submitted.isoformat(), "note": "planted"}],
    }  # fmt: skip
    # ensure_ascii: a lone surrogate is written as the JSON escape \ud800, as a writer could.
    # Its own path: equal configurations (the reference copies) must not overwrite each other.
    return queue.request_path(own), json.dumps(record, ensure_ascii=True).encode()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """One local Hub with every case's request planted in one commit: {cid: repo path}."""
    tmp = tmp_path_factory.mktemp("hostile-hub")
    with HubServer(token=FAKE_TOKEN) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", server.url)
        mp.setenv("HF_TOKEN", FAKE_TOKEN)
        mp.setenv("HF_HOME", str(tmp / "hf_home"))
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        mp.delenv("HF_HUB_CACHE", raising=False)
        hub._BLOBS.clear()
        hub.ensure_repo(REQUESTS)
        now = datetime.now(UTC)
        paths: dict[str, str] = {}
        files: dict[str, bytes | None] = {}
        for case in ALL_CASES:
            if WORKER in case.entries:
                path, data = planted_request(case, now)
                paths[case.cid] = path
                files[path] = data
        assert len(set(paths.values())) == len(paths)
        server.state.commit_direct(REQUESTS, files, "planted by hand")
        # The worker's reader: what is not a valid request is skipped (a logged reason), and
        # never blocks the others. Read once here; the tests read the same blobs from cache.
        readable = set(queue.read_requests(hub.view(REQUESTS)))
        yield server, paths, readable


def worker_outcome(case: Case, view: hub.RepoView, path: str, cfg: queue.WorkerConfig):
    """Read the request as the worker does, then run the worker's own check."""
    data = view.read(path)
    assert data is not None
    try:
        req = queue._parse(path, data)  # what read_requests / claim_next do with each file
        sub_dir = queue.checked_submission(cfg, req)
    except EmArenaError as e:
        text = e.render()
        lines = getattr(e, "lines", None) or [e.what]
        specific = bool(e.fix) and all("; fix: " in ln or ln == e.what for ln in lines)
        specific &= all(ln.startswith(("requests/", str(cfg.run_root))) for ln in lines)
        return "rejected", text, specific
    # accepted: the submission is there, and nothing was trained or run
    left = sorted(p.name for p in queue.request_folder(cfg, req).iterdir())
    return "accepted", f"{sub_dir}", left == [req.name]


@pytest.mark.parametrize("klass", list(CLASSES))
def test_queue_worker_check(klass, planted, tmp_path, figures):
    server, paths, readable = planted
    cases = cases_for(klass, WORKER)
    cfg = queue.WorkerConfig(requests_repo=REQUESTS, results_repo="emarena/none",
                             run_root=tmp_path / "wr", worker_id="w-hostile")  # fmt: skip
    view = hub.view(REQUESTS)
    t = Tally(WORKER, klass)
    for case in cases:
        try:
            outcome, text, specific = worker_outcome(case, view, paths[case.cid], cfg)
        except Exception as e:  # noqa: BLE001 - a crash is what is counted here
            t.judge(case, "crashed", f"{type(e).__name__}: {e}")
            continue
        t.judge(case, outcome, text, specific)
    # what is not a valid request is skipped by the worker (with a logged reason), never run
    assert {c.cid for c in cases if paths[c.cid] not in readable} == {
        c.cid for c in cases if c.expected(WORKER) == "not a valid request"}
    tried = len(cases)
    if klass.startswith("5 "):
        tried += links_where_the_worker_writes(t, cfg, tmp_path)
        tried += links_given_to_submit(t, tmp_path, server)
    t.record_and_check(figures, tried)


def links_where_the_worker_writes(t: Tally, cfg: queue.WorkerConfig, tmp: Path) -> int:
    """Links left where the worker writes a request's files (its README.md as a symbolic or
    hard link to a secret, its folder as a link elsewhere): replaced, never written through."""
    outside = tmp / "outside-worker"
    (outside / "elsewhere").mkdir(parents=True)
    secret = outside / "secret-token"
    secret.write_text(f"{FAKE_TOKEN}\n")
    good = REFERENCE_SGTR.replace("name: sgtr", f"name: {FOLDER}")
    v = tab.validate_text(good, README)
    assert v.ok and v.config_hash
    req = queue.Request(name=FOLDER, config_hash=v.config_hash, yaml=good, readme=README,
                        submitter="mallory", submitted=datetime.now(UTC), status="PENDING")

    def fresh() -> Path:
        d = queue.request_folder(cfg, req) / FOLDER
        if d.is_symlink():
            d.unlink()
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    plants = {
        "worker-dest-readme-symlink": lambda d: (d / "README.md").symlink_to(secret),
        "worker-dest-readme-hard-link": lambda d: os.link(secret, d / "README.md"),
        "worker-dest-folder-symlink": lambda d: (d.rmdir(), d.symlink_to(
            outside / "elsewhere", target_is_directory=True)),
    }
    for cid, plant in plants.items():
        case = Case(cid, good, None)
        plant(fresh())
        try:
            sub_dir = queue.checked_submission(cfg, req)
        except Exception as e:  # noqa: BLE001 - a crash is what is counted here
            t.judge(case, "crashed", f"{type(e).__name__}: {e}")
            continue
        intact = (secret.read_text() == f"{FAKE_TOKEN}\n"
                  and not any((outside / "elsewhere").iterdir()))  # fmt: skip
        own = not sub_dir.is_symlink() and (sub_dir / "README.md").stat().st_nlink == 1
        if intact and own:
            t.judge(case, "accepted", str(sub_dir))
        else:
            t.failures.append((cid, "wrote through a link", intact, own))
    return len(plants)


def links_given_to_submit(t: Tally, tmp: Path, server: HubServer) -> int:
    """`emarena submit` validates before it uploads: a hard-linked README (a secret) or a
    linked folder never reaches the requests repo."""
    outside = tmp / "outside-submit"
    outside.mkdir()
    (outside / "secret-token").write_text(f"{FAKE_TOKEN}\n")
    makers = {"submit-hard-linked-readme": (hard_link_readme_folder, "is a hard link"),
              "submit-symlinked-folder": (symlinked_submit_folder, "is a symbolic link")}
    for cid, (make, phrase) in makers.items():
        case = Case(cid, BASE, phrase)
        folder = make(tmp / "submit" / cid, outside)
        before = len(server.commits(REQUESTS))
        try:
            queue.submit(folder, REQUESTS, "mallory")
        except ConfigError as e:
            t.judge(case, "rejected", e.render(),
                    bool(e.fix) and len(server.commits(REQUESTS)) == before)
        except Exception as e:  # noqa: BLE001 - a crash is what is counted here
            t.judge(case, "crashed", f"{type(e).__name__}: {e}")
        else:
            t.judge(case, "accepted", "queued")
        assert FAKE_TOKEN.encode() not in b"".join(server.files(REQUESTS).values())
    return len(makers)


def hard_link_readme_folder(root: Path, outside: Path) -> Path:
    folder = root / FOLDER
    folder.mkdir(parents=True)
    (folder / "defense.yaml").write_text(BASE.replace("{name}", FOLDER))
    os.link(outside / "secret-token", folder / "README.md")
    return folder


def symlinked_submit_folder(root: Path, outside: Path) -> Path:
    real = outside / "real" / FOLDER
    real.mkdir(parents=True)
    (real / "defense.yaml").write_text(BASE.replace("{name}", FOLDER))
    (real / "README.md").write_text(README)
    root.mkdir(parents=True)
    (root / FOLDER).symlink_to(real, target_is_directory=True)
    return root / FOLDER


# --- what reaches a terminal or a pipe ---------------------------------------------------------


def test_validate_output_reaching_a_pipe_is_escaped(tmp_path):
    """`emarena validate` as a real process writing to pipes: keys and folder names holding
    newlines and escape sequences (clear screen, window title, an 8-bit CSI) arrive as visible
    escapes, one line per problem; no forged `ok` line, no control byte but the newline."""
    subs = tmp_path / "subs"
    bad = [
        Case("forged", add(f'"x\\n{FORGED}\\n9 submission(s): 9 valid, 0 invalid": 1\n'), "x"),
        Case("clear", add('"\\e[2J\\e[3J\\ec": 1\n'), "x"),
        Case("title", add('"\\e]0;pwned\\a\\e]2;pwned\\e\\\\": 1\n'), "x"),
        Case("csi8", add('"\\x9b31m": 1\n'), "x"),
    ]
    folders = [write_case(subs, c) for c in bad]
    parent = tmp_path / "p\nok  forged\x1b]0;t\x07"  # a folder of submissions with a bad name
    good = write_case(parent, Case("good", BASE, None))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "emarena", "validate", *map(str, folders), str(good)],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    raw = proc.stdout + proc.stderr
    assert proc.returncode == 2, raw[-2000:]
    controls = {b for b in raw if b < 32 and b != 10} | ({0x9B} if b"\xc2\x9b" in raw else set())
    assert not controls, (controls, raw[:2000])
    text = raw.decode("utf-8")
    lines = text.splitlines()
    oks = [ln for ln in lines if ln.startswith("ok  ")]
    assert oks == [f"ok  {escape(str(good))}  (sgtr, closed, regimes reversal)"], oks
    assert FORGED not in lines and "9 submission(s): 9 valid, 0 invalid" not in lines
    assert sum("unknown key" in ln for ln in lines) == 4
    assert "5 submission(s): 1 valid, 4 invalid (4 problem(s))" in text


# --- the running app: Gradio's own upload limit ------------------------------------------------


def _rss_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(field_name)


@pytest.mark.slow
def test_running_app_refuses_a_big_upload_while_it_streams(tmp_path, figures):
    """A real HTTP upload to the running leaderboard: over the limit it is refused (413) while
    the body streams in, so 256 MB sent cost the app no more than a few MB; a defense.yaml at
    the limit is taken."""
    from emarena.leaderboard.synthetic import write_synthetic_results
    from tests.leaderboard.conftest import AppServer

    results = tmp_path / "results"
    write_synthetic_results(results, 4)
    server = AppServer(results, tmp_path / "requests", tmp_path / "app.log").wait()
    url = server.url + "gradio_api/upload"
    tried = handled = 0
    try:
        ok = httpx.post(url, files={"files": ("defense.yaml", exactly(MAX_BYTES))}, timeout=60)
        tried += 1
        handled += ok.status_code == 200 and ok.json()[0].endswith("defense.yaml")
        over = httpx.post(url, files={"files": ("defense.yaml", exactly(MAX_BYTES + 1))},
                          timeout=60)  # fmt: skip
        tried += 1
        handled += over.status_code == 413 and "maximum allowed size" in over.text
        before = _rss_kb(server.proc.pid, "VmRSS")

        def body():
            boundary = b"emarena-boundary"
            yield (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="files"; '
                   b'filename="defense.yaml"\r\nContent-Type: application/x-yaml\r\n\r\n')
            chunk = b"# " + b"x" * (1 << 20)
            for _ in range(256):
                yield chunk
            yield b"\r\n--" + boundary + b"--\r\n"

        tried += 1
        try:
            big = httpx.post(url, content=body(), timeout=120, headers={
                "Content-Type": "multipart/form-data; boundary=emarena-boundary"})
            refused = big.status_code == 413
        except httpx.TransportError:  # the server answered and closed while we still sent
            refused = True
        time.sleep(1)
        grown_mb = (_rss_kb(server.proc.pid, "VmHWM") - before) / 1024
        handled += refused and grown_mb < 64 and server.proc.poll() is None
        assert httpx.get(server.url, timeout=30).status_code == 200  # still serving
    finally:
        server.stop()
    figures.record("hostile-submissions", "upload size in the running app (HTTP)", tried=tried,
                   handled=handled, entry=TAB, accepted=1, rejected=handled - 1)  # fmt: skip
    assert handled == tried, (handled, tried, grown_mb, server.output()[-2000:])
    assert "Traceback" not in server.output()
