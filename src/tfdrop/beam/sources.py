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

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfdrop.archive import FileSource, Source
from tfdrop.beam.elements import SourceRef
from tfdrop.errors import ArchiveError
from tfdrop.formats.tfrecord import LABEL_MAP_NAME
from tfdrop.inputs import open_input
from tfdrop.limits import Limits
from tfdrop.stream import is_tfrecord_name

_GLOB = frozenset("*?[")
_ZIP_MAGIC = b"PK"


def is_local(path: str) -> bool:
    """Whether Beam's FileSystems serves ``path`` from the local disk."""
    return FileSystems.get_filesystem(path).scheme() in (None, "file")


def _matches(pattern: str) -> list[str]:
    if is_local(pattern) and os.path.isdir(pattern):
        return [pattern]
    if not _GLOB & set(pattern) and is_local(pattern):
        return [pattern] if os.path.exists(pattern) else []
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def _is_record_file(path: str) -> bool:
    """A TFRecord file by its name, unless it is a zip (``x.tfrecord`` may hold an archive)."""
    if not is_tfrecord_name(os.path.basename(path.rstrip("/"))):
        return False
    if not is_local(path):
        return True
    with open(path, "rb") as f:
        return f.read(2) != _ZIP_MAGIC


def expand_sources(patterns: Sequence[str]) -> list[SourceRef]:
    """Every input the patterns name, sorted by path: zips and folders one source each, bare
    TFRecord files one source per folder (a shard set is one dataset, as ``convert`` reads it).

    Raises:
        ArchiveError: a pattern matches nothing.
    """
    archives: set[str] = set()
    records: dict[str, set[str]] = {}
    for pattern in patterns:
        found = _matches(pattern)
        if not found:
            raise ArchiveError("matches no file or folder", archive=pattern)
        for path in found:
            if _is_record_file(path):
                folder = path[: len(path) - len(os.path.basename(path))].rstrip("/") or "."
                records.setdefault(folder, set()).add(path)
            else:
                archives.add(path)
    refs = [(p, ()) for p in archives] + [(f, tuple(sorted(s))) for f, s in records.items()]
    out = []
    for i, (path, files) in enumerate(sorted(refs)):
        label_map = None
        if files:
            beside = FileSystems.join(path, LABEL_MAP_NAME)
            label_map = beside if FileSystems.exists(beside) else None
        out.append(SourceRef(i, path, files, label_map))
    return out


class Stage:
    """Local copies of remote files, made once per worker process and removed at close."""

    def __init__(self) -> None:
        self._dir: str | None = None
        self._copies: dict[str, Path] = {}

    def local(self, path: str) -> Path:
        """``path`` on the local disk (remote files are copied once)."""
        if is_local(path):
            return Path(path.removeprefix("file://"))
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
    members = {os.path.basename(p): stage.local(p) for p in ref.files}
    if ref.label_map is not None:
        members[LABEL_MAP_NAME] = stage.local(ref.label_map)
    return FileSource(members, label=ref.path)


def labels_of(refs: Iterable[SourceRef]) -> str:
    """The sources as the report's ``source`` (one path, or several joined by spaces)."""
    return " ".join(r.path for r in refs)
