"""Whether TensorFlow's Example parser and protobuf read a non-canonical layout alike.

TensorFlow parses ``tf.train.Example`` with its own fast parser
(``tensorflow/core/util/example_proto_fast_parsing.cc``), not with protobuf. For the canonical
layout both read the same values; outside it they part ways. Checked against real TensorFlow
(tests/test_interop_validate.py), per message:

- ``Example``: any number of ``features`` fields (merged), unknown fields skipped: alike.
- ``Features``: only map entries; TensorFlow refuses anything else.
- a map entry: exactly one key and one value, in either order; TensorFlow refuses a key with
  no value, a key or value twice, or an unknown field.
- the same key in two entries: both keep the last and silently drop the other: refused.
- ``Feature``: empty or one list. With two lists TensorFlow reads the first, protobuf the last
  (or both): refused; so is anything after the list (TensorFlow does not look at it).
- ``BytesList``: only values; TensorFlow refuses anything else.
- ``Int64List`` / ``FloatList``: one packed run, or only unpacked values (both read those
  alike); TensorFlow reads only the first of several runs: refused, and so is anything else.

Varints must be in their shortest form (TensorFlow compares tag bytes literally). Call
:func:`layout_problem` only on bytes protobuf parsed: it judges the layout, not well-formedness.
"""

from __future__ import annotations

from typing import Final

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_BYTES, _FLOAT, _INT = 1, 2, 3

TF_REFUSES: Final = "TensorFlow's Example parser refuses the record"


class _Refused(Exception):
    def __init__(self, message: str, key: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 64:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if not b and shift:
                raise _Refused("a varint not in its shortest form")
            return result, pos
        shift += 7
    raise _Refused("a malformed varint")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field, wire type, start, end)`` per field; LEN spans are the payload."""
    out = []
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wtype = tag >> 3, tag & 7
        start = pos
        if wtype == _VARINT:
            _, pos = _varint(buf, pos, end)
        elif wtype == _LEN:
            n, start = _varint(buf, pos, end)
            pos = start + n
        elif wtype in (_I64, _I32):
            pos += 8 if wtype == _I64 else 4
        else:
            raise _Refused(f"a group field: {TF_REFUSES}")
        if pos > end or number == 0:
            raise _Refused("a malformed field")
        out.append((number, wtype, start, pos))
    return out


def _check_list(buf: bytes, kind: int, pos: int, end: int, key: bytes) -> None:
    fields = _fields(buf, pos, end)
    if kind == _BYTES:
        if any(f[:2] != (1, _LEN) for f in fields):
            raise _Refused(f"a BytesList holds another field: {TF_REFUSES}", key)
        return
    element = _I32 if kind == _FLOAT else _VARINT
    if len(fields) == 1 and fields[0][:2] == (1, _LEN):
        return  # one packed run
    if all(f[:2] == (1, element) for f in fields):
        return  # unpacked values: both read them alike
    raise _Refused(
        "a numeric list split in runs or mixed with other fields: TensorFlow reads only the "
        "first run, protobuf all of them",
        key,
    )


def _check_feature(buf: bytes, pos: int, end: int, key: bytes) -> None:
    fields = _fields(buf, pos, end)
    if not fields:
        return
    number, wtype, start, stop = fields[0]
    if len(fields) > 1 or wtype != _LEN or number not in (1, 2, 3) or buf[pos] != number * 8 + 2:
        raise _Refused(
            "a Feature holding two lists or another field: TensorFlow reads the first list, "
            "protobuf the last (or both)",
            key,
        )
    _check_list(buf, number, start, stop, key)


def _check_entry(buf: bytes, pos: int, end: int, seen: set[bytes]) -> None:
    fields = _fields(buf, pos, end)
    keys = [f for f in fields if f[:2] == (1, _LEN)]
    values = [f for f in fields if f[:2] == (2, _LEN)]
    key = buf[keys[0][2] : keys[0][3]] if keys else b""
    if keys and not values and len(fields) == 1:
        raise _Refused(f"a Features map entry with a key but no Feature value: {TF_REFUSES}", key)
    if len(keys) != 1 or len(values) != 1 or len(fields) != 2:
        raise _Refused(
            "a Features map entry without exactly one key and one value (or with another "
            f"field): {TF_REFUSES}",
            key,
        )
    if key in seen:
        raise _Refused(
            "the key appears twice: TensorFlow and protobuf keep the last and drop the other",
            key,
        )
    seen.add(key)
    _check_feature(buf, values[0][2], values[0][3], key)


def layout_problem(data: bytes) -> tuple[str, str] | None:
    """``(key, message)`` when TensorFlow and protobuf may read ``data`` differently (or
    TensorFlow refuses it); ``None`` when both read the same values."""
    seen: set[bytes] = set()
    try:
        for number, wtype, start, stop in _fields(data, 0, len(data)):
            if number != 1:
                continue  # an unknown Example field: both skip it
            if wtype != _LEN:
                raise _Refused(f"an Example field 1 that is not a message: {TF_REFUSES}")
            for fnum, ftype, estart, estop in _fields(data, start, stop):
                if (fnum, ftype) != (1, _LEN):
                    raise _Refused(f"a Features message holds an unknown field: {TF_REFUSES}")
                _check_entry(data, estart, estop, seen)
    except _Refused as exc:
        return exc.key.decode("utf-8", "replace"), exc.message
    return None
