"""Finding the record files behind a path, for ``validate`` and ``inspect``.

A path may be a bare ``.tfrecord`` (any compression), one file of a shard set (the whole set is
read), or a TFRecord zip or folder (every record file in it, with its ``label_map.pbtxt``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tfdrop.archive import Source, open_source
from tfdrop.codec.framing import FOOTER_SIZE, HEADER_SIZE
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import LabelMap
from tfdrop.errors import TfdropError
from tfdrop.formats.tfrecord import LABEL_MAP_NAME, subset_of
from tfdrop.limits import DEFAULT_LIMITS, Limits, exceeded
from tfdrop.stream import (
    is_tfrecord_name,
    iter_records,
    shard_gaps,
    shard_set,
    stream_caps,
)


@dataclass(frozen=True, slots=True)
class RecordFile:
    """One record file: how to show it, and which source member or path holds it."""

    display: str
    member: str | None
    path: Path

    @property
    def subset(self) -> str:
        return subset_of(self.member or self.path.name)


def _is_bare(path: Path) -> bool:
    """A file that is not a zip is read as a TFRecord, whatever its name."""
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) != b"PK\x03\x04"


def _read_map(path: Path, limits: Limits) -> LabelMap:
    """A label map file beside bare record files, read whole only within max_file_bytes."""
    cap = limits.max_file_bytes
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise exceeded("max_file_bytes", size, cap, file=str(path))
        data = f.read(cap + 1)  # it may have grown since
    if len(data) > cap:
        raise exceeded("max_file_bytes", len(data), cap, file=str(path))
    return parse_label_map(
        data, file=str(path), max_labels=limits.max_labels, max_text_bytes=limits.max_text_bytes
    )


@contextmanager
def record_files(
    path: Path, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[list[RecordFile], LabelMap | None, Source | None]]:
    """The record files behind ``path``, the label map found beside them, and the source."""
    if _is_bare(path):
        files = [RecordFile(str(p), None, p) for p in shard_set(path)]
        lm_path = path.with_name(LABEL_MAP_NAME)
        lm = _read_map(lm_path, limits) if lm_path.is_file() else None
        yield files, lm, None
        return
    with open_source(path, limits=limits) as src:
        names = sorted(n for n in src.names() if is_tfrecord_name(n))
        files = [RecordFile(f"{path}:{n}", n, path) for n in names]
        maps = [n for n in src.names() if n.rsplit("/", 1)[-1] == LABEL_MAP_NAME]
        lm = (
            parse_label_map(
                src.read_bytes(maps[0], max_size=limits.max_file_bytes),
                member=maps[0],
                max_labels=limits.max_labels,
                max_text_bytes=limits.max_text_bytes,
            )
            if maps
            else None
        )
        yield files, lm, src


def missing_shards(files: list[RecordFile]) -> list[tuple[str, str]]:
    """``(display of a present shard, missing shard name)`` for every incomplete shard set.

    A shard set with mixed counts or an index out of range is a ``FormatError``.
    """
    display = {rf.member or rf.path.name: rf.display for rf in files}
    return [
        (display[gap.present], name) for gap in shard_gaps(list(display)) for name in gap.missing
    ]


def iter_file_records(
    rf: RecordFile, source: Source | None, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[int, int, bytes]]:
    """``(index, offset, record)`` of one record file; codec errors get the file's name.

    The stream caps (record size, decompressed bytes, ratio) come from ``limits``.
    """
    f = source.open(rf.member) if source is not None and rf.member else rf.path.open("rb")
    offset = 0
    with f:
        try:
            for index, rec in enumerate(iter_records(f, **stream_caps(limits))):
                yield index, offset, rec
                offset += HEADER_SIZE + len(rec) + FOOTER_SIZE
        except TfdropError as exc:
            raise exc.at(archive=rf.display) from None
