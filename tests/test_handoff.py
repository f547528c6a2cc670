"""The hand-off to training (tfdrop.handoff): the report's num_classes, counts per label per
subset, shard globs and pipeline.config ``input_reader`` block, and ``inspect --summary``.

The block is parsed with protobuf's text_format against the OD API's InputReader /
TrainEvalPipelineConfig fields as codec/proto.py declares them (a misspelled field fails, so
the check bites); globs are matched with fnmatch against the names the archive really holds;
the counts are compared with the archive read back through tfdrop's own reader.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from conftest import numerical_mask_records, records_bytes, tfdrop
from daemon_support import Daemon, png, wait_until, write_config
from tfdrop.archive import open_source
from tfdrop.codec.example import encode_example
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import Annotation, Box, Item, LabelMap, Point
from tfdrop.codec.proto import InputReader, TrainEvalPipelineConfig
from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FORMATS, Notes, ReadOptions
from tfdrop.handoff import Tally, assign, record_globs, summarize
from tfdrop.shards import role_of
from tfdrop.stream import RecordWriter

LABELS = ("cat", "dog", "bird")
PNG_MASKS = 2  # InstanceMaskType.PNG_MASKS in TF models' input_reader.proto


def _item(subset: str, i: int, labels: list[str]) -> Item:
    return Item(
        name=f"{subset}_{i:03d}.png",
        subset=subset,
        width=16,
        height=16,
        image=png(i),
        image_format="png",
        objects=tuple(
            Annotation(lb, Box(0.1, 0.1, 0.2 + 0.1 * k, 0.5), label_id=LABELS.index(lb) + 1)
            for k, lb in enumerate(labels)
        ),
    )


def _labels(i: int) -> list[str]:
    return [LABELS[(i + k) % (1 + i % 3)] for k in range(i % 4)]


def _source(path: Path, subsets: dict[str, int]) -> Path:
    """A TFRecord zip: ``<subset>.tfrecord`` with ``n`` items each (0 to 3 objects)."""
    with zipfile.ZipFile(path, "w") as zf:
        for subset, n in subsets.items():
            items = [_item(subset, i, _labels(i)) for i in range(n)]
            zf.writestr(f"{subset}.tfrecord", records_bytes(items))
        zf.writestr("label_map.pbtxt", format_label_map(LabelMap.from_names(list(LABELS))))
    return path


def _parse(block: str) -> Any:
    return text_format.Parse(block, TrainEvalPipelineConfig())


def _paths(reader: Message) -> list[str]:
    return list(reader.tf_record_input_reader.input_path)  # type: ignore[attr-defined]


def _convert(tmp_path: Path, subsets: dict[str, int], **options: Any) -> dict[str, Any]:
    src = _source(tmp_path / "src.zip", subsets)
    report = convert(src, tmp_path / "out.zip", ConvertOptions(**options))
    return report.to_dict()


def _names(archive: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()


def test_the_block_parses_against_the_declared_pipeline_messages(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 9, "val": 4})
    config = _parse(doc["input_reader"])
    train = config.train_input_reader
    assert train.label_map_path == "label_map.pbtxt"
    assert _paths(train) == ["train.tfrecord"]
    assert [_paths(r) for r in config.eval_input_reader] == [["val.tfrecord"]]
    (ev,) = config.eval_input_reader
    assert (ev.shuffle, ev.num_epochs) == (False, 1)
    assert not ev.HasField("name")  # one eval reader: the OD API's plain "eval" summaries
    assert not train.load_instance_masks
    assert not train.HasField("mask_type")
    assert not train.HasField("num_keypoints")
    assert doc["num_classes"] == 3
    # each reader alone is an InputReader, as pipeline.config's fields hold it
    text_format.Parse(text_format.MessageToString(train), InputReader())


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("load_instance_mask:", "load_instance_masks:"),
        ("PNG_MASK\n", "PNG_MASKS\n"),
        ("input_paths:", "input_path:"),
        ("tfrecord_input_reader {", "tf_record_input_reader {"),
        ("eval_input_readers {", "eval_input_reader {"),
    ],
)
def test_a_misspelled_field_or_value_fails_the_parse(
    tmp_path: Path, wrong: str, right: str
) -> None:
    block = _convert(tmp_path, {"train": 3, "val": 2}, masks=True)["input_reader"]
    _parse(block)
    assert right in block
    with pytest.raises(text_format.ParseError):
        _parse(block.replace(right, wrong, 1))


def test_masks_ask_for_png_masks_in_every_reader(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 5, "test": 2}, masks=True)
    config = _parse(doc["input_reader"])
    for reader in (config.train_input_reader, *config.eval_input_reader):
        assert reader.load_instance_masks is True
        assert reader.mask_type == PNG_MASKS
    assert len(config.eval_input_reader) == 1


def test_two_workers_report_the_masks_and_counts_of_one_process(tmp_path: Path) -> None:
    """VOC is read in work units by worker processes, which encode the records themselves."""
    src = tmp_path / "voc.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(140):
            objs = "".join(
                f"<object><name>{lb}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>9</xmax>"
                f"<ymax>12</ymax></bndbox></object>"
                for lb in _labels(i)
            )
            zf.writestr(
                f"Annotations/{i:04d}.xml",
                f"<annotation><filename>{i:04d}.png</filename><size><width>16</width>"
                f"<height>16</height></size>{objs}</annotation>",
            )
            zf.writestr(f"JPEGImages/{i:04d}.png", png(i))
        zf.writestr("ImageSets/Main/train.txt", "".join(f"{i:04d}\n" for i in range(100)))
        zf.writestr("ImageSets/Main/val.txt", "".join(f"{i:04d}\n" for i in range(100, 140)))
    # a pinned map: every label is known up front, so the workers encode every record
    pinned = LabelMap.from_names(list(LABELS))
    docs = [
        convert(
            src, tmp_path / f"o{j}.zip", ConvertOptions(label_map=pinned, masks=True, jobs=j)
        ).to_dict()
        for j in (1, 2)
    ]
    keys = ("num_classes", "labels_by_subset", "input_paths", "input_reader")
    assert [docs[0][k] for k in keys] == [docs[1][k] for k in keys]
    assert docs[1]["labels_by_subset"]["val"] == _read_counts(tmp_path / "o2.zip")[0]["val"]
    config = _parse(docs[1]["input_reader"])
    assert config.train_input_reader.mask_type == PNG_MASKS
    assert _paths(config.eval_input_reader[0]) == ["val.tfrecord"]


def test_the_shard_glob_matches_exactly_the_shards_written(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 11, "val": 3}, shards=4)
    names = _names(tmp_path / "out.zip")
    records = [n for n in names if n != "label_map.pbtxt"]
    assert len(records) == 8
    assert doc["input_paths"] == {
        "train": ["train.tfrecord-?????-of-00004"],
        "val": ["val.tfrecord-?????-of-00004"],
    }
    for subset, (pattern,) in doc["input_paths"].items():
        matched = sorted(n for n in names if fnmatchcase(n, pattern))
        assert matched == sorted(n for n in records if n.startswith(f"{subset}.tfrecord-"))
        assert len(matched) == 4
    config = _parse(doc["input_reader"])
    assert _paths(config.train_input_reader) == ["train.tfrecord-?????-of-00004"]


def test_globs_match_only_their_own_files_even_with_glob_characters_in_names() -> None:
    names = [
        "a[1]-00000-of-00002.tfrecord",
        "a[1]-00001-of-00002.tfrecord",
        "a1-00000-of-00002.tfrecord",
        "a1-00001-of-00002.tfrecord",
        "b*.tfrecord",
        "bx.tfrecord",
        "c.record-00000-of-00003",  # 2 of 3 shards: no glob, the names
        "c.record-00002-of-00003",
    ]
    globs = record_globs(names)
    assert globs["c"] == ["c.record-00000-of-00003", "c.record-00002-of-00003"]
    for subset, patterns in globs.items():
        matched = {n for n in names for p in patterns if fnmatchcase(n, p)}
        assert matched == {n for n in names if n.split("-0")[0].split(".")[0] == subset}
    assert globs["a[1]"] == ["a[[]1]-?????-of-00002.tfrecord"]


def test_train_and_val_get_one_reader_each_and_test_comes_last(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"test": 2, "valid": 3, "train2017": 4, "extra": 1})
    config = _parse(doc["input_reader"])
    assert _paths(config.train_input_reader) == ["train2017.tfrecord"]
    assert [_paths(r) for r in config.eval_input_reader] == [
        ["valid.tfrecord"],
        ["test.tfrecord"],
    ]
    assert [r.name for r in config.eval_input_reader] == ["valid", "test"]
    assert not config.train_input_reader.HasField("name")
    assert "# subset extra is in no reader" in doc["input_reader"]
    assert "extra.tfrecord" not in doc["input_reader"]


def test_the_subset_rule() -> None:
    assert [role_of(s) for s in ("train", "Training", "train_2017", "trainval")] == [
        "train",
        "train",
        "train",
        None,
    ]
    assert {role_of(s) for s in ("val", "validation", "valid", "test", "eval", "val2014")} == {
        "eval"
    }
    assert assign(["val"]) == (["val"], [], [])  # a lone subset trains, whatever its name
    assert assign(["default"]) == (["default"], [], [])
    assert assign(["test", "default", "val"]) == ([], ["val", "test"], ["default"])


def _read_counts(archive: Path) -> tuple[dict[str, dict[str, dict[str, int]]], int]:
    """Objects and images per label per subset, read back with tfdrop's TFRecord reader."""
    objects: dict[str, Counter[str]] = {}
    images: dict[str, Counter[str]] = {}
    with open_source(archive) as src:
        spec = FORMATS["tfrecord"]
        assert spec.open_reader is not None
        reader = spec.open_reader(src, ReadOptions(images=False), Notes())
        for item in reader.items():
            labels = [o.label for o in item.objects]
            objects.setdefault(item.subset, Counter()).update(labels)
            images.setdefault(item.subset, Counter()).update(set(labels))
        top = max(it.id for it in (reader.label_map() or LabelMap()).items)
    counts = {
        s: {lb: {"objects": n, "images": images[s][lb]} for lb, n in c.items()}
        for s, c in objects.items()
    }
    return counts, top


