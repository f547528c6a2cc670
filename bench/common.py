"""What every side-by-side benchmark here shares: one measured child process (wall, CPU, the
peak RSS of the parent and of each worker process), runs alternating between contenders,
medians, ratios against targets, and the load average.

Peak RSS per process is each process's own ``VmHWM`` (the kernel's high-water mark, not a
sample), read from ``/proc`` every 20 ms for the child and all its descendants; the last
reading before a process ends is kept, and ``os.wait4`` gives the largest of the whole tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("BENCH_VENV", REPO / ".bench-venv"))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
POLL_S = 0.02


def byte_compile() -> str:
    """Byte-compile the tfdrop package this interpreter imports, as a wheel install does.

    An editable install leaves no ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set (it
    is on this machine) every tfdrop process, worker processes too, would compile each module
    from source again: 80-90 ms per process that no installed user pays. The peers' packages
    in the bench venv were byte-compiled by pip. Reading ``.pyc`` files is not affected by
    the variable, so compiling once levels the field.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("tfdrop")
    if spec is None or not spec.submodule_search_locations:
        return "tfdrop not importable: nothing byte-compiled"
    root = Path(next(iter(spec.submodule_search_locations)))
    compileall.compile_dir(str(root), quiet=1)
    return f"tfdrop byte-compiled as installed: {root}"


print(byte_compile())


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def tfdrop(*args: str) -> list[str]:
    """The tfdrop CLI in this interpreter (the worktree's sources come first on the path)."""
    return [sys.executable, "-m", "tfdrop", *args]


