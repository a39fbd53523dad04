"""The protobuf wire format, walked by hand where the protobuf runtime would copy a file's large byte fields
(a caffemodel's blobs, an ONNX file's initializers): varints, field keys, the fields of a span. Pure Python,
no protobuf, no torch."""
from __future__ import annotations

from collections.abc import Iterator


class Truncated(Exception):
    """The data ends inside a field (args[0]: where)."""


def varint(buf, pos: int, end: int) -> tuple[int, int]:
    """The varint at `pos`: (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise Truncated(pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError(f"varint too long at byte {pos}")


FIXED_WIDTHS = {5: 4, 1: 8}  # wire type -> bytes of a fixed32 / fixed64 value


def field_at(buf, pos: int, end: int) -> tuple[int, int, int | tuple[int, int], int]:
    """The field whose key starts at `pos`: (field_number, wire_type, value, position after it),
    where value is an int or a (start, end) span."""
    key, pos = varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise ValueError(f"field number 0 at byte {pos}")
    if wire == 0:
        value, pos = varint(buf, pos, end)
        return number, wire, value, pos
    if wire == 2:
        length, pos = varint(buf, pos, end)
    elif wire in FIXED_WIDTHS:
        length = FIXED_WIDTHS[wire]
    else:
        raise ValueError(f"invalid wire type {wire} at byte {pos}")
    if pos + length > end:
        raise Truncated(pos)
    return number, wire, (pos, pos + length), pos + length


def fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """Yield (field_number, wire_type, value) where value is an int or a (start, end) span."""
    pos = start
    while pos < end:
        number, wire, value, pos = field_at(buf, pos, end)
        yield number, wire, value


def spans(buf, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int], int, int]]:
    """Yield (field_number, wire_type, value, key start, end): `fields` with where each field's bytes lie."""
    pos = start
    while pos < end:
        key_start = pos
        number, wire, value, pos = field_at(buf, pos, end)
        yield number, wire, value, key_start, pos


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_key(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)
