"""A :class:`~tfdrop.archive.source.Source` over plain files the caller names.

For inputs that are neither a zip nor a folder tree: bare TFRecord files beside each other (one
file or its shard set, and the label map beside them; :func:`tfdrop.formats.tfrecord.bare_files`
picks them). Members are the given names; each is read straight from its file, which must
still be the file found when the source was made, until its last byte is read (work units
reopen it in worker processes: a file replaced or rewritten meanwhile, even mid-read, is
refused, never mixed in).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from tfdrop.archive.plainfile import FileReader, pread_exact
from tfdrop.archive.source import BUFFER, NoStored, Stamp, check_stamp, check_whole, stamp


class FileSource(NoStored):
    """The files of ``paths`` (member name -> file) as a :class:`~tfdrop.archive.Source`."""

    def __init__(self, paths: Mapping[str, Path], *, label: str) -> None:
        self.label = label
        self._paths = dict(paths)
        self._stamps: dict[str, Stamp] = {n: stamp(p.stat()) for n, p in self._paths.items()}

    def names(self) -> list[str]:
        return list(self._paths)

    def size(self, name: str) -> int:
        return self._stamps[name][2]

    def exists(self, name: str) -> bool:
        return name in self._paths

    def find(self, name: str) -> str | None:
        return next((n for n in self._paths if n.casefold() == name.casefold()), None)

    def open(self, name: str) -> BinaryIO:
        return io.BufferedReader(self._reader(name), buffer_size=BUFFER)

    def read_bytes(self, name: str, *, max_size: int) -> bytes:
        check_whole(self.size(name), max_size, archive=self.label, member=name)
        with self._reader(name) as raw:
            return raw.readall()

    def read_range(self, name: str, offset: int, size: int) -> bytes | None:
        fd = self._open_fd(name)
        try:
            return pread_exact(
                fd, offset, size, self._stamps[name], archive=self.label, member=name
            )
        finally:
            os.close(fd)

    def _reader(self, name: str) -> FileReader:
        st = self._stamps[name]
        return FileReader(self._open_fd(name), self.label, name, st[2], st)

    def _open_fd(self, name: str) -> int:
        fd = os.open(self._paths[name], os.O_RDONLY)
        try:
            check_stamp(fd, self._stamps[name], archive=self.label, member=name)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def close(self) -> None:
        """Nothing stays open between reads."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
