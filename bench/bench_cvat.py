"""Benchmark: CVAT for images 1.1 -> TFRecord archive, tfdrop vs Datumaro, side by side.

Generates (once, cached in ``/tmp/tfdrop-bench``) a CVAT for images export of N images (default
20,000): ``annotations.xml`` (20 VOC labels in ``<meta>``, 1-8 boxes per image, some with an
``occluded`` flag and a ``color`` attribute, two-decimal coordinates) and ``images/*.jpg``,
real JPEGs of 30-120 KB hard-linked from bench_voc.py's pool; every member deflated, as CVAT
exports. tfdrop gets the zip; Datumaro the unzipped tree. Runs, alternating, each a fresh
process from page cache:

- ``tfdrop``: ``tfdrop convert cvat-N.zip --to tfrecord`` (default jobs: every core);
- ``tfdrop-j1``: the same with ``--jobs 1`` (the scaling row: target >= 1.7x on 2 cores);
- ``datumaro``: ``datum convert -if cvat -f tf_detection_api -- --save-media`` (once when N
  is large: minutes per run);
- ``floor``: every member of the zip inflated once (stdlib zipfile, one core).

Prints medians, ratios against the issue's targets, peak RSS of the parent and of each
worker, and the load average before and after.

    python bench/bench_cvat.py                  # 20,000 images
    python bench/bench_cvat.py --images 200 --repeat 2
"""

from __future__ import annotations

import random
import shutil
import sys
import zipfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_voc import VOC20, pool
from common import (
    alternate,
    arguments,
    at_most,
    finish,
    floor,
    link_or_copy,
    load,
    peer,
    ratio,
    rss,
    tfdrop,
    warm,
)


def generate(cache: Path, n: int) -> tuple[Path, Path]:
    """``(cvat-N.zip, cvat-N tree)``, made once."""
    tree, archive = cache / f"cvat-{n}", cache / f"cvat-{n}.zip"
    if tree.exists() and archive.exists():
        return archive, tree
    rng = random.Random(5)
    jpegs = pool(cache, rng)
    files = sorted((cache / "voc-pool").glob("*.jpg"))
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "images").mkdir(parents=True)
    labels = "".join(
        f"<label><name>{name}</name><attributes><attribute><name>color</name>"
        "<input_type>text</input_type></attribute></attributes></label>"
        for name in VOC20
    )
    rows = []
    for i in range(n):
        k = rng.randrange(len(jpegs))
        _, w, h = jpegs[k]
        name = f"frame_{i:06d}.jpg"
        link_or_copy(files[k], tree / "images" / name)
        boxes = []
        for _ in range(rng.randint(1, 8)):
            x, y = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
            x2, y2 = rng.uniform(x + 1, w), rng.uniform(y + 1, h)
            attr = '<attribute name="color">red</attribute>' if rng.random() < 0.2 else ""
            boxes.append(
                f"    <box label={quoteattr(rng.choice(VOC20))} occluded="
                f'"{int(rng.random() < 0.1)}" xtl="{x:.2f}" ytl="{y:.2f}" xbr="{x2:.2f}" '
                f'ybr="{y2:.2f}" z_order="0">{attr}</box>\n'
            )
        rows.append(
            f'  <image id="{i}" name="{name}" width="{w}" height="{h}">\n{"".join(boxes)}'
            "  </image>\n"
        )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
        f"  <meta><task><name>bench</name><size>{n}</size><labels>{labels}</labels></task>"
        f"</meta>\n{''.join(rows)}</annotations>\n"
    )
    (tree / "annotations.xml").write_text(xml)
    part = archive.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(tree / "annotations.xml", "annotations.xml")
        for path in sorted((tree / "images").iterdir()):
            zf.write(path, f"images/{path.name}")
    part.rename(archive)
    print(f"generated {archive} ({archive.stat().st_size / 1e6:.0f} MB)", flush=True)
    return archive, tree


def main() -> None:
    args = arguments(__doc__).parse_args()
    print(load())
    archive, tree = generate(args.cache, args.images)
    warm(archive, tree)
    out = args.cache / f"cvat-out-{args.images}"
    ours = tfdrop("convert", str(archive), "--to", "tfrecord", "-o", str(out / "tfdrop.zip"))
    datum = peer("datum")
    cmds = {
        "tfdrop": ours,
        "tfdrop-j1": [*ours, "--jobs", "1"],
        "datumaro": [str(datum), "convert", "-if", "cvat", "-i", str(tree), "-f",
                     "tf_detection_api", "-o", str(out / "datum"), "--", "--save-media"]
        if datum else None,
        "floor": floor(archive),
    }  # fmt: skip
    print(f"\nCVAT -> TFRecord, {args.images} images:", flush=True)
    once = frozenset({"datumaro"}) if args.images > 2000 else frozenset()
    res = alternate(cmds, args.repeat, out, once=once)
    print("\ntargets (tfdrop vs peer):")
    ratio(res, "datumaro", "tfdrop", 10.0, "faster than datumaro")
    ratio(res, "tfdrop-j1", "tfdrop", 1.7, "default jobs vs --jobs 1")
    at_most(res, "tfdrop", "floor", 1.5)
    rss(res, "tfdrop", 100.0)
    finish(res, args.json)


if __name__ == "__main__":
    main()
