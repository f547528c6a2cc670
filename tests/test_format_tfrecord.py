"""The TFRecord archive format (tfdrop.formats.tfrecord) through the one convert path.

Reading: ``*.tfrecord``, ``*.record`` and shard sets in a zip, a folder or a bare file; GZIP/ZLIB
detected; label maps beside the records; boxes without a label skipped with a note; broken
records named by member and record. Writing: ``<subset>.tfrecord`` or round-robin shards
``<subset>.tfrecord-0000i-of-0000N``, compression, no images, the label map in CVAT's layout.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from conftest import records_bytes
from tfdrop.archive import open_source
from tfdrop.codec.compression import Compression
from tfdrop.codec.example import decode_example
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.codec.proto import Example
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import (
    CrcMismatchError,
    FormatError,
    LimitExceededError,
    SchemaError,
    TfdropError,
    UnknownLabelError,
)
from tfdrop.formats import FORMATS, Notes, ReadOptions
from tfdrop.formats.tfrecord import subset_of
from tfdrop.limits import DEFAULT_LIMITS, Limits
from tfdrop.stream import RecordWriter, iter_records

LABELS = ["cat", "dog", "bird"]


def make_items(n: int, subset: str = "train") -> list[Item]:
    return [
        Item(
            name=f"{subset}_{i:03d}.jpg",
            subset=subset,
            width=64,
            height=48,
            image=b"\xff\xd8\xff\xda\x00\x02" + bytes([i % 256]) * 50 + b"\xff\xd9",
            image_format="jpeg",
            objects=tuple(
                Annotation(
                    label=LABELS[(i + k) % 3],
                    box=Box(0.125, 0.25, 0.5, 0.75),  # exact in float32
                    label_id=(i + k) % 3 + 1,
                )
                for k in range(i % 3)
            ),
        )
        for i in range(n)
    ]


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def read(
    path: Path, *, images: bool = True, limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Item], Notes, LabelMap | None]:
    notes = Notes()
    with open_source(path) as src:
        spec = FORMATS["tfrecord"]
        assert spec.open_reader is not None
        reader = spec.open_reader(src, ReadOptions(images=images, limits=limits), notes)
        return list(reader.items()), notes, reader.label_map()


def member_records(z: zipfile.ZipFile, name: str) -> list[Item]:
    with z.open(name) as f:
        return [decode_example(r) for r in iter_records(cast(BinaryIO, f))]


LM = LabelMap.from_names(LABELS)


@pytest.fixture
def source_zip(tmp_path: Path) -> Path:
    return make_zip(
        tmp_path / "src.zip",
        {
            "train.tfrecord": records_bytes(make_items(7)),
            "val.tfrecord": records_bytes(make_items(4, "val")),
            "label_map.pbtxt": format_label_map(LM).encode(),
        },
    )


# --- subset names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "subset"),
    [
        ("train.tfrecord", "train"),
        ("a/b/val.record", "val"),
        ("val.record-00001-of-00004", "val"),
        ("test.tfrecord-00000-of-00002", "test"),
        ("x.tfrecords", "x"),
        ("default.tfrecord.gz", "default"),
        ("coco_train.record-00003-of-00100", "coco_train"),
        (".tfrecord", "default"),
        ("train/cars.tfrecord", "train"),  # Roboflow: the subset is the folder
        ("export/valid/cars.tfrecord", "valid"),
        ("test/cars.tfrecord-00000-of-00002", "test"),
        ("val/train.tfrecord", "train"),  # a subset word as the file name wins
        ("records/cars.tfrecord", "cars"),  # a folder that is no subset word: the file
    ],
)
def test_subset_is_the_record_file_base_name(name: str, subset: str) -> None:
    assert subset_of(name) == subset


# --- writing ----------------------------------------------------------------------------------


def test_zip_to_zip_keeps_every_value_and_writes_the_cvat_label_map(
    source_zip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.zip"
    report = convert(source_zip, out, ConvertOptions())
    assert (report.items, report.subsets) == (11, {"train": 7, "val": 4})
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == ["label_map.pbtxt", "train.tfrecord", "val.tfrecord"]
        assert z.getinfo("train.tfrecord").compress_type == zipfile.ZIP_STORED
        assert z.read("label_map.pbtxt").decode() == format_label_map(LM)
        got = member_records(z, "train.tfrecord")
    want = make_items(7)
    assert [it.name for it in got] == [it.name for it in want]
    for g, w in zip(got, want, strict=True):
        assert g.image == w.image
        assert [(o.label, o.label_id, o.box) for o in g.objects] == [
            (o.label, o.label_id, o.box) for o in w.objects
        ]


def test_shards_are_named_zero_based_and_filled_round_robin(
    source_zip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.zip"
    convert(source_zip, out, ConvertOptions(shards=3))
    with zipfile.ZipFile(out) as z:
        names = sorted(z.namelist())
        assert names == [
            "label_map.pbtxt",
            *[f"train.tfrecord-{i:05d}-of-00003" for i in range(3)],
            *[f"val.tfrecord-{i:05d}-of-00003" for i in range(3)],
        ]
        for i in range(3):
            got = [it.name for it in member_records(z, f"train.tfrecord-{i:05d}-of-00003")]
            assert got == [f"train_{k:03d}.jpg" for k in range(i, 7, 3)]
        assert [it.name for it in member_records(z, "val.tfrecord-00002-of-00003")] == [
            "val_002.jpg"
        ]
    # and the shard set reads back whole, in order
    items, notes, _ = read(out)
    assert len(items) == 11
    assert not notes.warnings


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_compressed_members_read_back(
    source_zip: Path, tmp_path: Path, compression: Compression
) -> None:
    out = tmp_path / "out.zip"
    convert(source_zip, out, ConvertOptions(compression=compression))
    with zipfile.ZipFile(out) as z:
        head = z.read("train.tfrecord")[:2]
        assert head == (b"\x1f\x8b" if compression == "gzip" else b"\x78\x9c")
        assert len(member_records(z, "train.tfrecord")) == 7


def test_no_images_writes_an_empty_image_encoded(source_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    convert(source_zip, out, ConvertOptions(images=False))
    with zipfile.ZipFile(out) as z, z.open("train.tfrecord") as f:
        for rec in iter_records(cast(BinaryIO, f)):
            feats = Example.FromString(rec).features.feature  # type: ignore[attr-defined]
            assert list(feats["image/encoded"].bytes_list.value) == [b""]
            assert feats["image/height"].int64_list.value == [48]


def test_pinned_label_map_sets_ids_and_an_unknown_label_fails(
    source_zip: Path, tmp_path: Path
) -> None:
    pinned = LabelMap.from_names(["bird", "horse", "dog", "cat"])
    out = tmp_path / "out.zip"
    convert(source_zip, out, ConvertOptions(label_map=pinned))
    with zipfile.ZipFile(out) as z:
        got = member_records(z, "train.tfrecord")
        assert z.read("label_map.pbtxt").decode() == format_label_map(pinned)
    ids = {o.label: o.label_id for it in got for o in it.objects}
    assert ids == {"bird": 1, "dog": 3, "cat": 4}
    with pytest.raises(UnknownLabelError) as info:
        convert(source_zip, tmp_path / "bad.zip", ConvertOptions(label_map=LM.__class__()))
    assert "'cat'" in info.value.message or "'dog'" in info.value.message
    assert not (tmp_path / "bad.zip").exists()


# --- reading ----------------------------------------------------------------------------------


def test_record_files_and_shard_sets_in_a_zip_are_all_read(tmp_path: Path) -> None:
    items = make_items(6)
    src = make_zip(
        tmp_path / "in.zip",
        {
            "data/coco_train.record-00000-of-00002": records_bytes(items[:3]),
            "data/coco_train.record-00001-of-00002": records_bytes(items[3:], "gzip"),
            "val.record": records_bytes(make_items(2, "val"), "zlib"),
            "notes.txt": b"ignored",
        },
    )
    got, notes, lm = read(src)
    assert [(it.subset, it.name) for it in got] == [
        *[("coco_train", it.name) for it in items],
        ("val", "val_000.jpg"),
        ("val", "val_001.jpg"),
    ]
    assert lm is None
    assert not notes.warnings


def test_an_incomplete_shard_set_is_reported(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "in.zip", {"t.tfrecord-00001-of-00003": records_bytes(make_items(2))})
    got, notes, _ = read(src)
    assert len(got) == 2
    (warning,) = notes.warnings
    assert warning["code"] == "incomplete_shard_set"
    assert "t.tfrecord-00000-of-00003" in warning["message"]


def test_shards_with_the_suffix_after_the_numbers_are_one_subset(tmp_path: Path) -> None:
    # train-00000-of-00002.tfrecord was its own subset "train-00000-of-00002"
    items = make_items(4)
    src = make_zip(
        tmp_path / "in.zip",
        {
            "train-00001-of-00002.tfrecord": records_bytes(items[2:]),
            "train-00000-of-00002.tfrecord": records_bytes(items[:2]),
        },
    )
    got, notes, _ = read(src)
    assert [(it.subset, it.name) for it in got] == [("train", it.name) for it in items]
    assert not notes.warnings


def test_a_missing_shard_with_the_suffix_after_the_numbers_is_reported(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "in.zip", {"t-00000-of-00002.record": records_bytes(make_items(1))})
    _, notes, _ = read(src)
    (warning,) = notes.warnings
    assert warning["code"] == "incomplete_shard_set"
    assert "t-00001-of-00002.record" in warning["message"]


@pytest.mark.parametrize(
    "names",
    [
        ["t-00000-of-00002.tfrecord", "t-00001-of-00002.tfrecord", "t-00002-of-00003.tfrecord"],
        ["t-00005-of-00002.tfrecord"],
        ["t-00005-of-00002"],
    ],
)
def test_a_shard_set_that_does_not_add_up_is_refused(tmp_path: Path, names: list[str]) -> None:
    src = make_zip(tmp_path / "in.zip", {n: records_bytes(make_items(1)) for n in names})
    with pytest.raises(FormatError) as info:
        read(src)
    assert info.value.member == names[-1]


def test_a_roboflow_export_keeps_its_three_subsets_through_convert(tmp_path: Path) -> None:
    lm = format_label_map(LM).encode()
    src = make_zip(
        tmp_path / "roboflow.zip",
        {
            "train/cars.tfrecord": records_bytes(make_items(5)),
            "train/cars_label_map.pbtxt": lm,
            "valid/cars.tfrecord": records_bytes(make_items(3, "valid")),
            "valid/cars_label_map.pbtxt": lm,
            "test/cars.tfrecord": records_bytes(make_items(2, "test")),
            "test/cars_label_map.pbtxt": lm,
        },
    )
    report = convert(src, tmp_path / "out.zip", ConvertOptions(target_format="tfrecord"))
    assert report.subsets == {"train": 5, "valid": 3, "test": 2}
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert {"train.tfrecord", "valid.tfrecord", "test.tfrecord"} <= set(z.namelist())


def test_label_maps_of_two_folders_must_agree(tmp_path: Path) -> None:
    a = format_label_map(LabelMap.from_names(["cat", "dog"])).encode()
    b = format_label_map(LabelMap.from_names(["dog", "cat"])).encode()
    src = make_zip(
        tmp_path / "in.zip",
        {
            "train/train.tfrecord": records_bytes([]),
            "train/label_map.pbtxt": a,
            "val/val.tfrecord": records_bytes([]),
            "val/label_map.pbtxt": b,
        },
    )
    with pytest.raises(FormatError) as info:
        read(src)
    assert info.value.member == "val/label_map.pbtxt"


def test_a_bare_compressed_tfrecord_file_converts(tmp_path: Path) -> None:
    src = tmp_path / "default.tfrecord"
    src.write_bytes(records_bytes(make_items(3, "default"), "gzip"))
    report = convert(src, tmp_path / "out.zip", ConvertOptions())
    assert (report.items, report.subsets) == (3, {"default": 3})


def test_a_corrupt_record_names_the_member_and_record(tmp_path: Path) -> None:
    data = bytearray(records_bytes(make_items(5)))
    second = len(records_bytes(make_items(1)))
    data[second + 20] ^= 0x01  # inside the second record's data
    src = make_zip(tmp_path / "in.zip", {"train.tfrecord": bytes(data)})
    with pytest.raises(CrcMismatchError) as info:
        read(src)
    assert (info.value.member, info.value.record, info.value.offset) == (
        "train.tfrecord",
        1,
        second,
    )


def _record(**lists: list[int] | list[bytes]) -> bytes:
    e = Example()
    f = e.features.feature  # type: ignore[attr-defined]
    f["image/filename"].bytes_list.value.append(b"a.jpg")
    f["image/height"].int64_list.value.append(10)
    f["image/width"].int64_list.value.append(10)
    for k in ("xmin", "ymin"):
        f[f"image/object/bbox/{k}"].float_list.value.extend([0.1, 0.2])
    for k in ("xmax", "ymax"):
        f[f"image/object/bbox/{k}"].float_list.value.extend([0.5, 0.6])
    for k, v in lists.items():
        feat = f[f"image/object/class/{k}"]
        if isinstance(v[0], int):
            feat.int64_list.value.extend(v)
        else:
            feat.bytes_list.value.extend(v)
    return bytes(e.SerializeToString())


def _bare(tmp_path: Path, rec: bytes) -> Path:
    src = tmp_path / "in.tfrecord"
    buf = io.BytesIO()
    with RecordWriter(buf) as w:
        w.write(rec)
    src.write_bytes(buf.getvalue())
    return src


def test_boxes_with_neither_class_id_nor_text_are_skipped_with_a_note(tmp_path: Path) -> None:
    # Datumaro crashed on these; the whole archive used to fail here
    report = convert(_bare(tmp_path, _record()), tmp_path / "out.zip", ConvertOptions())
    assert (report.items, report.objects) == (1, 0)
    assert report.skipped == {"unlabeled": 2}


def test_a_box_with_id_0_and_empty_text_is_skipped_the_other_kept(tmp_path: Path) -> None:
    rec = _record(label=[0, 1], text=[b"", b"cat"])
    report = convert(_bare(tmp_path, rec), tmp_path / "out.zip", ConvertOptions())
    assert (report.items, report.objects, report.skipped) == (1, 1, {"unlabeled": 1})
    assert report.labels == {"cat": 1}


def test_class_ids_without_text_need_a_label_map(tmp_path: Path) -> None:
    src = _bare(tmp_path, _record(label=[3, 1]))
    # no map names the ids: a clear error, not an unreadable label_map.pbtxt blamed on tfdrop
    with pytest.raises(UnknownLabelError) as info:
        convert(src, tmp_path / "out.zip", ConvertOptions())
    assert info.value.obj == 0
    assert "class id 3" in info.value.message
    assert not (tmp_path / "out.zip").exists()
    report = convert(src, tmp_path / "out.zip", ConvertOptions(label_map=LM))
    assert report.labels == {"bird": 1, "cat": 1}
    # a label_map.pbtxt beside the records names them too
    zipped = make_zip(
        tmp_path / "in.zip",
        {"in.tfrecord": src.read_bytes(), "label_map.pbtxt": format_label_map(LM).encode()},
    )
    items, _, _ = read(zipped)
    assert [o.label for o in items[0].objects] == ["bird", "cat"]


def test_a_label_outside_the_archives_label_map_fails_the_archive(tmp_path: Path) -> None:
    src = make_zip(
        tmp_path / "in.zip",
        {
            "x.tfrecord": records_bytes(make_items(3)),
            "label_map.pbtxt": format_label_map(LabelMap.from_names(["cat"])).encode(),
        },
    )
    with pytest.raises(SchemaError) as info:
        read(src)
    assert info.value.member == "x.tfrecord"
    assert info.value.record == 1
    assert info.value.key == "image/object/class/text"


def test_reading_without_images_drops_them(source_zip: Path) -> None:
    items, _, _ = read(source_zip, images=False)
    assert all(it.image is None for it in items)
    assert items[0].width == 64


def test_a_bare_shard_file_converts_with_its_whole_set(tmp_path: Path) -> None:
    # validate and inspect read the set; convert once read only the named shard
    items = make_items(5)
    (tmp_path / "x.tfrecord-00000-of-00002").write_bytes(records_bytes(items[:3]))
    (tmp_path / "x.tfrecord-00001-of-00002").write_bytes(records_bytes(items[3:]))
    report = convert(tmp_path / "x.tfrecord-00001-of-00002", tmp_path / "out.zip", ConvertOptions())
    assert (report.items, report.subsets) == (5, {"x": 5})
    assert report.warnings == []


def test_a_bare_shard_with_the_suffix_after_the_numbers_converts_its_set(tmp_path: Path) -> None:
    items = make_items(5)
    (tmp_path / "x-00000-of-00002.tfrecord").write_bytes(records_bytes(items[:3]))
    (tmp_path / "x-00001-of-00002.tfrecord").write_bytes(records_bytes(items[3:]))
    report = convert(tmp_path / "x-00000-of-00002.tfrecord", tmp_path / "o.zip", ConvertOptions())
    assert (report.items, report.subsets) == (5, {"x": 5})


def test_a_bare_file_keeps_the_ids_of_the_label_map_beside_it(tmp_path: Path) -> None:
    # without it, ids were renumbered 1..N in order of appearance (dog 2 -> 1)
    lm = LabelMap.from_names(["bird", "dog", "cat"])
    (tmp_path / "label_map.pbtxt").write_text(format_label_map(lm))
    src = tmp_path / "val.tfrecord"
    item = Item(
        name="a.jpg",
        width=4,
        height=4,
        objects=(Annotation(label="dog", box=Box(0, 0, 1, 1), label_id=2),),
    )
    src.write_bytes(records_bytes([item]))
    report = convert(src, tmp_path / "out.zip", ConvertOptions())
    assert report.label_map == lm
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert member_records(z, "val.tfrecord")[0].objects[0].label_id == 2


# --- the job budget reaches the codec -------------------------------------------------


def _budget_zip(tmp_path: Path, kind: Compression = "none", n: int = 3) -> Path:
    items = make_items(n)
    return make_zip(tmp_path / f"b-{kind}.zip", {"train.tfrecord": records_bytes(items, kind)})


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        ("max_record_size", 100),
        ("max_values_per_feature", 1),
        ("max_objects_per_item", 1),
        ("max_image_bytes", 10),
        ("max_text_bytes", 5),
    ],
)
def test_reader_applies_the_budget_from_read_options(
    tmp_path: Path, limit: str, value: int
) -> None:
    src = _budget_zip(tmp_path)
    assert len(read(src)[0]) == 3
    with pytest.raises(TfdropError, match=f"{limit} is {value}") as info:
        read(src, limits=Limits().with_values({limit: value}))
    assert info.value.member == "train.tfrecord"


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_reader_caps_decompressed_stream_bytes_and_ratio(tmp_path: Path, kind: Compression) -> None:
    src = _budget_zip(tmp_path, kind, n=40)
    small = Limits(max_stream_bytes=1000)
    with pytest.raises(LimitExceededError, match="max_stream_bytes is 1000") as info:
        read(src, limits=small)
    assert info.value.member == "train.tfrecord"
    tight = Limits(max_ratio=1, ratio_floor=1)
    with pytest.raises(LimitExceededError, match="max_ratio is 1"):
        read(src, limits=tight)
