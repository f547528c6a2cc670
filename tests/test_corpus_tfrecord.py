"""The real TFRecords in ``../shared/corpus`` read value by value.

Datumaro's ``tf_detection_api_dataset`` (train/val/test + label_map.pbtxt; the same files in the
openvinotoolkit and cvat-ai repositories) and Roboflow's ``tfrecord`` export (one label map per
subset folder, records without images). Expected values were written by hand after looking at
the files with ``tfdrop inspect``. Datumaro's train record holds a box with class id 0 and empty
text (a box without a label): the tfrecord reader skips it with a report note, and
``tfdrop validate`` reports it with record, offset, object and key.

Skipped when the corpus is absent, failed when absent under ``CI=true`` (conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import require_corpus
from tfdrop.archive import open_source
from tfdrop.codec.example import decode_example, encode_example
from tfdrop.codec.model import Box, Item
from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FORMATS, Notes, ReadOptions
from tfdrop.stream import iter_records_path

pytestmark = pytest.mark.corpus

DATUMARO_REPOS = ["openvinotoolkit__datumaro", "cvat-ai__datumaro"]
# SHA-256 of the three embedded JPEGs (631 bytes each)
SHA = {
    "1.jpg": "eb5c12b69c6fcf75f1ee9bcbe455308fd4692d317a49aeedad1652f2f29d1781",
    "2.jpg": "470660ffd73cbc770b05202bae0c2cbe67d1759d739bbb54e25cf4434621f4ff",
    "3.jpg": "17416d4d99028f966dcccbeeda4589e24aaa0a568b0e0302d67ab74b7f068056",
}


def datumaro(repo: str) -> Path:
    return require_corpus(repo, "tests", "assets", "tf_detection_api_dataset")


def roboflow() -> Path:
    return require_corpus(
        "openvinotoolkit__datumaro", "tests", "assets", "roboflow_dataset", "tfrecord"
    )


def read_folder(path: Path) -> tuple[list[Item], Notes, list[str]]:
    notes = Notes()
    with open_source(path) as src:
        spec = FORMATS["tfrecord"]
        assert spec.open_reader is not None
        reader = spec.open_reader(src, ReadOptions(), notes)
        items = list(reader.items())
        labels = list(reader.labels())
    return items, notes, labels


def tfdrop(*args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", *map(str, args)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# --- Datumaro ---------------------------------------------------------------------------------


@pytest.mark.parametrize("repo", DATUMARO_REPOS)
def test_datumaro_records_decode_value_by_value(repo: str) -> None:
    base = datumaro(repo)
    (train,) = list(iter_records_path(base / "train.tfrecord"))
    item = decode_example(train, subset="train")
    assert (item.name, item.source_id, item.width, item.height) == ("1.jpg", "1", 16, 16)
    assert item.image_format == "jpeg"
    assert item.image is not None
    assert len(item.image) == 631
    assert item.image[:2] == b"\xff\xd8"  # a JPEG, embedded unchanged
    assert hashlib.sha256(item.image).hexdigest() == SHA["1.jpg"]
    assert item.sha256 == ""  # Datumaro writes no image/key/sha256
    assert [(o.label, o.label_id, o.box) for o in item.objects] == [
        ("label_2", 3, Box(0.0, 0.25, 0.25, 0.75)),
        ("label_3", 4, Box(0.0, 0.25, 0.25, 0.5)),
        ("", 0, Box(0.125, 0.25, 0.375, 0.5)),  # Datumaro's box without a label
    ]
    (val,) = list(iter_records_path(base / "val.tfrecord"))
    item = decode_example(val)
    assert (item.name, item.source_id, item.width, item.height) == ("2.jpg", "2", 8, 8)
    assert [(o.label, o.label_id, o.box) for o in item.objects] == [
        ("label_3", 4, Box(0.125, 0.25, 0.625, 0.5))
    ]
    (test,) = list(iter_records_path(base / "test.tfrecord"))
    item = decode_example(test)
    assert (item.name, item.source_id, item.width, item.height) == ("3.jpg", "3", 4, 5)
    assert item.objects == ()
    assert item.image is not None
    assert hashlib.sha256(item.image).hexdigest() == SHA["3.jpg"]


@pytest.mark.parametrize("repo", DATUMARO_REPOS)
def test_datumaro_folder_through_the_tfrecord_format_skips_the_unlabeled_box_with_a_note(
    repo: str,
) -> None:
    items, notes, labels = read_folder(datumaro(repo))
    assert labels == [f"label_{i}" for i in range(10)]
    by_name = {it.name: it for it in items}
    assert [(it.name, it.subset) for it in items] == [
        ("3.jpg", "test"),
        ("1.jpg", "train"),
        ("2.jpg", "val"),
    ]
    train = by_name["1.jpg"]
    assert [(o.label, o.label_id, o.box) for o in train.objects] == [
        ("label_2", 3, Box(0.0, 0.25, 0.25, 0.75)),
        ("label_3", 4, Box(0.0, 0.25, 0.25, 0.5)),
    ]
    assert dict(notes.skipped) == {"unlabeled": 1}
    (warning,) = notes.warnings
    assert warning["member"] == "train.tfrecord"
    assert warning["item"] == "1.jpg"
    assert "object 2" in warning["message"]
    for it in items:
        assert it.image is not None
        assert hashlib.sha256(it.image).hexdigest() == SHA[it.name]


@pytest.mark.parametrize("repo", DATUMARO_REPOS)
def test_validate_reports_the_unlabeled_box_with_record_offset_object_and_key(repo: str) -> None:
    base = datumaro(repo)
    proc = tfdrop("validate", base / "train.tfrecord")
    assert proc.returncode == 1
    line = proc.stdout.splitlines()[0]
    assert line.startswith(f"{base / 'train.tfrecord'}, record 0, offset 0, object 2, ")
    assert "image/object/class/label" in line
    assert "class id 0" in line
    proc = tfdrop("validate", "--json", base / "train.tfrecord")
    assert proc.returncode == 1
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    problem = rows[0]
    assert problem["file"] == str(base / "train.tfrecord")
    assert (problem["record"], problem["offset"], problem["object"]) == (0, 0, 2)
    assert problem["key"] == "image/object/class/label"
    assert rows[-1] == {"summary": {"valid": False, "files": 1, "records": 1, "problems": 1}}


def test_datumaro_val_and_test_records_are_valid() -> None:
    base = datumaro(DATUMARO_REPOS[0])
    for name in ("val.tfrecord", "test.tfrecord"):
        proc = tfdrop("validate", base / name)
        assert proc.returncode == 0, proc.stdout
        assert proc.stdout.strip().endswith("1 records in 1 files: valid")


@pytest.mark.parametrize("repo", DATUMARO_REPOS)
def test_datumaro_records_pass_through_unchanged(repo: str) -> None:
    for name in ("train", "val", "test"):
        for rec in iter_records_path(datumaro(repo) / f"{name}.tfrecord"):
            item = decode_example(rec)
            # the only change: the image is now keyed by its SHA-256
            sha = hashlib.sha256(item.image).hexdigest() if item.image else ""
            assert decode_example(encode_example(item)) == replace(item, sha256=sha)


def test_datumaro_folder_converts_to_a_cvat_tfrecord_zip(tmp_path: Path) -> None:
    out = tmp_path / "datumaro.zip"
    report = convert(datumaro(DATUMARO_REPOS[0]), out, ConvertOptions())
    assert (report.items, report.objects) == (3, 3)
    assert report.subsets == {"test": 1, "train": 1, "val": 1}
    assert report.skipped == {"unlabeled": 1}
    assert [(it.id, it.name) for it in report.label_map.items] == [
        (i + 1, f"label_{i}") for i in range(10)
    ]
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == [
            "label_map.pbtxt",
            "test.tfrecord",
            "train.tfrecord",
            "val.tfrecord",
        ]
        assert z.read("label_map.pbtxt").decode().startswith("item {\n\tid: 1\n\tname: 'label_0'")
    items, notes, _ = read_folder(out)
    assert not notes.warnings  # the written archive is clean
    assert {it.name: len(it.objects) for it in items} == {"1.jpg": 2, "2.jpg": 1, "3.jpg": 0}
    for it in items:
        assert it.image is not None
        assert hashlib.sha256(it.image).hexdigest() == SHA[it.name]  # images unchanged
        assert it.sha256 == SHA[it.name]  # and now keyed


# --- Roboflow ---------------------------------------------------------------------------------


def test_roboflow_folder_reads_value_by_value() -> None:
    items, notes, labels = read_folder(roboflow())
    assert labels == ["label_0", "label_1"]
    assert not notes.warnings
    got = [
        (
            it.name,
            it.subset,
            it.width,
            it.height,
            it.image,
            it.image_format,
            [(o.label, o.label_id, o.box) for o in it.objects],
        )
        for it in items
    ]
    assert got == [
        (
            "train_001.jpg",
            "train",
            10,
            5,
            None,  # Roboflow's test export holds an empty image/encoded
            "",
            [
                (
                    "label_0",
                    1,
                    Box(0.20000000298023224, 0.20000000298023224, 0.5, 0.4000000059604645),
                )
            ],
        ),
        (
            "train_002.jpg",
            "train",
            10,
            5,
            None,
            "",
            [("label_1", 2, Box(0.0, 0.0, 0.20000000298023224, 0.800000011920929))],
        ),
        (
            "val_001.jpg",
            "val",
            10,
            5,
            None,
            "",
            [
                ("label_0", 1, Box(0.0, 0.0, 0.10000000149011612, 0.4000000059604645)),
                ("label_1", 2, Box(0.0, 0.0, 0.8999999761581421, 0.20000000298023224)),
            ],
        ),
    ]
    # float32 on the wire: 0.2 and 0.4 as Roboflow's float32 values
    assert items[0].objects[0].box.xmin == pytest.approx(0.2, abs=1e-7)


def test_roboflow_files_validate_and_inspect() -> None:
    base = roboflow()
    proc = tfdrop("validate", base / "train" / "train.tfrecord")
    assert proc.returncode == 0, proc.stdout
    assert "2 records in 1 files: valid" in proc.stdout
    proc = tfdrop("inspect", "--json", base / "val" / "val.tfrecord")
    assert proc.returncode == 0
    (row,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert row["filename"] == "val_001.jpg"
    assert row["subset"] == "val"
    assert [o["label"] for o in row["objects"]] == ["label_0", "label_1"]
    assert [o["id"] for o in row["objects"]] == [1, 2]
