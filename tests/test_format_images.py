"""The ``images`` format: a zip of camera images becomes one record per image, bytes unchanged."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from tfdrop.archive import open_source
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import DetectError, FormatError
from tfdrop.formats import FORMATS, Notes, ReadOptions, detect_format
from tfdrop.formats.images import ImagesReader


def encoded(fmt: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def camera_zip(path: Path, extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    members = {
        "cam1/0001.jpg": encoded("JPEG", (64, 48)),
        "cam1/night/0002.JPG": encoded("JPEG", (32, 24)),
        "0003.png": encoded("PNG", (17, 9)),
    } | (extra or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return members


def test_three_images_become_records_with_header_sizes_and_unchanged_bytes(
    tf: ModuleType, tmp_path: Path
) -> None:
    members = camera_zip(tmp_path / "cam.zip")
    out = tmp_path / "out.zip"
    report = convert(tmp_path / "cam.zip", out, ConvertOptions(target_format="tfrecord"))
    assert (report.source_format, report.items, report.objects) == ("images", 3, 0)
    with zipfile.ZipFile(out) as zf:
        (tmp_path / "default.tfrecord").write_bytes(zf.read("default.tfrecord"))
    desc = {
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/key/sha256": tf.io.FixedLenFeature([], tf.string),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    }
    seen = {}
    for raw in tf.data.TFRecordDataset(str(tmp_path / "default.tfrecord")):
        ex = tf.io.parse_single_example(raw, desc)
        name = ex["image/filename"].numpy().decode()
        data = ex["image/encoded"].numpy()
        seen[name] = (
            int(ex["image/width"]),
            int(ex["image/height"]),
            ex["image/format"].numpy(),
            hashlib.sha256(data).hexdigest(),
            ex["image/key/sha256"].numpy().decode(),
            len(ex["image/object/bbox/xmin"].values),
        )
    sha = {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}
    assert seen == {
        "cam1/0001.jpg": (64, 48, b"jpeg", sha["cam1/0001.jpg"], sha["cam1/0001.jpg"], 0),
        "cam1/night/0002.JPG": (
            32, 24, b"jpeg", sha["cam1/night/0002.JPG"], sha["cam1/night/0002.JPG"], 0),
        "0003.png": (17, 9, b"png", sha["0003.png"], sha["0003.png"], 0),
    }  # fmt: skip


def test_non_image_members_are_listed_as_warnings(tmp_path: Path) -> None:
    camera_zip(tmp_path / "cam.zip", {"notes.txt": b"hello", "__MACOSX/._0003.png": b"x"})
    report = convert(tmp_path / "cam.zip", tmp_path / "o.zip", ConvertOptions())
    assert report.items == 3
    assert report.warning_counts == {"not_an_image": 2}
    assert {w["member"] for w in report.warnings} == {"notes.txt", "__MACOSX/._0003.png"}


def test_without_images_sizes_still_come_from_the_header(tmp_path: Path) -> None:
    camera_zip(tmp_path / "cam.zip")
    with open_source(tmp_path / "cam.zip") as src:
        items = list(ImagesReader(src, ReadOptions(images=False), Notes()).items())
    assert [(i.name, i.width, i.height, i.image) for i in items] == [
        ("cam1/0001.jpg", 64, 48, None),
        ("cam1/night/0002.JPG", 32, 24, None),
        ("0003.png", 17, 9, None),
    ]
    assert {i.subset for i in items} == {"default"}


def test_zip_without_images_is_an_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("readme.txt", "no pictures")
    with pytest.raises(DetectError):
        convert(tmp_path / "t.zip", tmp_path / "o.zip", ConvertOptions())
    with pytest.raises(FormatError, match="no image files found") as err:
        convert(tmp_path / "t.zip", tmp_path / "o.zip", ConvertOptions(source_format="images"))
    assert err.value.archive == str(tmp_path / "t.zip")


def test_a_broken_image_names_its_member(tmp_path: Path) -> None:
    # Last in the zip: the failure comes mid-stream, after records were written.
    camera_zip(tmp_path / "cam.zip", {"bad.jpg": b"\xff\xd8\xff not really"})
    with pytest.raises(FormatError, match="not a readable image") as err:
        convert(tmp_path / "cam.zip", tmp_path / "o.zip", ConvertOptions())
    assert err.value.member == "bad.jpg"


def test_detection_scores_low_so_annotation_formats_win() -> None:
    assert FORMATS["images"].detect(["a.jpg", "b.txt"]) == 10
    assert FORMATS["images"].detect(["a.txt"]) == 0
    assert FORMATS["images"].open_writer is None
    assert detect_format(["a.jpg", "b.png"]) == "images"
    assert detect_format(["Annotations/a.xml", "JPEGImages/a.jpg"]) == "voc"
