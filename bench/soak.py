"""Load (bursts across 4 pipelines) and a steady-rate soak of the daemon.

- ``burst``: ``--burst`` drops (1,000 for the report) arrive in bursts of 10-100 across four
  pipelines (TFRecord -> TFRecord, -> VOC, -> COCO, -> YOLO), as fast as a script can rename;
- ``steady``: one drop every ``1/--rate`` seconds, round-robin over the pipelines, for
  ``--seconds`` (600 for the report).

For each phase: throughput (drops published per second, first drop to last archive),
latency percentiles (drop renamed in -> ``job_done`` logged, settle time included), and the
daemon's peak RSS (psutil, sampled every 0.2 s), open file descriptors, threads and asyncio
task count (from its ``daemon_stats`` events) at the start and the end. Growth of fds or tasks
between start and end would be a leak. Every drop must be published exactly once; the run
fails otherwise.

Run ``python bench/soak.py --burst 1000 --seconds 600`` (``--quick`` for a smoke run);
the figures go to stdout and ``bench/out/soak.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item

PIPELINES = (("tf", "tfrecord"), ("voc", "voc"), ("coco", "coco"), ("yolo", "yolo"))
LABEL_MAP = "item {\n\tid: 1\n\tname: 'cat'\n}\n\nitem {\n\tid: 2\n\tname: 'dog'\n}\n\n"
SETTLE = 0.3


def _png(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (seed % 256, (seed * 7) % 256, 90)).save(buf, format="PNG")
    return buf.getvalue()


def drop_bytes(n: int, items: int = 4) -> bytes:
    """A unique small CVAT TFRecord zip (``items`` images, two boxes each)."""
    records = []
    for i in range(items):
        item = Item(
            name=f"s{n:06d}_{i}.png",
            width=32,
            height=24,
            image=_png(n * items + i),
            image_format="png",
            objects=(
                Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1),
                Annotation("dog", Box(0.4, 0.2, 0.9, 1.0), label_id=2),
            ),
        )
        records.append(encode_record(encode_example(item)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("default.tfrecord", b"".join(records))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    return buf.getvalue()


def _config(root: Path, max_jobs: int) -> Path:
    lines = [
        "[daemon]",
        f"max_jobs = {max_jobs}",
        f"settle_seconds = {SETTLE}",
        "rescan_seconds = 5.0",
        "stats_seconds = 2.0",
        "progress_seconds = 30.0",
        'log_format = "json"',
        'log_level = "info"',
    ]
    for name, target in PIPELINES:
        (root / name / "in").mkdir(parents=True)
        lines += [
            "[[pipeline]]",
            f'name = "{name}"',
            f'drop = "{name}/in"',
            f'output = "{name}/out"',
            'from = "tfrecord"',
            f'to = "{target}"',
            'on_success = "delete"',
        ]
    path = root / "tfdrop.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Run:
    """A daemon process, its log, a sampler thread, and the drop times."""

    def __init__(self, root: Path, max_jobs: int) -> None:
        self.root = root
        self.log = root / "daemon.log"
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfdrop", "run", "--config", str(_config(root, max_jobs))],
            stdout=self._out,
            stderr=self._out,
            cwd=root,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.dropped: dict[tuple[str, str], float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self._pos = 0
        self.done: dict[tuple[str, str], float] = {}
        self.stats: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.wait_for(lambda: any(e["event"] == "daemon_ready" for e in self.read()), 60)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    def read(self) -> list[dict[str, Any]]:
        """New events since the last call (also collected into done/stats/failed)."""
        with self.log.open("rb") as f:
            f.seek(self._pos)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self._pos += end
        events = []
        for line in chunk[:end].splitlines():
            if not line.startswith(b"{"):
                continue
            e = json.loads(line)
            events.append(e)
            ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            if e["event"] == "job_done":
                self.done[(e["pipeline"], e["source"])] = ts
            elif e["event"] == "daemon_stats":
                self.stats.append(e)
            elif e["event"] == "job_failed":
                self.failed.append(e)
        return events

    def wait_for(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited ({self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; see {self.log}")
            time.sleep(0.1)

    def drop(self, n: int, data: bytes) -> None:
        name = PIPELINES[n % len(PIPELINES)][0]
        folder = self.root / name / "in"
        tmp = folder / f".s{n:06d}.zip.part"
        tmp.write_bytes(data)
        self.dropped[(name, f"s{n:06d}.zip")] = time.time()
        os.rename(tmp, folder / f"s{n:06d}.zip")

    def figures(self) -> dict[str, Any]:
        """Open fds/threads (psutil) and the last daemon_stats event."""
        self.read()
        last = self.stats[-1] if self.stats else {}
        return {
            "fds": self.ps.num_fds(),
            "threads": self.ps.num_threads(),
            "rss_mib": round(self.ps.memory_info().rss / 2**20, 1),
            "asyncio_tasks": last.get("tasks"),
            "daemon_stats": {k: last.get(k) for k in ("rss_mib", "fds", "threads", "tasks")},
        }

    def stop(self) -> int:
        self._stop.set()
        self.proc.terminate()
        code = self.proc.wait(120)
        self._out.close()
        return code


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))], 3)


def _phase(
    run: Run, keys: list[tuple[str, str]], t0: float, start: dict[str, Any]
) -> dict[str, Any]:
    run.wait_for(lambda: (run.read() or True) and all(k in run.done for k in keys), 3600)
    end_time = max(run.done[k] for k in keys)
    latencies = [run.done[k] - run.dropped[k] for k in keys]
    time.sleep(2.5)  # one more daemon_stats event after the queue drained
    end = run.figures()
    return {
        "drops": len(keys),
        "wall_s": round(end_time - t0, 1),
        "throughput_per_s": round(len(keys) / (end_time - t0), 2),
        "latency_s": {
            "p50": _pct(latencies, 50),
            "p90": _pct(latencies, 90),
            "p99": _pct(latencies, 99),
            "max": round(max(latencies), 3),
        },
        "start": start,
        "end": end,
    }


def burst(run: Run, count: int, base: int, rng: random.Random) -> dict[str, Any]:
    payloads = [drop_bytes(base + i) for i in range(count)]
    start = run.figures()
    t0 = time.time()
    i = 0
    while i < count:
        n = rng.randint(10, 100)
        for j in range(i, min(count, i + n)):
            run.drop(base + j, payloads[j])
        i += n
        time.sleep(rng.uniform(0.5, 3.0))
    keys = [(PIPELINES[(base + j) % 4][0], f"s{base + j:06d}.zip") for j in range(count)]
    return _phase(run, keys, t0, start)


def steady(run: Run, seconds: float, rate: float, base: int) -> dict[str, Any]:
    start = run.figures()
    t0 = time.time()
    n = 0
    samples = []
    while time.time() - t0 < seconds:
        run.drop(base + n, drop_bytes(base + n))
        n += 1
        if n % max(1, int(rate * 60)) == 0:  # a sample a minute: growth shows here
            f = run.figures()
            samples.append(
                {
                    "t_s": round(time.time() - t0),
                    "fds": f["fds"],
                    "tasks": f["asyncio_tasks"],
                    "rss_mib": f["rss_mib"],
                }
            )
        delay = t0 + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)
    keys = [(PIPELINES[(base + j) % 4][0], f"s{base + j:06d}.zip") for j in range(n)]
    out = _phase(run, keys, t0, start)
    out["rate_per_s"] = rate
    out["seconds"] = seconds
    out["per_minute"] = samples
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=2.0, help="steady drops per second")
    ap.add_argument("--max-jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="100 drops, 30 s soak")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "soak.json")
    args = ap.parse_args()
    if args.quick:
        args.burst, args.seconds = 100, 30.0
    rng = random.Random(6)
    with tempfile.TemporaryDirectory(prefix="tfdrop-soak-") as tmp:
        run = Run(Path(tmp), args.max_jobs)
        result: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "max_jobs": args.max_jobs}
        try:
            if args.burst:
                result["burst"] = burst(run, args.burst, 0, rng)
                print(json.dumps({"burst": result["burst"]}, indent=2), flush=True)
            if args.seconds:
                result["steady"] = steady(run, args.seconds, args.rate, 100_000)
            result["peak_rss_mib"] = round(run.peak_rss / 2**20, 1)
            result["failed_jobs"] = len(run.failed)
            result["published"] = len(run.done)
            result["expected"] = len(run.dropped)
        finally:
            result["exit_code"] = run.stop()
        outputs = sum(1 for name, _ in PIPELINES for p in (Path(tmp) / name / "out").glob("*.zip"))
        result["archives_in_outputs"] = outputs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (
        result["exit_code"] == 0
        and result["failed_jobs"] == 0
        and result["published"] == result["expected"] == outputs
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
