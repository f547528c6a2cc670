"""``validate`` of one big uncompressed TFRecord file on every core: ranges of its records
checked by worker processes (:mod:`tfdrop.pool`), the verdicts taken back in file order. The
file is a bare one, read to its end, whatever that is by then.

The parent cuts the file into :class:`CheckUnit` ranges from the record headers alone (each
length and its CRC checked; payloads skipped with ``pread``), lazily, a few units ahead of the
workers. A worker reads its range (both CRCs), checks each record on its own
(:func:`~tfdrop.cli.checks.own_problems`: the C all-clear check and the SHA-256, else the full
parse) and returns a :class:`Verdict`: the records with something to say, each with its own
problems and its class (text, id) pairs as indices into the unit's distinct pairs. The parent
replays them in record order against the label table, so the problems, their order and the
first one are the ones a single pass names.

A header that does not check, a record running past the end of the file, or any error inside
a range ends the walk there: the last unit reads on to the end of the file and its error names
the record and offset, as the single pass does. A unit whose verdict would grow past
:data:`MAX_SENT` problems or :data:`MAX_PAIRS` distinct pairs comes back as ``redo``, and the
parent checks that range itself: a verdict never holds more than a bounded amount.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from tfdrop.cli.checks import own_problems
from tfdrop.codec.framing import FOOTER_SIZE, HEADER_SIZE, header_length
from tfdrop.codec.model import LabelMap
from tfdrop.codec.schema import fast_scan, sha_matches
from tfdrop.errors import TfdropError
from tfdrop.limits import Limits
from tfdrop.pool import inherited, ordered
from tfdrop.stream import DEFAULT_CHUNK_SIZE, iter_records

UNIT_BYTES: Final = 16 << 20
UNIT_RECORDS: Final = 4096
"""A range ends after this many bytes or records, whichever comes first."""
MAX_SENT: Final = 2 * UNIT_RECORDS
"""Most problems a worker sends back for one range (more: the parent checks it itself; a
problem in every record is still sent: the parent checking most ranges again was slower than
one pass)."""
MAX_PAIRS: Final = 4096
"""Most distinct class (text, id) pairs a worker sends back for one range."""
_WALK_BLOCK: Final = 4096


@dataclass(frozen=True, slots=True)
class CheckUnit:
    """A range of records: ``start`` is its first record's byte offset, ``index`` that
    record's index; ``stop`` a record boundary, or None: on to the end of the file (the last
    range, possibly empty)."""

    start: int
    index: int
    stop: int | None


class Ranges(Protocol):
    """What a record file's ranges are read through, by offset (a forked worker shares the
    parent's descriptor, so never a file position)."""

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; ``b""`` at the end."""
        ...


@dataclass(frozen=True, slots=True)
class FileRanges:
    """A bare record file: read to its end, whatever it is by then."""

    fd: int

    def read(self, offset: int, n: int) -> bytes:
        return os.pread(self.fd, n, offset)


def plan(ranges: Ranges, size: int, max_record_size: int) -> Iterator[CheckUnit]:
    """The ranges of a record file of ``size`` bytes, from its record headers."""
    pos = start = index = first = 0
    block, at = b"", 0  # the bytes read at offset ``at``
    while pos < size:
        if pos + HEADER_SIZE > at + len(block):
            at, block = pos, ranges.read(pos, _WALK_BLOCK)
        rel = pos - at
        head = block[rel : rel + HEADER_SIZE]
        length = header_length(head, max_record_size=max_record_size) if len(head) == 12 else None
        if length is None or pos + HEADER_SIZE + length + FOOTER_SIZE > size:
            break  # the last range reads on: its error says where the file breaks
        pos += HEADER_SIZE + length + FOOTER_SIZE
        index += 1
        if pos - start >= UNIT_BYTES or index - first >= UNIT_RECORDS:
            yield CheckUnit(start, first, pos)
            start, first = pos, index
    # the last range reads on to the end of the file, whatever it is by then: bytes appended
    # meanwhile are checked as one pass checks them (an outside attack found them skipped)
    yield CheckUnit(start, first, None)


class RangeReader:
    """A file-like ``read`` of one range."""

    def __init__(self, ranges: Ranges, unit: CheckUnit) -> None:
        self._ranges, self._pos, self._stop = ranges, unit.start, unit.stop
        self.unit = unit

    def read(self, n: int) -> bytes:
        if self._stop is not None:
            n = min(n, self._stop - self._pos)
            if n <= 0:
                return b""
        data = self._ranges.read(self._pos, n)
        self._pos += len(data)
        return data


def range_records(reader: RangeReader, limits: Limits) -> Iterator[tuple[int, int, bytes]]:
    """``(index, offset, record)`` of one range, both CRCs checked; an error's record index
    and offset are the file's."""
    unit = reader.unit
    offset = unit.start
    index = unit.index
    records = iter_records(
        reader,  # type: ignore[arg-type]  # read(n) is all it uses
        compression="none",
        max_record_size=limits.max_record_size,
        max_stream_bytes=limits.max_stream_bytes,  # never met: a split file is within it
        chunk_size=DEFAULT_CHUNK_SIZE,
    )
    try:
        for rec in records:
            yield index, offset, rec
            index += 1
            offset += HEADER_SIZE + len(rec) + FOOTER_SIZE
    except TfdropError as exc:
        if exc.record is not None:
            exc.record += unit.index
        if exc.offset is not None:
            exc.offset += unit.start
        raise


