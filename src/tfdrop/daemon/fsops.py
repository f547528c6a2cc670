"""Small crash-safe file operations the daemon needs: durable writes and no-clobber moves.

Follows SPEC.md "published (temp file, fsync, rename, folder fsync)" through the one atomic
stack, :mod:`tfdrop.publish`. The daemon's temp names carry the mark ``.<instance>.``
(``.<name>.<instance>.<random>.tmp``): hidden and ``*.tmp``, so no scanner takes them, and
tagged with the instance so a restarted instance removes its own leftovers at once without
touching the live temp files of another instance writing to the same share. Every name made
here fits in NAME_MAX bytes whatever the drop's name: a temp name too long gets a short hash
in place of ``<name>``, and a routed name too long (``failed/<name>.error.json``) is cut and
marked with a hash of the whole name (:func:`numbered`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from tfdrop.errors import DataError
from tfdrop.publish import (
    NAME_MAX,
    atomic_write,
    cleanup_temps,
    copy_atomic,
    fsync_dir,
    move_atomic,
    name_bytes,
    name_fits,
    publish_no_clobber,
    short_hash,
    temp_path,
)

_CHUNK = 4 * 1024 * 1024
ERROR_SUFFIX = ".error.json"


class NameTooLongError(DataError):
    """A drop whose output names would not fit in NAME_MAX bytes (fails, never retried)."""

    kind = "name_too_long"


def _mark(instance: str) -> str:
    return f".{instance}."


def temp_name(final: Path, instance: str) -> Path:
    """A temp name of this instance beside ``final`` (``.<name>.<instance>.XXXXXX.tmp``)."""
    return temp_path(final, _mark(instance))


def write_replace(final: Path, data: bytes, instance: str) -> None:
    """Write ``final`` whole or not at all (replacing an older file of that name)."""
    with atomic_write(final, mark=_mark(instance)) as f:
        f.write(data)


def copy_replace(src: Path, dst: Path, instance: str) -> None:
    """Copy ``src`` to ``dst`` whole or not at all (replacing an older file of that name);
    ``src`` stays (a publication that is retried under another name copies it again)."""
    copy_atomic(src, dst.parent, dst.name, mark=_mark(instance))


def publish_file(src: Path, dst: Path, instance: str) -> None:
    """Publish ``src`` as ``dst`` without ever replacing an existing ``dst``.

    Same file system: a no-clobber link (atomic against another publisher). Otherwise a copy
    to a temp name beside ``dst``, fsynced, then the no-clobber link.
    """
    move_atomic(src, dst.parent, dst.name, overwrite=False, mark=_mark(instance))


def numbered(folder: Path, stem: str, suffix: str, n: int, reserve: int = 0) -> Path:
    """``<stem><suffix>``, then ``<stem>-1<suffix>``, ``<stem>-2<suffix>`` ...

    The name and ``reserve`` more bytes (``.error.json`` beside it) always fit in NAME_MAX:
    a stem too long for that is cut and ends in ``~<hash of the whole stem>``, so two long
    names cut alike stay apart.
    """
    tail = suffix if n == 0 else f"-{n}{suffix}"
    if name_fits(stem + tail, reserve):
        return folder / f"{stem}{tail}"
    if name_bytes(tail) + reserve > NAME_MAX // 2:  # a "suffix" that is most of the name
        stem, suffix = stem + suffix, ""
        tail = "" if n == 0 else f"-{n}"
    mark = f"~{short_hash(stem)}"
    room = NAME_MAX - reserve - name_bytes(mark + tail)
    cut = stem[:room]  # a character is at least one byte
    while cut and name_bytes(cut) > room:
        cut = cut[:-1]  # by characters, so a UTF-8 sequence is never split
    return folder / f"{cut}{mark}{tail}"


def split_name(name: str) -> tuple[str, str]:
    """``a.zip`` -> (``a``, ``.zip``); names without a suffix keep it empty."""
    p = Path(name)
    return (p.stem, p.suffix) if p.suffix else (name, "")


def _finish_link(src: Path, dst: Path) -> bool:
    """True (and ``src`` removed) when ``dst`` is ``src`` already: a move that a crash cut
    between link and unlink (:func:`publish_no_clobber`); taking it up again must not leave a
    second copy under the next free name."""
    try:
        same = os.path.samestat(os.lstat(src), os.lstat(dst))  # lstat: a link is not its target
    except FileNotFoundError:
        return False
    if same:
        src.unlink()
        fsync_dir(src.parent)
    return same


def move_unique(src: Path, folder: Path, name: str) -> Path:
    """Move ``src`` into ``folder`` as ``name`` or, if taken, ``<stem>-N<suffix>``."""
    stem, suffix = split_name(name)
    for n in range(10_000):
        dst = numbered(folder, stem, suffix, n)
        try:
            publish_no_clobber(src, dst)
        except FileExistsError:
            if _finish_link(src, dst):
                return dst
            continue
        return dst
    raise FileExistsError(errno.EEXIST, "no free name", str(folder / name))


def _job_of(error_file: Path) -> str | None:
    try:
        job = json.loads(error_file.read_bytes()).get("job")
    except (OSError, ValueError, AttributeError):
        return None
    return job if isinstance(job, str) else None


def move_with_error(
    src: Path, folder: Path, name: str, error: bytes, *, job: str, instance: str
) -> Path:
    """Move ``src`` into ``folder`` (as :func:`move_unique`) beside ``<name>.error.json``.

    The error file is made durable before the input arrives, so a crash in between leaves
    the input claimed (failed again on restart, finding its own error file by ``job``) and
    never an input in ``failed/`` without its error file. The winner of a name rewrites its
    error file after its link, so another instance racing for the same name cannot leave its
    text beside our input (short of a write landing between our link and that rewrite).
    """
    stem, suffix = split_name(name)
    for n in range(10_000):
        dst = numbered(folder, stem, suffix, n, reserve=len(ERROR_SUFFIX))
        err = dst.with_name(f"{dst.name}{ERROR_SUFFIX}")
        if os.path.lexists(dst):
            if _finish_link(src, dst):
                write_replace(err, error, instance)
                return dst
            continue
        if os.path.lexists(err) and _job_of(err) != job:
            continue  # another input's error file: that input is on its way in
        write_replace(err, error, instance)
        try:
            publish_no_clobber(src, dst)
        except FileExistsError:
            continue
        write_replace(err, error, instance)
        return dst
    raise FileExistsError(errno.EEXIST, "no free name", str(folder / name))


def sha256_file(path: Path, check: Callable[[], None] | None = None) -> str:
    """Hex SHA-256 of a file, read in large chunks; ``check`` runs between chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if check is not None:
                check()
    return h.hexdigest()


def remove_own_temps(folder: Path, instance: str) -> list[str]:
    """Remove this instance's leftover temp files in ``folder`` (after a crash)."""
    try:
        return [p.name for p in cleanup_temps(folder, mark=_mark(instance))]
    except FileNotFoundError:
        return []
