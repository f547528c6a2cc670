"""A fast path for decoding ``tf.train.Example`` wire bytes into plain Python lists.

Why: reading values through protobuf's Python wrappers costs about half a microsecond per
attribute hop (``feature[key].float_list.value``), and an OD record has ~20 features, so a
record took ~70 us; slicing the wire bytes directly takes a third of that. Packed float lists
become Python floats through ``array('f')``; packed int64 lists whose bytes are all < 0x80 (every
label id and flag below 128) are the bytes themselves.

The fast path accepts only the canonical encoding TensorFlow and protobuf write (each message
field once, each feature key once with a value, lists packed, fields in order). Anything else
(unpacked lists, repeated or out-of-order fields, a key twice or without a value, unknown
fields, truncation) raises
:class:`NotCanonical`, and the caller falls back to protobuf's parser, which is the reference:
tests check both agree.

``max_values`` caps the values of one feature: counted from the packed length or the entries
seen so far, before the list is built (:class:`~tfdrop.errors.LimitExceededError`, limit
``max_values_per_feature``). A 240 MB list of floats would otherwise become 60 M Python objects.

The C accelerator (``_wire.c``) is used when it was built, unless the environment variable
``TFDROP_NO_C`` is set to anything but ``""`` or ``"0"`` when this module is first imported:
then every call takes the pure-Python path (the test suite runs once that way too).
"""

from __future__ import annotations

import importlib
import os
import sys
from array import array
from collections.abc import Callable
from typing import Any, Final

from tfdrop.errors import LimitExceededError

BYTES_KIND: Final = 1  # Feature.bytes_list
FLOAT_KIND: Final = 2  # Feature.float_list
INT64_KIND: Final = 3  # Feature.int64_list

_LITTLE: Final = sys.byteorder == "little"
_TAG_1_LEN: Final = 0x0A  # field 1, wire type 2
_TAG_2_LEN: Final = 0x12  # field 2, wire type 2
_KIND_BY_TAG: Final = {0x0A: BYTES_KIND, 0x12: FLOAT_KIND, 0x1A: INT64_KIND}
_INT64_SIGN: Final = 1 << 63
_HIGH_BYTES: Final = bytes(range(0x80, 0x100))
DEFAULT_MAX_VALUES: Final = 100_000
"""Most values of one feature by default (= ``Limits.max_values_per_feature``)."""


class NotCanonical(Exception):
    """The bytes are not in the canonical layout; parse them with protobuf instead."""


# key -> (kind, values, the Feature's serialized bytes)
Features = dict[bytes, tuple[int, list[object], bytes]]


def too_many_values(key: bytes, count: int, cap: int) -> LimitExceededError:
    """The error for a feature with more than ``cap`` values (``count``: at least this many)."""
    name = "max_values_per_feature"
    return LimitExceededError(
        f"{name} is {cap}, and this input needs at least {count}",
        limit=name,
        value=count,
        cap=cap,
        key=key.decode("utf-8", "replace"),
    )


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            # protobuf writes the shortest form within 64 bits and would re-serialize an
            # over-long varint (a trailing 0x00) or bits past 64 differently
            if (not b and shift) or (shift == 63 and b > 1):
                raise NotCanonical
            return result, pos
        shift += 7
        if shift > 63:
            raise NotCanonical


