"""Examples interop with real TensorFlow (``tensorflow-cpu``, the test extra).

- Records tfdrop writes (``encode_example`` + ``stream.RecordWriter``, plain/GZIP/ZLIB) are read
  by ``tf.data.TFRecordDataset`` and parsed by ``tf.io.parse_single_example`` with the seed's
  feature description (SPEC.md) plus ``image/encoded``, giving the items' values; TF's own
  ``tf.train.Example.FromString`` of the bytes holds every key with the item's values.
- Examples TensorFlow writes (``tf.train.Example`` + ``tf.io.TFRecordWriter``, plain/GZIP/ZLIB)
  decode in tfdrop to the values they were built from, unknown keys included.
"""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tfdrop.codec.compression import Compression
from tfdrop.codec.example import decode_example, encode_example
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.stream import RecordWriter, iter_records_path
from tfhelpers import seed_features

pytestmark = pytest.mark.interop

TF_TYPE: dict[Compression, str] = {"none": "", "gzip": "GZIP", "zlib": "ZLIB"}
NAMES = ["a.jpg", "dir/b c.png", "ünïcødé 日本.jpeg", "", "x" * 300]
LABELS = ["cat", "dog", "traffic light", "Ωmega", ""]


def f32(v: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


def sample_items(n: int = 40) -> list[Item]:
    rng = random.Random(2024)
    items = []
    for i in range(n):
        objects = []
        for _ in range(rng.choice([0, 0, 1, 2, 5, 17])):
            x0, x1 = sorted((rng.random(), rng.random()))
            y0, y1 = sorted((rng.random(), rng.random()))
            label_id = rng.randrange(1, len(LABELS) + 1)
            objects.append(
                Annotation(
                    label=LABELS[label_id - 1],
                    box=Box(x0, y0, x1, y1),
                    label_id=label_id,
                    difficult=rng.random() < 0.3,
                    truncated=rng.random() < 0.3,
                    view=rng.choice(["", "Frontal", "Left"]),
                )
            )
        image = None if i % 7 == 3 else rng.randbytes(rng.randrange(1, 5000))
        items.append(
            Item(
                name=NAMES[i % len(NAMES)] if i < len(NAMES) else f"img_{i:04d}.jpg",
                width=rng.randrange(1, 5000),
                height=rng.randrange(1, 5000),
                image=image,
                image_format="jpeg",
                source_id=str(i) if i % 2 else "",
                objects=tuple(objects),
            )
        )
    return items


ITEMS = sample_items()


def check_tf_parsed(tf: ModuleType, parsed: dict[str, Any], item: Item) -> None:
    def dense(key: str) -> list[Any]:
        return list(tf.sparse.to_dense(parsed[key]).numpy().tolist())

    assert parsed["image/filename"].numpy() == item.name.encode()
    assert parsed["image/source_id"].numpy() == item.source_id.encode()
    assert int(parsed["image/height"].numpy()) == item.height
    assert int(parsed["image/width"].numpy()) == item.width
    assert parsed["image/encoded"].numpy() == (item.image or b"")
    objs = item.objects
    assert dense("image/object/bbox/xmin") == [f32(o.box.xmin) for o in objs]
    assert dense("image/object/bbox/xmax") == [f32(o.box.xmax) for o in objs]
    assert dense("image/object/bbox/ymin") == [f32(o.box.ymin) for o in objs]
    assert dense("image/object/bbox/ymax") == [f32(o.box.ymax) for o in objs]
    assert dense("image/object/class/label") == [o.label_id for o in objs]
    assert dense("image/object/class/text") == [o.label.encode() for o in objs]


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_tensorflow_reads_and_parses_what_tfdrop_writes(
    tf: ModuleType, tmp_path: Path, kind: Compression
) -> None:
    path = tmp_path / f"out.{kind}.tfrecord"
    with path.open("wb") as f, RecordWriter(f, compression=kind) as w:
        for item in ITEMS:
            w.write(encode_example(item))
    ds = tf.data.TFRecordDataset(str(path), compression_type=TF_TYPE[kind])
    desc = seed_features(tf)
    n = 0
    for raw, item in zip(ds, ITEMS, strict=False):
        check_tf_parsed(tf, tf.io.parse_single_example(raw, desc), item)
        n += 1
    assert n == len(ITEMS)
    # and TF's batched parser agrees on the object counts
    batch = next(iter(ds.batch(len(ITEMS)).map(lambda r: tf.io.parse_example(r, desc))))
    counts = tf.sparse.to_dense(batch["image/object/class/label"]).shape[1]
    assert counts == max(len(it.objects) for it in ITEMS)


def test_tf_train_example_of_our_bytes_equals_our_item(tf: ModuleType) -> None:
    for item in ITEMS:
        ex = tf.train.Example.FromString(encode_example(item))
        f = ex.features.feature
        assert f["image/filename"].bytes_list.value == [item.name.encode()]
        assert f["image/source_id"].bytes_list.value == [item.source_id.encode()]
        assert f["image/height"].int64_list.value == [item.height]
        assert f["image/width"].int64_list.value == [item.width]
        assert f["image/encoded"].bytes_list.value == [item.image or b""]
        assert f["image/format"].bytes_list.value == [b"jpeg"]
        sha = hashlib.sha256(item.image).hexdigest() if item.image else ""
        assert f["image/key/sha256"].bytes_list.value == [sha.encode()]
        objs = item.objects
        assert list(f["image/object/bbox/xmin"].float_list.value) == [f32(o.box.xmin) for o in objs]
        assert list(f["image/object/bbox/ymax"].float_list.value) == [f32(o.box.ymax) for o in objs]
        assert list(f["image/object/class/label"].int64_list.value) == [o.label_id for o in objs]
        assert list(f["image/object/class/text"].bytes_list.value) == [
            o.label.encode() for o in objs
        ]
        assert list(f["image/object/difficult"].int64_list.value) == [
            int(o.difficult) for o in objs
        ]
        assert list(f["image/object/truncated"].int64_list.value) == [
            int(o.truncated) for o in objs
        ]
        assert list(f["image/object/view"].bytes_list.value) == [o.view.encode() for o in objs]
        # and TF re-serializes it to the same Example tfdrop reads
        assert decode_example(ex.SerializeToString()) == decode_example(encode_example(item))


# --- TensorFlow writes, tfdrop reads ----------------------------------------------------------


def tf_example(tf: ModuleType, i: int) -> tuple[Any, dict[str, Any]]:
    """A tf.train.Example with every OD key (and one unknown key), and its values."""
    rng = random.Random(i)
    n = [0, 1, 3, 9][i % 4]
    boxes = []
    for _ in range(n):
        x0, x1 = sorted((rng.random(), rng.random()))
        y0, y1 = sorted((rng.random(), rng.random()))
        boxes.append((x0, y0, x1, y1))
    v: dict[str, Any] = {
        "image/filename": f"tf_{i}.png".encode(),
        "image/source_id": str(i).encode(),
        "image/height": 100 + i,
        "image/width": 200 + i,
        "image/encoded": rng.randbytes(100 + i),
        "image/format": b"png",
        "image/object/bbox/xmin": [b[0] for b in boxes],
        "image/object/bbox/ymin": [b[1] for b in boxes],
        "image/object/bbox/xmax": [b[2] for b in boxes],
        "image/object/bbox/ymax": [b[3] for b in boxes],
        "image/object/class/label": [k % 3 + 1 for k in range(n)],
        "image/object/class/text": [f"class_{k % 3 + 1}".encode() for k in range(n)],
        "image/object/difficult": [k % 2 for k in range(n)],
        "image/object/truncated": [(k + 1) % 2 for k in range(n)],
        "image/object/view": [b"Unspecified"] * n,
        "image/object/is_crowd": [int(k == 0) for k in range(n)],
        "image/object/area": [float(k * 10 + 0.5) for k in range(n)],
        "image/object/mask": [b"\x89PNG\r\n\x1a\n" + bytes([k]) for k in range(n)],
        "image/object/keypoint/z": [0.25 * k for k in range(n)],
    }
    v["image/key/sha256"] = hashlib.sha256(v["image/encoded"]).hexdigest().encode()
    feats = {}
    for key, value in v.items():
        values = value if isinstance(value, list) else [value]
        if key in ("image/height", "image/width") or (values and isinstance(values[0], int)):
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        elif key.endswith(("xmin", "xmax", "ymin", "ymax", "area", "keypoint/z")):
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif key in ("image/object/class/label", "image/object/difficult") or key.endswith(
            ("truncated", "is_crowd")
        ):
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feats)), v


