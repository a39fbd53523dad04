"""A linear-time reader for Caffe's protobuf text format that keeps fields the schema lacks.

protobuf's own text parser refuses a field it does not know, so a prototxt written for a Caffe
fork (SSD's `norm_param`, PSPNet's `interp_param`, ...) would not even open. This reader fills
the caffe_pb2 messages from the descriptors and keeps every unknown field as plain data, per
layer, keyed by its dotted path relative to the layer. A tokenizer hands out one token at a
time; a recursive descent (bounded depth) fills the messages; line:column comes from counting
newlines onward from the last position asked. Time is linear in the file size, and the reader
needs little memory beyond the text and the messages it fills.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor as FD

from ninport.errors import ParseError

# Deeper nesting than this is refused (protobuf's own parsers stop at 100 too).
MAX_NESTING_DEPTH = 100
# More message blocks than this are refused: each costs ~750 bytes in protobuf, so 60 MB of `layer{}`
# took 5.6 GB. Real nets open a few per layer (layer, param, *_param, fillers): tens of thousands at most.
MAX_MESSAGE_BLOCKS = 200_000
# Longer integer literals are out of range for every field (and never reach int()).
_MAX_INT_CHARS = 40
# Error messages quote at most this much of an offending token.
_QUOTE_LIMIT = 60

UnknownFields = dict  # dict[str, list[int | float | bool | str | UnknownFields]]

# The tokenizer uses no repeated regex group over input of unbounded length: Python's `re` keeps a
# backtracking record per iteration of a repeated group (~130 bytes per character for a
# whitespace run or a string body), so runs of blanks use single-character repeats, and comment
# lines and string escapes are taken at most _CHUNK group iterations per match, in a loop.
_CHUNK = 1024
_BLANKS = re.compile(r"[ \t\r\n\f\v]*")
_COMMENT_LINES = re.compile(rf"(?:\#[^\n]*[ \t\r\n\f\v]*){{1,{_CHUNK}}}")
_STRING_BODY = {quote: re.compile(rf"[^{quote}\\\n]*(?:\\[^\n][^{quote}\\\n]*){{0,{_CHUNK}}}")
                for quote in "\"'"}
# No lookahead after a number: a greedy match followed by a letter is refused in one step (the
# lookahead made the regex backtrack over every shorter prefix: quadratic in a run of digits).
_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[fF]?)")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")
_IDENTIFIER = re.compile(r"-?[A-Za-z_][A-Za-z0-9_]*")
_SYMBOLS = frozenset("{}<>:[],;")

_INT_TYPES = {FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
              FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
              FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
              FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
              FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1)}
_FLOAT_TYPES = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)
_BOOL_WORDS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}
_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63}
_LAYER_FIELDS = ("layer", "layers")


@dataclass
class ParsedNet:
    """A NetParameter as read, with what text_format would have lost.

    `layer_lines[f][i]` and `layer_unknown_fields[f][i]` belong to the i-th entry of the net's
    repeated field `f` ("layer" or "layers"), in file order.
    """

    net: object
    layer_lines: dict[str, list[int]] = field(default_factory=lambda: {"layer": [], "layers": []})
    layer_unknown_fields: dict[str, list[UnknownFields]] = field(
        default_factory=lambda: {"layer": [], "layers": []})
    # Per layer: dotted path of each unknown field -> (line, column) of its first occurrence.
    layer_unknown_places: dict[str, list[dict[str, tuple[int, int]]]] = field(
        default_factory=lambda: {"layer": [], "layers": []})
    unknown_fields: UnknownFields = field(default_factory=dict)
    unknown_places: dict[str, tuple[int, int]] = field(default_factory=dict)


class _Token:
    """One token; a string's `text` is only its start (enough to quote it), `pos`/`end` span it all."""

    __slots__ = ("end", "kind", "pos", "text")

    def __init__(self, kind: str, text: str, pos: int, end: int):
        self.kind, self.text, self.pos, self.end = kind, text, pos, end


