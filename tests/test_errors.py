"""The one escaping function: every character of the unsafe Unicode categories is shown escaped, nothing else."""
from __future__ import annotations

import sys
import unicodedata

import pytest

from ninport.errors import UNSAFE_CATEGORIES, NinportError, NinportWarning, escape_unsafe, safe_message, safe_text

# Issue 18 item 7: these reached `inspect`'s output and the .py comments raw.
ISSUE_CHARACTERS = ["\u061c", "\u2028", "\u2029", *map(chr, range(0x2060, 0x2065)), *map(chr, range(0xE0000, 0xE0080))]


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def test_the_categories_are_the_promised_ones():
    assert UNSAFE_CATEGORIES >= {"Cc", "Cf", "Zl", "Zp", "Co", "Cn"}
    assert UNSAFE_CATEGORIES - {"Cc", "Cf", "Zl", "Zp", "Co", "Cn"} == {"Cs"}  # lone surrogates too


@pytest.mark.parametrize("char", ISSUE_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
def test_the_characters_of_the_issue_are_escaped(char):
    shown = safe_text(f"layer{char}name")
    code = ord(char)
    assert shown == f"layer\\u{code:04x}name" if code < 0x10000 else f"layer\\U{code:08x}name"
    assert str(NinportError(f"bad {char}")) == f"bad {escape_unsafe(char)}"


def test_every_code_point_of_an_unsafe_category_is_escaped_and_every_other_is_kept():
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    shown = escape_unsafe(every)
    assert not any(_unsafe(c) for c in shown)
    kept = "".join(c for c in every if not _unsafe(c))
    assert escape_unsafe(kept) == kept  # letters, marks, symbols, spaces of every script: unchanged
    assert escape_unsafe(shown) == shown  # escaping twice changes nothing


def test_common_escapes_read_as_python_escapes():
    assert safe_text("a\nb\r\tc\x1b[31m\x7f\x85\u202e\ufeff\U000e0001") == \
        "a\\nb\\r\\tc\\x1b[31m\\x7f\\x85\\u202e\\ufeff\\U000e0001"
    assert safe_text("Ünïcödé 名前 x y", 200) == "Ünïcödé 名前 x y"
    assert "\u2028" not in safe_message("line\u2028break") and "\\u2028" in safe_message("line\u2028break")


def test_warnings_are_escaped_too():
    """Outside the CLI, Python prints a library's warnings as they are: ninport's are safe when made."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("model\u2028name\x1b[2J.prototxt: no caffemodel given", NinportWarning, stacklevel=1)
    assert str(caught[0].message) == "model\\u2028name\\x1b[2J.prototxt: no caffemodel given"
