"""COCO reader and writer: Datumaro's assets value by value, layouts, RLE, round trips through
TFRecord (read by real TensorFlow), streaming order cases and malformed inputs."""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path
from types import ModuleType
from typing import IO, Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conftest import require_corpus
from tfdrop.archive import open_source
from tfdrop.codec.model import Item, Shape
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.formats import Notes, ReadOptions, detect_format
from tfdrop.formats.coco import detect
from tfdrop.formats.coco.reader import open_reader
from tfdrop.formats.coco.rle import (
    counts_area,
    counts_bbox,
    counts_from_bits,
    counts_to_bits,
    decode_counts_string,
    encode_counts_string,
)
from tfdrop.formats.coco.scan import CHUNK, walk
from tfdrop.formats.coco.spill import Spill
from tfdrop.formats.coco.writer import extent_str
from tfdrop.formats.common.masks import decode_mask
from tfdrop.formats.common.pixels import f32
from tfdrop.limits import Limits
from tfhelpers import tf_records_by_name

ASSETS = ("tests", "assets", "coco_dataset")
REPOS = ("openvinotoolkit__datumaro", "cvat-ai__datumaro")


def asset(repo: str, name: str) -> Path:
    return require_corpus(repo, *ASSETS, name)


def image(width: int, height: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (20, 40, 60)).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(out: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return out


def read(path: Path, *, masks: bool = False, images: bool = True) -> tuple[list[Item], Any, Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = open_reader(src, ReadOptions(masks=masks, images=images), notes)
        return list(reader.items()), reader, notes


def boxes(item: Item) -> list[tuple[str, float, float, float, float]]:
    return [(o.label, o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax) for o in item.objects]


def coco_doc(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    cats = (
        categories if categories is not None else [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}]
    )
    return {"categories": cats, "images": images, "annotations": annotations}


def one_image_zip(tmp: Path, annotations: list[dict[str, Any]], **extra: Any) -> Path:
    doc = coco_doc([{"id": 1, "file_name": "x.jpg", "width": 20, "height": 10}], annotations)
    doc.update(extra)
    return make_zip(tmp / "in.zip", {"annotations/instances_default.json": json.dumps(doc)})


# --- the corpus assets, value by value -------------------------------------------------------

# Datumaro's coco_instances: a.jpg (10x5, id 5) with one box [2, 2, 3, 1] of "b"; b.jpg (5x10,
# id 40) with a polygon of "a" (bbox [0, 0, 1, 2]) and a crowd RLE of "b" (bbox [0, 0, 1, 9],
# counts [0, 20, 30]: the first two columns of the 5x10 image). Categories a=1, b=2, c=4.
TRAIN = [("b", 2 / 10, 2 / 5, 5 / 10, 3 / 5)]
VAL = [("a", 0.0, 0.0, 1 / 5, 2 / 10), ("b", 0.0, 0.0, 1 / 5, 9 / 10)]


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("repo", "layout"),
    [(repo, layout) for repo in REPOS for layout in ("coco_instances", "coco")]
    + [(REPOS[0], "coco_roboflow"), (REPOS[0], "mmdet_coco")],
)
def test_datumaro_assets_read_value_by_value(repo: str, layout: str) -> None:
    items, reader, notes = read(asset(repo, layout))
    assert [(it.subset, it.name, it.width, it.height, it.source_id) for it in items] == [
        ("train", "a.jpg", 10, 5, "5"),
        ("val", "b.jpg", 5, 10, "40"),
    ]
    for got, want in ((items[0], TRAIN), (items[1], VAL)):
        assert [b[0] for b in boxes(got)] == [w[0] for w in want]
        assert [b[1:] for b in boxes(got)] == [pytest.approx(w[1:], abs=1e-12) for w in want]
    (a,) = items[0].objects
    assert (a.shape, a.area, a.is_crowd, a.polygon) == (Shape.BOX, 3.0, False, ())
    poly, crowd = items[1].objects
    assert poly.shape == Shape.POLYGON
    assert poly.polygon == (0, 0, 1, 0, 1, 2, 0, 2)
    assert poly.area == 2.0
    assert not poly.is_crowd
    assert poly.attributes == (("x", "1"), ("y", "hello"))
    assert crowd.shape == Shape.MASK
    assert crowd.is_crowd
    assert crowd.area == 20.0
    assert all(it.image is not None and it.image[:2] == b"\xff\xd8" for it in items)
    assert it_format(items) == ["jpeg", "jpeg"]
    assert list(reader.labels()) == ["a", "b", "c"]
    lm = reader.label_map()
    assert [(i.id, i.name) for i in lm.items] == [(1, "a"), (2, "b"), (4, "c")]
    if layout == "coco":  # the other COCO tasks beside the instances files are reported
        assert notes.warning_counts["ignored_member"] == 10
    else:
        assert not notes.warning_counts


def it_format(items: list[Item]) -> list[str]:
    return [it.image_format for it in items]


@pytest.mark.corpus
def test_masks_from_polygon_and_rle_are_full_image_01_pngs() -> None:
    items, _, _ = read(asset(REPOS[0], "coco_instances"), masks=True)
    poly, crowd = items[1].objects
    w, h, bits = decode_mask(crowd.mask or b"")
    assert (w, h) == (5, 10)
    # counts [0, 20, 30] column-major: columns 0 and 1 are set, every row
    assert bits == bytes([1, 1, 0, 0, 0] * 10)
    w, h, bits = decode_mask(poly.mask or b"")
    assert (w, h) == (5, 10)
    assert bits[0] == 1
    assert bits[9 * 5 + 4] == 0
    assert poly.polygon == (0, 0, 1, 0, 1, 2, 0, 2)


@pytest.mark.corpus
@pytest.mark.parametrize("layout", ["coco_instances", "coco", "coco_roboflow", "mmdet_coco"])
def test_every_layout_is_detected_as_coco(layout: str) -> None:
    with open_source(asset(REPOS[0], layout)) as src:
        assert detect_format(src.names()) == "coco"
    assert detect(["voc/Annotations/x.xml"]) == 0


# --- TensorFlow ------------------------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.interop
def test_non_contiguous_category_ids_reach_tensorflow_unchanged(
    tf: ModuleType, tmp_path: Path
) -> None:
    # Datumaro's val file with the crowd object moved to category "c" (id 4) and an image
    # without annotations added: ids must go through the map (4), never by position (3).
    src = asset(REPOS[0], "coco_instances")
    doc = json.loads((src / "annotations" / "instances_val.json").read_text())
    doc["annotations"][1]["category_id"] = 4
    doc["images"].append({"id": 41, "width": 7, "height": 3, "file_name": "empty.jpg"})
    members: dict[str, bytes | str] = {
        "annotations/instances_val.json": json.dumps(doc),
        "images/val/b.jpg": (src / "images" / "val" / "b.jpg").read_bytes(),
        "images/val/empty.jpg": image(7, 3),
    }
    zin = make_zip(tmp_path / "in.zip", members)
    report = convert(zin, tmp_path / "out.zip", ConvertOptions(target_format="tfrecord"))
    assert (report.items, report.objects) == (2, 2)
    recs = tf_records_by_name(tf, tmp_path / "out.zip", tmp_path)
    b = recs["val/b.jpg"]
    assert b["image/object/class/label"] == [1, 4]
    assert b["image/object/class/text"] == [b"a", b"c"]
    assert b["image/source_id"] == b"40"
    assert (b["image/width"], b["image/height"]) == (5, 10)
    assert b["image/object/bbox/ymax"] == pytest.approx([0.2, 0.9])
    assert b["image/encoded"] == members["images/val/b.jpg"]
    empty = recs["val/empty.jpg"]
    assert empty["image/object/class/label"] == []
    assert empty["image/source_id"] == b"41"
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        pbtxt = zf.read("label_map.pbtxt").decode()
    assert "id: 4\n\tname: 'c'" in pbtxt
    assert "id: 3" not in pbtxt


def random_coco(tmp: Path, n: int = 15, seed: int = 3) -> Path:
    """Two subsets, float boxes, non-contiguous ids, empty images, annotations shuffled."""
    rnd = random.Random(seed)
    cats = [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 10, "name": "traffic light"}]
    members: dict[str, bytes | str] = {}
    for subset in ("train", "val"):
        imgs: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        for i in range(n):
            w, h = rnd.randint(17, 640), rnd.randint(13, 480)
            name = f"{subset}_{i}.{'png' if i % 3 == 0 else 'jpg'}"
            imgs.append({"id": 100 + i * 7, "width": w, "height": h, "file_name": name})
            members[f"images/{subset}/{name}"] = image(w, h, "PNG" if i % 3 == 0 else "JPEG")
            for _ in range(rnd.choice([0, 1, 3])):
                x, y = rnd.uniform(0, w - 2), rnd.uniform(0, h - 2)
                bw, bh = rnd.uniform(0, w - x), rnd.uniform(0, h - y)
                anns.append({"id": len(anns) + 1, "image_id": 100 + i * 7,
                             "category_id": rnd.choice([3, 9, 10]), "bbox": [x, y, bw, bh],
                             "area": bw * bh, "iscrowd": 0, "segmentation": []})  # fmt: skip
        rnd.shuffle(anns)
        doc = coco_doc(imgs, anns, cats)
        members[f"annotations/instances_{subset}.json"] = json.dumps(doc)
    return make_zip(tmp / "random.zip", members)