def check_item(item: Item, v: dict[str, Any], ex: Any) -> None:
    assert item.name == v["image/filename"].decode()
    assert item.source_id == v["image/source_id"].decode()
    assert (item.height, item.width) == (v["image/height"], v["image/width"])
    assert item.image == v["image/encoded"]
    assert item.image_format == "png"
    assert item.sha256 == v["image/key/sha256"].decode()
    assert len(item.objects) == len(v["image/object/bbox/xmin"])
    for k, o in enumerate(item.objects):
        assert o.box == Box(
            f32(v["image/object/bbox/xmin"][k]),
            f32(v["image/object/bbox/ymin"][k]),
            f32(v["image/object/bbox/xmax"][k]),
            f32(v["image/object/bbox/ymax"][k]),
        )
        assert o.label_id == v["image/object/class/label"][k]
        assert o.label == v["image/object/class/text"][k].decode()
        assert o.difficult == bool(v["image/object/difficult"][k])
        assert o.truncated == bool(v["image/object/truncated"][k])
        assert o.view == "Unspecified"
        assert o.is_crowd == bool(v["image/object/is_crowd"][k])
        assert o.area == f32(v["image/object/area"][k])
        assert o.mask == v["image/object/mask"][k]
    extra = dict(item.extra)
    assert list(extra) == ["image/object/keypoint/z"]
    raw = ex.features.feature["image/object/keypoint/z"].SerializeToString()
    assert extra["image/object/keypoint/z"] == raw


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_tfdrop_decodes_what_tensorflow_writes(
    tf: ModuleType, tmp_path: Path, kind: Compression
) -> None:
    path = tmp_path / f"tf.{kind}.tfrecord"
    examples = [tf_example(tf, i) for i in range(24)]
    options = tf.io.TFRecordOptions(compression_type=TF_TYPE[kind])
    with tf.io.TFRecordWriter(str(path), options=options) as w:
        for ex, _ in examples:
            w.write(ex.SerializeToString())
    records = list(iter_records_path(path))  # compression detected from the bytes
    assert len(records) == len(examples)
    for rec, (ex, v) in zip(records, examples, strict=True):
        check_item(decode_example(rec), v, ex)
        # the unknown key survives a pass-through: TF parses it back unchanged
        again = tf.train.Example.FromString(encode_example(decode_example(rec)))
        assert list(again.features.feature["image/object/keypoint/z"].float_list.value) == list(
            ex.features.feature["image/object/keypoint/z"].float_list.value
        )
        assert list(again.features.feature["image/object/mask"].bytes_list.value) == list(
            ex.features.feature["image/object/mask"].bytes_list.value
        )