@dataclass(slots=True)
class Entry:
    """A record with something to say: its own problems (as dicts, before and after the
    label table's) and its objects' (text, id) pairs as indices into ``Verdict.pairs``."""

    index: int
    offset: int
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    pairs: tuple[int, ...] | None


@dataclass(slots=True)
class Verdict:
    """What a worker found in one range: ``records`` checked, the ``entries`` in order, then
    the ``error`` that ended the range, if any; ``redo``: too much to send, check it again."""

    unit: CheckUnit
    records: int = 0
    entries: list[Entry] = field(default_factory=list)
    pairs: list[tuple[bytes, int]] = field(default_factory=list)
    error: TfdropError | None = None
    redo: bool = False


@dataclass(frozen=True, slots=True)
class _Setup:
    label_map: LabelMap | None
    limits: Limits
    labels: bool  # no label map: the parent needs the class pairs


_STATE: list[tuple[Ranges, _Setup]] = []


def _init(setup: _Setup) -> None:
    _STATE.append((inherited(), setup))


def check_unit(unit: CheckUnit) -> Verdict:
    """A worker's check of one range (module-level: the pool calls it)."""
    ranges, setup = _STATE[0]
    verdict = Verdict(unit)
    reader = RangeReader(ranges, unit)
    interned: dict[tuple[bytes, int], int] = {}
    sent = 0
    cap = setup.limits.max_values_per_feature
    try:
        for index, offset, rec in range_records(reader, setup.limits):
            verdict.records += 1
            fast = fast_scan(rec, setup.label_map, max_values_per_feature=cap, labels=setup.labels)
            if fast is not None and not sha_matches(rec, fast):
                fast = None
            own = own_problems(rec, fast, setup.label_map, cap)
            pairs = None
            if setup.labels and own.texts and own.ids:
                zipped = zip(own.texts, own.ids, strict=False)  # as LabelTable.observe pairs them
                pairs = tuple(interned.setdefault(p, len(interned)) for p in zipped)
            if not (own.before or own.after or pairs):
                continue
            sent += len(own.before) + len(own.after)
            if sent > MAX_SENT or len(interned) > MAX_PAIRS:
                return Verdict(unit, redo=True)
            before = [p.to_dict() for p in own.before]
            after = [p.to_dict() for p in own.after]
            verdict.entries.append(Entry(index, offset, before, after, pairs))
    except TfdropError as exc:
        verdict.error = exc
    verdict.pairs = list(interned)
    return verdict


def checked_units(
    ranges: Ranges,
    size: int,
    label_map: LabelMap | None,
    limits: Limits,
    *,
    labels: bool,
    jobs: int,
) -> Iterator[Verdict]:
    """The verdict of every range of a record file of ``size`` bytes, in file order."""
    return ordered(
        check_unit,
        plan(ranges, size, limits.max_record_size),
        jobs,
        window=2 * jobs,
        initializer=_init,
        initargs=(_Setup(label_map, limits, labels),),
        inherit=ranges,
    )