def _tokens(text: str) -> Iterator[_Token]:
    """The tokens of `text`, one at a time (a list of them would cost ~100 bytes per token), ending
    with an "end" or a "bad" token. Memory is constant whatever the input."""
    pos, n = 0, len(text)
    while True:
        pos = _BLANKS.match(text, pos).end()
        while pos < n and text[pos] == "#":
            pos = _COMMENT_LINES.match(text, pos).end()
        if pos >= n:
            yield _Token("end", "", n, n)
            return
        ch = text[pos]
        if ch in "\"'":
            end = _string_end(text, pos)
            if end is None:
                yield _Token("bad", ch, pos, pos + 1)
                return
            yield _Token("str", text[pos:min(end, pos + _QUOTE_LIMIT + 1)], pos, end)
            pos = end
            continue
        match = _NUMBER.match(text, pos) or _IDENTIFIER.match(text, pos)
        if match is not None:
            end = match.end()
            if match.re is _NUMBER and _WORD_CHAR.match(text, end):
                yield _Token("bad", ch, pos, pos + 1)  # a number run into a word: 1abc, 0x, 1.5e
                return
            yield _Token("num" if match.re is _NUMBER else "id", match.group(), pos, end)
            pos = end
        elif ch in _SYMBOLS:
            yield _Token("sym", ch, pos, pos + 1)
            pos += 1
        else:
            yield _Token("bad", ch, pos, pos + 1)
            return


def _string_end(text: str, start: int) -> int | None:
    """The offset just past the string literal opening at `start`, or None if it is unterminated
    (no closing quote before the end of the line)."""
    quote = text[start]
    body = _STRING_BODY[quote]
    pos, n = start + 1, len(text)
    while True:
        pos = body.match(text, pos).end()
        # a match stops early only after _CHUNK escapes, at the backslash of the next one
        if not (pos + 1 < n and text[pos] == "\\" and text[pos + 1] != "\n"):
            break
    return pos + 1 if pos < n and text[pos] == quote else None


_OCTAL_ESCAPE = re.compile(r"[0-7]{1,3}")
_HEX_ESCAPE = re.compile(r"[0-9a-fA-F]{1,2}")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")


def _unescape(text: str, start: int, end: int) -> bytes:
    """The bytes of the string body text[start:end], C-style escapes (\\n, \\x41, \\101, \\u00e9 ...)
    decoded. Reads in place: no copy of the rest of the body per escape."""
    i = text.find("\\", start, end)
    if i < 0:
        return text[start:end].encode("utf-8")
    out = bytearray(text[start:i].encode("utf-8"))
    while i < end:
        if text[i] != "\\":
            j = text.find("\\", i, end)
            j = end if j < 0 else j
            out += text[i:j].encode("utf-8")
            i = j
            continue
        esc = text[i + 1]  # the tokenizer ends no string body on a lone backslash
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in "01234567":
            m = _OCTAL_ESCAPE.match(text, i + 1, end)
            out.append(int(m.group(), 8) & 0xFF)
            i = m.end()
        elif esc in "xX":
            m = _HEX_ESCAPE.match(text, i + 2, end)
            if not m:
                raise ValueError("\\x with no hex digits")
            out.append(int(m.group(), 16))
            i = m.end()
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            m = _HEX_DIGITS.match(text, i + 2, min(end, i + 2 + width))
            if m.end() - m.start() != width:
                raise ValueError(f"\\{esc} needs {width} hex digits")
            out += chr(int(m.group(), 16)).encode("utf-8", errors="surrogatepass")
            i = m.end()
        else:
            raise ValueError(f"unknown escape \\{esc}")
    return bytes(out)


def _shown(text: str) -> str:
    text = text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT - 3] + "..."
    return repr(text)


