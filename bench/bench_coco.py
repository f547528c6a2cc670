"""Benchmark: COCO -> TFRecord archive, tfdrop vs its peers, side by side, in one run.

Generates (once, cached in ``/tmp/tfdrop-bench``) a COCO 1.0 instances dataset as CVAT exports
it: ``annotations/instances_train.json`` (boxes as ``bbox`` with ``segmentation: []``, two
decimals, 20 categories) and ``images/train/*.jpg``: N = 20,000 images with 10 objects each,
real JPEGs of 30-120 KB hard-linked from bench_voc.py's pool. The zip (JSON deflated, images
stored) is what tfdrop gets; the peers get the unzipped tree. Each run is a fresh process from
page cache:

- ``tfdrop``: ``python -m tfdrop convert coco-N.zip --to tfrecord`` (read-back validation
  included);
- ``tf-script``: TF models' ``create_coco_tf_record.py`` approach (this file's ``tf-script``
  mode): ``json.load`` the instances file, index annotations by image id, read each image whole
  with ``tf.io.gfile``, build a ``tf.train.Example`` and write it with ``tf.io.TFRecordWriter``;
- ``tfdrop-j1``: the tfdrop run with ``--jobs 1`` (scaling);
- ``datumaro``: ``datum convert -if coco_instances -f tf_detection_api -- --save-media``
  (once when N is large: minutes per run);
- ``floor``: every member of the zip inflated once (one core); ``floor-cores``: the same,
  members dealt out over one process per core.

Runs alternate (run 1 of each, then run 2 of each); medians are reported. Wall time, CPU time
and the peak RSS of the parent and each worker come from bench/common.py. The peers live in a
separate venv (``bench/setup_peers.sh``); a missing peer is reported as skipped.

    .venv/bin/python bench/bench_coco.py               # N = 20,000
    .venv/bin/python bench/bench_coco.py --images 2000 # a quicker run
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_voc import VOC20, _tf_python, pool
from common import (
    PEERS,
    alternate,
    arguments,
    at_most,
    finish,
    floor,
    floor_cores,
    link_or_copy,
    load,
    ratio,
    rss,
    tfdrop,
    warm,
)

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"vs_datumaro": 10.0, "vs_tf_script": 2.0}
RSS_TARGET_MB = 100.0
PER_IMAGE = 10


# --- data -------------------------------------------------------------------------------------


def generate(cache: Path, n: int) -> tuple[Path, Path]:
    """``(coco-N.zip, coco-N tree)``, made once."""
    tree = cache / f"coco-{n}"
    archive = cache / f"coco-{n}.zip"
    if tree.exists() and archive.exists():
        return archive, tree
    rng = random.Random(4)
    jpegs = pool(cache, rng)
    pool_files = sorted((cache / "voc-pool").glob("*.jpg"))
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "images" / "train").mkdir(parents=True)
    (tree / "annotations").mkdir()
    cats = [{"id": i, "name": name, "supercategory": ""} for i, name in enumerate(VOC20, 1)]
    images: list[str] = []
    anns: list[str] = []
    for i in range(n):
        k = rng.randrange(len(jpegs))
        _, w, h = jpegs[k]
        name = f"frame_{i:06d}.jpg"
        dst = tree / "images" / "train" / name
        link_or_copy(pool_files[k], dst)
        images.append(
            f'{{"id": {i + 1}, "width": {w}, "height": {h}, "file_name": "{name}", '
            f'"license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0}}'
        )
        for _ in range(PER_IMAGE):
            x, y = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            bw, bh = rng.uniform(1, w - x), rng.uniform(1, h - y)
            anns.append(
                f'{{"id": {len(anns) + 1}, "image_id": {i + 1}, '
                f'"category_id": {rng.randint(1, 20)}, "segmentation": [], '
                f'"area": {bw * bh:.2f}, "bbox": [{x:.2f}, {y:.2f}, {bw:.2f}, {bh:.2f}], '
                f'"iscrowd": 0, "attributes": {{"occluded": false}}}}'
            )
    text = (
        '{"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"description": ""}, '
        f'"categories": {json.dumps(cats)}, "images": [{", ".join(images)}], '
        f'"annotations": [{", ".join(anns)}]}}'
    )
    (tree / "annotations" / "instances_train.json").write_text(text)
    part = archive.with_suffix(".part")
    with zipfile.ZipFile(part, "w") as zf:
        ann = tree / "annotations" / "instances_train.json"
        zf.write(ann, "annotations/instances_train.json", compress_type=zipfile.ZIP_DEFLATED)
        for path in sorted((tree / "images" / "train").iterdir()):
            zf.write(path, f"images/train/{path.name}")
    part.rename(archive)
    return archive, tree


# --- the TF models create_coco_tf_record approach (run inside the bench venv) ----------------


def tf_script(image_dir: Path, annotations: Path, output: Path) -> None:
    """create_coco_tf_record.py's path, written afresh: json.load, index, Example per image."""
    import hashlib
    import io

    import PIL.Image
    import tensorflow as tf  # type: ignore[import-untyped]

    def _bytes(v: list[bytes]) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    def _ints(v: list[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    def _floats(v: list[float]) -> Any:
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    with tf.io.gfile.GFile(str(annotations), "r") as fid:
        groundtruth = json.load(fid)
    category_index = {c["id"]: c for c in groundtruth["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in groundtruth["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    with tf.io.TFRecordWriter(str(output)) as writer:
        for image in groundtruth["images"]:
            w, h = image["width"], image["height"]
            with tf.io.gfile.GFile(str(image_dir / image["file_name"]), "rb") as fid:
                encoded = fid.read()
            PIL.Image.open(io.BytesIO(encoded))  # the script opens the image to check it
            key = hashlib.sha256(encoded).hexdigest()
            xmin, xmax, ymin, ymax, names, ids, crowd, area = [], [], [], [], [], [], [], []
            for ann in by_image.get(image["id"], []):
                x, y, bw, bh = ann["bbox"]
                if bw <= 0 or bh <= 0 or x + bw > w or y + bh > h:
                    continue
                xmin.append(x / w)
                xmax.append((x + bw) / w)
                ymin.append(y / h)
                ymax.append((y + bh) / h)
                ids.append(ann["category_id"])
                names.append(category_index[ann["category_id"]]["name"].encode())
                crowd.append(ann["iscrowd"])
                area.append(ann["area"])
            feature = {
                "image/height": _ints([h]),
                "image/width": _ints([w]),
                "image/filename": _bytes([image["file_name"].encode()]),
                "image/source_id": _bytes([str(image["id"]).encode()]),
                "image/key/sha256": _bytes([key.encode()]),
                "image/encoded": _bytes([encoded]),
                "image/format": _bytes([b"jpeg"]),
                "image/object/bbox/xmin": _floats(xmin),
                "image/object/bbox/xmax": _floats(xmax),
                "image/object/bbox/ymin": _floats(ymin),
                "image/object/bbox/ymax": _floats(ymax),
                "image/object/class/text": _bytes(names),
                "image/object/class/label": _ints(ids),
                "image/object/is_crowd": _ints(crowd),
                "image/object/area": _floats(area),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


# --- runs -------------------------------------------------------------------------------------


def runs(archive: Path, tree: Path, out: Path) -> dict[str, list[str] | None]:
    peer_py = _tf_python()  # the peers' venv, else this one when it has TensorFlow
    datum = PEERS / "bin" / "datum"
    ann = tree / "annotations" / "instances_train.json"
    ours = tfdrop("convert", str(archive), "--to", "tfrecord", "-o", str(out / "tfdrop.zip"))
    return {
        "tfdrop": ours,
        "tfdrop-j1": [*ours, "--jobs", "1"],
        "tf-script": [str(peer_py), __file__, "tf-script", str(tree / "images" / "train"),
                      str(ann), str(out / "tf-script.tfrecord")] if peer_py else None,
        "datumaro": [str(datum), "convert", "-if", "coco_instances", "-i", str(tree),
                     "-f", "tf_detection_api", "-o", str(out / "datumaro"), "--",
                     "--save-media"] if datum.exists() else None,
        "floor": floor(archive),
        "floor-cores": floor_cores(archive),
    }  # fmt: skip


def bench(cache: Path, n: int, repeat: int, only: list[str]) -> dict[str, dict[str, Any]]:
    archive, tree = generate(cache, n)
    warm(archive, tree)
    out = cache / "coco-out"
    cmds = {k: v for k, v in runs(archive, tree, out).items() if not only or k in only}
    once = frozenset({"datumaro"}) if n > 2000 else frozenset()
    return alternate(cmds, repeat, out, once=once)


def report(n: int, res: dict[str, dict[str, Any]]) -> None:
    print(f"\ntargets, COCO -> TFRecord, {n} images x {PER_IMAGE} objects:")
    ratio(res, "tf-script", "tfdrop", TARGETS["vs_tf_script"], "faster than the TF script")
    ratio(res, "datumaro", "tfdrop", TARGETS["vs_datumaro"], "faster than datumaro")
    ratio(res, "datumaro", "tf-script", TARGETS["vs_datumaro"], "(TF script vs datumaro)")
    ratio(res, "tfdrop-j1", "tfdrop", 1.7, "default jobs vs --jobs 1")
    at_most(res, "tfdrop", "floor", 1.5)
    at_most(res, "tfdrop", "floor-cores", 1.5)
    at_most(res, "tfdrop-j1", "floor", 1.5)
    rss(res, "tfdrop", RSS_TARGET_MB)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "tf-script":
        tf_script(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = arguments(__doc__.split("\n")[0], repeat=2)
    parser.add_argument(
        "--only",
        nargs="*",
        default=[],
        help="tfdrop, tfdrop-j1, tf-script, datumaro, floor, floor-cores",
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"COCO -> TFRecord: {args.images} images; {load()}")
    res = bench(args.cache, args.images, args.repeat, args.only)
    report(args.images, res)
    finish(res, args.json)


if __name__ == "__main__":
    main()
