"""The protocol buffer wire format, the little of it databazel reads and writes.

Bazel's persistent-worker protocol (worker.py) and its binary execution log
(read by the tests) are length-delimited protocol buffer messages; the
runner stays stdlib-only, so this decodes varints and fields by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at data[pos], and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def varint(value: int) -> bytes:
    """The varint encoding of `value`."""
    value &= (1 << 64) - 1  # negative int32 values are sent as 10-byte varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints and length-delimited bytes."""
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
            yield field, value
        elif wire == 2:
            length, pos = read_varint(data, pos)
            yield field, data[pos : pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def read_message(stream: BinaryIO) -> bytes | None:
    """One length-delimited message, or None at the end of the stream."""
    prefix = bytearray()
    while True:
        byte = stream.read(1)
        if not byte:
            return None
        prefix += byte
        if byte[0] < 0x80:
            break
    size, _ = read_varint(bytes(prefix), 0)
    data = stream.read(size)
    if len(data) != size:
        return None
    return data
