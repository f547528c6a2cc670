"""Hostile drops for a running daemon, beyond the archive catalogue.

:data:`DROPS` maps a case name to ``(file name, builder, expected error kinds)``: every case
of tests/hostile_archives.py (zip slip, symlink members, bombs, lying sizes, truncated and
corrupt zips ...) plus the record, Example, XML, JSON and name cases that need a whole drop:
a TFRecord length field of 2^63, CRC flips, gzip cut short, protobuf garbage, mismatched
lists, NaN/inf/negative boxes, billion laughs, an external entity, deep XML, a non-UTF-8 file
name, wrongly typed COCO JSON and 250,000 tiny members. A symlink dropped into the drop
folder is made by the test itself (it is a folder entry, not bytes).

Run ``python -m tests.stress.hostile_inputs OUTDIR`` to write them all as files.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfdrop.codec.framing import encode_record, masked_crc32c
from tfdrop.codec.proto import Example

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # run as ``python -m tests.stress.hostile_inputs``
    sys.path.insert(0, str(_TESTS))

import hostile_archives as hostile  # noqa: E402

LABEL_MAP = "item {\n\tid: 1\n\tname: 'cat'\n}\n\n"
_U, _B = "unsafe_archive", "bad_archive"


def _zip(members: dict[str, bytes], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tf_zip(records: bytes) -> bytes:
    return _zip({"default.tfrecord": records, "label_map.pbtxt": LABEL_MAP.encode()})


def _example(**features: tuple[str, list[object]]) -> bytes:
    ex: Any = Example()  # generated protobuf class: no stubs
    for key, (kind, values) in features.items():
        f = ex.features.feature[key.replace("__", "/")]
        getattr(f, kind).value.extend(values)
    return bytes(ex.SerializeToString())


def _good_example(**override: tuple[str, list[object]]) -> bytes:
    base: dict[str, tuple[str, list[object]]] = {
        "image__filename": ("bytes_list", [b"a.png"]),
        "image__height": ("int64_list", [10]),
        "image__width": ("int64_list", [10]),
        "image__object__bbox__xmin": ("float_list", [0.1]),
        "image__object__bbox__xmax": ("float_list", [0.5]),
        "image__object__bbox__ymin": ("float_list", [0.1]),
        "image__object__bbox__ymax": ("float_list", [0.5]),
        "image__object__class__label": ("int64_list", [1]),
        "image__object__class__text": ("bytes_list", [b"cat"]),
    }
    base.update(override)
    return _example(**base)


def length_2_63() -> bytes:
    """A record header claiming 2^63 bytes, with a correct length CRC (only the cap stops it)."""
    length = struct.pack("<Q", 1 << 63)
    return _tf_zip(length + struct.pack("<I", masked_crc32c(length)) + b"\0" * 64)


def crc_flip_length() -> bytes:
    rec = bytearray(encode_record(_good_example()))
    rec[8] ^= 0x01
    return _tf_zip(bytes(rec))


def crc_flip_data() -> bytes:
    rec = bytearray(encode_record(_good_example()))
    rec[14] ^= 0x01
    return _tf_zip(bytes(rec))


def gzip_cut_short() -> bytes:
    """A bare gzip-compressed .tfrecord file whose stream stops half way."""
    whole = gzip.compress(b"".join(encode_record(_good_example()) for _ in range(50)))
    return whole[: len(whole) // 2]


def protobuf_garbage() -> bytes:
    return _tf_zip(encode_record(b"\xff\xfe\xfd garbage \x00\x01" * 8))


def mismatched_lists() -> bytes:
    return _tf_zip(encode_record(_good_example(image__object__bbox__xmax=("float_list", []))))


def nan_box() -> bytes:
    return _tf_zip(
        encode_record(_good_example(image__object__bbox__xmin=("float_list", [math.nan])))
    )


def inf_box() -> bytes:
    return _tf_zip(
        encode_record(_good_example(image__object__bbox__ymax=("float_list", [math.inf])))
    )


def negative_box() -> bytes:
    return _tf_zip(encode_record(_good_example(image__object__bbox__xmin=("float_list", [-0.5]))))


_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
)


def billion_laughs_cvat() -> bytes:
    doc = _LAUGHS + "<annotations><meta>&lol9;</meta></annotations>\n"
    return _zip({"annotations.xml": doc.encode()})


def billion_laughs_voc() -> bytes:
    doc = _LAUGHS + "<annotation><filename>&lol9;</filename></annotation>\n"
    return _zip({"Annotations/a.xml": doc.encode(), "JPEGImages/a.jpg": b"\xff\xd8\xff"})


def external_entity() -> bytes:
    doc = (
        '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        "<annotations><meta>&xxe;</meta></annotations>\n"
    )
    return _zip({"annotations.xml": doc.encode()})


def deep_xml(depth: int = 200_000) -> bytes:
    """Stored, so that the parser (not the ratio cap) meets the depth."""
    doc = "<annotations>" + "<a>" * depth + "</a>" * depth + "</annotations>\n"
    return _zip({"annotations.xml": doc.encode()})


def lying_sizes_record() -> bytes:
    """The catalogue's lying sizes on a member named like a TFRecord (so it is read)."""
    return hostile.lying_sizes().replace(b"zeros.bin", b"zz.record")


def local_name_mismatch_record() -> bytes:
    return hostile.local_name_mismatch().replace(b"good.txt", b"g.record")


