"""Benchmark: the daemon's latency, start-up and throughput, in one run.

- ``latency``: a 20-image TFRecord zip renamed into the drop folder, timed until its archive
  appears in the output folder; median and p95 over 50 drops, the settle time subtracted
  (it is a configured wait, not work);
- ``startup``: process start to READY=1 on a real NOTIFY_SOCKET (median of 5);
- ``throughput``: 500 small zips dropped at once into a running daemon, until all are
  published, against ``tfdrop convert`` run once per file in sequence (the hand-run way);
- ``bigdrop``: one large drop (``--big``, default the VOC 20k zip of ``bench_voc.py``) into a
  daemon of the default ``max_jobs = 2`` with ``job_workers = 1`` and then with the default
  (a lone drop gets every core), alternating, timed from the rename to the published archive,
  settle subtracted (median of ``--repeat``).

Everything runs as real processes (``python -m tfdrop run``), like a user's. Run
``python bench/bench_daemon.py`` (``--quick`` for a small smoke run); results also go to
``bench/out/bench_daemon.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item

SETTLE = 0.2
HERE = Path(__file__).resolve().parent


def _jpeg(seed: int, size: int = 96) -> bytes:
    img = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 11) % 256, seed % 256))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_zip(items: int, tag: str) -> bytes:
    """A CVAT "TFRecord 1.0" zip: default.tfrecord + label_map.pbtxt."""
    records = []
    for i in range(items):
        image = _jpeg(i + len(tag) * 7 + sum(map(ord, tag)))
        item = Item(
            name=f"{tag}_{i:04d}.jpg",
            width=96,
            height=96,
            image=image,
            image_format="jpeg",
            objects=(
                Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1),
                Annotation("dog", Box(0.4, 0.2, 0.9, 0.8), label_id=2),
            ),
        )
        records.append(encode_record(encode_example(item)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("default.tfrecord", b"".join(records))
        zf.writestr(
            "label_map.pbtxt",
            "item {\n\tid: 1\n\tname: 'cat'\n}\n\nitem {\n\tid: 2\n\tname: 'dog'\n}\n\n",
        )
    return buf.getvalue()


def write_config(root: Path, **daemon: Any) -> Path:
    settings = {
        "settle_seconds": SETTLE,
        "rescan_seconds": 30.0,
        "log_format": "json",
        "log_level": "warning",
        "progress_seconds": 60.0,
        **daemon,
    }
    lines = ["[daemon]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["", "[[pipeline]]", 'name = "bench"', 'drop = "in"', 'output = "out"']
    path = root / "tfdrop.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    def __init__(self, config: Path, notify: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        if notify:
            env["NOTIFY_SOCKET"] = notify
        self.log = (config.parent / "daemon.log").open("ab")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfdrop", "run", "--config", str(config)],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


def _wait_ready(sock: socket.socket, timeout: float = 30.0) -> float:
    sock.settimeout(timeout)
    while True:
        data = sock.recv(4096).decode()
        if "READY=1" in data.split("\n"):
            return time.perf_counter()


def _ready_daemon(root: Path, **daemon: Any) -> tuple[Daemon, float]:
    address = str(root / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    try:
        d = Daemon(write_config(root, **daemon), address)
        ready = _wait_ready(sock)
    finally:
        sock.close()
        os.unlink(address)
    return d, ready - d.started


def _drop(data: bytes, drop: Path, name: str) -> float:
    """Write under a temp name, rename in (what an uploader does); the rename's time."""
    tmp = drop / f".{name}.part"
    tmp.write_bytes(data)
    t = time.perf_counter()
    os.rename(tmp, drop / name)
    return t