class _Reader:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self._stream = _tokens(text)
        self.current = next(self._stream)
        # line_col counts newlines from the last position asked (asked in about file order: linear)
        self._line_at = (0, 1, 0)  # position, its line, the offset where that line starts
        self._blocks = 0

    # --- positions and errors ----------------------------------------------------------------

    def line_col(self, pos: int) -> tuple[int, int]:
        last_pos, line, line_start = self._line_at
        if pos >= last_pos:
            crossed = self.text.count("\n", last_pos, pos)
            if crossed:
                line, line_start = line + crossed, self.text.rfind("\n", last_pos, pos) + 1
        else:  # an error pointing back: rare, so a scan back to the line's start is fine
            line -= self.text.count("\n", pos, last_pos)
            line_start = self.text.rfind("\n", 0, pos) + 1
        self._line_at = (pos, line, line_start)
        return line, pos - line_start + 1

    def line_of(self, pos: int) -> int:
        return self.line_col(pos)[0]

    def error(self, token: _Token, message: str) -> ParseError:
        line, col = self.line_col(token.pos)
        return ParseError(f"{self.source}:{line}:{col}: {message}")

    def describe(self, token: _Token) -> str:
        if token.kind == "end":
            return "end of file"
        if token.kind == "bad":
            return ("an unterminated string" if token.text in "\"'" else f"unexpected character {token.text!r}")
        return _shown(token.text)

    # --- token stream ------------------------------------------------------------------------

    def peek(self) -> _Token:
        return self.current

    def advance(self) -> None:
        if self.current.kind not in ("end", "bad"):
            self.current = next(self._stream)

    def take(self) -> _Token:
        token = self.current
        if token.kind == "bad":
            raise self.error(token, f"syntax error: {self.describe(token)}")
        self.advance()
        return token

    def expect(self, symbol: str) -> _Token:
        token = self.take()
        if token.kind != "sym" or token.text != symbol:
            raise self.error(token, f"expected {symbol!r}, found {self.describe(token)}")
        return token

    def at(self, symbol: str) -> bool:
        token = self.current
        return token.kind == "sym" and token.text == symbol

    def skip_separator(self) -> None:
        if self.at(",") or self.at(";"):
            self.advance()

    # --- structure ---------------------------------------------------------------------------

    def field_name(self) -> _Token:
        token = self.take()
        if token.kind != "id" or token.text.startswith("-"):
            if token.kind == "sym" and token.text == "[":
                raise self.error(token, "extension and Any fields ([...]) are not used by Caffe")
            raise self.error(token, f"expected a field name, found {self.describe(token)}")
        return token

    def open_block(self, depth: int) -> str:
        """Consume '{' or '<'; return the matching closer."""
        token = self.take()
        if token.kind != "sym" or token.text not in "{<":
            raise self.error(token, f"expected '{{', found {self.describe(token)}")
        if depth >= MAX_NESTING_DEPTH:
            raise self.error(token, f"nesting deeper than {MAX_NESTING_DEPTH} levels")
        self._blocks += 1
        if self._blocks > MAX_MESSAGE_BLOCKS:
            raise self.error(token, f"more than {MAX_MESSAGE_BLOCKS:,} message blocks (no real net has that many)")
        return "}" if token.text == "{" else ">"

    def values(self, name: _Token, is_message: bool, read_one):
        """The value(s) after a field name: `: v`, `: [v, ...]`, or (messages) `{...}` / `: {...}`."""
        has_colon = self.at(":")
        if has_colon:
            self.advance()
        elif not (is_message and (self.at("{") or self.at("<") or self.at("["))):
            raise self.error(self.peek(), f"expected ':' after {name.text!r}, found {self.describe(self.peek())}")
        if self.at("["):
            self.advance()
            out = []
            if self.at("]"):
                self.advance()
                return out
            while True:
                out.append(read_one())
                token = self.take()
                if token.kind == "sym" and token.text == "]":
                    return out
                if token.kind != "sym" or token.text != ",":
                    raise self.error(token, f"expected ',' or ']' in the list of {name.text!r}, "
                                            f"found {self.describe(token)}")
        return [read_one()]

    def string_value(self, as_text: bool, errors: str = "strict") -> bytes | str:
        """The value of one or more adjacent string literals: bytes, or text if `as_text` (decoded
        with `errors`). A lone literal without escapes is sliced straight from the file's text."""
        token = self.take()
        if token.kind != "str":
            raise self.error(token, f"expected a string, found {self.describe(token)}")
        start, end = token.pos + 1, token.end - 1
        if as_text and self.peek().kind != "str" and self.text.find("\\", start, end) < 0:
            return self.text[start:end]
        parts = []
        while True:
            try:
                parts.append(_unescape(self.text, token.pos + 1, token.end - 1))
            except (ValueError, IndexError) as exc:
                raise self.error(token, f"bad string escape: {exc}") from None
            if self.peek().kind != "str":
                break
            token = self.take()
        data = b"".join(parts)
        del parts
        return data.decode("utf-8", errors) if as_text else data

    # --- known fields ------------------------------------------------------------------------

    def scalar(self, fd) -> object:
        t = fd.type
        if t in (FD.TYPE_STRING, FD.TYPE_BYTES):
            token = self.peek()
            try:
                return self.string_value(as_text=t == FD.TYPE_STRING)
            except UnicodeDecodeError:
                raise self.error(token, f"field {fd.name!r}: string is not valid UTF-8") from None
        token = self.take()
        if t in _INT_TYPES:
            if token.kind != "num" or not _is_int_literal(token.text):
                raise self.error(token, f"field {fd.name!r} expects an integer, found {self.describe(token)}")
            value = _int_value(token.text) if len(token.text) <= _MAX_INT_CHARS else math.inf
            low, high = _INT_TYPES[t]
            if not low <= value <= high:
                raise self.error(token, f"field {fd.name!r}: {_shown(token.text)} is out of range "
                                        f"[{low}, {high}]")
            return value
        if t in _FLOAT_TYPES:
            value = _float_value(token)
            if value is None:
                raise self.error(token, f"field {fd.name!r} expects a number, found {self.describe(token)}")
            return value
        if t == FD.TYPE_BOOL:
            if token.kind == "id" and token.text in _BOOL_WORDS:
                return _BOOL_WORDS[token.text]
            if token.kind == "num" and token.text in ("0", "1"):
                return token.text == "1"
            raise self.error(token, f"field {fd.name!r} expects true or false, found {self.describe(token)}")
        if t == FD.TYPE_ENUM:
            enum = fd.enum_type
            if token.kind == "id" and not token.text.startswith("-"):
                value = enum.values_by_name.get(token.text)
                if value is None:
                    raise self.error(token, f"enum type {enum.full_name!r} has no value named "
                                            f"{_shown(token.text)} (field {fd.name!r})")
                return value.number
            if token.kind == "num" and _is_int_literal(token.text) and len(token.text) <= _MAX_INT_CHARS:
                number = _int_value(token.text)
                if number not in enum.values_by_number:
                    raise self.error(token, f"enum type {enum.full_name!r} has no value with number "
                                            f"{_shown(token.text)} (field {fd.name!r})")
                return number
            raise self.error(token, f"field {fd.name!r} expects a {enum.name} value, found {self.describe(token)}")
        raise self.error(token, f"field {fd.name!r}: unsupported field type")

    def message(self, msg, closer: str | None, depth: int, unknown: UnknownFields, places: dict,
                prefix: str, parsed: ParsedNet | None = None) -> None:
        """Fill `msg` up to `closer` (None: end of file). Unknown fields go to `unknown[prefix + name]`."""
        descriptor = msg.DESCRIPTOR
        fields = descriptor.fields_by_name
        repeated: dict[str, list] = {}
        seen: set[str] = set()
        while True:
            token = self.peek()
            if closer is None and token.kind == "end":
                break
            if closer is not None and token.kind == "sym" and token.text == closer:
                self.advance()
                break
            if token.kind == "end":
                raise self.error(token, f"end of file inside a block: expected {closer!r}")
            name = self.field_name()
            fd = fields.get(name.text)
            if fd is None:
                path = prefix + name.text
                if path not in places:
                    places[path] = self.line_col(name.pos)
                values = self.values(name, True, lambda: self.unknown_value(depth))
                unknown.setdefault(path, []).extend(values)
                self.skip_separator()
                continue
            is_repeated = _is_repeated(fd)
            if not is_repeated:
                if name.text in seen:
                    raise self.error(name, f"field {name.text!r} of {descriptor.name} is given twice; "
                                           "it takes one value")
                seen.add(name.text)
            if fd.type == FD.TYPE_MESSAGE:
                layer_field = parsed is not None and name.text in _LAYER_FIELDS

                def read_message(fd=fd, layer_field=layer_field, name=name):
                    start = self.peek()
                    end = self.open_block(depth + 1)
                    if _is_repeated(fd):
                        child = getattr(msg, fd.name).add()
                    else:
                        child = getattr(msg, fd.name)
                        child.SetInParent()
                    if layer_field:
                        layer_unknown: UnknownFields = {}
                        layer_places: dict[str, tuple[int, int]] = {}
                        parsed.layer_lines[fd.name].append(self.line_of(name.pos))
                        parsed.layer_unknown_fields[fd.name].append(layer_unknown)
                        parsed.layer_unknown_places[fd.name].append(layer_places)
                        self.message(child, end, depth + 1, layer_unknown, layer_places, "")
                        if fd.name == "layers":  # a V0 layer's own fields are the layer's
                            for key in [k for k in layer_unknown if k.startswith("layer.")]:
                                layer_unknown.setdefault(key[6:], []).extend(layer_unknown.pop(key))
                                layer_places.setdefault(key[6:], layer_places.pop(key))
                    else:
                        self.message(child, end, depth + 1, unknown, places, f"{prefix}{fd.name}.")
                    return start

                values = self.values(name, True, read_message)
                if not is_repeated and len(values) != 1:
                    raise self.error(name, f"field {name.text!r} of {descriptor.name} takes one value")
            else:
                values = self.values(name, False, lambda fd=fd: self.scalar(fd))
                if is_repeated:
                    repeated.setdefault(fd.name, []).extend(values)
                elif len(values) != 1:
                    raise self.error(name, f"field {name.text!r} of {descriptor.name} takes one value")
                else:
                    setattr(msg, fd.name, values[0])
            self.skip_separator()
        for fname, values in repeated.items():
            getattr(msg, fname).extend(values)

    # --- unknown fields ----------------------------------------------------------------------

    def unknown_value(self, depth: int):
        token = self.peek()
        if token.kind == "sym" and token.text in "{<":
            closer = self.open_block(depth + 1)
            block: UnknownFields = {}
            while True:
                token = self.peek()
                if token.kind == "sym" and token.text == closer:
                    self.advance()
                    return block
                if token.kind == "end":
                    raise self.error(token, f"end of file inside a block: expected {closer!r}")
                name = self.field_name()
                values = self.values(name, True, lambda: self.unknown_value(depth + 1))
                block.setdefault(name.text, []).extend(values)
                self.skip_separator()
        if token.kind == "str":
            return self.string_value(as_text=True, errors="replace")
        token = self.take()
        if token.kind == "num":
            if _is_int_literal(token.text) and len(token.text) <= _MAX_INT_CHARS:
                return _int_value(token.text)
            return _float_value(token)
        if token.kind == "id":
            word = token.text
            if word in ("true", "True", "false", "False"):
                return word[0] in "tT"
            value = _float_value(token)
            if value is not None:
                return value
            if not word.startswith("-"):
                return word
        raise self.error(token, f"expected a value, found {self.describe(token)}")


