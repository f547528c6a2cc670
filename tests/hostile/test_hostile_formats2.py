"""Hostile inputs of the formats (second round of the outside attack), through the real CLI.

Shard sets named with the suffix after the numbers, VOC without images, datasets of two formats
in one zip, duplicate VOC elements and YOLO names. Every input is built here.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from conftest import records_bytes
from hostile.harness import accepted, refused
from tfdrop.codec.model import Item


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _records(*names: str) -> bytes:
    return records_bytes([Item(name=n, width=4, height=4) for n in names])


def _report(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "out" / "out.report.json").read_text())
    return data


def test_a_shard_set_with_the_suffix_after_the_numbers_is_one_subset(tmp_path: Path) -> None:
    src = _zip(
        tmp_path / "sh.zip",
        {
            "train-00000-of-00002.tfrecord": _records("a.jpg"),
            "train-00001-of-00002.tfrecord": _records("b.jpg"),
        },
    )
    accepted(tmp_path, src, ("--to", "tfrecord"))
    assert _report(tmp_path)["subsets"] == {"train": 2}


def test_a_shard_set_with_mixed_counts_is_refused(tmp_path: Path) -> None:
    src = _zip(
        tmp_path / "sh_mixed.zip",
        {
            "train-00000-of-00002.tfrecord": _records("a.jpg"),
            "train-00001-of-00002.tfrecord": _records("b.jpg"),
            "train-00002-of-00003.tfrecord": _records("c.jpg"),
        },
    )
    refused(tmp_path, src, expect=("train-00002-of-00003.tfrecord", "mixes counts"))


def test_a_shard_index_past_its_count_is_refused(tmp_path: Path) -> None:
    src = _zip(tmp_path / "sh_bad.zip", {"train-00005-of-00002.tfrecord": _records("a.jpg")})
    refused(tmp_path, src, expect=("train-00005-of-00002.tfrecord", "below the count"))


VOC_XML = (
    "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height></size>"
    "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>"
    "</bndbox></object></annotation>"
)


def test_voc_without_images_converts_when_the_annotation_gives_the_size(tmp_path: Path) -> None:
    # CVAT "Pascal VOC 1.1" with save-images off: Annotations/, ImageSets/, labelmap.txt only
    src = _zip(
        tmp_path / "v_noimages.zip",
        {
            "Annotations/a.xml": VOC_XML.encode(),
            "ImageSets/Main/default.txt": b"a\n",
            "labelmap.txt": b"cat:::\n",
        },
    )
    accepted(tmp_path, src, ("--to", "tfrecord"))
    report = _report(tmp_path)
    assert report["items"] == 1
    assert [w["code"] for w in report["warnings"]] == ["missing_image"]


def test_yolo_names_listing_a_label_twice_are_refused_naming_the_line(tmp_path: Path) -> None:
    src = _zip(
        tmp_path / "y_names_dup.zip",
        {
            "obj.names": b"cat\ndog\ncat\n",
            "obj.data": b"classes = 3\ntrain = data/train.txt\nnames = data/obj.names\n",
            "obj_train_data/a.txt": b"2 0.5 0.5 0.2 0.2\n",
        },
    )
    refused(tmp_path, src, expect=("obj.names", "line 3", "'cat'"))


def test_voc_object_with_two_boxes_is_refused_naming_item_and_object(tmp_path: Path) -> None:
    box = "<bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>40</ymax></bndbox>"
    xml = VOC_XML.replace("</bndbox></object>", "</bndbox>" + box + "</object>")
    src = _zip(tmp_path / "v_twobox.zip", {"Annotations/a.xml": xml.encode()})
    refused(
        tmp_path,
        src,
        ("--to", "tfrecord", "--no-images"),
        expect=("item a.jpg", "object 0", "two <bndbox>"),
    )


def _voc_and_yolo(tmp_path: Path) -> Path:
    return _zip(
        tmp_path / "w_voc_and_yolo.zip",
        {
            "Annotations/a.xml": VOC_XML.encode(),
            "obj.names": b"dog\n",
            "obj.data": b"classes = 1\ntrain = data/train.txt\nnames = data/obj.names\n",
            "obj_train_data/b.txt": b"0 0.5 0.5 0.2 0.2\n",
            "data/train.txt": b"data/obj_train_data/b.jpg\n",
            "images.meta": b"obj_train_data/b.jpg 48 64\n",
        },
    )


def test_a_zip_of_two_datasets_in_two_formats_is_refused_naming_both(tmp_path: Path) -> None:
    refused(
        tmp_path,
        _voc_and_yolo(tmp_path),
        ("--to", "tfrecord", "--no-images"),
        expect=("voc, yolo", "--from"),
    )


def test_a_zip_of_two_datasets_converts_the_one_named_with_from(tmp_path: Path) -> None:
    accepted(
        tmp_path, _voc_and_yolo(tmp_path), ("--to", "tfrecord", "--from", "voc", "--no-images")
    )
    assert _report(tmp_path)["items"] == 1
