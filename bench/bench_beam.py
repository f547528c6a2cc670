"""``tfdrop beam`` on DirectRunner (1 and 2 worker processes) vs ``tfdrop convert``, on one
generated VOC zip (bench_voc.py's data: JPEG pool, 1-8 objects per image, VOC's 20 labels).

    python bench/bench_beam.py [--images 20000] [--repeat 2] [--cache bench/.cache]

Each run is a subprocess; its process tree is sampled every 50 ms for the peak RSS of the
parent (the launcher / convert's process) and of the largest worker (Beam's SDK harness
processes, convert's --jobs workers). Runs alternate (convert, beam x1, beam x2, ...) and the
medians are printed with items/s and the ratios. Not a test: run it on a quiet machine (the
issue's figure is 20,000 images; a small --images only proves the script works).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench_voc import generate

REPO = Path(__file__).resolve().parents[1]
RSS_TARGET_MB = 100.0


def _sample(proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Wait for ``proc``; (parent peak RSS MB, largest descendant's peak RSS MB)."""
    root = psutil.Process(proc.pid)
    parent = worker = 0
    while proc.poll() is None:
        try:
            parent = max(parent, root.memory_info().rss)
            for child in root.children(recursive=True):
                worker = max(worker, child.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    return parent / 2**20, worker / 2**20


def run(name: str, argv: list[str], out: Path) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent, worker = _sample(proc)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"wall_s": wall, "parent_mb": parent, "worker_mb": worker}


def commands(archive: Path, work: Path) -> dict[str, tuple[list[str], Path]]:
    py = sys.executable
    beam = [py, "-m", "tfdrop", "beam", "--to", "tfrecord", "-q", str(archive), "-o"]
    mp = ["--direct_running_mode=multi_processing"]
    return {
        "convert -j1": (
            [py, "-m", "tfdrop", "convert", str(archive), "--to", "tfrecord", "-q", "-j", "1",
             "-o", str(work / "c1.zip")],
            work / "c1.zip",
        ),
        "convert -j2": (
            [py, "-m", "tfdrop", "convert", str(archive), "--to", "tfrecord", "-q", "-j", "2",
             "-o", str(work / "c2.zip")],
            work / "c2.zip",
        ),
        "beam 1 worker": (
            [*beam, str(work / "b1"), "--", *mp, "--direct_num_workers=1"], work / "b1"
        ),
        "beam 2 workers": (
            [*beam, str(work / "b2"), "--", *mp, "--direct_num_workers=2"], work / "b2"
        ),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=REPO / "bench" / ".cache")
    args = ap.parse_args()
    archive, _tree = generate(args.cache, args.images)
    work = args.cache / "beam-work"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.images} images, {archive.stat().st_size / 1e6:.0f} MB zip, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeat):
        for name, (argv, out) in commands(archive, work).items():
            res = run(name, argv, out)
            results.setdefault(name, []).append(res)
            print(f"  round {r + 1} {name:15s} {res['wall_s']:7.2f} s", flush=True)
    print(f"\n{'run':15s} {'wall s':>8s} {'items/s':>8s} {'parent MB':>10s} {'worker MB':>10s}")
    medians = {}
    for name, runs in results.items():
        wall = statistics.median(x["wall_s"] for x in runs)
        parent = max(x["parent_mb"] for x in runs)
        worker = max(x["worker_mb"] for x in runs)
        medians[name] = wall
        print(f"{name:15s} {wall:8.2f} {args.images / wall:8.0f} {parent:10.1f} {worker:10.1f}")
    base = medians["convert -j1"]
    print("\nratios to convert -j1 (higher is faster): "
          + ", ".join(f"{n} {base / w:.2f}x" for n, w in medians.items()))  # fmt: skip
    print(f"beam 2 workers vs 1: {medians['beam 1 worker'] / medians['beam 2 workers']:.2f}x")
    print(
        f"peak RSS target per process: {RSS_TARGET_MB:.0f} MB (Beam's harness itself is "
        "most of a worker's size)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
