"""Crash-safe publication of output files (SPEC.md "The daemon": published).

A reader of an output folder must never see a partial file: everything is written to a temp
name in the destination folder, flushed and fsynced, renamed into place, and then the folder
itself is fsynced so the rename survives a power cut. Temp names are
``.<name><mark>XXXXXX.tmp``: a dot name with a ``.tmp`` suffix, which the daemon's settle rule
(:func:`is_temp_name`, and most other watchers) ignores, so a chained pipeline never picks up a
half-written archive. The mark says whose temp it is: ``.tfdrop-`` by default, the daemon's
``.<instance>.`` (:mod:`tfdrop.daemon.fsops`), so each cleans up only its own leftovers
(:func:`cleanup_temps`). When a temp name would not fit in :data:`NAME_MAX` bytes (a long
final name), ``<name>`` is replaced by a short hash of it. If anything fails, the temp file is
removed and the error (including ``OSError`` for ENOSPC/EACCES, which the daemon retries)
propagates unchanged. This is the one atomic-write stack: the CLI and the daemon both use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from tfdrop.leftovers import claim, hold

_COPY_CHUNK = 1 << 20
TEMP_MARK = ".tfdrop-"
"""The mark in the temp names of a publisher that gives none (the CLI)."""
_TEMP_SUFFIX = ".tmp"
# Suffixes writers use while a file is incomplete (browsers, curl/wget, rsync --partial, vim).
_PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".swp", "~")
# Folders on some filesystems (certain FUSE, CIFS/SMB mounts) cannot be fsynced; there the
# rename is as durable as the filesystem allows and the error is not the input's fault.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}
# Filesystems without hard links make publish_no_clobber fall back to a checked rename.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}

NAME_MAX = 255
"""Most bytes in one file name (Linux ext4/xfs/btrfs/tmpfs, NTFS and SMB shares as Linux
sees them); a longer name fails with ENAMETOOLONG whatever the folder."""


def name_bytes(name: str) -> int:
    """The length of a file name in bytes as the OS sees it (surrogate escapes: one byte)."""
    try:
        return len(os.fsencode(name))
    except UnicodeEncodeError:  # a lone surrogate no file name holds: count it generously
        return len(name.encode("utf-8", "surrogatepass"))


def name_fits(name: str, reserve: int = 0) -> bool:
    """Whether ``name`` plus ``reserve`` more bytes fits in :data:`NAME_MAX`."""
    return name_bytes(name) + reserve <= NAME_MAX


def short_hash(name: str) -> str:
    """Eight hex digits naming ``name`` (stands in for a name too long to repeat)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def temp_base(name: str, reserve: int) -> str:
    """``name`` if ``name`` and ``reserve`` more bytes fit a file name, else its short hash."""
    return name if name_fits(name, reserve) else short_hash(name)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder so renames and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """Whether a file is still being written under this name, by tfdrop or anyone else.

    Hidden names (ours, rsync's ``.x.XXXXXX``) and the partial-download suffixes. The daemon
    never takes such a file as a drop.
    """
    return name.startswith(".") or name.lower().endswith(_PARTIAL_SUFFIXES)


def is_own_temp(name: str, mark: str = TEMP_MARK) -> bool:
    """Whether ``name`` has exactly the shape of a temp name this module makes with ``mark``
    (:func:`temp_path`: ``.<name><mark>`` and six hex digits, ``.tmp``). Cleanup removes such
    files: a user's ``.notes.tfdrop-old.tmp`` is not one (found by an outside attack)."""
    tail = len(mark) + 6 + len(_TEMP_SUFFIX)
    return (
        len(name) > tail + 1
        and name.startswith(".")
        and name.endswith(_TEMP_SUFFIX)
        and name[-tail:].startswith(mark)
        and all(c in _HEX for c in name[-tail + len(mark) : -len(_TEMP_SUFFIX)])
    )


_HEX: Final = frozenset("0123456789abcdef")


