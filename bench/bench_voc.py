"""Benchmark: VOC zip -> TFRecord archive, tfdrop vs its peers, side by side, in one run.

Generates (once, cached in ``/tmp/tfdrop-bench``) a VOC2007 dataset of N images as CVAT exports
it (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/train.txt``, ``labelmap.txt``, every
member deflated): real Pillow JPEGs of 30-120 KB from a pool of a few hundred, 1-8 objects
each, some coordinates decimal. The peers get the unzipped tree beside it. Then, each in a
fresh process from page cache (inputs are read once before timing), for N = 2,000 and 20,000:

- ``tfdrop``: ``python -m tfdrop convert voc-N.zip --to tfrecord`` (read-back validation included);
- ``tf-script``: TF models' create_pascal_tf_record approach on the tree (bench/voc_tf_script.py);
- ``datumaro``: ``datum convert -if voc -f tf_detection_api -- --save-media`` on the tree;
- ``floor``: stream-read every member of the zip once (stdlib zipfile with zlib-ng's inflater,
  the one tfdrop reads with, one core); ``floor-zlib``: the same with the standard zlib.
- ``floor-cores``: the same with the members dealt out over one process per core (the issue's
  "same number of cores" for the default ``--jobs``).

Wall time and peak RSS come from ``os.wait4`` on each child. The peers live in a separate
venv made by ``bench/setup_peers.sh``; a peer that is missing is reported as skipped.

    .venv/bin/python bench/bench_voc.py                 # 2,000 and 20,000 images
    .venv/bin/python bench/bench_voc.py --sizes 2000    # one size
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import make_jpegs
from common import PEERS, REPO, alternate, floor, floor_cores, floor_zlib, rss, warm

VOC20 = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip
TARGETS = {"vs_tf_2000": 5.0, "vs_tf_20000": 2.0, "vs_datumaro": 10.0, "vs_floor": 1.5}
RSS_TARGET_MB = 100.0


# --- data -------------------------------------------------------------------------------------


def pool(cache: Path, rng: random.Random, n: int = 300) -> list[tuple[bytes, int, int]]:
    folder = cache / "voc-pool"
    if not folder.exists():
        tmp = cache / "voc-pool.part"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, (data, w, h) in enumerate(make_jpegs(n, rng)):
            (tmp / f"{i:03d}_{w}x{h}.jpg").write_bytes(data)
        tmp.rename(folder)
    out = []
    for path in sorted(folder.glob("*.jpg")):
        width, height = path.stem.split("_")[1].split("x")
        out.append((path.read_bytes(), int(width), int(height)))
    return out


def coord(rng: random.Random, lo: float, hi: float) -> str:
    value = rng.uniform(lo, hi)
    places = rng.choice((0, 0, 1, 2))
    return str(round(value)) if places == 0 else f"{value:.{places}f}"


def annotation(name: str, w: int, h: int, rng: random.Random) -> str:
    objs = []
    for _ in range(rng.randint(1, 8)):
        x0 = float(coord(rng, 0, w * 0.6))
        y0 = float(coord(rng, 0, h * 0.6))
        xmax = coord(rng, x0 + 1, w)
        ymax = coord(rng, y0 + 1, h)
        objs.append(
            f"  <object>\n    <name>{rng.choice(VOC20)}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>{rng.randint(0, 1)}</truncated>\n    <occluded>0</occluded>\n"
            f"    <difficult>{int(rng.random() < 0.1)}</difficult>\n    <bndbox>\n"
            f"      <xmin>{x0:g}</xmin>\n      <ymin>{y0:g}</ymin>\n"
            f"      <xmax>{xmax}</xmax>\n      <ymax>{ymax}</ymax>\n    </bndbox>\n  </object>\n"
        )
    return (
        f"<?xml version='1.0' encoding='utf-8'?>\n<annotation>\n  <folder></folder>\n"
        f"  <filename>{name}</filename>\n  <source>\n    <database>Unknown</database>\n"
        f"    <annotation>Unknown</annotation>\n    <image>Unknown</image>\n  </source>\n"
        f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n    <depth>3</depth>\n"
        f"  </size>\n  <segmented>0</segmented>\n{''.join(objs)}</annotation>\n"
    )


def generate(cache: Path, n: int) -> tuple[Path, Path]:
    """``voc-N.zip`` (deflated, CVAT's layout) and its unzipped tree ``voc-N/``."""
    cache.mkdir(parents=True, exist_ok=True)
    archive, tree = cache / f"voc-{n}.zip", cache / f"voc-{n}"
    if not archive.exists():
        rng = random.Random(3)
        images = pool(cache, rng)
        t0 = time.perf_counter()
        part = archive.with_suffix(".part")
        ids = [f"2007_{i:06d}" for i in range(n)]
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, item_id in enumerate(ids):
                data, w, h = images[i % len(images)]
                zf.writestr(f"Annotations/{item_id}.xml", annotation(f"{item_id}.jpg", w, h, rng))
                zf.writestr(f"JPEGImages/{item_id}.jpg", data)
            zf.writestr("ImageSets/Main/train.txt", "".join(f"{i}\n" for i in ids))
            labelmap = io.StringIO()
            labelmap.write("# label:color_rgb:parts:actions\nbackground:0,0,0::\n")
            for k, name in enumerate(VOC20, start=1):
                labelmap.write(f"{name}:{k},{k},{k}::\n")
            zf.writestr("labelmap.txt", labelmap.getvalue())
        part.rename(archive)
        print(f"generated {archive} ({archive.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    if not tree.exists():
        part_dir = tree.with_suffix(".part")
        shutil.rmtree(part_dir, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(part_dir)  # our own generated zip: safe to extract
        part_dir.rename(tree)
    return archive, tree


# --- measuring --------------------------------------------------------------------------------


def _tf_python() -> Path | None:
    """The peer's interpreter: the peers' venv, else this one when it has TensorFlow (the test
    extra installs tensorflow-cpu)."""
    peer_py = PEERS / "bin" / "python"
    if peer_py.exists():
        return peer_py
    has_tf = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; exit(u.find_spec('tensorflow') is None)",
        ],
        check=False,
    )
    return Path(sys.executable) if has_tf.returncode == 0 else None


def runs(archive: Path, tree: Path, out: Path) -> dict[str, list[str] | None]:
    tf_py, datum = _tf_python(), PEERS / "bin" / "datum"
    tfdrop = [
        sys.executable,
        "-m",
        "tfdrop",
        "convert",
        str(archive),
        "--to",
        "tfrecord",
        "-o",
        str(out / "tfdrop.zip"),
    ]
    return {
        "tfdrop": tfdrop,
        "tfdrop-j1": [*tfdrop, "--jobs", "1"],
        "tf-script": [str(tf_py), str(REPO / "bench" / "voc_tf_script.py"), "--data_dir",
                      str(tree), "--output", str(out / "tf.record")] if tf_py else None,
        "datumaro": [str(datum), "convert", "-if", "voc", "-i", str(tree), "-f",
                     "tf_detection_api", "-o", str(out / "datum"), "--", "--save-media"]
        if datum.exists() else None,
        "floor": floor(archive),
        "floor-cores": floor_cores(archive),
        "floor-zlib": floor_zlib(archive),
    }  # fmt: skip


def bench(cache: Path, n: int, repeat: int) -> dict[str, dict[str, Any]]:
    """Every run ``repeat`` times, alternating (run 1 of each, then run 2 of each, ...), so a
    change of load hits every contender alike; the median of each is reported."""
    archive, tree = generate(cache, n)
    warm(archive, tree)
    out = cache / f"out-{n}"
    once = frozenset({"datumaro"}) if n > 2000 else frozenset()  # minutes per run at 20,000
    return alternate(runs(archive, tree, out), repeat, out, once=once)


def report(all_results: dict[int, dict[str, dict[str, Any]]]) -> None:
    print("\ntargets (tfdrop vs peer, wall time):")
    for n, res in all_results.items():
        ours = res.get("tfdrop")
        if ours is None:
            continue
        for peer, target in (
            ("tf-script", TARGETS["vs_tf_2000"] if n <= 2000 else TARGETS["vs_tf_20000"]),
            ("datumaro", TARGETS["vs_datumaro"]),
        ):
            if peer in res and res[peer]["ok"]:
                x = res[peer]["wall_s"] / ours["wall_s"]
                verdict = "ok" if x >= target else "MISSED"
                print(
                    f"  {n:>6} images: {x:5.1f}x faster than {peer:<9} "
                    f"(target >= {target:g}x) {verdict}"
                )
        if "tfdrop-j1" in res:
            x = res["tfdrop-j1"]["wall_s"] / ours["wall_s"]
            print(f"  {n:>6} images: default jobs {x:4.2f}x faster than --jobs 1 (target >= 1.7x)")
        for mine, base, what in (
            ("tfdrop", "floor", "one core's zip-read floor"),
            ("tfdrop", "floor-cores", "the zip-read floor on as many cores"),
            ("tfdrop-j1", "floor", "one core's floor (--jobs 1)"),
            ("tfdrop", "floor-zlib", "one core's floor with the standard zlib (before session 9)"),
        ):
            if mine not in res or base not in res:
                continue
            floor = res[base]["wall_s"]
            x = res[mine]["wall_s"] / floor
            verdict = "ok" if x <= TARGETS["vs_floor"] else "MISSED"
            print(
                f"  {n:>6} images: {mine} is {x:5.2f}x {what} ({floor:.2f} s) "
                f"(aim <= 1.5x) {verdict}"
            )
        cpu = ", ".join(
            f"{peer} {res[peer]['cpu_s'] / ours['cpu_s']:.1f}x"
            for peer in ("tf-script", "datumaro", "floor")
            if peer in res and res[peer]["ok"]
        )
        print(f"  {n:>6} images: cpu seconds, peer / tfdrop (load-independent): {cpu}")
        print(f"  {n:>6} images:", end="")
        rss(res, "tfdrop", RSS_TARGET_MB)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tfdrop-bench"))
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "out" / "bench_voc.json")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cpus")
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for n in args.sizes:
        print(f"\n{n} images:", flush=True)
        results[n] = bench(args.cache, n, args.repeat)
    report(results)
    end = os.getloadavg()
    print(f"load average at the end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"load": load, "results": results}, indent=2))


if __name__ == "__main__":
    main()
