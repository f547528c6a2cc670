"""What a killed run leaves behind, and how the next run knows it is dead.

A conversion makes temp files (the archive being written, beside its final name) and temp
folders (spool, spill, unit indexes). A run that ends normally, fails or is stopped by a
signal removes them; one killed outright (SIGKILL, the OOM killer, a power cut) cannot. So
each is *held* while in use: its maker keeps a shared ``flock`` on it, which the kernel drops
when the process dies, however it dies. Whoever finds an unheld one later (older than a few
seconds, so one being made this instant is never taken) may remove it: :func:`claim` takes
the lock exclusively, which only succeeds once no live process holds it.

Forked workers inherit the holder's descriptor, so a run's folder stays held until its last
worker is gone too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Final

RUN_PREFIX = ".tfdrop-run-"
"""The name prefix of a conversion's working folder (:func:`run_folder`)."""
RUN_MARK = ".tfdrop-run"
"""A file each working folder holds from its first moment: a folder without it is not ours,
whatever its name (an outside attack had a user's ``.tfdrop-run-mydata`` removed)."""
_SUFFIX_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")  # mkdtemp's
UNHELD_AGE_S = 10.0
"""A leftover must be at least this old (mtime) to be taken: never one made a moment ago,
between its creation and its maker's lock."""


def hold(fd: int) -> None:
    """Mark the open file or folder ``fd`` as in use for as long as it stays open."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def claim(path: str | os.PathLike[str]) -> int | None:
    """A descriptor of ``path`` locked exclusively, or None while a live process holds it
    (or it cannot be opened: gone, a link, not ours to open). Close it after removing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _old_enough(st: os.stat_result, now: float) -> bool:
    return now - st.st_mtime >= UNHELD_AGE_S


def _is_run_name(name: str) -> bool:
    suffix = name[len(RUN_PREFIX) :]
    return name.startswith(RUN_PREFIX) and len(suffix) == 8 and set(suffix) <= _SUFFIX_CHARS


def _ours(entry: os.DirEntry[str], now: float, kept: list[str]) -> bool:
    """A working folder this user's tfdrop made, old enough, holding none of ``kept``."""
    try:
        st = entry.stat(follow_symlinks=False)
        mark = os.lstat(os.path.join(entry.path, RUN_MARK))
    except OSError:
        return False
    if not (S_ISDIR(st.st_mode) and S_ISREG(mark.st_mode)) or st.st_uid != os.getuid():
        return False
    inside = os.path.realpath(entry.path) + os.sep
    return _old_enough(st, now) and not any((k + os.sep).startswith(inside) for k in kept)


def sweep_run_folders(
    parent: str | os.PathLike[str], *, keep: Iterable[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Remove the working folders of killed conversions in ``parent``; what was removed.

    Only folders named and marked as :func:`run_folder` makes them, owned by this user, not
    held by a live run and holding none of ``keep`` (the input being converted) are removed.
    Never raises: a folder that cannot be listed or removed is left as it is.
    """
    removed: list[Path] = []
    now = time.time()
    kept = [os.path.realpath(k) for k in keep]
    try:
        with os.scandir(parent) as it:
            entries = [e for e in it if _is_run_name(e.name)]
    except OSError:
        return removed
    for entry in entries:
        if not _ours(entry, now, kept):
            continue
        fd = claim(entry.path)
        if fd is None:
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(fd)
        if not os.path.lexists(entry.path):
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def run_folder(
    parent: str | os.PathLike[str] | None, *, keep: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """A fresh working folder for one conversion in ``parent`` (the temp folder, ``TMPDIR``,
    when None), held while the block runs and removed after it. Folders that killed runs
    left in ``parent`` are removed first (never one holding any of ``keep``)."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep_run_folders(base, keep=keep)
    path = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=base))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        hold(fd)
        (path / RUN_MARK).write_bytes(b"")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