def test_the_report_counts_are_what_the_archive_holds(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 23, "val": 7}, shards=2)
    counts, top = _read_counts(tmp_path / "out.zip")
    assert doc["labels_by_subset"] == counts
    assert doc["num_classes"] == top == 3
    assert sum(c["objects"] for s in counts.values() for c in s.values()) == doc["objects"]


def test_the_cli_report_json_carries_the_hand_off(tmp_path: Path) -> None:
    src = _source(tmp_path / "src.zip", {"train": 6, "val": 2})
    out = tmp_path / "o.zip"
    proc = tfdrop("convert", src, "--to", "tfrecord", "--shards", "2", "-o", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "o.report.json").read_text())
    assert doc["input_paths"]["train"] == ["train.tfrecord-?????-of-00002"]
    _parse(doc["input_reader"])


def test_the_daemon_report_json_carries_the_hand_off(tmp_path: Path) -> None:
    pipeline = {"name": "m", "drop": "in", "output": "out", "shards": 3, "masks": True}
    daemon = Daemon(write_config(tmp_path / "t.toml", [pipeline]), tmp_path / "d.log")
    try:
        daemon.wait_event("daemon_ready")
        _source(tmp_path / "in" / "drop.zip", {"train": 5, "val": 3})
        daemon.wait_event("archive_published")
    finally:
        assert daemon.stop() == 0
    report = wait_until((tmp_path / "out" / "drop.report.json").read_text)
    doc = json.loads(report)
    names = _names(tmp_path / "out" / "drop.zip")
    config = _parse(doc["input_reader"])
    (pattern,) = _paths(config.train_input_reader)
    assert [n for n in names if fnmatchcase(n, pattern)] == [
        f"train.tfrecord-0000{i}-of-00003" for i in range(3)
    ]
    assert config.eval_input_reader[0].mask_type == PNG_MASKS
    assert doc["labels_by_subset"] == _read_counts(tmp_path / "out" / "drop.zip")[0]


