"""Inputs through Beam's FileSystems: patterns to sources, and a source opened in a worker.

A pattern may name a zip, a folder, a glob of zips, or TFRecord files (a shard set, a glob of
shards). Matching goes through :class:`apache_beam.io.filesystems.FileSystems`, so ``gs://``,
``s3://`` and ``hdfs://`` patterns work wherever the Beam installation has those file systems.
A local file is read in place (zips with ``os.pread``, as ``tfdrop convert`` reads them). A
remote file is first copied to the worker's local temp folder, once per worker (the archive
layer reads zips by random access from a local file): split a large remote dataset into many
zips (a glob) so that each worker fetches only the parts it reads. A folder must be local.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfdrop.archive import FileSource, Source
from tfdrop.beam.elements import SourceRef
from tfdrop.errors import ArchiveError, TfdropError
from tfdrop.inputs import open_input
from tfdrop.limits import Limits
from tfdrop.stream import is_tfrecord_name

_GLOB = frozenset("*?[")
_ZIP_MAGIC = b"PK"
_FILE: Final = "file://"


class OutputPathError(TfdropError):
    """The output prefix cannot be used (empty, no file system for it, not a folder)."""

    kind = "output"


def _filesystem_scheme(path: str) -> str | None:
    """The scheme of the Beam file system that serves ``path`` (None: the local disk).

    Raises:
        ValueError: no installed Beam file system serves it (its message says which).
    """
    try:
        fs = FileSystems.get_filesystem(path)
    except ImportError as exc:  # hdfs:// without the extra
        raise ValueError(f"its file system is not installed ({exc})") from None
    except ValueError:
        raise ValueError("no installed Beam file system serves it") from None
    scheme: str | None = fs.scheme()
    return None if scheme == "file" else scheme


def _extra_hint(path: str) -> str:
    scheme = path.partition("://")[0]
    extra = {"gs": "gcp", "s3": "aws", "hdfs": "hadoop", "az": "azure"}.get(scheme)
    if extra is None:
        return "use a local path or one of Beam's file systems (gs://, s3://, hdfs://, az://)"
    return f"install Beam's {extra} extra: pip install 'apache-beam[{extra}]'"


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; other paths unchanged."""
    return "/" + path[len(_FILE) :].lstrip("/") if path.startswith(_FILE) else path


def is_local(path: str) -> bool:
    """Whether ``path`` is on the local disk (a plain path or ``file://``); False for a
    path a Beam file system serves, or that none does (see :func:`check_input`)."""
    if path.startswith(_FILE) or "://" not in path:
        return True
    try:
        return _filesystem_scheme(path) is None
    except ValueError:
        return False


def _unserved(path: str) -> str | None:
    """Why no installed Beam file system serves ``path``; None when one does (or it is local)."""
    if is_local(path):
        return None
    try:
        _filesystem_scheme(path)
    except ValueError as exc:
        return str(exc)
    return None


def check_input(path: str) -> None:
    """Raise ArchiveError (naming ``path``) when no installed Beam file system serves it."""
    problem = _unserved(path)
    if problem is not None:
        raise ArchiveError(f"cannot read: {problem}", archive=path, hint=_extra_hint(path))


def check_output(path: str) -> None:
    """Raise OutputPathError (naming ``path``) when it cannot be an output prefix."""
    if not path.strip():
        raise OutputPathError("--output is empty: name an output folder")
    problem = _unserved(path)
    if problem is not None:
        raise OutputPathError(f"cannot write: {problem}", file=path, hint=_extra_hint(path))


def escape(path: str) -> str:
    """``path`` as a FileSystems.match pattern that matches only itself."""
    return glob.escape(path)


def exists(path: str) -> bool:
    """Whether ``path`` exists (glob characters in it are plain characters)."""
    if is_local(path):
        return os.path.exists(local_path(path))
    return bool(FileSystems.match([escape(path)])[0].metadata_list)


def size_of(path: str) -> int:
    """The size of the file ``path`` in bytes (glob characters are plain)."""
    if is_local(path):
        return os.path.getsize(local_path(path))
    size: int = FileSystems.match([escape(path)])[0].metadata_list[0].size_in_bytes
    return size


def remove(path: str) -> None:
    """Delete the file or folder ``path`` if it exists (glob characters are plain)."""
    if is_local(path):
        local = local_path(path)
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local, ignore_errors=True)
        elif os.path.lexists(local):
            os.remove(local)
    elif exists(path):
        FileSystems.delete([path])