def bench_startup(runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            d, seconds = _ready_daemon(Path(tmp))
            d.stop()
            times.append(seconds)
    return {"startup_to_ready_median_s": statistics.median(times), "runs": runs}


def bench_latency(drops: int) -> dict[str, float]:
    data = [make_zip(20, f"lat{i}") for i in range(drops)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d, _ = _ready_daemon(root)
        lat = []
        try:
            for i, payload in enumerate(data):
                t0 = _drop(payload, root / "in", f"drop{i:03d}.zip")
                target = root / "out" / f"drop{i:03d}.zip"
                while not target.exists():
                    time.sleep(0.0005)
                lat.append(time.perf_counter() - t0 - SETTLE)
        finally:
            d.stop()
    lat.sort()
    return {
        "latency_median_ms": statistics.median(lat) * 1000,
        "latency_p95_ms": lat[int(0.95 * (len(lat) - 1))] * 1000,
        "latency_max_ms": lat[-1] * 1000,
        "drops": drops,
        "images_per_drop": 20,
        "settle_subtracted_s": SETTLE,
    }


def bench_throughput(files: int, jobs: int) -> dict[str, float]:
    data = [make_zip(2, f"thr{i}") for i in range(files)]
    out: dict[str, float] = {"files": files, "max_jobs": jobs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d, _ = _ready_daemon(root, max_jobs=jobs)
        try:
            staging = root / "staging"
            staging.mkdir()
            for i, payload in enumerate(data):
                (staging / f"f{i:04d}.zip").write_bytes(payload)
            t0 = time.perf_counter()
            for i in range(files):
                os.rename(staging / f"f{i:04d}.zip", root / "in" / f"f{i:04d}.zip")
            done = root / "in" / "done"
            proc = psutil.Process(d.proc.pid)
            rss = 0
            while not done.exists() or len(os.listdir(done)) < files:
                rss = max(rss, proc.memory_info().rss)
                time.sleep(0.01)
            seconds = time.perf_counter() - t0
        finally:
            d.stop()
        out["daemon_s"] = seconds
        out["daemon_peak_rss_mb"] = rss / 2**20
        out["daemon_files_per_s"] = files / seconds
        published = len(list((root / "out").glob("*.zip")))
        assert published == files, published

        src = root / "cli_in"
        src.mkdir()
        dst = root / "cli_out"
        dst.mkdir()
        for i, payload in enumerate(data):
            (src / f"f{i:04d}.zip").write_bytes(payload)
        t0 = time.perf_counter()
        for i in range(files):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tfdrop",
                    "convert",
                    "-q",
                    "--to",
                    "tfrecord",
                    "-o",
                    str(dst / f"f{i:04d}.zip"),
                    str(src / f"f{i:04d}.zip"),
                ],
                check=True,
            )
        seconds = time.perf_counter() - t0
        out["cli_per_file_s"] = seconds
        out["cli_files_per_s"] = files / seconds
        out["speedup"] = out["daemon_files_per_s"] / out["cli_files_per_s"]
    return out


def bench_bigdrop(big: Path, repeat: int) -> dict[str, Any]:
    """One large drop into a daemon of the default ``max_jobs = 2``: ``job_workers = 1`` (what
    the default gave a job on 2 cores before session 9) against the default, which gives a
    lone drop every core; alternating."""
    settings: dict[str, dict[str, Any]] = {"1": {"job_workers": 1}, "default": {}}
    times: dict[str, list[float]] = {k: [] for k in settings}
    data = big.read_bytes()
    for _ in range(repeat):
        for key, runs in times.items():
            with tempfile.TemporaryDirectory(dir=big.parent) as tmp:
                root = Path(tmp)
                d, _ = _ready_daemon(root, max_jobs=2, **settings[key])
                try:
                    t0 = _drop(data, root / "in", big.name)
                    target = root / "out" / big.name
                    while not target.exists():
                        time.sleep(0.005)
                    runs.append(time.perf_counter() - t0 - SETTLE)
                finally:
                    d.stop()
    med = {k: statistics.median(t) for k, t in times.items()}
    return {
        "drop": str(big),
        "job_workers_1_s": med["1"],
        "default_s": med["default"],
        "all_s": times,
        "speedup": med["1"] / med["default"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--jobs", type=int, default=2, help="daemon max_jobs (default 2)")
    parser.add_argument(
        "--parts",
        default="startup,latency,throughput",
        help="comma-separated subset of startup,latency,throughput,bigdrop "
        "(default: the first three)",
    )
    parser.add_argument("--big", type=Path, default=Path("/tmp/tfdrop-bench/voc-20000.zip"))
    parser.add_argument("--repeat", type=int, default=3, help="bigdrop runs of each")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    drops, files, starts = (10, 40, 2) if args.quick else (50, 500, 5)
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if "startup" in parts:
        results.update(bench_startup(starts))
        ms = results["startup_to_ready_median_s"] * 1000
        print(f"start-up to READY=1: {ms:.0f} ms (median of {starts})")
    if "latency" in parts:
        results.update(bench_latency(drops))
        print(
            f"drop-to-published, 20-image zip, settle {SETTLE}s subtracted: "
            f"median {results['latency_median_ms']:.0f} ms, p95 {results['latency_p95_ms']:.0f} ms"
            f", max {results['latency_max_ms']:.0f} ms ({drops} drops)"
        )
    if "throughput" in parts:
        thr = bench_throughput(files, args.jobs)
        results["throughput"] = thr
        print(
            f"draining {files} small zips: daemon {thr['daemon_s']:.1f} s "
            f"({thr['daemon_files_per_s']:.1f} files/s, max_jobs {args.jobs}); "
            f"`tfdrop convert` per file: {thr['cli_per_file_s']:.1f} s "
            f"({thr['cli_files_per_s']:.1f} files/s); x{thr['speedup']:.1f}; "
            f"daemon peak RSS {thr['daemon_peak_rss_mb']:.0f} MB"
        )
    if "bigdrop" in parts:
        big = bench_bigdrop(args.big, args.repeat)
        results["bigdrop"] = big
        one, default = big["job_workers_1_s"], big["default_s"]
        print(f"one drop of {args.big.name}, max_jobs 2: job_workers 1 {one:.2f} s, ", end="")
        print(f"the default {default:.2f} s (x{big['speedup']:.2f}; all: {big['all_s']})")
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"bench_daemon_{'_'.join(sorted(parts))}.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
