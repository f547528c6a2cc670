"""The peer for bench_voc.py: TF models' create_pascal_tf_record approach, written afresh.

Reads an unzipped VOC2007 tree the way the seed's walkthrough does: for each id of
``ImageSets/Main/<set>.txt``, parse ``Annotations/<id>.xml``, read ``JPEGImages/<filename>``
whole, check it is a JPEG with Pillow, hash it, build a ``tf.train.Example`` with the OD API's
keys (boxes divided by the size, no 1-based shift) and write it with ``tf.io.TFRecordWriter``.
Run inside the bench venv (it needs TensorFlow):

    .bench-venv/bin/python bench/voc_tf_script.py --data_dir TREE --set train --output OUT
"""

from __future__ import annotations

import argparse
import hashlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import PIL.Image
import tensorflow as tf


def _bytes(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values: list[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values: list[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def to_example(root: Path, xml_path: Path, label_map: dict[str, int]) -> tf.train.Example:
    ann = ET.parse(xml_path).getroot()
    filename = ann.findtext("filename") or ""
    encoded = (root / "JPEGImages" / filename).read_bytes()
    image = PIL.Image.open(io.BytesIO(encoded))
    if image.format != "JPEG":
        raise ValueError("Image format not JPEG")
    key = hashlib.sha256(encoded).hexdigest()
    width = int(ann.findtext("size/width") or 0)
    height = int(ann.findtext("size/height") or 0)
    xmin: list[float] = []
    ymin: list[float] = []
    xmax: list[float] = []
    ymax: list[float] = []
    texts: list[bytes] = []
    classes: list[int] = []
    truncated: list[int] = []
    poses: list[bytes] = []
    difficult: list[int] = []
    for obj in ann.iter("object"):
        box = obj.find("bndbox")
        assert box is not None
        xmin.append(float(box.findtext("xmin") or 0) / width)
        ymin.append(float(box.findtext("ymin") or 0) / height)
        xmax.append(float(box.findtext("xmax") or 0) / width)
        ymax.append(float(box.findtext("ymax") or 0) / height)
        name = obj.findtext("name") or ""
        texts.append(name.encode())
        classes.append(label_map[name])
        truncated.append(int(obj.findtext("truncated") or 0))
        difficult.append(int(obj.findtext("difficult") or 0))
        poses.append((obj.findtext("pose") or "").encode())
    feature = {
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/filename": _bytes([filename.encode()]),
        "image/source_id": _bytes([filename.encode()]),
        "image/key/sha256": _bytes([key.encode()]),
        "image/encoded": _bytes([encoded]),
        "image/format": _bytes([b"jpeg"]),
        "image/object/bbox/xmin": _floats(xmin),
        "image/object/bbox/xmax": _floats(xmax),
        "image/object/bbox/ymin": _floats(ymin),
        "image/object/bbox/ymax": _floats(ymax),
        "image/object/class/text": _bytes(texts),
        "image/object/class/label": _ints(classes),
        "image/object/difficult": _ints(difficult),
        "image/object/truncated": _ints(truncated),
        "image/object/view": _bytes(poses),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", type=Path, required=True)
    parser.add_argument("--set", default="train")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    root: Path = args.data_dir
    label_map: dict[str, int] = {}
    for line in (root / "labelmap.txt").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name and not line.startswith("#") and name != "background":
            label_map[name] = len(label_map) + 1
    ids = (root / "ImageSets" / "Main" / f"{args.set}.txt").read_text().split()
    with tf.io.TFRecordWriter(args.output) as writer:
        for item_id in ids:
            example = to_example(root, root / "Annotations" / f"{item_id}.xml", label_map)
            writer.write(example.SerializeToString())


if __name__ == "__main__":
    main()