def test_keypoints_set_num_keypoints_and_uneven_counts_are_named() -> None:
    def obj(k: int) -> Annotation:
        pts = tuple(Point(0.1 * i, 0.2, 2, f"p{i}") for i in range(k))
        return Annotation("person", Box(0, 0, 1, 1), label_id=1, keypoints=pts)

    tally = Tally()
    tally.add_item(Item("a.jpg", subset="train", objects=(obj(17), obj(17))))
    summary = summarize(tally, None, ["train.tfrecord"])
    assert summary.input_reader is not None
    assert _parse(summary.input_reader).train_input_reader.num_keypoints == 17
    assert "keypoints" not in summary.input_reader.replace("num_keypoints", "")
    tally.add_item(Item("b.jpg", subset="train", objects=(obj(4),)))
    uneven = summarize(tally, None, ["train.tfrecord"]).input_reader
    assert uneven is not None
    assert "objects carry 4, 17 keypoints" in uneven
    assert _parse(uneven).train_input_reader.num_keypoints == 17


def test_many_boxes_in_one_image_raise_max_number_of_boxes() -> None:
    tally = Tally()
    boxes = tuple(Annotation("x", Box(0, 0, 1, 1), label_id=1) for _ in range(130))
    tally.add_item(Item("a.jpg", objects=boxes))
    summary = summarize(tally, None, ["default.tfrecord"])
    assert summary.input_reader is not None
    assert "max_number_of_boxes: 130" in summary.input_reader
    _parse(summary.input_reader)
    few = Tally()
    few.add_item(Item("a.jpg", objects=boxes[:100]))
    assert "max_number_of_boxes" not in (summarize(few, None, ["d.tfrecord"]).input_reader or "")


