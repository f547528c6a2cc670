"""Benchmark: start-up of the small commands (issue 11: under 150 ms each).

Runs, alternating, ``--repeat`` times each (default 10), every one a fresh process: a bare
interpreter (``python -c pass``, the floor), ``tfdrop --version``, ``tfdrop validate`` and
``tfdrop inspect`` of a small TFRecord archive (made once with ``tfdrop convert`` from a
20-image VOC zip). Prints the median wall time of each and the verdict, and the load average.

    python bench/bench_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ENV, load

TARGET_S = 0.150
TFDROP = Path(sys.executable).with_name("tfdrop")


def small_archive(cache: Path) -> Path:
    out = cache / "startup-small.zip"
    if out.exists():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    voc = cache / "startup-voc.zip"
    with zipfile.ZipFile(voc, "w") as zf:
        for i in range(20):
            zf.writestr(
                f"Annotations/{i:02d}.xml",
                f"<annotation><filename>{i:02d}.jpg</filename><size><width>8</width>"
                "<height>8</height></size><object><name>cat</name><bndbox><xmin>1</xmin>"
                "<ymin>1</ymin><xmax>6</xmax><ymax>6</ymax></bndbox></object></annotation>",
            )
    cmd = [str(TFDROP), "convert", str(voc), "--to", "tfrecord", "--no-images", "-o", str(out)]
    subprocess.run([*cmd, "--quiet"], check=True, env=ENV)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tfdrop-bench"))
    args = parser.parse_args()
    print(load())
    small = small_archive(args.cache)
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tfdrop --version": [str(TFDROP), "--version"],
        "tfdrop validate": [str(TFDROP), "validate", str(small)],
        "tfdrop inspect": [str(TFDROP), "inspect", str(small)],
    }
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        med = statistics.median(ts)
        verdict = (
            ""
            if name.startswith("python")
            else (" ok" if med < TARGET_S else f" MISSED (target < {TARGET_S * 1000:.0f} ms)")
        )
        print(f"  {name:<18} median {med * 1000:6.1f} ms (min {min(ts) * 1000:.1f}){verdict}")
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
