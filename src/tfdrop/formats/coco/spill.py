"""Annotations grouped by image without holding them: a spill file with sorted runs.

COCO lists annotations in one array, in any order, apart from the images they belong to. The
reader appends each annotation (``marshal``-ed plain values: only tfdrop reads these files,
in the same process) to a temp file in the work folder, tagged with its image's position in
the ``images`` array. While the tags arrive in non-decreasing order (what CVAT and Datumaro
write) records go out in 1 MiB writes and the file is one sorted run, read back sequentially;
from the first record out of order on, records are buffered up to :data:`RUN_BYTES`, each
buffer is sorted (stably) and written as a run, and the runs are merged with
:func:`heapq.merge`. Memory stays at one buffer, whatever the file size.

While the file is one sorted run, the spill knows where each position's records start
(:meth:`Spill.start_of`): a work unit can read a range of positions from it as it grows
(:meth:`Spill.sync` makes what was added readable), and :meth:`Spill.offsets` gives the
grouped file's offsets without the copy :meth:`Spill.save_sorted` makes.
"""

from __future__ import annotations

import heapq
import marshal
import struct
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

RUN_BYTES: Final = 16 << 20
SORTED_FLUSH: Final = 1 << 20
_HEAD = struct.Struct("<II")  # image position, payload length


