"""Counting the values of each feature of any ``tf.train.Example`` encoding, without parsing it.

The fast path (:mod:`tfdrop.codec.wire`) counts values before it builds a list, but it takes
only the canonical layout; anything else goes to protobuf, which builds every repeated field
at once: a non-canonical 128 MiB record of one-byte varints would become a 1 GiB int64 array.
:func:`feature_value_counts` walks the wire bytes the way protobuf would read them (any field
order, unknown fields, unpacked or split lists, a key or a message field more than once) and
adds up, per key, the values every occurrence would contribute. Merging rules (the last key
wins, message fields merge, the last list of a oneof wins) can only make the real count
smaller, so the sum is an upper bound that is exact for every record a real writer makes.

No I/O, no protobuf; malformed bytes end the walk (protobuf then reports them).
"""

from __future__ import annotations

from typing import Final

_HIGH_BYTES: Final = bytes(range(0x80, 0x100))
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5


class Malformed(Exception):
    """The bytes are not a well-formed protobuf message (protobuf names the problem)."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise Malformed


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field number, wire type, start, end)`` of each field of the message in ``buf[pos:end]``.

    For length-delimited fields the span is the payload; for the others, the value's bytes.
    Groups (wire types 3 and 4) are refused: no ``tf.train.Example`` holds one.
    """
    out: list[tuple[int, int, int, int]] = []
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wtype = tag >> 3, tag & 7
        if number == 0:
            raise Malformed
        if wtype == _VARINT:
            start = pos
            _, pos = _varint(buf, pos, end)
        elif wtype == _LEN:
            n, start = _varint(buf, pos, end)
            pos = start + n
        elif wtype in (_I64, _I32):
            start = pos
            pos += 8 if wtype == _I64 else 4
        else:
            raise Malformed
        if pos > end:
            raise Malformed
        out.append((number, wtype, start, pos))
    return out


def _list_count(buf: bytes, kind: int, pos: int, end: int) -> int:
    """Values one BytesList (1) / FloatList (2) / Int64List (3) message would add."""
    n = 0
    for number, wtype, start, stop in _fields(buf, pos, end):
        if number != 1:
            continue  # an unknown field: kept, not a value
        if kind == 1:
            n += wtype == _LEN
        elif wtype == _LEN:  # a packed run
            n += (
                (stop - start) // 4
                if kind == 2
                else len(buf[start:stop].translate(None, _HIGH_BYTES))
            )
        else:
            n += (kind == 2 and wtype == _I32) or (kind == 3 and wtype == _VARINT)
    return n


def _feature_count(buf: bytes, pos: int, end: int) -> int:
    return sum(
        _list_count(buf, number, start, stop)
        for number, wtype, start, stop in _fields(buf, pos, end)
        if number in (1, 2, 3) and wtype == _LEN
    )


def feature_value_counts(data: bytes) -> dict[bytes, int]:
    """``{key: values}`` summed over every occurrence of each key (an upper bound).

    Raises :class:`Malformed` where protobuf would fail too (or on a group field).
    """
    counts: dict[bytes, int] = {}
    for number, wtype, start, stop in _fields(data, 0, len(data)):
        if number != 1 or wtype != _LEN:
            continue
        for fnum, ftype, estart, estop in _fields(data, start, stop):
            if fnum != 1 or ftype != _LEN:
                continue
            key = b""
            n = 0
            for enum_, etype, vstart, vstop in _fields(data, estart, estop):
                if etype != _LEN:
                    continue
                if enum_ == 1:
                    key = data[vstart:vstop]
                elif enum_ == 2:
                    n += _feature_count(data, vstart, vstop)
            counts[key] = counts.get(key, 0) + n
    return counts