def peer(name: str) -> Path | None:
    """A peer tool's executable in the bench venv (``bash bench/setup_peers.sh``), or None."""
    path = PEERS / "bin" / name
    return path if path.exists() else None


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None  # a zombie: its memory is gone


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                out += [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _poll(root: int, peaks: dict[int, float]) -> None:
    todo = [root]
    while todo:
        pid = todo.pop()
        hwm = _hwm_mb(pid)
        if hwm is not None:
            peaks[pid] = max(peaks.get(pid, 0.0), hwm)
        todo += _children(pid)


def measure(cmd: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` once: wall and CPU seconds (``os.wait4``), the peak RSS of the whole tree,
    of the parent and of each descendant (workers), whether it succeeded, its last lines."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or ENV)
        peaks: dict[int, float] = {}
        while True:
            _poll(proc.pid, peaks)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(POLL_S)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
    if proc.returncode != 0:
        print(f"  FAILED ({proc.returncode}): {' '.join(cmd)}\n    " + "\n    ".join(tail))
    workers = [mb for p, mb in peaks.items() if p != proc.pid]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        # without descendants wait4's peak is the parent's own (exact, not polled)
        "parent_rss_mb": peaks.get(proc.pid, 0.0) if workers else usage.ru_maxrss / 1024,
        "worker_rss_mb": max(workers, default=0.0),
        "workers": len(workers),
        "ok": proc.returncode == 0,
        "tail": tail,
    }


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's wall time and the medians of CPU and
    the largest peaks."""
    ok = [r for r in runs if r["ok"]] or runs
    pick = sorted(ok, key=lambda r: r["wall_s"])[(len(ok) - 1) // 2]
    return pick | {
        "wall_all": [round(r["wall_s"], 2) for r in runs],
        "cpu_s": statistics.median(r["cpu_s"] for r in ok),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
        "parent_rss_mb": max(r["parent_rss_mb"] for r in ok),
        "worker_rss_mb": max(r["worker_rss_mb"] for r in ok),
        "workers": max(r["workers"] for r in ok),
    }


def alternate(
    cmds: dict[str, list[str] | None],
    repeat: int,
    out: Path,
    *,
    once: frozenset[str] = frozenset(),
    before: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each command ``repeat`` times, alternating (run 1 of each, then run 2 of each, ...),
    ``out`` emptied and every file system synced before each run (so no run pays for the
    write-back of the one before); those in ``once`` (minutes per run) run once. The median of
    each; a command that is None is reported as skipped."""
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n, c in cmds.items() if c is not None}
    for name in (n for n, c in cmds.items() if c is None):
        print(f"  {name:<14} skipped (peer missing: bash bench/setup_peers.sh)")
    for rep in range(repeat):
        for name, cmd in cmds.items():
            if cmd is None or (name in once and rep > 0):
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            if before is not None:
                before()
            # the previous run's output (about 1 GB) is flushed now, not during the next run
            os.sync()
            runs[name].append(measure(cmd))
    shutil.rmtree(out, ignore_errors=True)
    results = {name: median(rs) for name, rs in runs.items()}
    for name, r in results.items():
        print(f"  {name:<14} {r['wall_s']:7.2f} s wall (median of {r['wall_all']}) "
              f"{r['cpu_s']:7.2f} s cpu; peak RSS parent {r['parent_rss_mb']:5.0f} MB, "
              f"worker {r['worker_rss_mb']:5.0f} MB ({r['workers']} workers)"
              f"{'' if r['ok'] else '  FAILED'}", flush=True)  # fmt: skip
    return results


def ratio(
    results: dict[str, dict[str, Any]], slow: str, fast: str, target: float, what: str
) -> None:
    """Print ``slow / fast`` by wall time (and CPU time, which load does not change)."""
    a, b = results.get(slow), results.get(fast)
    if a is None or b is None or not (a["ok"] and b["ok"]):
        print(f"  {what}: not measured")
        return
    x = a["wall_s"] / b["wall_s"]
    cpu = a["cpu_s"] / b["cpu_s"] if b["cpu_s"] else float("nan")
    verdict = "ok" if x >= target else "MISSED"
    print(f"  {what}: {x:5.2f}x by wall, {cpu:5.2f}x by cpu (target >= {target:g}x) {verdict}")


def at_most(results: dict[str, dict[str, Any]], ours: str, floor: str, target: float) -> None:
    """Print ``ours / floor`` by wall time (the floor: the least work the input needs)."""
    a, b = results.get(ours), results.get(floor)
    if a is None or b is None:
        print("  floor: not measured")
        return
    x = a["wall_s"] / b["wall_s"]
    verdict = "ok" if x <= target else "MISSED"
    print(f"  {ours} is {x:5.2f}x the {floor} ({b['wall_s']:.2f} s) (target <= {target:g}x) "
          f"{verdict}")  # fmt: skip


def rss(results: dict[str, dict[str, Any]], name: str, target_mb: float) -> None:
    r = results.get(name)
    if r is None:
        return
    worst = max(r["parent_rss_mb"], r["worker_rss_mb"])
    verdict = "ok" if worst <= target_mb else "MISSED"
    print(f"  {name} peak RSS: parent {r['parent_rss_mb']:.0f} MB, each worker <= "
          f"{r['worker_rss_mb']:.0f} MB (target <= {target_mb:g} MB) {verdict}")  # fmt: skip


_NG = """
try:  # the inflater and CRC-32 tfdrop reads with (codec/inflate.py), where installed
    from zlib_ng import zlib_ng
    zipfile.zlib = zlib_ng
except ImportError:
    pass
"""

FLOOR_ZLIB = """
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    for info in zf.infolist():
        with zf.open(info) as f:
            while f.read(1 << 20):
                pass
"""
"""Every member of a zip inflated once, nothing else (stdlib zipfile and zlib, one core)."""

FLOOR = FLOOR_ZLIB.replace("import sys, zipfile\n", "import sys, zipfile\n" + _NG, 1)
"""The same with zlib-ng's inflater and CRC-32, the ones tfdrop reads with: the floor."""


def floor_zlib(archive: Path) -> list[str]:
    return [sys.executable, "-c", FLOOR_ZLIB, str(archive)]


def floor(archive: Path) -> list[str]:
    return [sys.executable, "-c", FLOOR, str(archive)]


FLOOR_CORES = (
    """
import os, sys, zipfile
"""
    + _NG
    + """
n = len(os.sched_getaffinity(0))
with zipfile.ZipFile(sys.argv[1]) as zf:
    infos = zf.infolist()
pids = []
for k in range(n):
    pid = os.fork()
    if pid == 0:
        with zipfile.ZipFile(sys.argv[1]) as zf:
            for info in infos[k::n]:
                with zf.open(info) as f:
                    while f.read(1 << 20):
                        pass
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""
)
"""The floor on every core this process may use: the members dealt out over one process a
core (member k to process k mod n), each inflated once; the floor of ``--jobs`` = the cores."""


def floor_cores(archive: Path) -> list[str]:
    return [sys.executable, "-c", FLOOR_CORES, str(archive)]


READ = """
import sys
buf = memoryview(bytearray(1 << 22))
with open(sys.argv[1], "rb", buffering=0) as f:
    while f.readinto(buf):
        pass
"""
"""A file read once into one buffer, nothing else (the floor of reading a TFRecord)."""


def read_floor(path: Path) -> list[str]:
    return [sys.executable, "-c", READ, str(path)]


def warm(*paths: Path) -> None:
    """Read the inputs once so every run starts from page cache."""
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                with path.open("rb") as f:
                    while f.read(1 << 24):
                        pass


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy where the file system has no links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def arguments(description: str, *, repeat: int = 3) -> argparse.ArgumentParser:
    """The flags of a side-by-side benchmark: ``--images``, ``--repeat``, ``--cache``,
    ``--json``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/tfdrop-bench"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def finish(results: dict[str, dict[str, Any]], path: Path | None) -> None:
    """The load average at the end; the results as JSON to ``path`` when one is given."""
    print(load() + " at the end")
    if path:
        path.write_text(json.dumps(results, indent=1, default=str))