def test_compressed_output_is_flagged_in_the_block(tmp_path: Path) -> None:
    block = _convert(tmp_path, {"train": 3}, compression="gzip")["input_reader"]
    assert "gzip-compressed" in block
    assert "--compression none" in block
    _parse(block)


def test_a_target_that_is_not_tfrecord_has_counts_but_no_reader(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 6, "val": 2}, target_format="coco")
    assert doc["input_reader"] is None
    assert doc["input_paths"] == {}
    assert doc["num_classes"] == 3
    assert set(doc["labels_by_subset"]) == {"train", "val"}


def test_inspect_summary_of_a_bare_shard_set_reads_the_whole_set(tmp_path: Path) -> None:
    items = [_item("train", i, _labels(i)) for i in range(9)]
    for shard in range(3):
        with RecordWriter((tmp_path / f"train-0000{shard}-of-00003.record").open("wb")) as w:
            for it in items[shard::3]:
                w.write(encode_example(it))
    proc = tfdrop("inspect", "--summary", "--json", tmp_path / "train-00001-of-00003.record")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["items"] == 9
    assert doc["input_paths"] == {"train": ["train-?????-of-00003.record"]}
    assert _paths(_parse(doc["input_reader"]).train_input_reader) == ["train-?????-of-00003.record"]
    text = tfdrop("inspect", "--summary", tmp_path / "train-00000-of-00003.record").stdout
    assert "num_classes: 3" in text
    assert "train_input_reader {" in text


def test_inspect_summary_of_a_voc_zip_shows_what_convert_would_write(tmp_path: Path) -> None:
    doc = _convert(tmp_path, {"train": 4, "val": 2}, target_format="voc")
    proc = tfdrop("inspect", "--summary", "--json", tmp_path / "out.zip")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["labels_by_subset"] == doc["labels_by_subset"]
    assert got["input_paths"] == {"train": ["train.tfrecord"], "val": ["val.tfrecord"]}
    assert "as tfdrop convert --to tfrecord writes this voc archive" in got["input_reader"]
    _parse(got["input_reader"])


def test_inspect_summary_counts_no_more_labels_than_the_budget(tmp_path: Path) -> None:
    items = [
        Item(
            f"{i}.png",
            width=8,
            height=8,
            objects=(Annotation(f"label{i}", Box(0, 0, 1, 1), label_id=i + 1),),
        )
        for i in range(5)
    ]
    path = tmp_path / "many.tfrecord"
    path.write_bytes(records_bytes(items))
    proc = tfdrop("inspect", "--summary", path, "--limit", "max_labels=3")
    assert proc.returncode == 1
    assert "max_labels" in proc.stderr
    assert tfdrop("inspect", "--summary", path).returncode == 0


def test_inspect_summary_of_garbage_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.tfrecord"
    bad.write_bytes(b"\x01" * 40)
    proc = tfdrop("inspect", "--summary", bad)
    assert proc.returncode == 1
    assert "x.tfrecord" in proc.stderr


# --- the attack on the hand-off ------------------------------------------------------------

NUMERICAL_MASKS = 1  # InstanceMaskType.NUMERICAL_MASKS in TF models' input_reader.proto
CAR_MAP = 'item {\n  name: "car",\n  id: 1,\n  display_name: "car"\n}\n'


def _car(name: str = "a.png", label_id: int = 1) -> bytes:
    obj = Annotation("car", Box(0.1, 0.1, 0.5, 0.5), label_id=label_id)
    it = Item(name=name, width=16, height=16, image=png(1), image_format="png", objects=(obj,))
    return records_bytes([it])