class Spill:
    """Append ``(image position, record)``; read back grouped by position, stable within one."""

    def __init__(
        self,
        workdir: Path | None,
        *,
        path: Path | None = None,
        run_bytes: int = RUN_BYTES,
        sorted_flush: int = SORTED_FLUSH,
    ) -> None:
        """The file goes in a temp folder of ``workdir``, or at ``path`` (the caller's, kept
        after :meth:`close`)."""
        self._run_bytes = run_bytes
        self._sorted_flush = sorted_flush
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._dir = tempfile.TemporaryDirectory(prefix=".tfdrop-coco-", dir=workdir)
            path = Path(self._dir.name) / "annotations.spill"
        self.path = path
        self._path = path
        self._file: IO[bytes] | None = self._path.open("wb")
        self._buf: list[tuple[int, bytes]] = []
        self._buf_bytes = 0
        self._runs: list[tuple[int, int]] = []  # (start, end) byte offsets
        self._offset = 0
        self._last = -1
        self._sorted = True
        self._starts = array("Q")  # while sorted: where the records of positions 0..last start
        self._end = 0  # bytes added (written or buffered)
        self.count = 0

    @property
    def sorted(self) -> bool:
        """Whether every position came in non-decreasing order so far (one run)."""
        return self._sorted

    def add(self, position: int, record: Any) -> None:
        data = marshal.dumps(record)
        if position != self._last:
            if position < self._last:
                self._sorted = False
            elif self._sorted:
                starts, end = self._starts, self._end
                while len(starts) <= position:  # positions without records start there too
                    starts.append(end)
            self._last = position
        self._buf.append((position, data))
        self._buf_bytes += len(data) + 16
        self._end += _HEAD.size + len(data)
        self.count += 1
        # sorted so far: the file is one run already, so small writes do; unsorted: each
        # buffer becomes a sorted run, so a large buffer keeps the runs (open files) few
        if self._buf_bytes >= (self._sorted_flush if self._sorted else self._run_bytes):
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        assert self._file is not None
        if not self._sorted:
            self._buf.sort(key=lambda r: r[0])  # stable: keeps the file order per image
        start = self._offset
        pack = _HEAD.pack
        chunks = []
        for position, data in self._buf:
            chunks.append(pack(position, len(data)))
            chunks.append(data)
        blob = b"".join(chunks)
        self._file.write(blob)
        self._offset += len(blob)
        if self._sorted and self._runs:
            self._runs[-1] = (self._runs[-1][0], self._offset)  # still one sorted run
        else:
            self._runs.append((start, self._offset))
        self._buf = []
        self._buf_bytes = 0

    def finish(self) -> None:
        """No more records: write the last run and close the file for writing."""
        self._flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def start_of(self, position: int) -> int:
        """While sorted: the byte offset of ``position``'s first record, for a position up to
        the last one added (its records may still grow) or the end for any later one."""
        assert self._sorted
        return self._starts[position] if position < len(self._starts) else self._end

    def sync(self) -> None:
        """Write what is buffered, so another process reads every record added so far."""
        self._flush()
        if self._file is not None:
            self._file.flush()

    def offsets(self, positions: int) -> array[int]:
        """For a sorted spill, finished: what :meth:`save_sorted` returns, for this file
        itself (``positions + 1`` offsets)."""
        assert self._sorted
        self.finish()
        out = array("Q", self._starts[:positions])
        out.extend([self._end] * (positions + 1 - len(out)))
        return out

    def save_sorted(self, path: Path, positions: int) -> array[int]:
        """Write every record, grouped by position as :meth:`groups` gives them, to ``path``
        (raw: nothing decoded); the byte offset where each position's group starts, plus the
        file's end (``positions + 1`` values: position ``p``'s records lie between offsets
        ``p`` and ``p + 1``). A work unit reads its positions back with :func:`read_groups`."""
        self.finish()
        if self._sorted or len(self._runs) <= 1:
            stream: Iterator[tuple[int, bytes]] = self._raw_run(0, self._offset)
        else:
            stream = heapq.merge(*(self._raw_run(s, e) for s, e in self._runs), key=_first)
        offsets = array("Q", bytes(8 * (positions + 1)))
        at = filled = 0
        with path.open("wb", buffering=1 << 20) as out:
            for position, raw in stream:
                while filled <= position:
                    offsets[filled] = at
                    filled += 1
                out.write(raw)
                at += len(raw)
        while filled <= positions:
            offsets[filled] = at
            filled += 1
        return offsets

    def _raw_run(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        """``(position, header and payload bytes)`` of the records of one run."""
        with self._path.open("rb", buffering=256 << 10) as f:
            f.seek(start)
            pos = start
            unpack = _HEAD.unpack
            read = f.read
            while pos < end:
                head = read(8)
                position, size = unpack(head)
                yield position, head + read(size)
                pos += 8 + size

    def _read_run(self, start: int, end: int) -> Iterator[tuple[int, Any]]:
        with self._path.open("rb", buffering=256 << 10) as f:
            f.seek(start)
            pos = start
            unpack = _HEAD.unpack
            read = f.read
            loads = marshal.loads
            while pos < end:
                position, size = unpack(read(8))
                yield position, loads(read(size))
                pos += 8 + size

    def groups(self) -> Iterator[tuple[int, list[Any]]]:
        """``(image position, records)`` for every position that has records, ascending."""
        self.finish()
        if self._sorted or len(self._runs) <= 1:
            stream: Iterator[tuple[int, Any]] = self._read_run(0, self._offset)
        else:
            stream = heapq.merge(*(self._read_run(s, e) for s, e in self._runs), key=_first)
        current = -1
        group: list[Any] = []
        for position, record in stream:
            if position != current:
                if group:
                    yield current, group
                current = position
                group = []
            group.append(record)
        if group:
            yield current, group

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._dir is not None:
            self._dir.cleanup()


def _first(r: tuple[int, Any]) -> int:
    return r[0]


def iter_groups(
    path: Path, start: int, end: int, *, chunk: int = 1 << 20
) -> Iterator[tuple[int, list[Any]]]:
    """``(position, records)`` between two offsets of a grouped file (from
    :meth:`Spill.save_sorted`, or a sorted spill itself), ascending, read ``chunk`` bytes at
    a time: a large work unit's annotations are never all decoded at once."""
    unpack = _HEAD.unpack_from
    loads = marshal.loads
    current = -1
    group: list[Any] = []
    with path.open("rb", buffering=0) as f:
        f.seek(start)
        at = start
        data = b""
        while at < end or data:
            if len(data) < _HEAD.size or len(data) < _HEAD.size + unpack(data)[1]:
                more = f.read(min(max(chunk, 2 * len(data)), end - at)) if at < end else b""
                if not more:
                    raise ValueError(f"a record is cut short at offset {at} of {path}")
                at += len(more)
                data += more
                continue
            view = memoryview(data)
            used = 0
            while len(data) - used >= _HEAD.size:
                position, size = unpack(data, used)
                if len(data) - used < _HEAD.size + size:
                    break
                if position != current:
                    if group:
                        yield current, group
                    current, group = position, []
                group.append(loads(view[used + _HEAD.size : used + _HEAD.size + size]))
                used += _HEAD.size + size
            view.release()
            data = data[used:]
    if group:
        yield current, group


def read_groups(path: Path, start: int, end: int) -> dict[int, list[Any]]:
    """The records between two offsets of a file :meth:`Spill.save_sorted` wrote, by
    position (a work unit's: bounded by its items)."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read(end - start)
    out: dict[int, list[Any]] = {}
    unpack = _HEAD.unpack_from
    loads = marshal.loads
    at = 0
    view = memoryview(data)
    while at < len(data):
        position, size = unpack(data, at)
        out.setdefault(position, []).append(loads(view[at + 8 : at + 8 + size]))
        at += 8 + size
    return out


def by_position(
    groups: Iterator[tuple[int, list[Any]]], start: int, stop: int
) -> Iterator[tuple[int, list[Any]]]:
    """Every position ``start:stop`` with its records (none for those ``groups`` skips)."""
    nxt = next(groups, None)
    for pos in range(start, stop):
        records: list[Any] = []
        if nxt is not None and nxt[0] == pos:
            records = nxt[1]
            nxt = next(groups, None)
        yield pos, records
