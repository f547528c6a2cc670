"""A COCO instances file of over 300 MB converts with bounded memory.

The file is shaped like COCO's own ``instances_train2017.json`` (448 MB: 118k images, 860k
annotations, mostly polygons): images with six polygon annotations of 80 points each (about
1.4 KB per annotation, so the run stays near half a minute of CPU: the cost is per annotation).
It is written as JSON text straight to disk (no Python objects for the dataset) and converted
in a subprocess with ``--no-images``; the subprocess reports its own peak RSS (``VmHWM``)
and CPU time, printed here; the peak is asserted under :data:`RSS_BOUND_MB`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

RSS_BOUND_MB = 150  # measured about 50 MB; the issue aims under 300
MIN_BYTES = 300 * 1000 * 1000

_CHILD = """
import resource, sys, json
from pathlib import Path
from tfdrop.convert import ConvertOptions, convert
r = convert(Path(sys.argv[1]), Path(sys.argv[2]), ConvertOptions(images=False),
            workdir=Path(sys.argv[3]))
use = resource.getrusage(resource.RUSAGE_SELF)
cpu = round(use.ru_utime + use.ru_stime, 1)
# VmHWM, not ru_maxrss: ru_maxrss keeps the peak of the process that forked us (pytest with
# TensorFlow loaded), VmHWM is this program's own high-water mark
status = Path("/proc/self/status").read_text()
peak = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) // 1024
print(json.dumps({"items": r.items, "objects": r.objects, "peak_mb": peak, "cpu_s": cpu,
                  "labels": len(r.label_map), "validated": r.validated_items}))
"""


def write_instances(path: Path, n_images: int, per_image: int, points: int, seed: int = 0) -> int:
    """COCO instances text with polygons, streamed to ``path``; returns the annotation count."""
    rnd = random.Random(seed)
    # a pool of pre-rendered polygon/bbox fragments keeps generation fast; ids vary per object
    pool = []
    for _ in range(97):
        x, y = rnd.uniform(0, 500), rnd.uniform(0, 380)
        poly = [v for _ in range(points) for v in (x + rnd.uniform(0, 100), y + rnd.uniform(0, 90))]
        xs, ys = poly[0::2], poly[1::2]
        seg = ", ".join(f"{v:.2f}" for v in poly)
        pool.append(
            f'"category_id": {rnd.choice([1, 3, 18, 90])}, "segmentation": [[{seg}]], '
            f'"area": {rnd.uniform(10, 5000):.3f}, "bbox": [{min(xs):.2f}, {min(ys):.2f}, '
            f'{max(xs) - min(xs):.2f}, {max(ys) - min(ys):.2f}], "iscrowd": 0'
        )
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"},
            {"id": 90, "name": "toothbrush"}]  # fmt: skip
    n = 0
    with path.open("w", buffering=1 << 20) as f:
        f.write('{"info": {"description": "generated"}, "licenses": [], "categories": ')
        f.write(json.dumps(cats) + ', "images": [')
        f.write(",".join(
            f'{{"id": {i + 1}, "width": 640, "height": 480, "file_name": "{i:012d}.jpg"}}'
            for i in range(n_images)
        ))  # fmt: skip
        f.write('], "annotations": [')
        for i in range(n_images):
            parts = []
            for _ in range(per_image):
                n += 1
                parts.append(f'{{"id": {n}, "image_id": {i + 1}, {pool[n % 97]}}}')
            f.write(("," if i else "") + ",".join(parts))
        f.write("]}")
    return n


@pytest.mark.slow
def test_a_300_mb_instances_file_converts_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "coco"
    (src / "annotations").mkdir(parents=True)
    ann = src / "annotations" / "instances_train.json"
    t0 = time.monotonic()
    n_images = 36_000  # about 310 MB: polygons of 80 points, about 1.4 KB per annotation
    n_objects = write_instances(ann, n_images, per_image=6, points=80)
    size = ann.stat().st_size
    gen_s = time.monotonic() - t0
    assert size >= MIN_BYTES, size
    out = tmp_path / "out.zip"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t1 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(src), str(out), str(work)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    conv_s = time.monotonic() - t1
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\nCOCO {size / 1e6:.0f} MB ({n_images} images, {n_objects} polygon annotations): "
        f"generated in {gen_s:.1f} s, converted in {conv_s:.1f} s ({result['cpu_s']} s CPU), "
        f"peak RSS {result['peak_mb']} MB (bound {RSS_BOUND_MB} MB)"
    )
    assert result["items"] == n_images
    assert result["objects"] == n_objects
    assert result["validated"] == n_images
    assert result["labels"] == 4
    assert result["peak_mb"] < RSS_BOUND_MB
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["train.tfrecord", "label_map.pbtxt"]
    assert not list(work.iterdir())  # spill files are gone