def temp_path(final: Path, mark: str = TEMP_MARK) -> Path:
    """A fresh temp name beside ``final``: ``.<name><mark>XXXXXX.tmp``, within NAME_MAX bytes."""
    tail = f"{mark}{secrets.token_hex(3)}{_TEMP_SUFFIX}"
    return final.with_name(f".{temp_base(final.name, 1 + len(tail))}{tail}")


def _make_temp(final: Path, mark: str) -> tuple[Path, int]:
    """Create (exclusively) a fresh temp file beside ``final``: its path, and a descriptor
    that holds it (:func:`tfdrop.leftovers.hold`) until closed."""
    for _ in range(100):
        tmp = temp_path(final, mark)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        hold(fd)
        return tmp, fd
    raise FileExistsError(errno.EEXIST, "no free temp name", str(final))


@contextlib.contextmanager
def flushing(path: str | os.PathLike[str]) -> Iterator[None]:
    """fsync ``path`` in a thread while the block runs (the conversion reads its archive back
    meanwhile: writing 1.1 GB out and reading it back each take half a second, and each core
    can do one). The fsync's own error is raised after the block, unless the block raised.

    Raises:
        OSError: The fsync failed (EIO, ENOSPC on a filesystem that allocates late).
    """
    failed: list[OSError] = []

    def run() -> None:
        try:
            _fsync_file(Path(path))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="tfdrop-fsync", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # on Linux any descriptor of the inode flushes its dirty pages
    finally:
        os.close(fd)


def _place(src: str | os.PathLike[str], final: Path, *, overwrite: bool) -> None:
    """Rename ``src`` to ``final`` (same filesystem): replacing it and syncing the folder, or
    never over an existing file (:func:`publish_no_clobber`)."""
    if overwrite:
        os.replace(src, final)
        fsync_dir(final.parent)
    else:
        publish_no_clobber(src, final)


