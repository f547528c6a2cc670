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


def process_figures() -> dict[str, Any]:
    """Current and peak RSS (MiB), open fds, threads and asyncio tasks of this process."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_mib"] = round(int(f.read().split()[1]) * _PAGE / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is KiB on Linux
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
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
