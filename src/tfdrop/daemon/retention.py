"""Retention of ``done/`` and ``failed/``: routed inputs older than a pipeline keeps are removed.

The age of a routed file is the time it was routed: :func:`mark_routed` sets the input's
modification time to now just before the move (a move keeps the drop's own time, which may be
years old for a file copied with its times kept), so ``keep_done_days = 7`` means seven days
in ``done/``. In ``failed/`` an input goes together with its ``<name>.error.json`` (the input
first, so an input never stays without its error file); an error file whose input was taken
away by hand goes by its own age (and never within the hour: it may be one whose input is
being linked beside it right now). Temp names (being written by a daemon) and folders are never
touched, and links are removed as links (never followed). :func:`apply_retention` runs from
the daemon's periodic rescan and logs ``retention_removed`` for each file it removed.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from tfdrop.config import PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX
from tfdrop.publish import fsync_dir, is_temp_name

log = structlog.get_logger("tfdrop.daemon")

DAY_SECONDS = 86400.0
ORPHAN_GRACE_SECONDS = 3600.0
"""An error file without its input is kept at least this long: a daemon routing an input to
``failed/`` writes the error file first and links the input beside it a moment later."""


def mark_routed(path: Path) -> None:
    """Stamp an input about to be routed with the time now (its age for retention)."""
    os.utime(path, follow_symlinks=False)


@dataclass(frozen=True, slots=True)
class Removed:
    folder: str  # "done" | "failed"
    name: str
    age_days: float
    error_file: str | None = None


def _routed(folder: Path) -> Iterator[tuple[str, float]]:
    """``(name, mtime)`` of the files and links in ``folder``, temp names left out."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield entry.name, st.st_mtime


def _sweep_done(folder: Path, keep_days: float, now: float, removed: list[Removed]) -> None:
    for name, mtime in _routed(folder):
        age = now - mtime
        if age > keep_days * DAY_SECONDS:
            (folder / name).unlink(missing_ok=True)
            removed.append(Removed("done", name, round(age / DAY_SECONDS, 3)))


def _sweep_failed(folder: Path, keep_days: float, now: float, removed: list[Removed]) -> None:
    routed = dict(_routed(folder))
    for name, mtime in routed.items():
        is_error = name.endswith(ERROR_SUFFIX)
        if is_error and name[: -len(ERROR_SUFFIX)] in routed:
            continue  # goes with its input, by the input's age
        age = now - mtime
        keep = keep_days * DAY_SECONDS
        if age <= (max(keep, ORPHAN_GRACE_SECONDS) if is_error else keep):
            continue
        (folder / name).unlink(missing_ok=True)
        error = None
        if not is_error and f"{name}{ERROR_SUFFIX}" in routed:
            error = f"{name}{ERROR_SUFFIX}"
            (folder / error).unlink(missing_ok=True)
        removed.append(Removed("failed", name, round(age / DAY_SECONDS, 3), error))


def apply_retention(cfg: PipelineConfig, now: float | None = None) -> list[Removed]:
    """Remove what ``cfg`` keeps no longer from ``done/`` and ``failed/``; each removal logged.

    Raises:
        OSError: a folder could not be listed or a file not removed (the next rescan tries
            again; what was removed before it is logged).
    """
    now = time.time() if now is None else now
    removed: list[Removed] = []
    try:
        if cfg.keep_done_days is not None:
            _sweep_done(cfg.done, cfg.keep_done_days, now, removed)
        if cfg.keep_failed_days is not None:
            _sweep_failed(cfg.failed, cfg.keep_failed_days, now, removed)
    finally:
        for r in removed:
            log.info(
                "retention_removed",
                pipeline=cfg.name,
                folder=r.folder,
                name=r.name,
                age_days=r.age_days,
                **({"error_file": r.error_file} if r.error_file else {}),
            )
        for folder in {cfg.done if r.folder == "done" else cfg.failed for r in removed}:
            fsync_dir(folder)
    return removed
