"""Process figures for the periodic ``daemon_stats`` event: RSS, open fds, threads, tasks.

A leak shows as growth between two of these events, so load and soak runs (bench/soak.py)
and operators read them from the log instead of attaching a profiler. Linux ``/proc`` is read
directly (no psutil at run time); elsewhere the figures that cannot be read are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("tfdrop.daemon")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _peak_rss_mib() -> float:
    """VmHWM: the peak of this process image. ru_maxrss is the fallback only: Linux carries
    it over from the parent across fork and exec, so a daemon started by a big process
    (a test runner) would report the parent's peak."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def process_figures() -> dict[str, Any]:
    """Current and peak RSS (MiB), open fds, threads and asyncio tasks of this process."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_mib"] = round(int(f.read().split()[1]) * _PAGE / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    out["peak_rss_mib"] = _peak_rss_mib()
    with contextlib.suppress(OSError):
        out["fds"] = len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own fd
    out["threads"] = threading.active_count()
    out["tasks"] = len(asyncio.all_tasks())
    return out


async def report_stats(seconds: float, extra: Callable[[], dict[str, Any]]) -> None:
    """Log ``daemon_stats`` now and then every ``seconds`` (service figures from ``extra``)."""
    while True:
        log.info("daemon_stats", **process_figures(), **extra())
        await asyncio.sleep(seconds)
