"""Hand-built ``tf.train.Example`` layouts outside the canonical one, with what TensorFlow does
with each (checked against real TensorFlow in tests/test_interop_validate.py): ``alike`` when
TensorFlow and protobuf read the same values, else ``validate`` must refuse it. Imported like
conftest: ``from layout_cases import CASES``."""

from __future__ import annotations

import struct
from typing import NamedTuple

from tfdrop.codec.wire import varint


def ld(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def ints(values: list[int]) -> bytes:
    return ld(3, ld(1, b"".join(varint(v) for v in values)))


def ints_unpacked(values: list[int]) -> bytes:
    return ld(3, b"".join(b"\x08" + varint(v) for v in values))


def floats(values: list[float]) -> bytes:
    return ld(2, ld(1, struct.pack(f"<{len(values)}f", *values)))


def floats_unpacked(values: list[float]) -> bytes:
    return ld(2, b"".join(b"\x0d" + struct.pack("<f", v) for v in values))


def strings(values: list[bytes]) -> bytes:
    return ld(1, b"".join(ld(1, v) for v in values))


def entry(key: bytes, feature: bytes | None) -> bytes:
    return ld(1, ld(1, key) + (ld(2, feature) if feature is not None else b""))


def example(entries: list[bytes], tail: bytes = b"") -> bytes:
    return ld(1, b"".join(entries)) + tail


def base(**swap: bytes) -> list[bytes]:
    """One box with both class keys; ``swap`` replaces a Feature by key suffix."""
    feats = {
        "image/filename": strings([b"a.jpg"]),
        "image/height": ints([48]),
        "image/width": ints([64]),
        "image/object/bbox/xmin": floats([0.25]),
        "image/object/bbox/xmax": floats([0.5]),
        "image/object/bbox/ymin": floats([0.125]),
        "image/object/bbox/ymax": floats([0.75]),
        "image/object/class/label": ints([1]),
        "image/object/class/text": strings([b"cat"]),
    }
    for name, feature in swap.items():
        feats["image/" + name.replace("__", "/")] = feature
    return [entry(k.encode(), v) for k, v in feats.items()]


class Case(NamedTuple):
    name: str
    data: bytes
    alike: bool  # TensorFlow parses it to the values protobuf reads
    message: str = ""  # what validate's message says when it refuses


LABEL_RUNS = ld(3, ld(1, b"\x01") + ld(1, b"\x02"))
CASES = [
    Case(
        "unpacked int64 lists",
        example(base(height=ints_unpacked([48]), object__class__label=ints_unpacked([1]))),
        alike=True,
    ),
    Case(
        "unpacked float lists",
        example(base(object__bbox__xmin=floats_unpacked([0.25]))),
        alike=True,
    ),
    Case("an unknown varint field in Example", example(base(), b"\x10\x05"), alike=True),
    Case("an unknown message field in Example", example(base(), ld(7, b"abc")), alike=True),
    Case("Features written in two parts", example(base()[:4]) + example(base()[4:]), alike=True),
    Case(
        "a map entry with the value before the key",
        example([*base()[1:], ld(1, ld(2, strings([b"a.jpg"])) + ld(1, b"image/filename"))]),
        alike=True,
    ),
    Case(
        "a key without a value",
        example([*base(), entry(b"image/object/view", None)]),
        alike=False,
        message="a key but no Feature value",
    ),
    Case(
        "an unknown key without a value",
        example([*base(), entry(b"zz", None)]),
        alike=False,
        message="a key but no Feature value",
    ),
    Case(
        "an unknown field in Features",
        ld(1, b"".join(base()) + b"\x10\x05"),
        alike=False,
        message="Features message holds an unknown field",
    ),
    Case(
        "a map entry with its key twice",
        example([*base(), ld(1, ld(1, b"zz") + ld(1, b"yy") + ld(2, ints([3])))]),
        alike=False,
        message="exactly one key and one value",
    ),
    Case(
        "a map entry with two values",
        example(
            [
                *base()[1:],
                ld(
                    1,
                    ld(1, b"image/filename")
                    + ld(2, strings([b"a.jpg"]))
                    + ld(2, strings([b"b.jpg"])),
                ),
            ]
        ),
        alike=False,
        message="exactly one key and one value",
    ),
    Case(
        "a Feature holding two kinds of list",
        example(base(object__class__label=ints([1]) + floats([0.5]))),
        alike=False,
        message="two lists",
    ),
    Case(
        "an int64 list split in two runs",
        example(base(object__class__label=LABEL_RUNS)),
        alike=False,
        message="split in runs",
    ),
    Case(
        "a single-value key repeated",
        example([*base(), entry(b"image/height", ints([96]))]),
        alike=False,
        message="the key appears twice",
    ),
]
