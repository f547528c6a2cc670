"""Hostile TFRecords: bombs, malformed frames and Examples, through the real CLI.

Every input is built here: compressed bombs are streamed through ``zlib.compressobj`` with the
CRC extended chunk by chunk, so a 120 MB record costs the test a few MB. Each case runs
``tfdrop convert`` (to VOC) or ``tfdrop validate`` under the harness's 1 GiB address-space cap
and asserts a clean refusal naming the input, or a clean acceptance.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import google_crc32c
import pytest

from hostile.harness import accepted, refused
from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record, masked_crc32c
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.wire import varint
from tfdrop.stream import RecordWriter

XMIN = b"image/object/bbox/xmin"


def ld(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + varint(len(body)) + body


def entry(key: bytes, feature: bytes) -> bytes:
    return ld(0x0A, ld(0x0A, key) + ld(0x12, feature))


def example(*entries: bytes) -> bytes:
    return ld(0x0A, b"".join(entries))


def ints(*values: int) -> bytes:
    return ld(0x1A, ld(0x0A, b"".join(varint(v) for v in values)))


def texts(*values: bytes) -> bytes:
    return ld(0x0A, b"".join(ld(0x0A, v) for v in values))


def good_item(name: str = "a.jpg") -> Item:
    box = Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.6))
    image = b"\xff\xd8\xff\xda\x00\x02img\xff\xd9"  # start of image, of scan, end of image
    return Item(name=name, width=8, height=6, image=image, objects=(box,))


def framed(*records: bytes, kind: str = "none") -> bytes:
    buf = io.BytesIO()
    with RecordWriter(buf, compression=kind) as w:  # type: ignore[arg-type]
        for rec in records:
            w.write(rec)
    return buf.getvalue()


def float_bomb(kind: str, n: int) -> bytes:
    """One framed Example whose xmin holds ``n`` zero floats, compressed without holding it."""
    packed = 4 * n
    flist_head = b"\x0a" + varint(packed)
    feat_head = b"\x12" + varint(len(flist_head) + packed)
    val_len = len(feat_head) + len(flist_head) + packed
    entry_body = ld(0x0A, XMIN) + b"\x12" + varint(val_len)
    entry_head = b"\x0a" + varint(len(entry_body) + val_len)
    feats_len = len(entry_head) + len(entry_body) + val_len
    prefix = b"\x0a" + varint(feats_len) + entry_head + entry_body + feat_head + flist_head
    length = struct.pack("<Q", len(prefix) + packed)
    header = length + struct.pack("<I", masked_crc32c(length))
    c = zlib.compressobj(9, zlib.DEFLATED, 31 if kind == "gzip" else 15)
    out = [c.compress(header + prefix)]
    crc = google_crc32c.value(prefix)
    zero = bytes(1 << 20)
    left = packed
    while left:
        chunk = zero[: min(left, len(zero))]
        crc = google_crc32c.extend(crc, chunk)
        out.append(c.compress(chunk))
        left -= len(chunk)
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    out += [c.compress(struct.pack("<I", masked)), c.flush()]
    return b"".join(out)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    return src


# --- compressed bombs ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_compressed_float_bomb_stops_at_max_ratio(tmp_path: Path, kind: str) -> None:
    # 30 M floats: a 120 MB record (under max_record_size) in ~120 KB
    src = write(tmp_path, f"bomb.{kind}.tfrecord", float_bomb(kind, 30_000_000))
    assert len(src.read_bytes()) < 200_000
    refused(tmp_path, src, ("--to", "voc"), expect=("max_ratio",))
    refused(tmp_path, src, (), command="validate", expect=("max_ratio",))


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_a_60m_float_bomb_is_refused_before_the_record_is_buffered(
    tmp_path: Path, kind: str
) -> None:
    # the reproduction: 60 M xmin floats, 228 KB; the 240 MB record is over max_record_size
    src = write(tmp_path, f"bomb60.{kind}.tfrecord", float_bomb(kind, 60_000_000))
    run = refused(tmp_path, src, ("--to", "voc"), expect=("max_record_size",))
    assert run.peak_rss < 300 << 20
    refused(tmp_path, src, (), command="validate", expect=("max_record_size",))


def test_plain_record_with_too_many_values_is_refused_naming_the_key(tmp_path: Path) -> None:
    rec = example(entry(XMIN, ld(0x12, ld(0x0A, bytes(4 * 100_001)))))
    src = write(tmp_path, "many.tfrecord", framed(rec))
    refused(tmp_path, src, ("--to", "voc"), expect=("max_values_per_feature", "xmin"))
    refused(tmp_path, src, (), command="validate", expect=("max_values_per_feature",))


def test_unpacked_int_list_over_the_cap_is_counted_before_protobuf_builds_it(
    tmp_path: Path,
) -> None:
    # non-canonical (unpacked varints): the fast path hands it to protobuf; counted first
    body = b"\x08\x01" * 150_000
    rec = example(entry(b"image/object/class/label", ld(0x1A, body)))
    src = write(tmp_path, "unpacked.tfrecord", framed(rec, kind="gzip"))
    refused(tmp_path, src, ("--to", "voc"), expect=("max_values_per_feature", "class/label"))


def test_many_tiny_gzip_members_are_read_not_refused(tmp_path: Path) -> None:
    # 5,000 one-record gzip members: TF and gzip read concatenated members
    members = [framed(encode_example(good_item(f"{i}.jpg")), kind="gzip") for i in range(5000)]
    src = write(tmp_path, "members.tfrecord", b"".join(members))
    accepted(tmp_path, src, ("--to", "tfrecord"))


# --- malformed frames -----------------------------------------------------------------------


def test_huge_length_with_a_valid_length_crc_is_refused(tmp_path: Path) -> None:
    length = struct.pack("<Q", 2**63)
    src = write(tmp_path, "huge.tfrecord", length + struct.pack("<I", masked_crc32c(length)))
    refused(tmp_path, src, ("--to", "voc"), expect=("max_record_size",))
    refused(tmp_path, src, (), command="validate", expect=("max_record_size",))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("truncated-gzip", framed(encode_example(good_item()), kind="gzip")[:-7]),
        ("garbage-after-zlib", framed(encode_example(good_item()), kind="zlib") + b"junk"),
        ("corrupt-deflate", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 40),
        ("zlib-header-only", b"\x78\x9c"),
        ("short-header", b"\x05\x00\x00"),
        ("flipped-data-crc", framed(b"abc")[:-1] + b"\x00"),
    ],
)
def test_broken_streams_are_refused_by_convert_and_validate(
    tmp_path: Path, name: str, data: bytes
) -> None:
    src = write(tmp_path, f"{name}.tfrecord", data)
    refused(tmp_path, src, ("--to", "voc"))
    refused(tmp_path, src, (), command="validate")


# --- malformed Examples -----------------------------------------------------------------------

_H, _W, _F = b"image/height", b"image/width", b"image/filename"
HOSTILE_EXAMPLES = {
    "not-protobuf": b"\xff" * 64,
    "huge-varint-length": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "negative-length": b"\x0a" + varint(-1),
    "eleven-byte-varint": example(entry(_H, ld(0x1A, ld(0x0A, b"\xff" * 10 + b"\x01")))),
    "packed-run-past-record": example(entry(XMIN, b"\x12\x06\x0a\x7f" + bytes(4))),
    "wrong-wire-type-key": ld(0x0A, b"\x08\x01"),
    "nested-garbage": example(entry(_H, ld(0x1A, ld(0x0A, ld(0x0A, ld(0x0A, b"\xff")))))),
    "group-field": ld(0x0A, b"\x0b\x0c"),
    "two-heights": example(entry(_H, ints(4, 5)), entry(_W, ints(8)), entry(_F, texts(b"a"))),
    "two-filenames": example(entry(_H, ints(4)), entry(_W, ints(8)), entry(_F, texts(b"a", b"b"))),
    "empty-height": example(entry(_H, ints()), entry(_W, ints(8))),
    "float-height": example(entry(_H, ld(0x12, ld(0x0A, bytes(4)))), entry(_W, ints(8))),
    "negative-width": example(entry(_H, ints(4)), entry(_W, ints(-5))),
    "filename-not-utf8": example(entry(_H, ints(4)), entry(_W, ints(8)), entry(_F, texts(b"\xff"))),
    "key-not-utf8": example(entry(b"\xff\xfe", ints(1)), entry(_H, ints(4)), entry(_W, ints(8))),
    "xmin-only": example(
        entry(_H, ints(4)), entry(_W, ints(8)), entry(XMIN, ld(0x12, ld(0x0A, bytes(4))))
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_EXAMPLES))
def test_hostile_examples_are_refused_by_convert_and_validate(tmp_path: Path, name: str) -> None:
    src = write(tmp_path, f"{name}.tfrecord", encode_record(HOSTILE_EXAMPLES[name]))
    refused(tmp_path, src, ("--to", "voc"))
    refused(tmp_path, src, (), command="validate")


def test_hostile_record_in_a_shard_set_names_the_shard(tmp_path: Path) -> None:
    good = framed(encode_example(good_item()))
    (tmp_path / "s.tfrecord-00000-of-00002").write_bytes(good)
    bad = tmp_path / "s.tfrecord-00001-of-00002"
    bad.write_bytes(framed(HOSTILE_EXAMPLES["two-heights"], kind="zlib"))
    run = refused(tmp_path, tmp_path / "s.tfrecord-00000-of-00002", (), command="validate")
    assert "s.tfrecord-00001-of-00002" in run.stderr


# Layouts protobuf reads one way and TensorFlow's own parser another (or refuses): convert
# reads them as protobuf does, validate refuses them (it passes only what both read alike).
_NAMED = entry(_F, texts(b"a.jpg")) + entry(_W, ints(8))
AMBIGUOUS_EXAMPLES = {
    "height-twice": example(entry(_H, ints(4)), entry(_H, ints(5)), _NAMED),
    "feature-with-two-lists": example(entry(_H, texts(b"x") + ints(7)), _NAMED),
    "key-twice-in-an-entry": example(
        ld(0x0A, ld(0x0A, b"x") + ld(0x0A, _H) + ld(0x12, ints(7))), _NAMED
    ),
    "height-in-two-packed-runs": example(
        entry(_H, ld(0x1A, ld(0x0A, varint(7)) + ld(0x0A, b""))), _NAMED
    ),
}


@pytest.mark.parametrize("name", sorted(AMBIGUOUS_EXAMPLES))
def test_ambiguous_layouts_convert_as_protobuf_reads_them_and_fail_validate(
    tmp_path: Path, name: str
) -> None:
    src = write(tmp_path, f"{name}.tfrecord", encode_record(AMBIGUOUS_EXAMPLES[name]))
    refused(tmp_path, src, (), command="validate", expect=("canonical",))
    accepted(tmp_path, src, ("--to", "tfrecord"))


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_bomb_inside_a_stored_zip_is_refused_naming_the_member(tmp_path: Path, kind: str) -> None:
    # stored: the zip layer sees 1:1; the TFRecord stream's own ratio cap must catch it
    import zipfile

    src = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as z:
        z.writestr("train.tfrecord", float_bomb(kind, 30_000_000))
        z.writestr("label_map.pbtxt", "item {\n  id: 1\n  name: 'cat'\n}\n")
    run = refused(tmp_path, src, ("--to", "voc"), expect=("max_ratio", "train.tfrecord"))
    assert run.peak_rss < 300 << 20
    refused(tmp_path, src, (), command="validate", expect=("max_ratio", "train.tfrecord"))


@pytest.mark.parametrize("target", ["voc", "coco", "yolo", "cvat"])
@pytest.mark.parametrize("name", ["", "../x.jpg", "/abs.jpg", "sub/"])
def test_an_item_name_no_file_can_carry_is_refused_naming_the_input_not_the_output(
    tmp_path: Path, target: str, name: str
) -> None:
    from conftest import records_bytes
    from tfdrop.codec.model import Annotation, Box, Item

    item = Item(
        name=name,
        width=10,
        height=10,
        image_format="jpeg",
        objects=(Annotation(label="cat", label_id=1, box=Box(0.1, 0.1, 0.5, 0.5)),),
    )
    src = tmp_path / "names.tfrecord"
    src.write_bytes(records_bytes([item]))
    run = refused(tmp_path, src, ("--to", target, "--no-images"), expect=("cannot name a file",))
    assert ".tmp" not in run.stderr


@pytest.mark.parametrize("target", ["voc", "coco", "cvat", "yolo"])
def test_two_items_with_one_file_name_are_refused_naming_the_input_and_item(
    tmp_path: Path, target: str
) -> None:
    # found by the outside attack: the error named tfdrop's temporary output file
    from conftest import records_bytes
    from daemon_support import png

    box = Box(0.1, 0.1, 0.5, 0.5)
    items = [
        Item(name="x.png", width=16, height=16, image=png(i), image_format="png",
             objects=(Annotation(label="cat", label_id=1, box=box),))
        for i in range(2)
    ]  # fmt: skip
    src = tmp_path / "twice.tfrecord"
    src.write_bytes(records_bytes(items))
    run = refused(tmp_path, src, ("--to", target), expect=("item x.png",))
    assert ".tmp" not in run.stderr


@pytest.mark.parametrize("target", ["voc", "coco", "yolo", "cvat"])
def test_an_empty_tfrecord_converts_to_an_empty_archive(tmp_path: Path, target: str) -> None:
    # found by the outside attack: the read-back of the empty output said "bug"
    src = tmp_path / "empty.tfrecord"
    src.write_bytes(b"")
    accepted(tmp_path, src, ("--to", target))


@pytest.mark.parametrize("target", ["voc", "cvat", "yolo"])
def test_ten_thousand_equal_boxes_convert_though_their_text_deflates_past_max_ratio(
    tmp_path: Path, target: str
) -> None:
    # found by the outside attack: the read-back applied the input's ratio cap to our output
    from conftest import records_bytes

    box = Box(0.1, 0.1, 0.2, 0.2)
    item = Item(
        name="a.jpg", width=100, height=100, image_format="jpeg",
        objects=tuple(Annotation(label="cat", label_id=1, box=box) for _ in range(10_000)),
    )  # fmt: skip
    src = tmp_path / "boxes.tfrecord"
    src.write_bytes(records_bytes([item]))
    accepted(tmp_path, src, ("--to", target, "--no-images"))
