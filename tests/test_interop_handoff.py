"""The hand-off to training against real TensorFlow.

- The report's input paths, globbed by TensorFlow itself (``tf.io.gfile.glob``, what the OD
  API's dataset builder calls on each ``input_path``) in the unpacked archive, find exactly the
  shards written, and the objects and images per label per subset that TensorFlow parses from
  them are the report's.
- ``tfdrop inspect --summary`` on records TensorFlow wrote (``tf.io.TFRecordWriter``, a shard
  set and a plain file, masks included, no label map) counts what was written.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import text_format
from PIL import Image

from conftest import records_bytes, tfdrop
from daemon_support import png
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.codec.proto import TrainEvalPipelineConfig
from tfdrop.convert import ConvertOptions, convert

pytestmark = pytest.mark.interop

LABELS = ("cat", "dog", "bird")
PNG_MASKS = 2


def _labels(i: int) -> list[str]:
    return [LABELS[(i * 5 + k) % 3] for k in range(i % 4)]


def _source(path: Path, subsets: dict[str, int]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for subset, n in subsets.items():
            items = [
                Item(
                    name=f"{subset}_{i}.png",
                    subset=subset,
                    width=16,
                    height=16,
                    image=png(i),
                    image_format="png",
                    objects=tuple(
                        Annotation(lb, Box(0.1, 0.2, 0.6, 0.7), label_id=LABELS.index(lb) + 1)
                        for lb in _labels(i)
                    ),
                )
                for i in range(n)
            ]
            zf.writestr(f"{subset}.tfrecord", records_bytes(items))
        zf.writestr("label_map.pbtxt", format_label_map(LabelMap.from_names(list(LABELS))))
    return path


def _parse(block: str) -> Any:
    return text_format.Parse(block, TrainEvalPipelineConfig())


def _tf_counts(
    tf: ModuleType, files: list[str], *, masks: bool
) -> tuple[dict[str, dict[str, int]], int, int]:
    """Objects and images per label, objects and masks, as TensorFlow parses ``files``."""
    desc = {"image/object/class/text": tf.io.VarLenFeature(tf.string)}
    if masks:
        desc["image/object/mask"] = tf.io.VarLenFeature(tf.string)
    objects: Counter[str] = Counter()
    images: Counter[str] = Counter()
    n_masks = 0
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, desc)
        labels = [t.decode() for t in tf.sparse.to_dense(ex["image/object/class/text"]).numpy()]
        objects.update(labels)
        images.update(set(labels))
        if masks:
            n_masks += int(tf.size(ex["image/object/mask"].values))
    counts = {lb: {"objects": n, "images": images[lb]} for lb, n in sorted(objects.items())}
    return counts, sum(objects.values()), n_masks


def test_tensorflow_globs_the_report_input_paths_and_parses_the_report_counts(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = _source(tmp_path / "src.zip", {"train": 17, "val": 6})
    out = tmp_path / "out.zip"
    doc = convert(src, out, ConvertOptions(shards=3, masks=True)).to_dict()
    root = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(root)
        written = sorted(n for n in zf.namelist() if n != "label_map.pbtxt")
    config = _parse(doc["input_reader"])
    readers = {"train": config.train_input_reader, "val": config.eval_input_reader[0]}
    found: list[str] = []
    for subset, reader in readers.items():
        assert (root / reader.label_map_path).is_file()
        assert reader.load_instance_masks
        assert reader.mask_type == PNG_MASKS
        files = sorted(
            p
            for pattern in reader.tf_record_input_reader.input_path
            for p in tf.io.gfile.glob(str(root / pattern))
        )
        assert len(files) == 3
        found += [Path(f).name for f in files]
        counts, n_objects, n_masks = _tf_counts(tf, files, masks=True)
        assert counts == doc["labels_by_subset"][subset]
        assert n_masks == n_objects > 0
    assert sorted(found) == written


def _mask_png(w: int, h: int) -> bytes:
    img = Image.new("L", (w, h), 0)
    img.paste(1, (2, 2, w // 2, h // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _tf_example(tf: ModuleType, name: str, objs: list[tuple[str, int]]) -> bytes:
    f = tf.train.Feature
    bl, il, fl = tf.train.BytesList, tf.train.Int64List, tf.train.FloatList
    feats = {
        "image/height": f(int64_list=il(value=[16])),
        "image/width": f(int64_list=il(value=[16])),
        "image/filename": f(bytes_list=bl(value=[name.encode()])),
        "image/source_id": f(bytes_list=bl(value=[name.encode()])),
        "image/encoded": f(bytes_list=bl(value=[png(len(name))])),
        "image/format": f(bytes_list=bl(value=[b"png"])),
        "image/object/bbox/xmin": f(float_list=fl(value=[0.1] * len(objs))),
        "image/object/bbox/xmax": f(float_list=fl(value=[0.5] * len(objs))),
        "image/object/bbox/ymin": f(float_list=fl(value=[0.2] * len(objs))),
        "image/object/bbox/ymax": f(float_list=fl(value=[0.6] * len(objs))),
        "image/object/class/text": f(bytes_list=bl(value=[t.encode() for t, _ in objs])),
        "image/object/class/label": f(int64_list=il(value=[i for _, i in objs])),
        "image/object/mask": f(bytes_list=bl(value=[_mask_png(16, 16)] * len(objs))),
    }
    return bytes(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _objs(i: int) -> list[tuple[str, int]]:
    # ids 2 and 5 only: num_classes must be the largest id, not the number of labels
    return [("car", 2)] * (i % 3) + [("person", 5)] * (i % 2)


def test_inspect_summary_of_records_tensorflow_wrote(tf: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    expected: dict[str, dict[str, Counter[str]]] = {}
    layout = {"train": [f"train.record-0000{k}-of-00002" for k in range(2)], "val": ["val.record"]}
    n = 0
    for subset, names in layout.items():
        objs: Counter[str] = Counter()
        imgs: Counter[str] = Counter()
        for name in names:
            with tf.io.TFRecordWriter(str(data / name)) as w:
                for _ in range(5):
                    o = _objs(n)
                    w.write(_tf_example(tf, f"{subset}{n}.png", o))
                    objs.update(t for t, _ in o)
                    imgs.update({t for t, _ in o})
                    n += 1
        expected[subset] = {"objects": objs, "images": imgs}
    want: dict[str, Any] = {
        s: {lb: {"objects": c["objects"][lb], "images": c["images"][lb]} for lb in c["objects"]}
        for s, c in expected.items()
    }

    for path in (data, data / "train.record-00001-of-00002"):
        proc = tfdrop("inspect", "--summary", "--json", path)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        subsets = list(want) if path == data else ["train"]
        assert doc["labels_by_subset"] == {s: want[s] for s in subsets}
        assert doc["num_classes"] == 5
        assert doc["input_paths"]["train"] == ["train.record-?????-of-00002"]
        config = _parse(doc["input_reader"])
        train = config.train_input_reader
        assert list(train.tf_record_input_reader.input_path) == ["train.record-?????-of-00002"]
        assert train.load_instance_masks
        assert train.mask_type == PNG_MASKS
        globbed = tf.io.gfile.glob(str(data / "train.record-?????-of-00002"))
        assert sorted(Path(p).name for p in globbed) == layout["train"]
    doc = json.loads(tfdrop("inspect", "--summary", "--json", data).stdout)
    config = _parse(doc["input_reader"])
    assert [list(r.tf_record_input_reader.input_path) for r in config.eval_input_reader] == [
        ["val.record"]
    ]
    text = tfdrop("inspect", "--summary", data).stdout
    assert "num_classes: 5" in text
    assert "eval_input_reader {" in text
    assert "mask_type: PNG_MASKS" in text
