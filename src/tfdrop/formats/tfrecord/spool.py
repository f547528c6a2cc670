"""Records a worker process writes to a spool file, for the parent to append to the output.

With a pool of workers (``convert --jobs N``) each work unit's framed records go to a spool
file (its slot's, written over: :func:`tfdrop.units._pooled`), one contiguous run per subset
(each subset is its own output member, so runs of different subsets need no order between
them), and the parent receives only
:class:`Span` descriptors: where the bytes are, how many, their CRC-32. The parent's
:class:`~tfdrop.formats.tfrecord.TfrecordWriter` appends each run with one reused buffer
(:meth:`tfdrop.archive.stored.StoredWriter.append_ranges`), so the records never cross a pipe
and the parent makes no Python object per record. Only an uncompressed, unsharded output can
take runs (:func:`takes_spans`): a compressed stream has one compressor, shards take records
round-robin.

A record whose image is a stored member of the source zip, byte for byte (``Item.image_member``,
:meth:`tfdrop.archive.Source.stored_at`), is spooled without it: the run names those bytes
in the source (:attr:`Span.pieces`) and the parent copies them from there. The spool then
holds some 1 KB a record instead of the whole record: on this project's VM a page-cache page
touched for the first time costs about 4 ms a MB (the host backs it then), and the workers'
``pwritev`` of 1.2 GB of COCO 20k records into 357 MB of new spool pages was 1.34 s of a
run's CPU under ``perf`` (``copy_folio_from_iter_atomic``, 14% of the samples), where
``--jobs 1`` spends nothing of the kind.
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
    """Framed records of one subset, in order, ``length`` bytes whose CRC-32 (zip's) is
    ``crc``: bytes ``offset:offset+length`` of the spool file ``path``, or, with ``pieces``,
    spooled bytes from ``offset`` and ranges of the source file taking turns:
    ``(n0, at1, n1, m1, at2, n2, m2, ...)`` is ``n0`` spooled bytes, then ``n1`` bytes of the
    source at ``at1``, then the next ``m1`` spooled bytes, and so on."""

    subset: str
    path: str
    offset: int
    length: int
    crc: int
    records: int
    pieces: tuple[int, ...] = ()

    def ranges(self, spool_fd: int, source_fd: int) -> list[tuple[int, int, int]]:
        """The run's bytes as ``(fd, offset, length)`` ranges of the two files, in order."""
        if not self.pieces:
            return [(spool_fd, self.offset, self.length)]
        p = self.pieces
        pos = self.offset
        out = [(spool_fd, pos, p[0])] if p[0] else []
        pos += p[0]
        for i in range(1, len(p), 3):
            out.append((source_fd, p[i], p[i + 1]))
            if p[i + 2]:
                out.append((spool_fd, pos, p[i + 2]))
                pos += p[i + 2]
        return out


class _Run:
    """A subset's records not written yet: the bytes to spool, and the pieces so far."""

    __slots__ = ("crc", "length", "parts", "pieces", "records", "spooled")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pieces: list[int] = [0]
        self.spooled = 0
        self.length = 0
        self.crc = 0
        self.records = 0

    def keep(self, *parts: bytes) -> None:
        n = sum(map(len, parts))
        self.parts += parts
        self.pieces[-1] += n
        self.spooled += n


class UnitSpool:
    """One work unit's spool file: framed records collected per subset, written as runs."""

    def __init__(self, path: str, *, reuse: bool = False) -> None:
        """``reuse``: ``path`` may exist (a slot's file from an earlier unit); it is written
        over from its start, and bytes past the new runs are never read (spans say where)."""
        self.path = path
        self._reuse = reuse
        self._fd: int | None = None
        self._offset = 0
        self._runs: dict[str, _Run] = {}

    def add(self, subset: str, record: bytes, named: tuple[int, int, int] | None = None) -> None:
        """Add a record; ``named``: ``(start, length, at)``, its bytes ``start:start+length``
        are the source file's at ``at`` (a stored image): the run names them, unspooled."""
        header, footer = frame(record)
        run = self._runs.get(subset)
        if run is None:
            run = self._runs[subset] = _Run()
        run.crc = inflate.crc32(footer, inflate.crc32(record, inflate.crc32(header, run.crc)))
        run.length += len(header) + len(record) + len(footer)
        run.records += 1
        if named is None:
            run.keep(header, record, footer)
            return
        start, length, at = named
        run.keep(header, record[:start])
        run.pieces += (at, length, 0)
        run.keep(record[start + length :], footer)

    def pending(self, subset: str) -> int:
        """Bytes of the subset's records held to be spooled."""
        run = self._runs.get(subset)
        return run.spooled if run is not None else 0

    def flush(self, subset: str) -> Span | None:
        """Write the subset's records so far as one run; its span (None when it has none)."""
        run = self._runs.pop(subset, None)
        if run is None:
            return None
        if run.parts:
            if self._fd is None:
                excl = 0 if self._reuse else os.O_EXCL
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | excl, 0o600)
            _write_all(self._fd, run.parts, self._offset)
        pieces = tuple(run.pieces) if len(run.pieces) > 1 else ()
        span = Span(subset, self.path, self._offset, run.length, run.crc, run.records, pieces)
        self._offset += run.spooled
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