def _len(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A length prefix whose span must also fit before ``end``."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:
        n, pos = _varint(buf, pos)
    if n > end - pos:
        raise NotCanonical
    return n, pos


def _int64s(raw: bytes) -> list[object]:
    if raw.isascii():
        return list(raw)
    out: list[object] = []
    q, end = 0, len(raw)
    while q < end:
        v, q = _varint(raw, q)
        out.append(v - (1 << 64) if v & _INT64_SIGN else v)
    return out


def _values(kind: int, buf: bytes, pos: int, end: int, cap: int, key: bytes) -> list[object]:
    """Decode one BytesList / FloatList / Int64List spanning ``buf[pos:end]``."""
    if pos == end:
        return []
    if kind == BYTES_KIND:
        return _bytes_values(buf, pos, end, cap, key)
    if buf[pos] != _TAG_1_LEN:
        raise NotCanonical  # an unpacked list
    n, pos = _len(buf, pos + 1, end)
    if pos + n != end or not n:
        raise NotCanonical  # split in runs, or an empty run protobuf would not write
    raw = buf[pos:end]
    if kind == FLOAT_KIND:
        return _float_values(raw, cap, key)
    if n > cap:  # each varint takes at least one byte; its last byte is < 0x80
        count = len(raw.translate(None, _HIGH_BYTES))
        if count > cap:
            raise too_many_values(key, count, cap)
    return _int64s(raw)


def _bytes_values(buf: bytes, pos: int, end: int, cap: int, key: bytes) -> list[object]:
    out: list[object] = []
    while pos < end:
        if buf[pos] != _TAG_1_LEN:
            raise NotCanonical
        if len(out) == cap:
            raise too_many_values(key, cap + 1, cap)
        n, pos = _len(buf, pos + 1, end)
        out.append(buf[pos : pos + n])
        pos += n
    if pos != end:
        raise NotCanonical
    return out


def _float_values(raw: bytes, cap: int, key: bytes) -> list[object]:
    if len(raw) % 4:
        raise NotCanonical
    if len(raw) // 4 > cap:
        raise too_many_values(key, len(raw) // 4, cap)
    floats = array("f", raw)
    if not _LITTLE:  # pragma: no cover - the wire is little-endian
        floats.byteswap()
    return floats.tolist()  # type: ignore[return-value]


def parse_features_py(data: bytes, max_values: int = DEFAULT_MAX_VALUES) -> Features:
    """``Example`` bytes -> {key: (kind, values, feature bytes)}; raises :class:`NotCanonical`.

    ``kind`` is 0 for an empty Feature (no list set). A feature with more than ``max_values``
    values raises :class:`~tfdrop.errors.LimitExceededError` before its list is built.
    """
    try:
        return _parse(data, max_values)
    except IndexError:
        raise NotCanonical from None


def _parse_features_c(data: bytes, max_values: int = DEFAULT_MAX_VALUES) -> Features:
    out: Features | tuple[bytes, int] | None = _wire_c.parse_features(data, max_values)
    if out is None:
        raise NotCanonical
    if type(out) is tuple:  # (key, count): a list over the cap, found before it was built
        raise too_many_values(out[0], out[1], max_values)
    return out  # type: ignore[return-value]


C_DISABLED: Final = os.environ.get("TFDROP_NO_C", "") not in ("", "0")
"""``TFDROP_NO_C`` was set: the C accelerator is not used even if it was built."""

_wire_c: Any = None
if not C_DISABLED:
    try:  # the optional C accelerator (built from _wire.c when a compiler is there)
        _wire_c = importlib.import_module("tfdrop.codec._wire")
    except ImportError:  # pragma: no cover - depends on the build
        _wire_c = None


def _boxes_ok_py(
    xmin: list[float], ymin: list[float], xmax: list[float], ymax: list[float]
) -> bool:
    if not len(xmin) == len(ymin) == len(xmax) == len(ymax):
        return False
    return all(
        0.0 <= a <= c <= 1.0 and 0.0 <= b <= d <= 1.0
        for a, b, c, d in zip(xmin, ymin, xmax, ymax, strict=True)
    )


HAVE_C: Final = _wire_c is not None
"""The C accelerator is in use (built, and not disabled with ``TFDROP_NO_C``)."""
boxes_ok: Callable[[list[float], list[float], list[float], list[float]], bool]
boxes_ok = _wire_c.boxes_ok if _wire_c is not None else _boxes_ok_py
"""Whether every box is inside [0, 1] (finite) and ordered; the fast all-clear check."""
OdCheck = Callable[[bytes, dict[bytes, int] | None, int, bool], tuple[Any, ...] | None]
od_check: OdCheck | None = _wire_c.od_check if _wire_c is not None else None
"""The C all-clear schema check (see ``_wire.c``), or ``None`` without the accelerator."""
jpeg_end: Callable[[bytes], int] | None = _wire_c.jpeg_end if _wire_c is not None else None
"""The C walk of a JPEG's markers (:func:`tfdrop.codec.imagehead.jpeg_end_py`), or ``None``."""
parse_features = _parse_features_c if _wire_c is not None else parse_features_py
"""``Example`` bytes -> {key: (kind, values, feature bytes)}; raises :class:`NotCanonical`."""


def _parse(data: bytes, cap: int) -> Features:
    out: Features = {}
    if not data:
        return out
    if data[0] != _TAG_1_LEN:
        raise NotCanonical
    flen, pos = _len(data, 1, len(data))
    end = pos + flen
    if end != len(data):
        raise NotCanonical
    while pos < end:
        pos = _entry(data, pos, end, cap, out)
    if pos != end:
        raise NotCanonical
    return out


def _entry(data: bytes, pos: int, end: int, cap: int, out: Features) -> int:
    """Parse the map entry at ``pos`` (key, then its Feature) into ``out``; where it ends."""
    if data[pos] != _TAG_1_LEN:
        raise NotCanonical
    elen, pos = _len(data, pos + 1, end)
    eend = pos + elen
    if pos >= eend or data[pos] != _TAG_1_LEN:
        raise NotCanonical  # map entries written by protobuf always carry the key first
    klen, pos = _len(data, pos + 1, eend)
    key = data[pos : pos + klen]
    if not key.isascii():
        try:
            key.decode("utf-8")  # protobuf refuses a map key that is not UTF-8
        except UnicodeDecodeError:
            raise NotCanonical from None
    pos += klen
    if key in out:
        raise NotCanonical  # a key twice: protobuf keeps the last, TensorFlow may not
    if pos == eend or data[pos] != _TAG_2_LEN:
        raise NotCanonical  # a key without a value: protobuf takes it, TensorFlow refuses
    vlen, pos = _len(data, pos + 1, eend)
    if pos + vlen != eend:
        raise NotCanonical
    out[key] = _feature(data, pos, eend, cap, key)
    return eend


def _feature(
    data: bytes, pos: int, vend: int, cap: int, key: bytes
) -> tuple[int, list[object], bytes]:
    """One Feature spanning ``data[pos:vend]``: (kind, values, its bytes); kind 0 when empty."""
    feature = data[pos:vend]
    if pos == vend:
        return (0, [], feature)
    kind = _KIND_BY_TAG.get(data[pos])
    if kind is None:
        raise NotCanonical
    llen, lpos = _len(data, pos + 1, vend)
    if lpos + llen != vend:
        raise NotCanonical
    return (kind, _values(kind, data, lpos, vend, cap, key), feature)


# --- encoding ----------------------------------------------------------------------------------
# Built by hand as one list of pieces joined once, so an embedded image is copied once (through
# protobuf it was copied into the message, then into the serialized bytes). Entries are sorted by
# key, as protobuf's deterministic serialization sorts map keys: the same item gives the same
# bytes in every process. Tests check byte equality with protobuf's own output.

_SMALL: Final = [bytes([i]) for i in range(128)]
_U64: Final = 1 << 64


def varint(value: int) -> bytes:
    """The protobuf varint of an int64 (negative values take ten bytes, two's complement)."""
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0:
        value += _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def leading_value(data: bytes, key: bytes, size: int) -> int | None:
    """Where the one value of ``key``'s bytes list starts in the serialized Example ``data``,
    when that feature is its first entry and holds just that value, ``size`` bytes long;
    else None. Map entries are written sorted by key, so an Example whose smallest key is
    ``image/encoded`` has the image bytes here, unchanged, and a worker can name them in the
    source instead of copying them (:mod:`tfdrop.formats.tfrecord.spool`)."""
    value_head = _head(b"\x0a", size)
    list_len = len(value_head) + size
    list_head = _head(b"\x0a", list_len)
    feature_len = len(list_head) + list_len
    entry = _key_head(key) + _head(b"\x12", feature_len) + list_head + value_head
    entry_head = _head(b"\x0a", len(entry) + size)
    try:
        total, pos = _varint(data, 1)
    except (IndexError, NotCanonical):
        return None
    if data[:1] != b"\x0a" or total != len(data) - pos:
        return None
    if not data.startswith(entry_head + entry, pos):
        return None
    start = pos + len(entry_head) + len(entry)
    return start if start + size <= len(data) else None


_LEN_HEADS: Final = {
    tag: [bytes([tag[0], n]) for n in range(128)] for tag in (b"\x0a", b"\x12", b"\x1a")
}
_KEY_HEADS: dict[bytes, bytes] = {}  # key -> its map-entry key field (tag, length, key)


def _head(tag: bytes, n: int) -> bytes:
    """``tag`` followed by the varint ``n``; the common one-byte lengths come from a table."""
    return _LEN_HEADS[tag][n] if n < 128 else tag + varint(n)


def _key_head(key: bytes) -> bytes:
    head = _KEY_HEADS.get(key)
    if head is None:
        head = _head(b"\x0a", len(key)) + key
        if len(_KEY_HEADS) < 4096:  # feature keys are few; never grow without bound
            _KEY_HEADS[key] = head
    return head


class ExampleBuilder:
    """Collects features, then :meth:`serialize` writes the ``tf.train.Example`` bytes."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        # key -> (feature header pieces, payload pieces, feature length)
        self._entries: dict[bytes, tuple[list[bytes], int]] = {}

    def _add(self, key: bytes, tag: bytes, body: list[bytes], body_len: int) -> None:
        head = _head(tag, body_len)
        self._entries[key] = ([head, *body], len(head) + body_len)

    def bytes_list(self, key: bytes, values: list[bytes]) -> None:
        body: list[bytes] = []
        size = 0
        small = _LEN_HEADS[b"\x0a"]
        for v in values:
            n = len(v)
            head = small[n] if n < 128 else b"\x0a" + varint(n)
            body.append(head)
            body.append(v)
            size += len(head) + n
        self._add(key, b"\x0a", body, size)

    def float_list(self, key: bytes, values: list[float]) -> None:
        if not values:
            self._add(key, b"\x12", [], 0)
            return
        packed = array("f", values)
        if not _LITTLE:  # pragma: no cover - the wire is little-endian
            packed.byteswap()
        raw = packed.tobytes()
        head = _head(b"\x0a", len(raw))
        self._add(key, b"\x12", [head, raw], len(head) + len(raw))

    def int64_list(self, key: bytes, values: list[int]) -> None:
        if not values:
            self._add(key, b"\x1a", [], 0)
            return
        if all(0 <= v < 128 for v in values):
            raw = bytes(values)
        else:
            for v in values:
                if not -(1 << 63) <= v < (1 << 63):
                    raise OverflowError(f"{v} is outside the int64 range")
            raw = b"".join(varint(v) for v in values)
        head = _head(b"\x0a", len(raw))
        self._add(key, b"\x1a", [head, raw], len(head) + len(raw))

    def raw_feature(self, key: bytes, feature: bytes) -> None:
        """A serialized ``Feature`` kept as it is (an unknown key passing through)."""
        self._entries[key] = ([feature], len(feature))

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def serialize(self) -> bytes:
        pieces: list[bytes] = [b"\x0a", b""]  # Example.features tag, then its length
        total = 0
        entries = self._entries
        for key in sorted(entries):
            body, flen = entries[key]
            key_head = _key_head(key)
            value_head = _head(b"\x12", flen)
            elen = len(key_head) + len(value_head) + flen
            entry_head = _head(b"\x0a", elen)
            pieces += (entry_head, key_head, value_head)
            pieces += body
            total += len(entry_head) + elen
        if not self._entries:
            return b""  # protobuf writes nothing for an Example whose Features are empty
        pieces[1] = varint(total)
        return b"".join(pieces)


_INT64_MIN: Final = -(1 << 63)
_INT64_END: Final = 1 << 63


class _CExampleBuilder(ExampleBuilder):
    """The same bytes, written by the C accelerator in one pass and one allocation: the
    features are only collected here (the per-list Python was a sixth of a VOC item's cost)."""

    __slots__ = ("_lists",)

    def __init__(self) -> None:
        self._lists: dict[bytes, tuple[int, object]] = {}

    def bytes_list(self, key: bytes, values: list[bytes]) -> None:
        self._lists[key] = (BYTES_KIND, values)

    def float_list(self, key: bytes, values: list[float]) -> None:
        self._lists[key] = (FLOAT_KIND, values)

    def int64_list(self, key: bytes, values: list[int]) -> None:
        if values and (min(values) < _INT64_MIN or max(values) >= _INT64_END):
            bad = next(v for v in values if not _INT64_MIN <= v < _INT64_END)
            raise OverflowError(f"{bad} is outside the int64 range")  # here, as the caller expects
        self._lists[key] = (INT64_KIND, values)

    def raw_feature(self, key: bytes, feature: bytes) -> None:
        self._lists[key] = (0, feature)

    def __contains__(self, key: bytes) -> bool:
        return key in self._lists

    def serialize(self) -> bytes:
        assert _wire_c is not None
        data: bytes = _wire_c.encode_example(self._lists)
        return data


def new_builder() -> ExampleBuilder:
    """An :class:`ExampleBuilder`: the C one when the accelerator is in use."""
    return _CExampleBuilder() if _wire_c is not None else ExampleBuilder()