def _summary(path: Path) -> dict[str, Any]:
    proc = tfdrop("inspect", path, "--summary", "--json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_the_block_names_the_label_map_the_archive_holds(tmp_path: Path) -> None:
    robo = tmp_path / "robo.zip"  # Roboflow: one map per subset folder
    with zipfile.ZipFile(robo, "w") as zf:
        for s in ("test", "train", "valid"):
            zf.writestr(f"{s}/cars.tfrecord", _car())
            zf.writestr(f"{s}/cars_label_map.pbtxt", CAR_MAP)
    config = _parse(_summary(robo)["input_reader"])
    for reader in (config.train_input_reader, *config.eval_input_reader):
        assert reader.label_map_path == "train/cars_label_map.pbtxt"
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zf:
        zf.writestr("data/train.tfrecord", _car())
        zf.writestr("data/label_map.pbtxt", CAR_MAP)
    assert _parse(_summary(nested)["input_reader"]).train_input_reader.label_map_path == (
        "data/label_map.pbtxt"
    )


def test_an_archive_without_a_label_map_is_told_to_write_one(tmp_path: Path) -> None:
    bare = tmp_path / "train.tfrecord"
    bare.write_bytes(_car())
    block = _summary(bare)["input_reader"]
    assert "# the archive holds no label map: write label_map.pbtxt beside the records" in block
    assert _parse(block).train_input_reader.label_map_path == "label_map.pbtxt"
    # the conversion's report names the label map its own archive holds
    doc = _convert(tmp_path, {"train": 2})
    assert _parse(doc["input_reader"]).train_input_reader.label_map_path == "label_map.pbtxt"
    assert "no label map" not in doc["input_reader"]


def test_every_compressed_record_file_is_named(tmp_path: Path) -> None:
    src = tmp_path / "gz.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a_train.tfrecord", _car())  # sorts first, plain
        zf.writestr("val.tfrecord", records_bytes([_item("val", 0, ["cat"])], "gzip"))
        zf.writestr("test.tfrecord", records_bytes([_item("test", 0, ["cat"])], "zlib"))
    block = _summary(src)["input_reader"]
    assert "compressed record files: test.tfrecord (zlib), val.tfrecord (gzip):" in block
    assert "a_train.tfrecord (" not in block


def test_numerical_masks_ask_for_numerical_masks(tmp_path: Path) -> None:
    src = tmp_path / "num.tfrecord"
    src.write_bytes(numerical_mask_records())
    train = _parse(_summary(src)["input_reader"]).train_input_reader
    assert train.load_instance_masks is True
    assert train.mask_type == NUMERICAL_MASKS


def test_a_class_id_over_int32_is_an_error_of_summary_and_a_problem_of_validate(
    tmp_path: Path,
) -> None:
    src = tmp_path / "train.tfrecord"
    src.write_bytes(_car(label_id=2**40))
    proc = tfdrop("inspect", src, "--summary")
    assert proc.returncode == 1
    assert "class id 1099511627776 is over 2147483647" in proc.stderr
    assert "item a.png" in proc.stderr
    proc = tfdrop("validate", src)
    assert proc.returncode == 1
    assert "object 0, image/object/class/label: class id 1099511627776 is over" in proc.stdout
    src.write_bytes(_car(label_id=2**31 - 1))
    assert tfdrop("validate", src).returncode == 0
    assert _summary(src)["num_classes"] == 2**31 - 1


def test_a_backslash_in_a_record_name_is_escaped_for_tf_glob(tmp_path: Path) -> None:
    assert record_globs(["val\\x.tfrecord"]) == {"val": ["val[\\\\]x.tfrecord"]}
    assert fnmatchcase("val\\x.tfrecord", "val[\\\\]x.tfrecord")
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "train.tfrecord").write_bytes(_car())
    (folder / "val\\x.tfrecord").write_bytes(_car("b.png"))
    paths = _summary(folder)["input_paths"]
    assert paths["val"] == ["val[\\\\]x.tfrecord"]


@pytest.mark.interop
def test_tf_glob_matches_each_odd_name_exactly(tf: ModuleType, tmp_path: Path) -> None:
    names = ["val\\x.tfrecord", "val[1].tfrecord", "val*.tfrecord", "dev\\[x].tfrecord"]
    for n in names:
        (tmp_path / n).write_bytes(_car())
    (tmp_path / "valx.tfrecord").write_bytes(_car())
    for subset, patterns in _summary(tmp_path)["input_paths"].items():
        for p in patterns:
            got = [Path(m).name for m in tf.io.gfile.glob(str(tmp_path / p))]
            assert len(got) == 1, (subset, p, got)