def key_boxes(items: list[Item]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    return {
        (it.subset, it.name): [
            (o.label, f32(o.box.xmin), f32(o.box.ymin), f32(o.box.xmax), f32(o.box.ymax))
            for o in it.objects
        ]
        for it in items
    }


@pytest.mark.interop
def test_coco_to_tfrecord_to_coco_keeps_boxes_labels_ids_and_images(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = random_coco(tmp_path)
    rec = tmp_path / "rec.zip"
    convert(src, rec, ConvertOptions(target_format="tfrecord"))
    back = tmp_path / "back.zip"
    report = convert(rec, back, ConvertOptions(target_format="coco"))
    assert report.items == 30
    original, r1, _ = read(src)
    again, r2, _ = read(back)
    # shuffled annotations come back grouped, in each image's file order
    assert key_boxes(again) == key_boxes(original)
    assert [(it.source_id, it.width, it.height, it.image) for it in again] == [
        (it.source_id, it.width, it.height, it.image) for it in original
    ]
    assert [(i.id, i.name) for i in r2.label_map().items] == [
        (3, "cat"), (9, "dog"), (10, "traffic light")
    ]  # fmt: skip
    recs = tf_records_by_name(tf, rec, tmp_path)
    assert len(recs) == 30
    for it in original:
        r = recs[f"{it.subset}/{it.name}"]
        assert r["image/object/bbox/xmin"] == [f32(o.box.xmin) for o in it.objects]
        assert r["image/object/class/label"] == [r1.label_map().id_of(o.label) for o in it.objects]
        assert r["image/source_id"] == it.source_id.encode()


def test_coco_to_coco_keeps_polygons_crowd_rle_and_attributes(tmp_path: Path) -> None:
    ann = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 3], "area": 6.5,
         "segmentation": [[1, 1, 5, 1, 5, 4]], "iscrowd": 0,
         "attributes": {"occluded": True, "color": "red"}},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 10],
         "segmentation": {"counts": [0, 20, 180], "size": [10, 20]}, "iscrowd": 1},
    ]  # fmt: skip
    zin = one_image_zip(tmp_path, ann)
    out = tmp_path / "out.zip"
    convert(zin, out, ConvertOptions(target_format="coco", masks=True, images=False))
    with zipfile.ZipFile(out) as zf:
        doc = json.loads(zf.read("annotations/instances_default.json"))
    poly, crowd = doc["annotations"]
    assert poly["segmentation"] == [[1, 1, 5, 1, 5, 4]]
    assert poly["area"] == 6.5
    assert poly["bbox"] == [1, 1, 4, 3]
    assert poly["category_id"] == 7
    assert poly["attributes"] == {"occluded": True, "color": "red"}
    assert crowd["segmentation"] == {"counts": [0, 20, 180], "size": [10, 20]}
    assert crowd["iscrowd"] == 1
    assert crowd["area"] == 20
    assert doc["categories"] == [
        {"id": 1, "name": "a", "supercategory": ""}, {"id": 7, "name": "b", "supercategory": ""}
    ]  # fmt: skip
    assert doc["images"][0]["id"] == 1


