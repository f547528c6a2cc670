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
from tfhelpers import tf_records


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
    sha256 = {"image/key/sha256": tf.io.FixedLenFeature([], tf.string)}
    records = tf_records(tf, out, tmp_path, extra=sha256)
    assert {rec["subset"] for rec in records} == {"default"}  # all in default.tfrecord
    seen = {}
    for rec in records:
        seen[rec["image/filename"].decode()] = (
            int(rec["image/width"]),
            int(rec["image/height"]),
            rec["image/format"],
            hashlib.sha256(rec["image/encoded"]).hexdigest(),
            rec["image/key/sha256"].decode(),
            len(rec["image/object/bbox/xmin"]),
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
    # asked for explicitly: detection would refuse notes.txt as a possible annotation file
    options = ConvertOptions(source_format="images")
    report = convert(tmp_path / "cam.zip", tmp_path / "o.zip", options)
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


# --- detection never drops annotations ---------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        "labels/0001.txt",
        "annotations.json",
        "meta/boxes.xml",
        "cfg/dataset.yml",
        "export/_annotations.csv",
        "label_map.pbtxt",
    ],
)
def test_images_beside_unknown_annotation_files_are_not_detected_as_images(
    tmp_path: Path, extra: str
) -> None:
    camera_zip(tmp_path / "cam.zip", {extra: b"{}"})
    with open_source(tmp_path / "cam.zip") as src, pytest.raises(DetectError) as exc:
        detect_format(src.names(), archive="cam.zip")
    assert exc.value.member == extra
    assert extra in exc.value.message
    assert exc.value.kind == "unknown_format"


def test_a_coco_keypoints_export_is_read_as_coco_not_as_images(tmp_path: Path) -> None:
    # CVAT's "COCO Keypoints 1.0": it was published as an images zip with 0 objects
    member = "annotations/person_keypoints_default.json"
    camera_zip(tmp_path / "kp.zip", {member: b'{"images": [], "annotations": []}'})
    with open_source(tmp_path / "kp.zip") as src:
        assert detect_format(src.names()) == "coco"


def test_readmes_licenses_and_macos_litter_do_not_block_images(tmp_path: Path) -> None:
    camera_zip(tmp_path / "cam.zip", {"README.roboflow.txt": b"x", "LICENSE.txt": b"x",
                                      "__MACOSX/._a.json": b"x", "._b.json": b"x"})  # fmt: skip
    with open_source(tmp_path / "cam.zip") as src:
        assert detect_format(src.names()) == "images"
