"""Benchmark: TFRecord archive -> VOC and -> COCO, tfdrop vs Datumaro, side by side.

Generates (once, cached in ``/tmp/tfdrop-bench``) a TFRecord archive of N images (default
20,000: about 1.1 GB) by converting bench_voc.py's VOC dataset with tfdrop (``train.tfrecord``
+ ``label_map.pbtxt``, stored), and unzips it for Datumaro. Runs, alternating, each a fresh
process from page cache:

- ``tfdrop-voc`` / ``tfdrop-coco``: ``tfdrop convert tfrecord-N.zip --to voc|coco``;
- ``tfdrop-voc-j1``: the VOC run with ``--jobs 1`` (scaling);
- ``datumaro-voc`` / ``datumaro-coco``: ``datum convert -if tf_detection_api -f voc|
  coco_instances -- --save-media`` on the tree (once when N is large);
- ``floor``: every member of the zip read once (stdlib zipfile).

Prints medians, the ratios against the issue's targets (>= 10x Datumaro), peak RSS of the
parent and each worker, and the load average.

    python bench/bench_tfrecord.py                   # 20,000 images
    python bench/bench_tfrecord.py --images 200 --repeat 2
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_voc import generate as generate_voc
from common import (
    ENV,
    alternate,
    arguments,
    at_most,
    finish,
    floor,
    load,
    peer,
    ratio,
    rss,
    tfdrop,
    warm,
)


def generate(cache: Path, n: int) -> tuple[Path, Path]:
    """``(tfrecord-N.zip, tfrecord-N tree)``, made once from ``voc-N.zip``."""
    archive, tree = cache / f"tfrecord-{n}.zip", cache / f"tfrecord-{n}"
    if not archive.exists():
        voc, _ = generate_voc(cache, n)
        part = archive.with_name(archive.name + ".part.zip")
        subprocess.run(tfdrop("convert", str(voc), "--to", "tfrecord", "-o", str(part)),
                       check=True, env=ENV, stdout=subprocess.DEVNULL)  # fmt: skip
        part.rename(archive)
    if not tree.exists():
        part_dir = tree.with_suffix(".part")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(part_dir)  # our own output: safe to extract
        part_dir.rename(tree)
    return archive, tree


def main() -> None:
    args = arguments(__doc__).parse_args()
    print(load())
    archive, tree = generate(args.cache, args.images)
    warm(archive, tree)
    out = args.cache / f"tfrecord-out-{args.images}"
    datum = peer("datum")

    def ours(target: str) -> list[str]:
        return tfdrop("convert", str(archive), "--to", target, "-o", str(out / f"{target}.zip"))

    def theirs(target: str) -> list[str] | None:
        if datum is None:
            return None
        return [str(datum), "convert", "-if", "tf_detection_api", "-i", str(tree), "-f",
                target, "-o", str(out / target), "--", "--save-media"]  # fmt: skip

    cmds = {
        "tfdrop-voc": ours("voc"),
        "tfdrop-voc-j1": [*ours("voc"), "--jobs", "1"],
        "tfdrop-coco": ours("coco"),
        "datumaro-voc": theirs("voc"),
        "datumaro-coco": theirs("coco_instances"),
        "floor": floor(archive),
    }
    print(f"\nTFRecord -> VOC and COCO, {args.images} images:", flush=True)
    once = frozenset({"datumaro-voc", "datumaro-coco"}) if args.images > 2000 else frozenset()
    res = alternate(cmds, args.repeat, out, once=once)
    print("\ntargets (tfdrop vs peer):")
    ratio(res, "datumaro-voc", "tfdrop-voc", 10.0, "-> VOC faster than datumaro")
    ratio(res, "datumaro-coco", "tfdrop-coco", 10.0, "-> COCO faster than datumaro")
    ratio(res, "tfdrop-voc-j1", "tfdrop-voc", 1.7, "-> VOC default jobs vs --jobs 1")
    at_most(res, "tfdrop-voc", "floor", 1.5)
    rss(res, "tfdrop-voc", 100.0)
    rss(res, "tfdrop-coco", 100.0)
    finish(res, args.json)


if __name__ == "__main__":
    main()