# --- RLE ---------------------------------------------------------------------------------------


def test_compressed_rle_string_decodes_like_pycocotools() -> None:
    # hand-encoded with maskApi.c's rleToString: 0 -> "0", 20 -> "d0", 30 -> "n0"
    assert encode_counts_string([0, 20, 30]) == "0d0n0"
    assert decode_counts_string("0d0n0") == [0, 20, 30]
    # from the third count on, the difference to two places before is stored (here -15)
    assert decode_counts_string(encode_counts_string([5, 20, 5, 5])) == [5, 20, 5, 5]
    with pytest.raises(FormatError, match="invalid character"):
        decode_counts_string("0 d")


# produced by pycocotools 2.0.11 (mask.encode of a Fortran-order uint8 array), copied here
PYCOCO_MASK = [
    [1, 1, 0, 1, 0, 1, 1, 0, 0],
    [1, 0, 1, 0, 0, 1, 0, 0, 0],
    [1, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 1, 1, 0, 0],
    [1, 0, 1, 1, 0, 1, 1, 1, 0],
    [1, 1, 0, 1, 0, 1, 0, 0, 0],
]
PYCOCO_STRING = "072JO00010O02130K21N3O2"
# m[10:290, 5:150] = 1; m[100:120, 20:30] = 0 on 300x200: area 40400, bbox [5, 10, 145, 280]
PYCOCO_LARGE = (
    "V_1h8d00000000000000000000000000000RJ0`20`M0`20`M0`20`M0`20`M0`20`M0`20`M0`20`M0`20`M0`20`M0`20^3"
    + "0" * 238
    + "^d>"
)


def test_compressed_rle_matches_pycocotools_vectors() -> None:
    bits = bytes(v for row in PYCOCO_MASK for v in row)
    counts = counts_from_bits(bits, 9, 6)
    assert encode_counts_string(counts) == PYCOCO_STRING
    assert counts_to_bits(decode_counts_string(PYCOCO_STRING), 6, 9) == bits
    large = decode_counts_string(PYCOCO_LARGE)
    assert counts_area(large) == 40400
    assert counts_bbox(large, 300) == (5, 10, 150, 290)
    assert encode_counts_string(large) == PYCOCO_LARGE


@given(st.lists(st.integers(min_value=0, max_value=100_000), max_size=40))
def test_compressed_rle_round_trips_any_counts(counts: list[int]) -> None:
    assert decode_counts_string(encode_counts_string(counts)) == counts