def listing(folder: str) -> list[str]:
    """The paths directly in ``folder`` (local), or under it (a Beam file system)."""
    if is_local(folder):
        local = local_path(folder)
        return (
            sorted(os.path.join(local, n) for n in os.listdir(local))
            if os.path.isdir(local)
            else []
        )
    pattern = FileSystems.join(escape(folder), "*")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _matches(pattern: str) -> list[str]:
    if is_local(pattern):
        path = local_path(pattern)
        if os.path.exists(path):  # ``data[1].zip`` names that file when it exists
            return [path]
        return sorted(glob.glob(path)) if _GLOB & set(path) else []
    check_input(pattern)
    try:
        result = FileSystems.match([pattern])[0]
    except (OSError, ValueError) as exc:  # Beam's BeamIOError is an OSError
        raise ArchiveError(
            f"cannot list: {exc}", archive=pattern, hint=_extra_hint(pattern)
        ) from None
    return sorted(m.path for m in result.metadata_list)


def _is_record_file(path: str) -> bool:
    """A TFRecord file by its name, unless it is a zip (``x.tfrecord`` may hold an archive)."""
    if not is_tfrecord_name(os.path.basename(path.rstrip("/"))):
        return False
    if not is_local(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) != _ZIP_MAGIC


def _same_file(path: str) -> str:
    """A key that two spellings of one local file share (remote paths as they are)."""
    return os.path.realpath(path) if is_local(path) else path


def _label_maps_beside(folder: str) -> tuple[str, ...]:
    """Every ``.pbtxt`` in ``folder`` (as the TFRecord reader takes them in a folder:
    ``label_map.pbtxt``, Roboflow's ``cars_label_map.pbtxt``)."""
    return tuple(p for p in listing(folder) if p.lower().endswith(".pbtxt"))


def expand_sources(patterns: Sequence[str]) -> list[SourceRef]:
    """Every input the patterns name, sorted by path: zips and folders one source each, bare
    TFRecord files one source per folder (a shard set is one dataset, as ``convert`` reads it).
    A file named twice (two spellings, a glob and a path) is read once; the first source
    notes the others (``duplicate_source``).

    Raises:
        ArchiveError: a pattern matches nothing, or no file system serves it.
    """
    archives: dict[str, str] = {}
    records: dict[str, dict[str, str]] = {}
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for pattern in patterns:
        found = _matches(pattern)
        if not found:
            raise ArchiveError("matches no file or folder", archive=pattern)
        for path in found:
            key = _same_file(path)
            if key in seen:
                duplicates.append(path)
                continue
            seen[key] = path
            if _is_record_file(path):
                folder = path[: len(path) - len(os.path.basename(path))].rstrip("/") or "."
                records.setdefault(folder, {})[key] = path
            else:
                archives[key] = path
    refs: list[tuple[str, tuple[str, ...]]] = [(p, ()) for p in archives.values()]
    refs += [(f, tuple(sorted(s.values()))) for f, s in records.items()]
    out = []
    for i, (path, files) in enumerate(sorted(refs)):
        maps = _label_maps_beside(path) if files else ()
        out.append(SourceRef(i, path, files, maps, tuple(duplicates) if i == 0 else ()))
    return out


class Stage:
    """Local copies of remote files, made once per worker process and removed at close."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._copies: dict[str, Path] = {}

    def local(self, path: str) -> Path:
        """``path`` on the local disk (remote files are copied once)."""
        if is_local(path):
            return Path(local_path(path))
        copy = self._copies.get(path)
        if copy is None:
            if self._dir is None:
                self._dir = tempfile.mkdtemp(prefix="tfdrop-beam-")
            digest = hashlib.sha256(path.encode()).hexdigest()[:16]
            copy = Path(self._dir) / f"{digest}-{os.path.basename(path)}"
            with (
                FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src,
                copy.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
            self._copies[path] = copy
        return copy

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._copies.clear()


def open_ref(ref: SourceRef, stage: Stage, limits: Limits) -> Source:
    """The source ``ref`` names, as ``tfdrop convert`` opens it (bare files by their names)."""
    if not ref.files:
        return open_input(stage.local(ref.path), limits)
    # the folder's name stays in the member's (Roboflow's train/cars.tfrecord is subset train)
    folder = os.path.basename(ref.path.rstrip("/"))
    prefix = f"{folder}/" if folder not in ("", ".", "..") else ""
    members = {prefix + os.path.basename(p): stage.local(p) for p in ref.files + ref.label_maps}
    return FileSource(members, label=ref.path)


def labels_of(refs: Iterable[SourceRef]) -> str:
    """The sources as the report's ``source`` (one path, or several joined by spaces)."""
    return " ".join(r.path for r in refs)
