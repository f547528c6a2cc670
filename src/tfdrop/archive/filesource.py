"""A :class:`~tfdrop.archive.source.Source` over plain files the caller names.

For inputs that are neither a zip nor a folder tree: bare TFRecord files beside each other (one
file or its shard set, and the label map beside them; :func:`tfdrop.formats.tfrecord.bare_files`
picks them). Members are the given names; each is read straight from its file, which must
still be the file found when the source was made (work units reopen it in worker processes: a
file replaced or rewritten meanwhile is refused, never mixed in).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from tfdrop.archive.source import Stamp, check_stamp, stamp


class FileSource:
    """The files of ``paths`` (member name -> file) as a :class:`~tfdrop.archive.Source`."""

    def __init__(self, paths: Mapping[str, Path], *, label: str) -> None:
        self.label = label
        self._paths = dict(paths)
        self._stamps: dict[str, Stamp] = {n: stamp(p.stat()) for n, p in self._paths.items()}

    def names(self) -> list[str]:
        return list(self._paths)

    def size(self, name: str) -> int:
        return self._paths[name].stat().st_size

    def exists(self, name: str) -> bool:
        return name in self._paths

    def find(self, name: str) -> str | None:
        return next((n for n in self._paths if n.casefold() == name.casefold()), None)

    def open(self, name: str) -> BinaryIO:
        f = self._paths[name].open("rb")
        try:
            check_stamp(f.fileno(), self._stamps[name], archive=self.label, member=name)
        except BaseException:
            f.close()
            raise
        return f

    def read_bytes(self, name: str, *, max_size: int) -> bytes:
        with self.open(name) as f:
            return f.read(max_size)

    def read_range(self, name: str, offset: int, size: int) -> bytes | None:
        with self.open(name) as f:
            return os.pread(f.fileno(), size, offset)

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
