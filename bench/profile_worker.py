"""Profile one work-unit worker (tfdrop.units) over a whole source, in this process.

Runs what a worker process of ``convert --jobs N`` runs (open the source and reader once,
then every unit: read, prepare, pre-assign label ids, encode the TFRecord Example) under
cProfile, and prints the top functions by own time and the microseconds per item:

    python bench/profile_worker.py /tmp/tfdrop-bench/voc-2000.zip [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from tfdrop.formats import FORMATS, Notes, ReadOptions, WriteOptions, detect_format
from tfdrop.formats.base import Splittable
from tfdrop.inputs import open_input
from tfdrop.labels import LabelResolver
from tfdrop.units import UNIT_BYTES, UNIT_ITEMS, JobSpec, _Worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument(
        "--workers-read-ahead-off",
        action="store_true",
        help="as a pool with a worker per core runs (no read-ahead thread)",
    )
    parser.add_argument("--plain", action="store_true", help="no profiler: CPU us/item only")
    args = parser.parse_args()
    read = ReadOptions(workdir=Path(tempfile.mkdtemp(prefix="tfdrop-prof-")))
    with open_input(args.source, read.limits) as source:
        fmt = detect_format(source.names())
        spec = FORMATS[fmt]
        assert spec.open_reader is not None
        reader = spec.open_reader(source, read, Notes())
        assert isinstance(reader, Splittable)
        known = LabelResolver(None, reader.labels(), reader.label_map()).map
        units = reader.units(max_items=UNIT_ITEMS, max_bytes=UNIT_BYTES) or []
        if args.workers_read_ahead_off:
            read = replace(read, read_ahead=False)
        job = JobSpec(args.source, fmt, read, known, False, WriteOptions())
        worker = _Worker(job)
        profile = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        if not args.plain:
            profile.enable()
        items = sum(len(worker.run(unit).items) for unit in units)
        profile.disable()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    how = "plain" if args.plain else "under cProfile"
    per = cpu / max(items, 1) * 1e6
    print(f"{fmt}: {items} items in {len(units)} units, {how}: {seconds:.2f} s wall, "
          f"{per:.0f} us CPU/item, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    if not args.plain:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
