"""A linear-time reader for Caffe's protobuf text format that keeps fields the schema lacks.

protobuf's own text parser refuses a field it does not know, so a prototxt written for a Caffe
fork (SSD's `norm_param`, PSPNet's `interp_param`, ...) would not even open. This reader fills
the caffe_pb2 messages from the descriptors and keeps every unknown field as plain data, per
layer, keyed by its dotted path relative to the layer. One regex pass tokenizes; a recursive
descent (bounded depth) fills the messages; line:column comes from a bisect on newline offsets,
so the cost is linear in the file size.
"""
from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor as FD

from ninport.errors import ParseError

# Deeper nesting than this is refused (protobuf's own parsers stop at 100 too).
MAX_NESTING_DEPTH = 100
# Longer integer literals are out of range for every field (and never reach int()).
_MAX_INT_CHARS = 40
# Error messages quote at most this much of an offending token.
_QUOTE_LIMIT = 60

UnknownFields = dict  # dict[str, list[int | float | bool | str | UnknownFields]]

_TOKEN = re.compile(r"""
    (?:[ \t\r\n\f\v]|\#[^\n]*)*
    (?:
        (?P<str>"(?:[^"\\\n]|\\[^\n])*"|'(?:[^'\\\n]|\\[^\n])*')
       |(?P<num>-?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[fF]?)(?![A-Za-z0-9_]))
       |(?P<id>-?[A-Za-z_][A-Za-z0-9_]*)
       |(?P<sym>[{}<>:\[\],;])
       |(?P<end>\Z)
       |(?P<bad>.)
    )""", re.X | re.S)

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
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int):
        self.kind, self.text, self.pos = kind, text, pos


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    append = out.append
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        start = match.start(kind)
        append(_Token(kind, match.group(kind), start))
        if kind in ("end", "bad"):
            break
    return out


def _unescape(body: str) -> bytes:
    """C-style escapes of protobuf text strings (\\n, \\x41, \\101, \\u00e9 ...) to bytes."""
    if "\\" not in body:
        return body.encode("utf-8")
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch != "\\":
            j = body.find("\\", i)
            j = n if j < 0 else j
            out += body[i:j].encode("utf-8")
            i = j
            continue
        esc = body[i + 1]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif esc in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not m:
                raise ValueError("\\x with no hex digits")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise ValueError(f"\\{esc} needs {width} hex digits")
            out += chr(int(digits, 16)).encode("utf-8", errors="surrogatepass")
            i += 2 + width
        else:
            raise ValueError(f"unknown escape \\{esc}")
    return bytes(out)


def _shown(text: str) -> str:
    text = text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT - 3] + "..."
    return repr(text)


class _Reader:
    def __init__(self, text: str, source: str):
        self.text, self.source = text, source
        self.tokens = _tokens(text)
        self.i = 0
        self._newlines: list[int] | None = None

    # --- positions and errors ----------------------------------------------------------------

    def line_col(self, pos: int) -> tuple[int, int]:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        line = bisect.bisect_left(self._newlines, pos)
        start = self._newlines[line - 1] + 1 if line else 0
        return line + 1, pos - start + 1

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
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind == "bad":
            raise self.error(token, f"syntax error: {self.describe(token)}")
        if token.kind != "end":
            self.i += 1
        return token

    def expect(self, symbol: str) -> _Token:
        token = self.take()
        if token.kind != "sym" or token.text != symbol:
            raise self.error(token, f"expected {symbol!r}, found {self.describe(token)}")
        return token

    def at(self, symbol: str) -> bool:
        token = self.tokens[self.i]
        return token.kind == "sym" and token.text == symbol

    def skip_separator(self) -> None:
        if self.at(",") or self.at(";"):
            self.i += 1

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
        return "}" if token.text == "{" else ">"

    def values(self, name: _Token, is_message: bool, read_one):
        """The value(s) after a field name: `: v`, `: [v, ...]`, or (messages) `{...}` / `: {...}`."""
        has_colon = self.at(":")
        if has_colon:
            self.i += 1
        elif not (is_message and (self.at("{") or self.at("<") or self.at("["))):
            raise self.error(self.peek(), f"expected ':' after {name.text!r}, found {self.describe(self.peek())}")
        if self.at("["):
            self.i += 1
            out = []
            if self.at("]"):
                self.i += 1
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

    def string_bytes(self) -> bytes:
        token = self.take()
        if token.kind != "str":
            raise self.error(token, f"expected a string, found {self.describe(token)}")
        parts = []
        while True:
            try:
                parts.append(_unescape(token.text[1:-1]))
            except (ValueError, IndexError) as exc:
                raise self.error(token, f"bad string escape: {exc}") from None
            if self.peek().kind != "str":
                return b"".join(parts)
            token = self.take()

    # --- known fields ------------------------------------------------------------------------

    def scalar(self, fd) -> object:
        t = fd.type
        if t in (FD.TYPE_STRING, FD.TYPE_BYTES):
            token = self.peek()
            data = self.string_bytes()
            if t == FD.TYPE_BYTES:
                return data
            try:
                return data.decode("utf-8")
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
                self.i += 1
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

                def read_message(fd=fd, layer_field=layer_field):
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
                    self.i += 1
                    return block
                if token.kind == "end":
                    raise self.error(token, f"end of file inside a block: expected {closer!r}")
                name = self.field_name()
                values = self.values(name, True, lambda: self.unknown_value(depth + 1))
                block.setdefault(name.text, []).extend(values)
                self.skip_separator()
        if token.kind == "str":
            return self.string_bytes().decode("utf-8", errors="replace")
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
        value = int(body[2:], 16)
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