def corrupt_stored_record() -> bytes:
    data = bytearray(_tf_zip(b"".join(encode_record(_good_example()) for _ in range(20))))
    data[len(data) // 3] ^= 0xFF
    return bytes(data)


def coco_wrong_types() -> bytes:
    doc = {
        "images": "not a list",
        "annotations": [{"id": "x", "image_id": [1], "bbox": "0 0 1 1", "category_id": None}],
        "categories": {"id": 1},
    }
    return _zip({"annotations/instances_default.json": json.dumps(doc).encode()})


def coco_wrong_bbox() -> bytes:
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": "ten", "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": ["a", 0, 1, 1], "category_id": 1}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    return _zip({"annotations/instances_default.json": json.dumps(doc).encode()})


def tiny_members(count: int = 250_000) -> bytes:
    """``count`` empty stored members (over the default 200,000-entry cap), built raw."""
    local, central = bytearray(), bytearray()
    for i in range(count):
        name = f"{i:06x}".encode()
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            0,
            0,
            0x21,
            0,
            0,
            0,
            len(name),
            0,
            0,
            0,
            0,
            0,
            len(local),
        )
        central += name
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0)
        local += name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(central), len(local), 0)
    # more than 65,535 entries need zip64 records; a reader counting the real directory or
    # trusting zip64 must still refuse it
    z64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), len(local)
    )
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(local) + len(central), 1)
    return bytes(local + central + z64 + loc + end)


def million_members_claimed() -> bytes:
    """Three members whose zip64 end records claim 2,000,000 (refused before listing)."""
    data = bytearray(tiny_members(3))
    z64 = data.rfind(b"PK\x06\x06")
    struct.pack_into("<2Q", data, z64 + 24, 2_000_000, 2_000_000)
    return bytes(data)


def declared_total_bomb(members: int = 17) -> bytes:
    """``members`` entries each declaring 4 GiB (68 GiB in all, over the 64 GiB default cap)."""
    data = bytearray(_zip({f"p{i:02d}.bin": b"x" for i in range(members)}, compress=True))
    _, central = hostile._headers(bytes(data))
    for pos in central:
        struct.pack_into("<L", data, pos + 24, 0xFFFFFFF0)  # uncompressed size
        struct.pack_into("<L", data, pos + 20, 64 << 20)  # compressed size (ratio under 200)
    return bytes(data)


Builder = Callable[[], bytes]

DROPS: dict[str, tuple[str, Builder, frozenset[str]]] = {
    # the archive catalogue, under the daemon's default limits
    **{
        # members that name no annotation file fail detection before they are read
        f"archive_{name}": (f"{name}.zip", case.build, frozenset({case.kind, "unknown_format"}))
        for name, case in hostile.CASES.items()
        if not case.limits and case.kind is not None
    },
    "lying_sizes_record": ("lying.zip", lying_sizes_record, frozenset({_U})),
    "local_name_mismatch_record": ("mismatch.zip", local_name_mismatch_record, frozenset({_U})),
    "corrupt_stored_record": ("corrupt.zip", corrupt_stored_record, frozenset({_B})),
    "empty_zip": ("empty_zip.zip", lambda: _zip({}), frozenset({"unknown_format"})),
    "million_members_claimed": (
        "million.zip",
        million_members_claimed,
        frozenset({_U, _B}),
    ),
    "declared_total_bomb": ("declared_total_bomb.zip", declared_total_bomb, frozenset({_U})),
    "tiny_members_250k": ("tiny_members.zip", tiny_members, frozenset({_U})),
    "tfrecord_length_2_63": ("length.zip", length_2_63, frozenset({"record_too_large"})),
    "crc_flip_length": ("crc_length.zip", crc_flip_length, frozenset({"crc_mismatch"})),
    "crc_flip_data": ("crc_data.zip", crc_flip_data, frozenset({"crc_mismatch"})),
    "gzip_cut_short": ("cut.tfrecord", gzip_cut_short, frozenset({"bad_compression"})),
    "protobuf_garbage": ("garbage.zip", protobuf_garbage, frozenset({"bad_example"})),
    "mismatched_lists": ("lists.zip", mismatched_lists, frozenset({"schema"})),
    "nan_box": ("nan.zip", nan_box, frozenset({"schema"})),
    "inf_box": ("inf.zip", inf_box, frozenset({"schema"})),
    "negative_box": ("negative.zip", negative_box, frozenset({"schema"})),
    "billion_laughs_cvat": ("laughs_cvat.zip", billion_laughs_cvat, frozenset({"bad_annotation"})),
    "billion_laughs_voc": ("laughs_voc.zip", billion_laughs_voc, frozenset({"bad_annotation"})),
    "external_entity": ("xxe.zip", external_entity, frozenset({"bad_annotation"})),
    "deep_xml": ("deep.zip", deep_xml, frozenset({"limit_exceeded"})),
    "coco_wrong_types": ("coco_types.zip", coco_wrong_types, frozenset({"bad_annotation"})),
    "coco_wrong_bbox": ("coco_bbox.zip", coco_wrong_bbox, frozenset({"bad_annotation"})),
    "non_utf8_file_name": ("caf\udce9.zip", hostile.not_a_zip, frozenset({_B})),
}


def write_all(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for _, (name, build, _) in DROPS.items():
        path = outdir / name
        path.write_bytes(build())
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.stress.hostile_inputs OUTDIR")
    for p in write_all(Path(sys.argv[1])):
        print(p)
