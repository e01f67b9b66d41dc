"""Text anyone can write (submissions, requests, uploads), read once and shown safely anywhere.

Reading: `decode_utf8` is the one decoder of untrusted files and pasted text (the CLI, the
Submit tab and the worker all go through it), so a file is refused with the same message
wherever it comes in. Pasted text reaches it as bytes encoded with "surrogatepass", so a lone
surrogate gets that message too, instead of a UnicodeEncodeError.

Checking: `problem` says why a free-text field (a description, an author, a README, a
submitter) cannot be accepted: control characters (a terminal escape, NUL), bidirectional
overrides and isolates (they reorder what a reader sees), line breaks where one line is
expected. `is_blank` is true for text made only of spaces and invisible characters
(zero-width spaces, fillers), which `str.strip()` keeps.

Showing: every user-controlled string is escaped for where it goes. `escape` keeps printable
text and writes every other character as a Python-style escape (`\\n`, `\\x1b`, `\\u202e`), so
one message is one line of a terminal or a log, and nothing in it moves the cursor, clears the
screen, sets a window title or reorders the line. `markdown` also neutralises Markdown and HTML.

    escape("a\\nok  x")          -> 'a\\\\nok  x' (one line)
    problem("\\u202eevil")       -> 'contains U+202E RIGHT-TO-LEFT OVERRIDE (at character 1)...'
"""

from __future__ import annotations

import html
import re
import unicodedata

from emarena.errors import ConfigError

#: Names of the control characters people meet (unicodedata has no names for controls).
_CONTROL_NAMES = {
    0x00: "NULL", 0x07: "BELL", 0x08: "BACKSPACE", 0x09: "CHARACTER TABULATION",
    0x0A: "LINE FEED", 0x0B: "LINE TABULATION", 0x0C: "FORM FEED", 0x0D: "CARRIAGE RETURN",
    0x1B: "ESCAPE", 0x7F: "DELETE", 0x85: "NEXT LINE", 0x9B: "CONTROL SEQUENCE INTRODUCER",
    0x9D: "OPERATING SYSTEM COMMAND",
}  # fmt: skip
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Bidirectional embeddings, overrides and isolates: they reorder the text that follows them.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Letters that render as nothing (Hangul fillers, the braille blank) beside the invisible
#: categories (format characters, spaces, marks without a base).
_BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cn", "Co"})


def char_name(ch: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: how a character is named in messages."""
    code = ord(ch)
    name = _CONTROL_NAMES.get(code) or unicodedata.name(ch, "")
    if not name:
        if 0xD800 <= code <= 0xDFFF:
            name = "(a lone surrogate, not a character)"
        elif unicodedata.category(ch) == "Cc":
            name = "(a control character)"
        else:
            name = "(unnamed)"
    return f"U+{code:04X} {name}"


def _escaped(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT:
        return _SHORT[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` with every character that is not printable (controls, line breaks, format and
    bidirectional characters, unusual spaces, surrogates) written as an escape: one line, shown
    as written. Idempotent: escaping escaped text changes nothing."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def shorten(text: str, limit: int = 80) -> str:
    """`escape(text)`, cut to about `limit` characters with the full length said."""
    shown = escape(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(text):,} characters)"


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown(text: str) -> str:
    """`text` for a Markdown component: escaped (one line per line of ours), HTML and
    Markdown syntax shown as the characters they are, never as markup or links."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(escape(text), quote=False))


def problem(text: str, *, multiline: bool = False) -> str | None:
    """Why `text` cannot be accepted as free text, or None (see `find_problem`)."""
    found = find_problem(text, multiline=multiline)
    return found[1] if found is not None else None


def find_problem(text: str, *, multiline: bool = False) -> tuple[int, str] | None:
    """(index, why) of the first character that keeps `text` from being accepted as free text.

    Refused: control characters (C0 except tab, and except line breaks when `multiline`; DEL;
    C1), lone surrogates, bidirectional embeddings, overrides and isolates, invisible tag
    characters (U+E0000-E007F, text hidden from readers), and line breaks of any kind in
    one-line text. Printable text in any script, emoji
    (with their joiners) and left-to-right / right-to-left marks are accepted.
    """
    allowed = "\t\n\r" if multiline else "\t"
    for i, ch in enumerate(text):
        code = ord(ch)
        if ch in allowed or (ch.isprintable() and ch not in _BIDI):
            continue
        where = f"at character {i + 1}"
        if multiline:
            line = text.count("\n", 0, i) + 1
            col = i - (text.rfind("\n", 0, i) + 1) + 1
            where = f"on line {line}, column {col}"
        what = char_name(ch)
        if ch in _BIDI:
            return i, (f"contains {what} ({where}), which reorders the text around it as "
                       "displayed")  # fmt: skip
        if ch in "\n\r\u2028\u2029\x85" and not multiline:
            return i, f"contains a line break ({what}, {where}); write it on one line"
        if code < 0x20 or 0x7F <= code < 0xA0:
            return i, f"contains {what} ({where}), a control character"
        if 0xD800 <= code <= 0xDFFF:
            return i, f"contains {what} ({where})"
        if 0xE0000 <= code <= 0xE007F:
            return i, f"contains {what} ({where}), an invisible tag character (hidden text)"
    return None


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: only spaces, line breaks and invisible characters."""
    return all(
        ch.isspace() or ch in _BLANK_LOOKING
        or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
        for ch in text
    )  # fmt: skip


def decode_utf8(raw: bytes, where: str) -> str:
    """`raw` as UTF-8 text, or a ConfigError `where:LINE: not UTF-8 (...)` with the fix.

    The one decoder of untrusted text: a file read by the CLI or the worker, an upload, a
    pasted text (encoded with "surrogatepass", so a lone surrogate is reported, not raised).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        start = e.start
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(
            f"{where}:1: not UTF-8: the file is UTF-16 (it starts with the byte-order mark "
            f"0x{raw[0]:02x} 0x{raw[1]:02x})",
            fix="save the file as UTF-8",
        )
    line = raw[:start].count(b"\n") + 1
    byte = raw[start]
    what = f"byte 0x{byte:02x} at offset {start}"
    nxt = raw[start + 1] if start + 1 < len(raw) else 0
    if byte == 0xED and 0xA0 <= nxt <= 0xBF:
        what += ", an encoded surrogate (half of a UTF-16 pair), which is not a character"
    raise ConfigError(f"{where}:{line}: not UTF-8 ({what})", fix="save the file as UTF-8")