def publish_no_clobber(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst`` on the same filesystem, failing if ``dst`` exists.

    Uses link-then-unlink, which is atomic against another publisher of the same name.

    Raises:
        FileExistsError: ``dst`` already exists; ``src`` is left in place.
    """
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links here: the check and the rename are two steps, so a race is possible.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from None
        os.replace(src, dst)
    else:
        os.unlink(src)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_path(
    final_path: str | os.PathLike[str], *, overwrite: bool = True, mark: str = TEMP_MARK
) -> Iterator[Path]:
    """Yield a temp path beside ``final_path``; publish it there when the block succeeds.

    The temp file already exists (empty) when yielded; write it with anything that takes a
    path. On success it is fsynced, renamed to ``final_path`` (replacing an old file only if
    ``overwrite``) and the folder is fsynced. On any exception it is removed and the
    exception propagates. ``mark`` tags the temp name (:func:`temp_path`).

    Raises:
        FileExistsError: ``overwrite`` is False and ``final_path`` exists.
        OSError: Writing, syncing or renaming failed (ENOSPC, EACCES, EROFS ...).

    Example:
        >>> with atomic_path(out_dir / "voc.tfrecord.zip") as tmp:  # doctest: +SKIP
        ...     write_zip(tmp)
    """
    final = Path(final_path)
    tmp, held = _make_temp(final, mark)
    try:
        yield tmp
        _fsync_file(tmp)
        st = os.fstat(held)
        # known before the rename: a signal handled the moment it returns must find it
        _renamed(final, (st.st_dev, st.st_ino))
        try:
            _place(tmp, final, overwrite=overwrite)
        except BaseException:
            if not published_here(final):
                _RENAMED.pop(os.fspath(final), None)
            raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(held)


_RENAMED: dict[str, tuple[int, int]] = {}  # final path -> (device, inode) atomic_path put there
_RENAMED_KEPT: Final = 256  # the daemon publishes for months: only the latest are remembered


def _renamed(final: Path, identity: tuple[int, int]) -> None:
    _RENAMED.pop(os.fspath(final), None)
    _RENAMED[os.fspath(final)] = identity
    if len(_RENAMED) > _RENAMED_KEPT:
        del _RENAMED[next(iter(_RENAMED))]


def published_here(path: str | os.PathLike[str]) -> bool:
    """Whether the file now at ``path`` is the one this process last published there (by its
    inode: another run publishing the same name meanwhile is not this run's archive)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return _RENAMED.get(os.fspath(path)) == (st.st_dev, st.st_ino)


@contextlib.contextmanager
def atomic_write(
    final_path: str | os.PathLike[str], *, overwrite: bool = True, mark: str = TEMP_MARK
) -> Iterator[BinaryIO]:
    """Yield a binary file to write; it appears at ``final_path`` only when complete.

    Same guarantees as :func:`atomic_path`; the file is flushed and fsynced before the rename.
    """
    with (
        atomic_path(final_path, overwrite=overwrite, mark=mark) as tmp,
        open(tmp, "wb") as f,
    ):
        yield f
        f.flush()
        os.fsync(f.fileno())


def copy_atomic(
    src: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    name: str | None = None,
    *,
    overwrite: bool = True,
    mark: str = TEMP_MARK,
) -> Path:
    """Copy a finished file into ``dst_dir`` (any filesystem) so it appears there whole.

    Returns:
        The published path, ``dst_dir / (name or the source's name)``.
    """
    final = Path(dst_dir) / (name if name is not None else Path(src).name)
    with open(src, "rb") as fin, atomic_write(final, overwrite=overwrite, mark=mark) as fout:
        shutil.copyfileobj(fin, fout, _COPY_CHUNK)
    return final


def move_atomic(
    src: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    name: str | None = None,
    *,
    overwrite: bool = True,
    mark: str = TEMP_MARK,
) -> Path:
    """Move a file into ``dst_dir``: a rename on one filesystem, else copy_atomic + unlink.

    With ``overwrite=False`` an existing file of that name is never replaced (a no-clobber
    link on one filesystem, a copy to a temp name then the no-clobber link across two).
    """
    final = Path(dst_dir) / (name if name is not None else Path(src).name)
    try:
        _place(src, final, overwrite=overwrite)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy_atomic(src, dst_dir, final.name, overwrite=overwrite, mark=mark)
        os.unlink(src)
    fsync_dir(Path(src).parent)
    return final


def cleanup_temps(
    folder: str | os.PathLike[str],
    *,
    min_age: float = 0.0,
    mark: str = TEMP_MARK,
    keep: Iterable[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Remove temp files left in ``folder`` by a killed run; returns what was removed.

    Only files of exactly the temp-name shape (:func:`is_own_temp`), owned by this user and
    not held by a live writer (:func:`atomic_path` holds each while it is written) are
    removed, and never one of ``keep`` (the input being converted, its label map).

    Args:
        folder: The output folder.
        min_age: Only remove temps whose mtime is at least this many seconds old, so a
            second instance writing to the same folder keeps its live temp files.
        mark: Only temps made with this mark (:func:`temp_path`) are removed.
        keep: Files never removed, whatever their names.
    """
    removed = []
    now = time.time()
    kept = {(st.st_dev, st.st_ino) for st in _stats(keep)}
    with os.scandir(folder) as it:
        for entry in it:
            if not is_own_temp(entry.name, mark) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < min_age or st.st_uid != os.getuid():
                continue
            if (st.st_dev, st.st_ino) in kept:
                continue
            fd = claim(entry.path)
            if fd is None:
                continue  # held by a live writer (or gone)
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            finally:
                os.close(fd)
            removed.append(Path(entry.path))
    if removed:
        fsync_dir(folder)
    return removed


def _stats(paths: Iterable[str | os.PathLike[str]]) -> Iterator[os.stat_result]:
    for path in paths:
        with contextlib.suppress(OSError):
            yield os.stat(path)