def _is_repeated(fd) -> bool:
    # protobuf >= 6 has `is_repeated` and drops `label`; 4.x has only `label`.
    flag = getattr(fd, "is_repeated", None)
    return bool(flag) if flag is not None else fd.label == FD.LABEL_REPEATED


def _is_int_literal(text: str) -> bool:
    body = text.lstrip("-")
    if body[:2] in ("0x", "0X"):
        return True
    return body.isdigit()


def _int_value(text: str) -> int:
    negative = text.startswith("-")
    body = text.lstrip("-")
    if body[:2] in ("0x", "0X"):
        value = int(body, 16)
    elif len(body) > 1 and body.startswith("0"):
        value = int(body, 8) if all(c in "01234567" for c in body) else int(body)
    else:
        value = int(body)
    return -value if negative else value


def _float_value(token: _Token) -> float | None:
    text = token.text
    if token.kind == "num":
        if text.lstrip("-")[:2] in ("0x", "0X"):
            if len(text) > _MAX_INT_CHARS:
                return -math.inf if text.startswith("-") else math.inf
            return float(_int_value(text))
        return float(text.rstrip("fF"))
    if token.kind == "id":
        negative = text.startswith("-")
        word = text.lstrip("-").lower()
        word = word[:-1] if word in ("inff", "infinityf", "nanf") else word
        if word in _FLOAT_WORDS:
            return -_FLOAT_WORDS[word] if negative else _FLOAT_WORDS[word]
    return None


def parse_net(text: str, source: str) -> ParsedNet:
    """Parse prototxt text into a raw (not upgraded) caffe_pb2.NetParameter plus what it lacks."""
    from ninport.caffe import caffe_pb2

    net = caffe_pb2.NetParameter()
    parsed = ParsedNet(net=net)
    reader = _Reader(text, source)
    reader.message(net, None, 0, parsed.unknown_fields, parsed.unknown_places, "", parsed)
    return parsed


def parse_message(text: str, message, source: str = "<text>") -> UnknownFields:
    """Fill any caffe_pb2 message from text; return its unknown fields (dotted paths)."""
    unknown: UnknownFields = {}
    _Reader(text, source).message(message, None, 0, unknown, {}, "")
    return unknown