@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_rle_counts_and_row_major_bits_round_trip(w: int, h: int, data: st.DataObject) -> None:
    bits = bytes(data.draw(st.lists(st.integers(0, 1), min_size=w * h, max_size=w * h)))
    counts = counts_from_bits(bits, w, h)
    assert counts_to_bits(counts, h, w) == bits
    assert counts_area(counts) == sum(bits)
    box = counts_bbox(counts, h)
    on = [(i % w, i // w) for i, v in enumerate(bits) if v]
    if not on:
        assert box is None
    else:
        xs, ys = [p[0] for p in on], [p[1] for p in on]
        assert box == (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def test_compressed_rle_in_a_file_reads_as_a_mask(tmp_path: Path) -> None:
    counts = [25, 5, 5, 5, 160]  # column-major on 20x10: columns 2 and 3, rows 5..9
    seg = {"counts": encode_counts_string(counts), "size": [10, 20]}
    zin = one_image_zip(tmp_path, [{"id": 1, "image_id": 1, "category_id": 1,
                                    "segmentation": seg, "iscrowd": 1}])  # fmt: skip
    (item,), _, _ = read(zin, masks=True, images=False)
    (obj,) = item.objects
    assert (obj.box.xmin, obj.box.ymin, obj.box.xmax, obj.box.ymax) == (0.1, 0.5, 0.2, 1.0)
    _, _, bits = decode_mask(obj.mask or b"")
    assert sum(bits) == 10
    assert bits[5 * 20 + 2] == 1
    assert bits[4 * 20 + 2] == 0


# --- streaming: the JSON walk and the spill ----------------------------------------------------


class Trickle(io.RawIOBase):
    """A stream that returns at most ``n`` bytes per read (chunk boundaries everywhere)."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n, self.pos = data, n, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = self.data[self.pos : self.pos + min(self.n, len(b))]
        b[: len(out)] = out
        self.pos += len(out)
        return len(out)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1 << 20])
def test_walk_gives_every_element_whatever_the_chunk_size(n: int) -> None:
    doc = {"info": {"v": 1.5}, "images": [{"id": i, "x": 10**i} for i in range(6)],
           "annotations": [], "n": 12345, "s": "é ]},", "categories": [[1, 2], 3]}  # fmt: skip
    text = "\ufeff" + json.dumps(doc, indent=1)
    stream = cast("IO[bytes]", Trickle(text.encode(), n))  # short reads, as pipes give
    got = list(walk(stream, "m", wanted=frozenset({"images", "categories"})))
    assert [(e.key, e.idx, e.value) for e in got] == [  # info, n, s are skipped
        *[("images", i, {"id": i, "x": 10**i}) for i in range(6)],
        ("categories", 0, [1, 2]),
        ("categories", 1, 3),
    ]


def test_walk_skips_members_it_does_not_need_across_chunks() -> None:
    # a 60 MB "info" list took about 1 s per MB, each number parsed and dropped
    info = [0] * 1_200_000 + ['a"]}[{\\', {"k": [1.5e3, None, True, False, NaN]}, "é" * 70_000]
    doc = {"info": info, "images": [{"id": 1}], "licenses": {"x": [[], {}]}, "n": -1}
    text = json.dumps(doc)
    assert len(text) > 2 * CHUNK
    got = list(walk(io.BytesIO(text.encode()), "m", wanted=frozenset({"images"})))
    assert [(e.key, e.idx, e.value) for e in got] == [("images", 0, {"id": 1})]


NaN = float("nan")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"info": [1, }, "images": []}', "unexpected '}'"),
        ('{"info": {"a": [1, 2}]}', "unexpected '}'"),
        ('{"info": [1, x], "images": []}', "unexpected 'x'"),
        ('{"info": [1, 2', "truncated"),
        ('{"info": ["ab', "truncated in a string"),
        ('{"info": ["a\x01"], "images": []}', "control character"),
    ],
)
def test_a_skipped_member_that_is_not_json_is_refused(text: str, message: str) -> None:
    with pytest.raises(FormatError, match=message) as exc:
        list(walk(io.BytesIO(text.encode()), "m", wanted=frozenset({"images"})))
    assert (exc.value.member, exc.value.key) == ("m", "info")


@pytest.mark.parametrize("sorted_prefix", [0, 700])
def test_spill_groups_unsorted_records_across_runs_stably(
    tmp_path: Path, sorted_prefix: int
) -> None:
    rnd = random.Random(1)
    spill = Spill(tmp_path, run_bytes=200, sorted_flush=50)
    records = [(i // 20, i) for i in range(sorted_prefix)]
    records += [(rnd.randrange(50), i) for i in range(sorted_prefix, 2000)]
    for pos, i in records:
        spill.add(pos, [pos, i])
    got = list(spill.groups())
    spill.close()
    want: dict[int, list[list[int]]] = {}
    for pos, i in records:
        want.setdefault(pos, []).append([pos, i])
    assert got == sorted(want.items())
    assert not list(tmp_path.iterdir())  # the temp folder is gone


def test_spill_reads_sorted_records_back_grouped_in_order(tmp_path: Path) -> None:
    spill = Spill(tmp_path, sorted_flush=64)
    for i in range(3000):
        spill.add(i // 3, ("x", i))
    groups = list(spill.groups())
    spill.close()
    assert len(groups) == 1000
    assert groups[5] == (5, [("x", 15), ("x", 16), ("x", 17)])


def test_annotations_before_images_and_unsorted_still_join(tmp_path: Path) -> None:
    text = (
        '{"annotations": [{"id": 1, "image_id": 20, "category_id": 1, "bbox": [0, 0, 2, 2]},'
        '{"id": 2, "image_id": 10, "category_id": 7, "bbox": [1, 1, 2, 2]},'
        '{"id": 3, "image_id": 20, "category_id": 7, "bbox": [2, 2, 2, 2]}],'
        '"images": [{"id": 10, "file_name": "p.jpg", "width": 4, "height": 4},'
        '{"id": 20, "file_name": "q.jpg", "width": 4, "height": 4},'
        '{"id": 30, "file_name": "r.jpg", "width": 4, "height": 4}],'
        '"categories": [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}]}'
    )
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": text})
    items, reader, _notes = read(zin, images=False)
    assert [(it.name, [o.label for o in it.objects]) for it in items] == [
        ("p.jpg", ["b"]), ("q.jpg", ["a", "b"]), ("r.jpg", [])
    ]  # fmt: skip
    assert list(reader.labels()) == ["a", "b"]


# --- writer details ----------------------------------------------------------------------------


@given(st.floats(0, 1), st.floats(0, 1), st.integers(1, 5000))
def test_bbox_width_text_reads_back_to_the_same_float32(a: float, b: float, size: int) -> None:
    from tfdrop.formats.common.pixels import pixel_str

    lo, hi = min(a, b), max(a, b)
    x = pixel_str(lo, size)
    w = extent_str(x, hi, size)
    assert f32(float(x) / size) == f32(lo)
    assert f32((float(x) + float(w)) / size) == f32(hi)


# --- malformed input -------------------------------------------------------------------------


def bad(**fields: Any) -> dict[str, Any]:
    return {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]} | fields


@pytest.mark.parametrize(
    ("ann", "key", "message"),
    [
        (bad(image_id=2), "annotations[0].image_id", "refers to image id 2, which is not in"),
        (bad(category_id=5), "annotations[0].category_id", "category id 5, which is not in"),
        (bad(bbox=[1, 1, -2, 2]), "annotations[0].bbox", "negative width or height"),
        (bad(bbox=[1, 1, 2]), "annotations[0].bbox", "4 finite numbers"),
        (bad(bbox="1,1,2,2"), "annotations[0].bbox", "4 finite numbers"),
        (bad(image_id="1"), "annotations[0].image_id", "must be an integer"),
        (bad(iscrowd=2), "annotations[0].iscrowd", "0 or 1"),
        (bad(segmentation=[[1, 2, 3]]), "annotations[0].segmentation", "x, y numbers"),
        (bad(segmentation={"counts": [1, 2], "size": [10, 20]}),
         "annotations[0].segmentation", "cover 3 pixels"),
        (bad(segmentation={"counts": [200], "size": [20, 10]}),
         "annotations[0].segmentation", "not the image's"),
        ("oops", "annotations[0]", "must be a JSON object"),
    ],
)  # fmt: skip
def test_malformed_annotations_name_the_member_path_and_annotation(
    tmp_path: Path, ann: Any, key: str, message: str
) -> None:
    zin = one_image_zip(tmp_path, [ann])
    with pytest.raises(FormatError, match=message) as exc:
        convert(zin, tmp_path / "out.zip", ConvertOptions())
    err = exc.value
    assert err.member == "annotations/instances_default.json"
    assert err.key == key
    assert err.archive == str(zin)
    if isinstance(ann, dict) and key != "annotations[0].image_id":
        assert err.item == "x.jpg"
        assert "annotation 9" in err.message


def test_nan_boxes_are_refused(tmp_path: Path) -> None:
    text = json.dumps(coco_doc([{"id": 1, "file_name": "x.jpg", "width": 4, "height": 4}],
                               [bad(bbox=[float("nan"), 0, 1, 1])]))  # fmt: skip
    assert "NaN" in text
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": text})
    with pytest.raises(FormatError, match="finite") as exc:
        read(zin, images=False)
    assert exc.value.key == "annotations[0].bbox"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [{"id": 1, "file_name": "x.jpg", "width": 4, "height": 4}', "truncated"),
        ('{"images": [{"id": 1, "file_na', "truncated"),
        ('{"images": [{"id": 1,, }]}', "invalid JSON"),
        ("[1, 2]", "JSON object at the top level"),
        ("", "empty"),
        ('{"images": {"id": 1}}', "images must be a list"),
        ('{"images": [{"id": "1", "file_name": "x.jpg"}]}', "image id must be an integer"),
        ('{"images": [{"id": 1, "file_name": "x.jpg", "width": -3, "height": 4}]}', "width -3"),
        ('{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4},'
         '{"id": 1, "file_name": "b.jpg", "width": 4, "height": 4}]}', "appears twice"),
        ('{"categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "is 'a' in one"),
        ('{"images": [{"id": 1, "file_name": "a.jpg"}]}', "no width/height"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)  # fmt: skip
def test_malformed_files_give_a_clear_error(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": text})
    with pytest.raises(FormatError, match=message) as exc:
        read(zin)
    assert exc.value.member == "annotations/instances_default.json"


def test_boxes_outside_the_image_and_missing_images_are_warnings(tmp_path: Path) -> None:
    zin = one_image_zip(tmp_path, [bad(bbox=[-1, 2, 30, 3])])
    report = convert(zin, tmp_path / "out.zip", ConvertOptions())
    assert report.warning_counts == {"box_clipped": 1, "missing_image": 1}
    (item,), _, _ = read(zin, images=False)
    assert item.objects[0].box.xmin == 0.0
    assert item.objects[0].box.xmax == 1.0


def test_roboflow_root_category_0_is_left_out_and_ids_kept(tmp_path: Path) -> None:
    cats = [
        {"id": 0, "name": "cells", "supercategory": "none"},
        {"id": 1, "name": "Platelets", "supercategory": "cells"},
        {"id": 2, "name": "RBC", "supercategory": "cells"},
    ]
    doc = coco_doc([{"id": 0, "file_name": "x.jpg", "width": 4, "height": 4}],
                   [bad(image_id=0, category_id=2)], cats)  # fmt: skip
    zin = make_zip(tmp_path / "in.zip", {"train/_annotations.coco.json": json.dumps(doc)})
    items, reader, _ = read(zin, images=False)
    assert list(reader.labels()) == ["Platelets", "RBC"]
    assert [(i.id, i.name) for i in reader.label_map().items] == [(1, "Platelets"), (2, "RBC")]
    assert [(o.label, o.label_id) for o in items[0].objects] == [("RBC", 2)]
    assert items[0].subset == "train"


def test_no_instances_file_is_a_clear_error(tmp_path: Path) -> None:
    zin = make_zip(tmp_path / "in.zip", {"annotations/captions_x.json": "{}"})
    with pytest.raises(FormatError, match="no COCO instances file"):
        read(zin)


# --- hardening: limits, hostile values, shapes outside the image -------------------


def read_limited(path: Path, *, masks: bool = False, **caps: int) -> tuple[list[Item], Notes]:
    notes = Notes()
    options = ReadOptions(masks=masks, images=False, limits=Limits().with_values(caps))
    with open_source(path) as src:
        return list(open_reader(src, options, notes).items()), notes


def raw_zip(tmp: Path, text: str) -> Path:
    return make_zip(tmp / "in.zip", {"annotations/instances_default.json": text})


IMG = '{"id": 1, "file_name": "x.jpg", "width": 20, "height": 10}'


@pytest.mark.parametrize(
    ("text", "limit", "offset"),
    [
        # the top-level object is depth 1: the 63rd "[" in images is depth 65
        ('{"images": [' + "[" * 100_000 + "]" * 100_000 + "]}", "max_depth", 11 + 63),
        # the 65th character of the number
        ('{"categories": [{"id": 1' + "0" * 5000 + "}]}", "max_number_length", 23 + 64),
        ('{"info": {"v": -' + "1" * 70 + "}}", "max_number_length", 15 + 64),
    ],
)
def test_deep_nesting_and_long_numbers_are_limit_errors_at_their_offset(
    tmp_path: Path, text: str, limit: str, offset: int
) -> None:
    with pytest.raises(LimitExceededError) as exc:
        read(raw_zip(tmp_path, text))
    assert exc.value.limit == limit
    assert exc.value.offset == offset
    assert exc.value.member == "annotations/instances_default.json"


def _depth_and_number(text: str) -> tuple[int, int]:
    """The oracle: deepest nesting and longest number of a JSON text, from its parse."""

    def walk(v: Any, d: int) -> tuple[int, int]:
        if isinstance(v, list | dict):
            kids = list(v.values()) if isinstance(v, dict) else v
            got = [walk(k, d + 1) for k in kids] or [(d + 1, 0)]
            return max(g[0] for g in got), max(g[1] for g in got)
        return d, len(json.dumps(v)) if isinstance(v, int | float) else 0

    return walk(json.loads(text), 0)


@given(st.recursive(
    st.integers(-(10**30), 10**30) | st.text("[]{}\"\\ab1é", max_size=6) | st.floats(-1e9, 1e9),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text("[]\"\\1", max_size=3), kids,
                                                              max_size=3),
    max_leaves=30,
), st.sampled_from([1, 3, 17, 1 << 20]))  # fmt: skip
def test_the_depth_and_number_guard_agrees_with_the_parsed_document(value: Any, chunk: int) -> None:
    text = json.dumps({"info": value, "images": [value, value]})
    depth, number = _depth_and_number(text)
    caps = [(depth, number or 1), (depth - 1, number or 1), (depth, max(number - 1, 1))]
    for max_depth, max_number in caps:
        stream = cast("IO[bytes]", Trickle(text.encode(), chunk))
        got = walk(stream, "m", wanted=frozenset({"images"}), max_depth=max_depth,
                   max_number_length=max_number)  # fmt: skip
        if depth <= max_depth and number <= max_number:
            assert [e.idx for e in got if e.key == "images"] == [0, 1]
        else:
            with pytest.raises(LimitExceededError):
                list(got)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"images": [{"id": 1, "file_name": "a\\ud800.jpg", "width": 2, "height": 2}]}',
         "images[0].file_name"),
        ('{"categories": [{"id": 1, "name": "c\\udfff"}]}', "categories[0].name"),
        ('{"categories": [{"id": 1, "name": "c", "supercategory": "\\ud83d"}]}',
         "categories[0].supercategory"),
        ('{"categories": [{"id": 1, "name": "c"}], "images": [' + IMG + '], "annotations": '
         '[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], '
         '"attributes": {"k": "\\ud800"}}]}', "annotations[0].attributes.k"),
    ],
)  # fmt: skip
def test_lone_surrogates_in_names_are_refused_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(FormatError, match="surrogate") as exc:
        read(raw_zip(tmp_path, text), images=False)
    assert exc.value.key == key


@pytest.mark.parametrize("cat_id", [2**31, 2**40, 2**63 - 1])
def test_category_ids_over_int32_are_renumbered_not_a_broken_label_map(
    tmp_path: Path, cat_id: int
) -> None:
    doc = coco_doc([json.loads(IMG)], [bad(category_id=cat_id)], [{"id": cat_id, "name": "c"}])
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": json.dumps(doc)})
    report = convert(zin, tmp_path / "out.zip", ConvertOptions(images=False))
    assert report.objects == 1
    assert [(i.id, i.name) for i in report.label_map.items] == [(1, "c")]


def test_category_ids_outside_int64_are_refused(tmp_path: Path) -> None:
    doc = coco_doc([json.loads(IMG)], [], [{"id": 2**64, "name": "c"}])
    with pytest.raises(FormatError, match="64-bit range"):
        read(make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": json.dumps(doc)}))


@pytest.mark.parametrize("width", ["NaN", "Infinity", "-Infinity", "1e300", "2147483648", "0"])
def test_image_sizes_nan_inf_or_huge_are_refused(tmp_path: Path, width: str) -> None:
    text = '{"images": [{"id": 1, "file_name": "x.jpg", "width": ' + width + ', "height": 4}]}'
    with pytest.raises(FormatError, match="not a positive integer") as exc:
        read(raw_zip(tmp_path, text))
    assert exc.value.key == "images[0].width"


@pytest.mark.parametrize("bbox", ["[NaN, 1, 2, 2]", "[1, Infinity, 2, 2]", "[1e308, 1, 1e308, 2]"])
def test_bbox_nan_inf_or_overflowing_is_refused(tmp_path: Path, bbox: str) -> None:
    text = ('{"categories": [{"id": 1, "name": "c"}], "images": [' + IMG + '], "annotations": '
            '[{"id": 1, "image_id": 1, "category_id": 1, "bbox": ' + bbox + "}]}")  # fmt: skip
    with pytest.raises(FormatError, match="finite") as exc:
        read(raw_zip(tmp_path, text))
    assert exc.value.key == "annotations[0].bbox"


def test_a_polygon_past_the_edge_is_clipped_with_a_warning(tmp_path: Path) -> None:
    seg = [[1, 1, 50, 1, 50, 5, 1, 5]]  # 30 px past the right edge of the 20x10 image
    (item,), notes = read_limited(one_image_zip(tmp_path, [bad(bbox=None, segmentation=seg)]))
    (obj,) = item.objects
    assert (obj.box.xmin, obj.box.xmax) == (0.05, 1.0)
    assert obj.polygon == (1.0, 1.0, 20.0, 1.0, 20.0, 5.0, 1.0, 5.0)
    assert notes.warning_counts == {"box_clipped": 1}


def test_a_polygon_past_the_edge_with_masks_gives_a_clipped_mask(tmp_path: Path) -> None:
    seg = [[1, 1, 50, 1, 50, 5, 1, 5]]
    (item,), notes = read_limited(
        one_image_zip(tmp_path, [bad(bbox=[1, 1, 49, 4], segmentation=seg)]), masks=True
    )
    assert item.objects[0].mask is not None
    assert notes.warning_counts == {"box_clipped": 1}


@pytest.mark.parametrize(
    "ann",
    [
        bad(bbox=[100, 100, 2, 2]),
        bad(bbox=[-10, 2, 5, 2]),
        bad(bbox=[20, 2, 3, 3]),  # starts on the right edge: nothing inside
        bad(bbox=None, segmentation=[[30, 1, 40, 1, 40, 5]]),
    ],
)
def test_a_shape_entirely_outside_the_image_is_refused(tmp_path: Path, ann: dict[str, Any]) -> None:
    with pytest.raises(FormatError, match="entirely outside the 20x10 image") as exc:
        read_limited(one_image_zip(tmp_path, [ann]))
    assert exc.value.key == "annotations[0]"
    assert exc.value.item == "x.jpg"


def test_a_zero_width_box_on_the_image_is_kept(tmp_path: Path) -> None:
    (item,), notes = read_limited(one_image_zip(tmp_path, [bad(bbox=[20, 2, 0, 3])]))
    assert item.objects[0].box.xmin == item.objects[0].box.xmax == 1.0
    assert notes.warning_counts == {}


@pytest.mark.parametrize(
    ("seg", "limit"),
    [
        ([[1.0, 2.0] * 40], "max_values_per_feature"),
        ([[1, 1, 5, 1, 5, 5]] * 20, "max_values_per_feature"),
        ({"counts": [1] * 70 + [130], "size": [10, 20]}, "max_values_per_feature"),
        ({"counts": "0" * 70, "size": [10, 20]}, "max_values_per_feature"),
    ],
)
def test_polygon_points_and_rle_counts_are_capped(tmp_path: Path, seg: Any, limit: str) -> None:
    with pytest.raises(LimitExceededError) as exc:
        read_limited(one_image_zip(tmp_path, [bad(segmentation=seg)]), max_values_per_feature=64)
    assert exc.value.limit == limit
    assert exc.value.key == "annotations[0].segmentation"


def test_rle_mask_pixels_are_checked_before_decoding(tmp_path: Path) -> None:
    side = 100_000
    rle = {"counts": [side**2], "size": [side, side]}
    doc = coco_doc([{"id": 1, "file_name": "x.jpg", "width": side, "height": side}],
                   [bad(iscrowd=1, segmentation=rle)])  # fmt: skip
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": json.dumps(doc)})
    with pytest.raises(LimitExceededError) as exc:
        read_limited(zin, masks=True)
    assert (exc.value.limit, exc.value.value) == ("max_mask_pixels", 10**10)


def test_a_compressed_rle_count_over_64_bits_is_refused() -> None:
    with pytest.raises(FormatError, match="over 64 bits"):
        decode_counts_string("o" * 10_000 + "0")


def test_objects_per_image_and_labels_are_capped(tmp_path: Path) -> None:
    zin = one_image_zip(tmp_path, [bad(id=k) for k in range(6)])
    with pytest.raises(LimitExceededError) as exc:
        read_limited(zin, max_objects_per_item=5)
    assert (exc.value.limit, exc.value.key, exc.value.item) == (
        "max_objects_per_item", "annotations[5]", "x.jpg")  # fmt: skip
    with pytest.raises(LimitExceededError) as exc:
        read_limited(zin, max_labels=1)  # coco_doc declares two categories
    assert exc.value.limit == "max_labels"


def test_long_names_are_capped_by_max_text_bytes(tmp_path: Path) -> None:
    doc = coco_doc([{"id": 1, "file_name": "é" * 40 + ".jpg", "width": 2, "height": 2}], [])
    zin = make_zip(tmp_path / "in.zip", {"annotations/instances_default.json": json.dumps(doc)})
    with pytest.raises(LimitExceededError) as exc:
        read_limited(zin, max_text_bytes=64)
    assert (exc.value.limit, exc.value.value, exc.value.key) == (
        "max_text_bytes", 84, "images[0].file_name")  # fmt: skip


def test_brackets_and_digit_runs_inside_strings_do_not_count(tmp_path: Path) -> None:
    name = "[{" * 100 + "1" * 100 + '\\"' + "]" * 100 + ".jpg"
    text = '{"images": [{"id": 1, "file_name": "' + name + '", "width": 2, "height": 2}]}'
    (item,), _ = read_limited(raw_zip(tmp_path, text))
    assert item.name == name.replace('\\"', '"')


def test_keypoints_are_read_and_supercategories_are_counted_as_lost(tmp_path: Path) -> None:
    # they were dropped without a word (to tfrecord, and coco -> coco); keypoints are read now
    cats = [{"id": 1, "name": "person", "supercategory": "human", "keypoints": ["nose", "eye"],
             "skeleton": [[1, 2]]}, {"id": 2, "name": "car", "supercategory": ""}]  # fmt: skip
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4],
           "keypoints": [2, 2, 2, 0, 0, 0], "num_keypoints": 1}  # fmt: skip
    plain = {"id": 2, "image_id": 1, "category_id": 2, "bbox": [1, 1, 4, 4], "keypoints": []}
    doc = coco_doc([json.loads(IMG)], [ann, plain], cats)
    src = make_zip(tmp_path / "kp.zip", {"annotations/instances_default.json": json.dumps(doc)})
    items, _, notes = read(src, images=False)
    person, car = items[0].objects
    assert [(p.name, p.visibility) for p in person.keypoints] == [("nose", 2), ("eye", 0)]
    assert car.keypoints == ()
    assert notes.lossy == {"category_supercategory": 1}
