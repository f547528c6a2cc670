"""Records a worker process writes to a spool file, for the parent to append to the output.

With a pool of workers (``convert --jobs N``) each work unit's framed records go to a spool
file (its slot's, written over: :func:`tfdrop.units._pooled`), one contiguous run per subset
(each subset is its own output member, so runs of different subsets need no order between
them), and the parent receives only
:class:`Span` descriptors: where the bytes are, how many, their CRC-32. The parent's
:class:`~tfdrop.formats.tfrecord.TfrecordWriter` appends each run with one reused buffer
(:meth:`tfdrop.archive.stored.StoredWriter.append_range`), so the records never cross a pipe and the
parent makes no Python object per record. Only an uncompressed, unsharded output can take runs
(:func:`takes_spans`): a compressed stream has one compressor, shards take records round-robin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from tfdrop.codec import inflate
from tfdrop.codec.framing import frame
from tfdrop.formats.base import WriteOptions

_IOV: Final = 1024  # buffers per writev call (Linux's IOV_MAX)


def takes_spans(options: WriteOptions) -> bool:
    """Whether a TFRecord output written with ``options`` can append spooled runs."""
    return options.compression == "none" and max(1, options.shards) == 1


@dataclass(frozen=True, slots=True)
class Span:
    """Framed records of one subset, in order: bytes ``offset:offset+length`` of the spool
    file ``path``; ``crc`` is their CRC-32 (zip's)."""

    subset: str
    path: str
    offset: int
    length: int
    crc: int
    records: int


class UnitSpool:
    """One work unit's spool file: framed records collected per subset, written as runs."""

    def __init__(self, path: str, *, reuse: bool = False) -> None:
        """``reuse``: ``path`` may exist (a slot's file from an earlier unit); it is written
        over from its start, and bytes past the new runs are never read (spans say where)."""
        self.path = path
        self._reuse = reuse
        self._fd: int | None = None
        self._offset = 0
        self._runs: dict[str, list[bytes]] = {}
        self._sizes: dict[str, int] = {}

    def add(self, subset: str, record: bytes) -> None:
        header, footer = frame(record)
        run = self._runs.setdefault(subset, [])
        run += (header, record, footer)
        self._sizes[subset] = self._sizes.get(subset, 0) + len(header) + len(record) + len(footer)

    def pending(self, subset: str) -> int:
        """Bytes of the subset's records not written yet."""
        return self._sizes.get(subset, 0)

    def flush(self, subset: str) -> Span | None:
        """Write the subset's records so far as one run; its span (None when it has none)."""
        run = self._runs.pop(subset, None)
        if not run:
            return None
        length = self._sizes.pop(subset)
        crc = 0
        for part in run:
            crc = inflate.crc32(part, crc)
        if self._fd is None:
            excl = 0 if self._reuse else os.O_EXCL
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | excl, 0o600)
        _write_all(self._fd, run, self._offset)
        span = Span(subset, self.path, self._offset, length, crc, len(run) // 3)
        self._offset += length
        return span

    def flush_all(self) -> list[Span]:
        """Every subset's remaining run, in the order the subsets first came."""
        spans = [self.flush(subset) for subset in list(self._runs)]
        return [s for s in spans if s is not None]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, parts: list[bytes], offset: int) -> None:
    """Write ``parts`` at ``offset`` (``pwritev``: no join, no copy of the records)."""
    for i in range(0, len(parts), _IOV):
        batch = parts[i : i + _IOV]
        want = sum(map(len, batch))
        done = os.pwritev(fd, batch, offset)
        if done < want:  # a short write (a signal, a nearly full disk): finish byte by byte
            rest = b"".join(batch)[done:]
            while rest:
                n = os.pwrite(fd, rest, offset + done)
                done += n
                rest = rest[n:]
        offset += want
