"""YOLO reader and writer: Datumaro/cvat-ai assets value by value, both layouts, round trips
through TFRecord (read by real TensorFlow), and malformed inputs."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from conftest import require_corpus
from tfdrop.archive import open_source
from tfdrop.codec.model import Box, Item, LabelMap, LabelMapItem
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.formats import FORMATS, Notes, ReadOptions, detect_format
from tfdrop.formats.common.masks import decode_mask
from tfdrop.formats.yolo import detect, open_reader
from tfdrop.formats.yolo.lines import f32, format_row, parse_row
from tfdrop.limits import Limits
from tfhelpers import tf_records_by_name

ASSETS = ("tests", "assets", "yolo_dataset")

# Datumaro's asset 1.txt on a 15x10 image (hand-computed: corner = centre -/+ size / 2; the
# first box's left edge is 0.133333 - 0.1333335 = -5e-7, clipped to 0 as rounding)
EXPECTED = [
    ("label_2", 0.0, 0.3 - 0.1, 0.133333 + 0.1333335, 0.3 + 0.1),
    ("label_4", 0.266667 - 0.0666665, 0.45 - 0.15, 0.266667 + 0.0666665, 0.45 + 0.15),
]


def asset(repo: str, name: str) -> Path:
    return require_corpus(repo, *ASSETS, name)


def zip_tree(src: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(src).as_posix())
    return out


def make_zip(out: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return out


def image(width: int, height: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 40, 60)).save(buf, format=fmt)
    return buf.getvalue()


def read(
    path: Path, *, masks: bool = False, images: bool = True
) -> tuple[list[Item], list[str], Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = open_reader(src, ReadOptions(masks=masks, images=images), notes)
        return list(reader.items()), list(reader.labels()), notes


def assert_boxes(
    got: list[tuple[str, float, float, float, float]],
    expected: list[tuple[str, float, float, float, float]],
    abs: float = 1e-9,
) -> None:
    """Labels exactly, coordinates to ``abs`` (pytest.approx takes no nested tuples)."""
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1:] for g in got] == [pytest.approx(e[1:], abs=abs) for e in expected]


def boxes(item: Item) -> list[tuple[str, float, float, float, float]]:
    return [(o.label, o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax) for o in item.objects]


# --- the corpus assets, value by value -----------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("repo", "name", "subsets"),
    [
        ("cvat-ai__datumaro", "yolo", ["train"]),
        ("openvinotoolkit__datumaro", "strict", ["train"]),
        ("cvat-ai__datumaro", "yolov8_detection", ["train"]),
        ("cvat-ai__datumaro", "yolov8_detection_with_list_of_imgs", ["train"]),
        ("cvat-ai__datumaro", "yolov8_detection_with_list_of_names", ["train"]),
        ("cvat-ai__datumaro", "yolov8_detection_with_subset_txt", ["train"]),
        ("openvinotoolkit__datumaro", "labels", ["train", "val"]),
        ("openvinotoolkit__datumaro", "annotations", ["default"]),
    ],
)
def test_detection_assets_read_value_by_value(
    repo: str, name: str, subsets: list[str], tmp_path: Path
) -> None:
    src = zip_tree(asset(repo, name), tmp_path / "in.zip", prefix="export/")
    items, labels, notes = read(src)
    assert labels == [f"label_{i}" for i in range(10)]
    assert [(i.subset, i.name) for i in items] == [(s, "1.jpg") for s in subsets]
    for item in items:
        assert (item.width, item.height, item.image_format) == (15, 10, "jpeg")
        assert item.image == (asset(repo, name).rglob("1.jpg").__next__()).read_bytes()
        assert_boxes(boxes(item), EXPECTED, abs=1e-12)
    assert not notes.warnings


@pytest.mark.corpus
def test_segmentation_rows_become_bounding_boxes_and_keep_points(tmp_path: Path) -> None:
    src = asset("cvat-ai__datumaro", "yolov8_segmentation")
    items, _, notes = read(src)
    (item,) = items
    assert_boxes(boxes(item), [("label_2", 0.1, 0.1, 0.4, 0.5), ("label_4", 0.2, 0.15, 0.4, 0.75)])
    assert item.objects[0].polygon == pytest.approx((1.5, 1.0, 6.0, 1.0, 6.0, 5.0))
    assert notes.lossy == {"polygon_as_box": 2}


@pytest.mark.corpus
def test_segmentation_with_masks_gives_png_masks_of_the_polygon() -> None:
    items, _, notes = read(asset("cvat-ai__datumaro", "yolov8_segmentation"), masks=True)
    mask = items[0].objects[0].mask
    assert mask is not None
    w, h, bits = decode_mask(mask)
    assert (w, h) == (15, 10)
    assert 0 < sum(bits) < 15 * 10
    assert not notes.lossy


@pytest.mark.corpus
def test_oriented_boxes_become_their_bounding_box_clipped_with_a_warning() -> None:
    items, _, notes = read(asset("cvat-ai__datumaro", "yolov8_oriented_boxes"))
    assert_boxes(
        boxes(items[0]),
        [
            ("label_2", 0.013397, 0.151795, 0.319936, 0.648205),
            ("label_4", 0.242265, 0.0, 0.557735, 0.609808),  # corner y -0.009808 clipped
        ],
    )
    assert notes.warning_counts == {"box_clipped": 1}
    assert notes.warnings[0]["line"] == 2


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["yolov8_pose", "yolov8_pose_two_values_per_point"])
def test_pose_rows_keep_the_box_and_count_keypoints_as_lost(name: str) -> None:
    items, labels, notes = read(asset("cvat-ai__datumaro", name))
    assert labels == ["skeleton_label"]
    assert_boxes(boxes(items[0]), [("skeleton_label", *EXPECTED[0][1:])], abs=1e-12)
    assert notes.lossy == {"keypoints": 1}


@pytest.mark.corpus
def test_classification_layout_is_not_detected_as_yolo() -> None:
    src = asset("cvat-ai__datumaro", "yolov8_classification")
    with open_source(src) as s:
        assert detect(s.names()) == 0


@pytest.mark.corpus
def test_cvat_yolo_converts_to_tfrecord_that_tensorflow_reads(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = zip_tree(asset("cvat-ai__datumaro", "yolo"), tmp_path / "cvat.zip")
    with open_source(src) as s:
        assert detect_format(s.names()) == "yolo"
    report = convert(src, tmp_path / "out.zip", ConvertOptions())
    assert report.label_map.names[:3] == ["label_0", "label_1", "label_2"]
    assert report.label_map.id_of("label_2") == 3  # class index i -> id i + 1
    (rec,) = tf_records_by_name(tf, tmp_path / "out.zip", tmp_path).values()
    assert rec["subset"] == "train"
    assert (rec["image/width"], rec["image/height"]) == (15, 10)
    assert rec["image/object/class/label"] == [3, 5]
    assert rec["image/object/class/text"] == [b"label_2", b"label_4"]
    got = list(
        zip(
            rec["image/object/bbox/xmin"],
            rec["image/object/bbox/ymin"],
            rec["image/object/bbox/xmax"],
            rec["image/object/bbox/ymax"],
            strict=True,
        )
    )
    assert got == [tuple(f32(v) for v in e[1:]) for e in EXPECTED]


# --- round trips ------------------------------------------------------------------------------


def random_dataset(tmp: Path, n: int = 12, seed: int = 7) -> Path:
    """A CVAT-style YOLO zip: two subsets, JPEG and PNG, random boxes, an image without a
    label file and one with an empty label file."""
    rnd = random.Random(seed)
    names = ["cat", "dog", "traffic light"]
    members: dict[str, bytes | str] = {
        "obj.names": "\n".join(names) + "\n",
        "obj.data": "classes = 3\ntrain = data/train.txt\nvalid = data/valid.txt\n"
        "names = data/obj.names\nbackup = backup/\n",
    }
    lists: dict[str, list[str]] = {"train": [], "valid": []}
    for i in range(n):
        subset = "train" if i % 3 else "valid"
        ext, fmt = (".png", "PNG") if i % 4 == 0 else (".jpg", "JPEG")
        folder = f"obj_{subset}_data"
        members[f"{folder}/img{i}{ext}"] = image(rnd.randint(20, 640), rnd.randint(20, 480), fmt)
        lists[subset].append(f"data/{folder}/img{i}{ext}")
        if i == 5:
            continue  # no label file: an empty item
        rows = []
        for _ in range(0 if i == 6 else rnd.randint(1, 5)):
            w, h = rnd.random(), rnd.random()
            cx, cy = rnd.uniform(w / 2, 1 - w / 2), rnd.uniform(h / 2, 1 - h / 2)
            rows.append(f"{rnd.randrange(3)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        members[f"{folder}/img{i}.txt"] = "".join(rows)
    for subset, lines in lists.items():
        members[f"{subset}.txt"] = "\n".join(lines) + "\n"
    return make_zip(tmp / "random.zip", members)


def key(item: Item) -> tuple[str, str]:
    return (item.subset, item.name)


def f32_boxes(item: Item) -> list[tuple[str, float, float, float, float]]:
    return [(lbl, f32(a), f32(b), f32(c), f32(d)) for lbl, a, b, c, d in boxes(item)]


def test_yolo_to_tfrecord_to_yolo_keeps_items_boxes_and_labels(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = random_dataset(tmp_path)
    original, labels, _ = read(src)
    r1 = convert(src, tmp_path / "mid.zip", ConvertOptions())
    r2 = convert(tmp_path / "mid.zip", tmp_path / "back.zip", ConvertOptions(target_format="yolo"))
    assert r1.validated_items == r2.validated_items == 12
    back, back_labels, notes = read(tmp_path / "back.zip")
    assert back_labels == labels == ["cat", "dog", "traffic light"]
    assert sorted(map(key, back)) == sorted(map(key, original))
    by_key = {key(i): i for i in back}
    for item in original:
        other = by_key[key(item)]
        assert (other.width, other.height, other.image) == (item.width, item.height, item.image)
        assert f32_boxes(other) == f32_boxes(item)
    assert not by_key[("train", "img5.jpg")].objects
    assert not notes.warnings
    # TensorFlow reads every record of the intermediate archive with the seed's keys
    recs = tf_records_by_name(tf, tmp_path / "mid.zip", tmp_path)
    assert len(recs) == 12
    for item in original:
        rec = recs[f"{item.subset}/{item.name}"]
        assert rec["image/object/class/text"] == [o.label.encode() for o in item.objects]
        assert rec["image/object/class/label"] == [labels.index(o.label) + 1 for o in item.objects]
        assert rec["image/object/bbox/xmin"] == [f32(o.box.xmin) for o in item.objects]


def test_writer_text_is_short_and_reads_back_to_the_same_float32() -> None:
    rnd = random.Random(3)
    assert (
        format_row(2, Box(0.0, f32(0.2), f32(0.2666665), f32(0.4))) == "2 0.133333 0.3 0.266667 0.2"
    )
    for _ in range(3000):
        x0, x1 = sorted(f32(rnd.random()) for _ in range(2))
        y0, y1 = sorted(f32(rnd.choice([0.0, 1.0, rnd.random()])) for _ in range(2))
        row = parse_row(format_row(1, Box(x0, y0, x1, y1)), num_classes=2, member="m", line=1)
        assert row is not None
        assert not row.clipped
        assert [f32(v) for v in (row.box.xmin, row.box.ymin, row.box.xmax, row.box.ymax)] == [
            x0, y0, x1, y1
        ]  # fmt: skip


def test_written_layout_is_cvat_darknet(tmp_path: Path) -> None:
    src = random_dataset(tmp_path, n=4)
    convert(src, tmp_path / "mid.zip", ConvertOptions())
    convert(tmp_path / "mid.zip", tmp_path / "out.zip", ConvertOptions(target_format="yolo"))
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        names = set(zf.namelist())
        assert zf.read("obj.names") == b"cat\ndog\ntraffic light\n"
        data = zf.read("obj.data").decode()
        assert data.startswith("classes = 3\n")
        assert "train = data/train.txt\n" in data
        assert "valid = data/valid.txt\n" in data
        assert data.endswith("names = data/obj.names\nbackup = backup/\n")
        assert zf.read("valid.txt").decode().splitlines() == [
            "data/obj_valid_data/img0.png",
            "data/obj_valid_data/img3.jpg",
        ]
    assert {
        "obj_train_data/img1.jpg",
        "obj_train_data/img1.txt",
        "obj_valid_data/img0.png",
    } <= names
    assert "images.meta" not in names


def test_without_images_the_written_archive_carries_sizes_in_images_meta(tmp_path: Path) -> None:
    src = random_dataset(tmp_path, n=4)
    convert(src, tmp_path / "mid.zip", ConvertOptions())
    report = convert(
        tmp_path / "mid.zip",
        tmp_path / "out.zip",
        ConvertOptions(target_format="yolo", images=False),
    )
    assert report.validated_items == 4
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert not [n for n in zf.namelist() if n.endswith((".jpg", ".png"))]
    original = {key(i): i for i in read(src)[0]}
    for item in read(tmp_path / "out.zip")[0]:
        assert item.image is None
        assert (item.width, item.height) == (original[key(item)].width, original[key(item)].height)
        assert f32_boxes(item) == f32_boxes(original[key(item)])


def test_non_contiguous_label_ids_are_written_by_position_with_a_warning(tmp_path: Path) -> None:
    src = random_dataset(tmp_path, n=6)
    pinned = LabelMap(
        (LabelMapItem(2, "cat"), LabelMapItem(7, "dog"), LabelMapItem(9, "traffic light"))
    )
    convert(src, tmp_path / "mid.zip", ConvertOptions(label_map=pinned))
    report = convert(
        tmp_path / "mid.zip", tmp_path / "out.zip", ConvertOptions(target_format="yolo")
    )
    assert report.warning_counts.get("label_ids_renumbered") == 1
    assert report.lossy.get("label_id") == 3
    back = {key(i): i for i in read(tmp_path / "out.zip")[0]}
    for item in read(src)[0]:
        assert [o.label for o in back[key(item)].objects] == [o.label for o in item.objects]


def test_masks_and_flags_the_darknet_layout_cannot_hold_are_counted(tmp_path: Path) -> None:
    seg = make_zip(tmp_path / "seg.zip", {
        "data.yaml": "names: [a]\n",
        "images/train/x.jpg": image(20, 10),
        "labels/train/x.txt": "0 0.1 0.1 0.5 0.1 0.5 0.9\n",
    })  # fmt: skip
    convert(seg, tmp_path / "mid.zip", ConvertOptions(masks=True))
    report = convert(
        tmp_path / "mid.zip", tmp_path / "out.zip", ConvertOptions(target_format="yolo", masks=True)
    )
    assert report.lossy.get("mask") == 1
    (item,) = read(tmp_path / "out.zip")[0]
    assert_boxes(boxes(item), [("a", 0.1, 0.1, 0.5, 0.9)])


# --- the Ultralytics layout built by hand ------------------------------------------------------


def test_ultralytics_layout_with_flow_names_list_files_and_roboflow_paths(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "ultra.zip", {
        "ds/data.yaml": (
            "# Roboflow-style\npath: /content/datasets/ds  # absolute on the exporter's machine\n"
            "train: ../train/images\nval: val.txt\nnc: 2\n"
            "names: ['traffic light', \"it's\"]\n"
            "roboflow:\n  workspace: w\n  license: CC BY 4.0\n"
            "download: |\n  import os\n  names: [x]\n"
        ),
        "ds/train/images/a.jpg": image(100, 50),
        "ds/train/labels/a.txt": "1 0.5 0.5 0.2 0.4\n\n0 0.25 0.75 0.5 0.5\n",
        "ds/train/images/b.png": image(32, 32, "PNG"),  # no label file: empty item
        "ds/val.txt": "./images/val/c.jpg\n",
        "ds/images/val/c.jpg": image(40, 20),
        "ds/labels/val/c.txt": "0 0.5 0.5 1 1\n",
    })  # fmt: skip
    with open_source(src) as s:
        assert detect_format(s.names()) == "yolo"
    items, labels, notes = read(src)
    assert labels == ["traffic light", "it's"]
    assert [(i.subset, i.name, i.width, i.height, i.image_format) for i in items] == [
        ("train", "a.jpg", 100, 50, "jpeg"),
        ("train", "b.png", 32, 32, "png"),
        ("val", "c.jpg", 40, 20, "jpeg"),
    ]
    assert_boxes(
        boxes(items[0]), [("it's", 0.4, 0.3, 0.6, 0.7), ("traffic light", 0.0, 0.5, 0.5, 1.0)]
    )
    assert items[1].objects == ()
    assert boxes(items[2]) == [("traffic light", 0.0, 0.0, 1.0, 1.0)]
    assert not notes.warnings


def test_ultralytics_names_mapping_and_subset_folders_without_yaml_entries(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "u.zip", {
        "data.yaml": "names:\n  0: person\n  1: car\n",
        "images/train/sub/a.jpg": image(10, 10),
        "labels/train/sub/a.txt": "1 0.5 0.5 0.2 0.2\n",
        "images/val/b.jpg": image(10, 10),
    })  # fmt: skip
    items, labels, _ = read(src, images=False)
    assert labels == ["person", "car"]
    assert [(i.subset, i.name, i.image) for i in items] == [
        ("train", "sub/a.jpg", None),
        ("val", "b.jpg", None),
    ]
    assert [o.label for o in items[0].objects] == ["car"]


# --- malformed inputs ---------------------------------------------------------------------------


def darknet(tmp: Path, label_text: str, names: str = "a\nb\n", **extra: str) -> Path:
    members: dict[str, bytes | str] = {
        "obj.names": names,
        "obj.data": "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n",
        "train.txt": "data/obj_train_data/x.jpg\n",
        "obj_train_data/x.jpg": image(20, 10),
        "obj_train_data/x.txt": label_text,
    }
    members.update(extra)
    return make_zip(tmp / "bad.zip", members)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n", 2, "class index 2 is out of range"),
        ("-1 0.5 0.5 0.1 0.1\n", 1, "class index -1 is out of range"),
        ("0 0.5 0.5 0.1\n", 1, "line has 4 numbers"),
        ("0 0.5 0.5 0.1 0.1 0.3\n", 1, "line has 6 numbers"),
        ("0 nan 0.5 0.1 0.1\n", 1, "not finite"),
        ("0 0.5 0.5 -0.1 0.1\n", 1, "w = -0.1 is not a normalised value"),
        ("0 0.5 1.5 0.1 0.1\n", 1, "cy = 1.5 is not a normalised value"),
        ("0 0.5 0.5 0.1 abc\n", 1, "'abc' is not a number"),
        ("cat 0.5 0.5 0.1 0.1\n", 1, "class index 'cat' is not a whole number"),
    ],
)
def test_malformed_label_lines_are_errors_naming_member_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    with pytest.raises(FormatError, match=words) as info:
        read(darknet(tmp_path, text))
    assert info.value.member == "obj_train_data/x.txt"
    assert info.value.line == line
    assert info.value.item == "x.jpg"


def test_malformed_input_fails_convert_with_the_archive_named(tmp_path: Path) -> None:
    src = darknet(tmp_path, "5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(FormatError) as info:
        convert(src, tmp_path / "out.zip", ConvertOptions())
    assert info.value.archive == str(src)
    assert not (tmp_path / "out.zip").exists()


def test_missing_obj_names_is_an_error_naming_obj_data(tmp_path: Path) -> None:
    src = darknet(tmp_path, "0 0.5 0.5 0.1 0.1\n")
    with zipfile.ZipFile(src) as zf:
        kept = {n: zf.read(n) for n in zf.namelist() if n != "obj.names"}
    src = make_zip(tmp_path / "nonames.zip", kept)  # type: ignore[arg-type]
    with pytest.raises(FormatError, match=r"obj\.names named in obj\.data is not in the archive"):
        read(src)


def test_no_label_list_at_all_is_an_error(tmp_path: Path) -> None:
    src = make_zip(
        tmp_path / "n.zip", {"obj_train_data/x.jpg": image(5, 5), "x.txt": "0 .5 .5 .1 .1"}
    )
    with pytest.raises(FormatError, match="no YOLO label list found"):
        read(src)


def test_blank_line_inside_obj_names_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="blank line inside the label list") as info:
        read(darknet(tmp_path, "", names="a\n\nb\n"))
    assert (info.value.member, info.value.line) == ("obj.names", 2)


def test_image_missing_without_images_meta_is_an_error(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "noimg.zip", {
        "obj.names": "a\n", "obj.data": "train = data/train.txt\n",
        "train.txt": "data/obj_train_data/x.jpg\n", "obj_train_data/x.txt": "0 0.5 0.5 0.1 0.1\n",
    })  # fmt: skip
    with pytest.raises(FormatError, match="carry no image size") as info:
        read(src)
    assert info.value.item == "x.jpg"


def test_bad_data_yaml_is_an_error_with_its_line(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "y.zip", {
        "data.yaml": "train: images/train\nnames: [a, b\n", "labels/train/x.txt": "",
    })  # fmt: skip
    with pytest.raises(FormatError, match="not valid YAML") as info:
        read(src)
    assert info.value.member == "data.yaml"
    assert info.value.line is not None


def test_box_sticking_out_of_the_image_is_clipped_and_counted(tmp_path: Path) -> None:
    items, _, notes = read(darknet(tmp_path, "0 0.05 0.5 0.2 0.2\n"))
    assert_boxes(boxes(items[0]), [("a", 0.0, 0.4, 0.15, 0.6)])
    assert notes.warning_counts == {"box_clipped": 1}


def test_missing_obj_names_is_reported_by_convert_with_auto_detection(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "nonames.zip", {
        "obj.data": "classes = 1\ntrain = data/train.txt\nnames = data/obj.names\n",
        "train.txt": "data/obj_train_data/x.jpg\n",
        "obj_train_data/x.jpg": image(5, 5), "obj_train_data/x.txt": "0 0.5 0.5 0.1 0.1\n",
    })  # fmt: skip
    with pytest.raises(FormatError, match=r"obj\.names") as info:
        convert(src, tmp_path / "out.zip", ConvertOptions())
    assert info.value.member == "obj.data"


def test_absolute_paths_in_a_darknet_list_are_matched_by_their_tail(tmp_path: Path) -> None:
    listing = {"train.txt": "/home/me/darknet/data/obj_train_data/x.jpg\r\n"}
    src = darknet(tmp_path, "1 0.5 0.5 0.2 0.2\n", **listing)
    items, _, notes = read(src)
    assert [(i.subset, i.name, i.width, i.height) for i in items] == [("train", "x.jpg", 20, 10)]
    assert_boxes(boxes(items[0]), [("b", 0.4, 0.4, 0.6, 0.6)])
    assert not notes.warnings


def test_images_missing_from_the_list_are_still_read_with_a_warning(tmp_path: Path) -> None:
    src = darknet(tmp_path, "", **{"obj_train_data/y.txt": ""})
    with zipfile.ZipFile(src, "a") as zf:
        zf.writestr("obj_train_data/y.png", image(8, 8, "PNG"))
    items, _, notes = read(src)
    assert [i.name for i in items] == ["x.jpg", "y.png"]
    assert notes.warning_counts == {"unlisted_image": 1}


# --- the writer on items no YOLO reader produced -------------------------------------------------


def write_yolo(tmp: Path, items: list[Item], label_map: LabelMap) -> tuple[Path, Notes]:
    from tfdrop.archive import ZipSink
    from tfdrop.formats import WriteOptions
    from tfdrop.formats.yolo import open_writer

    notes = Notes()
    out = tmp / "w.zip"
    with ZipSink(out) as sink:
        writer = open_writer(sink, WriteOptions(workdir=tmp), notes)
        for item in items:
            writer.write(item)
        writer.close(label_map)
    return out, notes


def test_writer_gives_extensionless_names_the_image_extension_with_a_warning(
    tmp_path: Path,
) -> None:
    from tfdrop.codec.model import Annotation

    obj = Annotation("a", Box(0.25, 0.5, 0.75, 1.0), label_id=1, difficult=True)
    item = Item("frame_000001", "default", 16, 8, image(16, 8), "jpeg", objects=(obj,))
    out, notes = write_yolo(tmp_path, [item], LabelMap.from_names(["a"]))
    assert notes.warning_counts == {"image_renamed": 1}
    assert notes.lossy == {"difficult": 1}
    (back,) = read(out)[0]
    assert (back.subset, back.name, back.width, back.height) == (
        "default",
        "frame_000001.jpg",
        16,
        8,
    )
    assert boxes(back) == [("a", 0.25, 0.5, 0.75, 1.0)]


def test_writer_refuses_two_images_sharing_one_label_file(tmp_path: Path) -> None:
    a = Item("x.jpg", "train", 4, 4, image(4, 4), "jpeg")
    b = Item("x.png", "train", 4, 4, image(4, 4, "PNG"), "png")
    with pytest.raises(FormatError, match=r"share the label file obj_train_data/x\.txt"):
        write_yolo(tmp_path, [a, b], LabelMap.from_names(["a"]))


@pytest.mark.parametrize("subset", ["names", "my subset", "a=b"])
def test_writer_refuses_subset_names_obj_data_cannot_hold(tmp_path: Path, subset: str) -> None:
    item = Item("x.jpg", subset, 4, 4, image(4, 4), "jpeg")
    with pytest.raises(FormatError, match=r"cannot be a key of obj\.data"):
        write_yolo(tmp_path, [item], LabelMap.from_names(["a"]))


def test_writer_refuses_label_names_obj_names_cannot_hold(tmp_path: Path) -> None:
    item = Item("x.jpg", "train", 4, 4, image(4, 4), "jpeg")
    with pytest.raises(FormatError, match=r"cannot be written to obj\.names"):
        write_yolo(tmp_path, [item], LabelMap.from_names(["ok", "two\nlines"]))


def test_writer_clips_a_box_outside_the_image_with_a_warning(tmp_path: Path) -> None:
    from tfdrop.codec.model import Annotation

    obj = Annotation("a", Box(-0.25, 0.5, 1.5, 0.75), label_id=1)
    item = Item("x.jpg", "train", 8, 8, image(8, 8), "jpeg", objects=(obj,))
    out, notes = write_yolo(tmp_path, [item], LabelMap.from_names(["a"]))
    assert notes.warning_counts == {"box_clipped": 1}
    (back,) = read(out)[0]
    assert boxes(back) == [("a", 0.0, 0.5, 1.0, 0.75)]


def test_sparse_names_mapping_rejects_an_index_without_a_name(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "sparse.zip", {
        "data.yaml": "names: {0: a, 5: b}\n",
        "images/train/x.jpg": image(10, 10),
        "labels/train/x.txt": "5 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n",
    })  # fmt: skip
    with pytest.raises(FormatError, match="class index 3 has no name") as info:
        read(src)
    assert (info.value.member, info.value.line) == ("labels/train/x.txt", 2)


def test_yaml_alias_bomb_in_names_is_rejected_quickly(tmp_path: Path) -> None:
    levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    src = make_zip(tmp_path / "bomb.zip", {
        "data.yaml": "\n".join([*levels, "names: *a8", ""]),
        "labels/train/x.txt": "",
    })  # fmt: skip
    with pytest.raises(LimitExceededError) as exc:  # composing stops at the node budget
        read(src)
    assert (exc.value.limit, exc.value.member) == ("max_yaml_nodes", "data.yaml")


def test_ultralytics_list_lines_starting_dot_slash_are_relative_to_the_list_file(
    tmp_path: Path,
) -> None:
    src = make_zip(tmp_path / "lists.zip", {
        "data.yaml": "path: ds\ntrain: lists/train.txt\nnames: [a]\n",
        "ds/lists/train.txt": "./images/x.jpg\nimages/train/y.jpg\n",
        "ds/lists/images/x.jpg": image(6, 6),
        "ds/lists/labels/x.txt": "0 0.5 0.5 1 1\n",
        "ds/images/train/y.jpg": image(4, 4),
    })  # fmt: skip
    items, _, _ = read(src, images=False)
    assert [(i.name, i.width, len(i.objects)) for i in items] == [
        ("lists/images/x.jpg", 6, 1),
        ("y.jpg", 4, 0),
    ]


def test_labelimg_flat_folder_with_classes_txt_is_read(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "labelimg.zip", {
        "shots/classes.txt": "person\ncar\n",
        "shots/a.jpg": image(20, 10),
        "shots/a.txt": "1 0.5 0.5 0.5 0.5\n",
        "shots/b.jpg": image(20, 10),  # no label file: an empty item
    })  # fmt: skip
    with open_source(src) as s:
        assert detect_format(s.names()) == "yolo"
    items, labels, notes = read(src)
    assert labels == ["person", "car"]
    assert [(i.subset, i.name, len(i.objects)) for i in items] == [
        ("default", "a.jpg", 1),
        ("default", "b.jpg", 0),
    ]
    assert boxes(items[0]) == [("car", 0.25, 0.25, 0.75, 0.75)]
    assert not notes.warnings


def test_roboflow_darknet_export_reads_subsets_and_checks_label_lists_agree(
    tmp_path: Path,
) -> None:
    members: dict[str, bytes | str] = {
        "train/_darknet.labels": "a\nb\n",
        "train/x.jpg": image(10, 10),
        "train/x.txt": "0 0.5 0.5 0.2 0.2\n",
        "valid/_darknet.labels": "a\nb\n",
        "valid/y.jpg": image(10, 10),
        "valid/y.txt": "1 0.5 0.5 0.2 0.2\n",
    }
    items, labels, _ = read(make_zip(tmp_path / "rf.zip", members))
    assert labels == ["a", "b"]
    assert [(i.subset, i.name, [o.label for o in i.objects]) for i in items] == [
        ("train", "x.jpg", ["a"]),
        ("valid", "y.jpg", ["b"]),
    ]
    members["valid/_darknet.labels"] = "b\na\n"
    with pytest.raises(FormatError, match="label list differs") as info:
        read(make_zip(tmp_path / "rf2.zip", members))
    assert info.value.member == "valid/_darknet.labels"


def test_images_meta_quotes_names_with_spaces_as_datumaro_reads_them(tmp_path: Path) -> None:
    item = Item("my shot 1.jpg", "train", 30, 20, None, "jpeg")
    out, _ = write_yolo(tmp_path, [item], LabelMap.from_names(["a"]))
    with zipfile.ZipFile(out) as zf:
        assert zf.read("images.meta") == b"'my shot 1' 20 30\n"
    (back,) = read(out)[0]
    assert (back.name, back.width, back.height, back.image) == ("my shot 1.jpg", 30, 20, None)


# --- hardening ---------------------------------------------------------------------


def ultra(tmp: Path, yaml_text: str, label: str = "0 0.5 0.5 0.2 0.2\n") -> Path:
    members: dict[str, bytes | str] = {"data.yaml": yaml_text,
               "images/train/a.png": image(8, 8, "PNG"), "labels/train/a.txt": label}  # fmt: skip
    return make_zip(tmp / "u.zip", members)


def read_limited(path: Path, **caps: int) -> list[Item]:
    options = ReadOptions(images=False, limits=Limits().with_values(caps))
    with open_source(path) as src:
        return list(open_reader(src, options, Notes()).items())


ALIAS_BOMB = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("names: [a]\n" + ALIAS_BOMB + "kpt_shape: *i\n", "max_yaml_nodes"),
        ("names: [a]\nx: " + "[" * 50_000 + "]" * 50_000 + "\n", "max_depth"),
        ("names: [a]\nx: " + "{a: " * 70 + "1" + "}" * 70 + "\n", "max_depth"),
        ("names: [" + ", ".join(["n"] * 30) + "]\n", "max_labels"),
        ("names: [" + "a" * 100 + "]\n", "max_text_bytes"),
    ],
)
def test_data_yaml_bombs_are_limit_errors(tmp_path: Path, text: str, limit: str) -> None:
    with pytest.raises(LimitExceededError) as exc:
        read_limited(ultra(tmp_path, text), max_labels=20, max_text_bytes=64)
    assert (exc.value.limit, exc.value.member) == (limit, "data.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("names: {.inf: a}\n", "names key inf is not a class index"),
        ("names: {0.5: a}\n", "names key 0.5 is not a class index"),
        ("names: {true: a}\n", "names key True is not a class index"),
        ("names: {-1: a}\n", "negative"),
        ("names: {'0': a, 0: b}\n", "one class index twice"),
        ("names: [[1, 2]]\n", "name of class 0 is list"),
        ("names: [null]\n", "name of class 0 is NoneType"),
        ('names: ["a\\0b"]\n', "not a label name"),
        ('names: ["a\\nb"]\n', "not a label name"),
        ('names: ["a\\ud800"]\n', "not a label name"),
        ("names: [a]\nx: &x [*x]\n", "inside its own anchor"),
        ("names: [a]\nx: 2001-13-45\n", "a value cannot be read"),
        ("names: [a]\nx: 1" + "0" * 5000 + "\n", "a value cannot be read"),
        ("names: [a]\nkpt_shape: [[1], [2]]\n", "kpt_shape list is not"),
    ],
)
def test_odd_data_yaml_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message) as exc:
        read(ultra(tmp_path, text))
    assert exc.value.member == "data.yaml"


def test_huge_class_indices_in_names_keep_their_labels(tmp_path: Path) -> None:
    big = 10**20
    (item,) = read_limited(ultra(tmp_path, f"names: {{{big}: a}}\n", f"{big} 0.5 0.5 0.2 0.2\n"))
    assert [o.label for o in item.objects] == ["a"]


def test_a_class_index_too_large_for_a_label_id_renumbers_with_a_warning(tmp_path: Path) -> None:
    # class i gets label id i + 1, an int32 in TF's label map: 10**20 + 1 cannot be one
    big = 10**20
    notes = Notes()
    with open_source(ultra(tmp_path, f"names: {{0: b, {big}: a}}\n")) as s:
        assert open_reader(s, ReadOptions(images=False), notes).label_map() is None
    assert [w["code"] for w in notes.warnings] == ["label_ids_renumbered"]


def test_a_names_mapping_with_gaps_gives_class_i_the_id_i_plus_1(tmp_path: Path) -> None:
    # {0: a, 5: b, 2: c}: class 5 became id 4 (ids 1..N in index order)
    label = "5 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.1 0.1\n0 0.5 0.5 0.4 0.4\n"
    src = ultra(tmp_path, "names: {0: a, 5: b, 2: c}\n", label)
    with open_source(src) as s:
        lm = open_reader(s, ReadOptions(images=False), Notes()).label_map()
    assert lm is not None
    assert [(it.id, it.name) for it in lm.items] == [(1, "a"), (3, "c"), (6, "b")]
    out = tmp_path / "o.zip"
    report = convert(src, out, ConvertOptions())
    assert (report.label_map.id_of("b"), report.label_map.id_of("c")) == (6, 3)
    open_tf = FORMATS["tfrecord"].open_reader
    assert open_tf is not None
    with open_source(out) as s:
        (item,) = open_tf(s, ReadOptions(images=False), Notes()).items()
    assert sorted(o.label_id for o in item.objects) == [1, 3, 6]


@pytest.mark.parametrize(
    ("members", "where"),
    [
        ({"obj.names": "cat\ndog\ncat\n", "obj.data": "classes = 3\n"}, ("obj.names", 3)),
        ({"data.yaml": "names: {0: cat, 4: dog, 7: cat}\n"}, ("data.yaml", None)),
    ],
)
def test_a_label_named_twice_is_refused_naming_the_line(
    tmp_path: Path, members: dict[str, str], where: tuple[str, int | None]
) -> None:
    # cat twice: the two classes were merged silently
    src = make_zip(tmp_path / "dup.zip", {**members, "obj_train_data/a.txt": ""})
    with pytest.raises(FormatError, match="'cat'") as info:
        read(src)
    assert (info.value.member, info.value.line) == where


def test_a_line_of_a_million_numbers_is_refused_before_it_is_split(tmp_path: Path) -> None:
    rnd = random.Random(5)
    line = "0 " + " ".join(f"{rnd.random():.6f}" for _ in range(1_000_000)) + "\n"
    with pytest.raises(LimitExceededError) as exc:
        read(ultra(tmp_path, "names: [a]\n", line))
    assert (exc.value.limit, exc.value.member, exc.value.line) == (
        "max_values_per_feature", "labels/train/a.txt", 1)  # fmt: skip


@pytest.mark.parametrize(
    ("label", "caps", "limit"),
    [
        ("0 0.5 0.5 0.2 0.2\n" * 6, {"max_objects_per_item": 5}, "max_objects_per_item"),
        ("\r" * 6, {"max_objects_per_item": 5}, "max_objects_per_item"),
        ("0 0.5 0.5 0.2 0.2" + "0" * 70 + "\n" + "0 " * 3, {}, "max_number_length"),
        ("0" * 70 + " 0.5 0.5 0.2 0.2\n", {}, "max_number_length"),
    ],
)
def test_label_files_are_capped_in_lines_and_number_length(
    tmp_path: Path, label: str, caps: dict[str, int], limit: str
) -> None:
    with pytest.raises(LimitExceededError) as exc:
        read_limited(ultra(tmp_path, "names: [a]\n", label), **caps)
    assert exc.value.limit == limit


def test_list_file_lines_are_capped_across_subsets(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "d.zip", {
        "obj.data": "train = data/train.txt\nvalid = data/valid.txt\n", "obj.names": "a\n",
        "train.txt": "data/obj_train_data/x.jpg\n" * 3,
        "valid.txt": "data/obj_valid_data/x.jpg\n" * 3,
        "obj_train_data/x.jpg": image(4, 4), "obj_valid_data/x.jpg": image(4, 4),
    })  # fmt: skip
    assert len(read_limited(src, max_list_lines=6)) == 2  # duplicates are dropped
    with pytest.raises(LimitExceededError) as exc:
        read_limited(src, max_list_lines=5)
    assert (exc.value.limit, exc.value.member) == ("max_list_lines", "valid.txt")


def test_obj_names_and_images_meta_lines_are_capped(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "d.zip", {"obj.names": "ab\n" * 50, "obj_train_data/x.txt": "",
                                        "obj.data": "train = data/train.txt\n"})  # fmt: skip
    with pytest.raises(LimitExceededError) as exc:
        read_limited(src, max_labels=49)
    assert (exc.value.limit, exc.value.member) == ("max_labels", "obj.names")


@pytest.mark.parametrize("classes", ["²", "9" * 5000])
def test_odd_digits_in_obj_data_and_images_meta_are_not_tracebacks(
    tmp_path: Path, classes: str
) -> None:
    src = make_zip(tmp_path / "d.zip", {
        "obj.data": f"classes = {classes}\ntrain = data/train.txt\n", "obj.names": "a\n",
        "train.txt": "data/obj_train_data/x.jpg\n", "obj_train_data/x.txt": "0 0.5 0.5 1 1\n",
        "images.meta": f"obj_train_data/x {classes} 4\nx ² 4\n",
    })  # fmt: skip
    with pytest.raises(FormatError, match=r"images\.meta gives no size"):
        read(src)


def test_side_files_and_images_are_read_within_the_byte_budget(tmp_path: Path) -> None:
    src = ultra(tmp_path, "names: [a]\n" + "#" * 200 + "\n")
    with pytest.raises(LimitExceededError) as exc:
        read_limited(src, max_file_bytes=100)
    assert (exc.value.limit, exc.value.member) == ("max_file_bytes", "data.yaml")
    options = ReadOptions(limits=Limits(max_image_bytes=10))
    with open_source(src) as s, pytest.raises(LimitExceededError) as exc:
        list(open_reader(s, options, Notes()).items())
    assert (exc.value.limit, exc.value.member) == ("max_image_bytes", "images/train/a.png")


def test_data_yaml_paths_outside_the_archive_read_nothing_outside(tmp_path: Path) -> None:
    src = ultra(tmp_path, "path: /etc\ntrain: ../../../../etc\nnames: [a]\n")
    with pytest.raises(FormatError, match="neither a folder, a list file nor an image"):
        read(src)


@pytest.mark.parametrize("label", ["0 0.5_0 0.5 0.2 0.2\n", "\u0660 0.5 0.5 0.2 0.2\n",
                                   "0 0.5 \u0660.5 0.2 0.2\n"])  # fmt: skip
def test_numbers_python_reads_but_yolo_never_writes_are_refused(tmp_path: Path, label: str) -> None:
    with pytest.raises(FormatError, match=r"not a (number|whole number)") as exc:
        read(ultra(tmp_path, "names: [a]\n", label))
    assert exc.value.line == 1


def test_an_images_meta_size_past_any_image_is_refused_before_masks(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "d.zip", {
        "obj.data": "train = data/train.txt\n", "obj.names": "a\n",
        "train.txt": "data/obj_train_data/a.png\n", "obj_train_data/a.txt": "0 0.5 0.5 1 1\n",
        "images.meta": "# name height width\na 999999999999 999999999999\n",
    })  # fmt: skip
    with pytest.raises(FormatError, match="not an image size") as exc:
        read(src, masks=True)
    assert (exc.value.member, exc.value.line) == ("images.meta", 2)
