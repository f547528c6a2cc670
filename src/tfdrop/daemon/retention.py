"""Retention of ``done/`` and ``failed/``: routed inputs older than a pipeline keeps are removed.

The age of a routed file counts from the later of its modification time and its
status-change time (``now - max(st_mtime, st_ctime)``; the ctime alone when the mtime lies in
the future). Routing a file (a rename or a link) sets its ctime to that moment on Linux file
systems, and no user can set a ctime back, so a drop copied with its old times kept is aged
from its routing, not from its mtime; the user's file times are never changed. A file tfdrop
never routed (put into ``done/`` by hand) is aged the same way: the rule is "everything in
``done/`` older than N days". In ``failed/`` an input goes together with its
``<name>.error.json`` (the input first, so an input never stays without its error file); an
error file whose input was taken away by hand goes by its own age (and never within the hour:
it may be one whose input is being linked beside it right now). Temp names (being written by a
daemon) and folders are never touched, and links are removed as links (never followed).

``done/`` or ``failed/`` must be a real folder: one that is a symbolic link (or not a folder)
is never swept (``retention_refused``, logged once while it lasts), so a link cannot make the
daemon delete files elsewhere; the folder is opened once (``O_NOFOLLOW``) and every name is
removed relative to that open folder, so swapping it for a link half-way changes nothing.
A file that cannot be removed is logged (``retention_failed``, once while it lasts) and
skipped: retention never raises. :func:`apply_retention` runs from the daemon's periodic
rescan and logs ``retention_removed`` for each file it removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tfdrop.config import PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX
from tfdrop.publish import is_temp_name

log = structlog.get_logger("tfdrop.daemon")

DAY_SECONDS = 86400.0
ORPHAN_GRACE_SECONDS = 3600.0
"""An error file without its input is kept at least this long: a daemon routing an input to
``failed/`` writes the error file first and links the input beside it a moment later."""


@dataclass(frozen=True, slots=True)
class Removed:
    folder: str  # "done" | "failed"
    name: str
    age_days: float
    error_file: str | None = None


@dataclass(slots=True)
class Reported:
    """What was logged as refused or failed already (logged once while it lasts)."""

    keys: set[str] = field(default_factory=set)
    now: set[str] = field(default_factory=set)  # the keys of this sweep

    def once(self, key: str) -> bool:
        """Note ``key`` in this sweep; whether it is new (to be logged)."""
        self.now.add(key)
        return key not in self.keys

    def end_sweep(self) -> None:
        self.keys, self.now = self.now, set()


@dataclass(slots=True)
class _Sweep:
    cfg: PipelineConfig
    folder: str  # "done" | "failed"
    fd: int
    now: float
    reported: Reported
    removed: list[Removed]

    def remove(self, name: str) -> bool:
        """Remove ``name`` (relative to the open folder); a failure is logged once, False."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if self.reported.once(f"failed:{self.folder}/{name}"):
                log.warning(
                    "retention_failed",
                    pipeline=self.cfg.name,
                    folder=self.folder,
                    name=name,
                    error=exc.strerror or str(exc),
                    errno=exc.errno,
                )
            return False
        return True


def _refusal(path: Path) -> str:
    """Why ``path`` (not opened as a folder without following links) is not swept."""
    with contextlib.suppress(OSError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return f"{path} is a symbolic link"
    return f"{path} is not a folder"


def _open_folder(cfg: PipelineConfig, folder: str, reported: Reported) -> int | None:
    """The folder opened without following a link, or None (missing, refused, unreadable)."""
    path = cfg.done if folder == "done" else cfg.failed
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        refused = exc.errno in (errno.ELOOP, errno.ENOTDIR)
        event = "retention_refused" if refused else "retention_failed"
        if reported.once(f"{event}:{folder}"):
            log.warning(
                event,
                pipeline=cfg.name,
                folder=folder,
                path=str(path),
                **({"reason": _refusal(path)} if refused else {"error": str(exc)}),
                hint="retention only sweeps a real folder; nothing in it was removed",
            )
        return None


def routed_at(st: os.stat_result, now: float) -> float:
    """When a file was routed: the later of its mtime and ctime (a routing sets the ctime); a
    modification time in the future is no time at all, so then the ctime alone."""
    return st.st_ctime if st.st_mtime > now else max(st.st_mtime, st.st_ctime)


def _routed(fd: int, now: float) -> Iterator[tuple[str, float]]:
    """``(name, routed at)`` of the files and links in the open folder, temp names left out."""
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        if is_temp_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield entry.name, routed_at(st, now)


def _sweep_done(s: _Sweep, keep_days: float) -> None:
    for name, routed in _routed(s.fd, s.now):
        age = s.now - routed
        if age > keep_days * DAY_SECONDS and s.remove(name):
            s.removed.append(Removed("done", name, round(age / DAY_SECONDS, 3)))


def _sweep_failed(s: _Sweep, keep_days: float) -> None:
    routed = dict(_routed(s.fd, s.now))
    for name, at in routed.items():
        is_error = name.endswith(ERROR_SUFFIX)
        if is_error and name[: -len(ERROR_SUFFIX)] in routed:
            continue  # goes with its input, by the input's age
        age = s.now - at
        keep = keep_days * DAY_SECONDS
        if age <= (max(keep, ORPHAN_GRACE_SECONDS) if is_error else keep):
            continue
        if not s.remove(name):
            continue  # the input stays: so does its error file
        error = None
        if not is_error and f"{name}{ERROR_SUFFIX}" in routed:
            error = f"{name}{ERROR_SUFFIX}"
            if not s.remove(error):
                error = None
        s.removed.append(Removed("failed", name, round(age / DAY_SECONDS, 3), error))


def _sweep(
    cfg: PipelineConfig, folder: str, keep_days: float, now: float, reported: Reported
) -> list[Removed]:
    fd = _open_folder(cfg, folder, reported)
    if fd is None:
        return []
    s = _Sweep(cfg, folder, fd, now, reported, [])
    try:
        (_sweep_done if folder == "done" else _sweep_failed)(s, keep_days)
    except OSError as exc:  # the listing itself failed (EACCES, EIO)
        if reported.once(f"retention_failed:{folder}"):
            log.warning("retention_failed", pipeline=cfg.name, folder=folder, error=str(exc))
    finally:
        if s.removed:
            with contextlib.suppress(OSError):
                os.fsync(fd)  # the removals durable
        os.close(fd)
    return s.removed


def apply_retention(
    cfg: PipelineConfig, now: float | None = None, reported: Reported | None = None
) -> list[Removed]:
    """Remove what ``cfg`` keeps no longer from ``done/`` and ``failed/``; each removal logged.

    Never raises: a folder refused or unreadable and a file that cannot be removed are logged
    (once while it lasts, with ``reported`` kept from one call to the next) and skipped.
    """
    now = time.time() if now is None else now
    reported = Reported() if reported is None else reported
    removed: list[Removed] = []
    if cfg.keep_done_days is not None:
        removed += _sweep(cfg, "done", cfg.keep_done_days, now, reported)
    if cfg.keep_failed_days is not None:
        removed += _sweep(cfg, "failed", cfg.keep_failed_days, now, reported)
    reported.end_sweep()
    for r in removed:
        log.info(
            "retention_removed",
            pipeline=cfg.name,
            folder=r.folder,
            name=r.name,
            age_days=r.age_days,
            **({"error_file": r.error_file} if r.error_file else {}),
        )
    return removed
