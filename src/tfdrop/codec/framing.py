"""TFRecord framing: a push/pull decoder and an encoder, no I/O.

Follows TensorFlow's ``core/lib/io/record_writer.cc`` / ``record_reader.cc``. Each record is::

    uint64 length (little-endian)
    uint32 masked_crc32c(the 8 length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

There is no file header; an empty input is zero records. The decoder has h11's shape
(``h11/_connection.py``): :meth:`RecordDecoder.feed` only appends (``b""`` ends the input),
:meth:`RecordDecoder.next_record` parses and returns owned ``bytes``, :data:`NEED_DATA`, or
:data:`END` after a clean end. Both CRCs are always checked; a length over the cap is rejected
before anything is allocated for it; after an error the decoder is dead.
"""

from __future__ import annotations

import struct
from array import array
from collections import deque
from enum import Enum
from typing import Final, Literal

import google_crc32c

from tfdrop.errors import (
    DataCrcMismatchError,
    DecoderDeadError,
    LengthCrcMismatchError,
    RecordTooLargeError,
    TfdropError,
    TruncatedRecordError,
)

# --- wire constants (record_writer.cc) ---------------------------------------------------------
HEADER_SIZE: Final = 12  # uint64 length + uint32 masked crc of the length
FOOTER_SIZE: Final = 4  # uint32 masked crc of the data
_MASK_DELTA: Final = 0xA282EAD8
_U32: Final = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")

DEFAULT_MAX_RECORD_SIZE: Final = 128 * 1024 * 1024
"""Largest record accepted by default (128 MiB, = ``Limits.max_record_size``); checked before
any allocation. Readers pass the job budget's value."""


_RECORD_HINT: Final = (
    "the length field is corrupt, or the record is genuinely this large: then raise the limit "
    "([limits] max_record_size = N in the config, or --limit max_record_size=N)"
)


class Sentinel(Enum):
    NEED_DATA = "NEED_DATA"
    END = "END"


NEED_DATA: Final = Sentinel.NEED_DATA
"""More bytes are needed before the next record can be returned."""
END: Final = Sentinel.END
"""The input ended cleanly at a record boundary."""


_crc32c: Final = google_crc32c.value


def masked_crc32c(data: bytes) -> int:
    """TensorFlow's masked CRC-32C: rotate right by 15 and add a constant (mod 2**32).

    google-crc32c takes ``bytes`` only (no memoryview or bytearray).
    """
    crc: int = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def frame(data: bytes) -> tuple[bytes, bytes]:
    """The header and footer to put around ``data``; the payload itself is not copied."""
    length = _LENGTH.pack(len(data))
    return length + _CRC.pack(masked_crc32c(length)), _CRC.pack(masked_crc32c(data))


def encode_record(data: bytes) -> bytes:
    """One whole framed record."""
    header, footer = frame(data)
    return b"".join((header, data, footer))


class RecordDecoder:
    """Incremental TFRecord decoder.

    ``bytes`` fed in are kept by reference (they are immutable) and each record is copied out of
    them once; other buffers (``bytearray``, ``memoryview``) are copied when fed, so the caller
    may reuse them. Only a record that straddles two fed chunks is assembled in a small owned
    buffer, with just the bytes it needs: a 4 MiB read is never copied whole.

    >>> dec = RecordDecoder()
    >>> dec.feed(encode_record(b"abc") + encode_record(b""))
    >>> dec.next_record(), dec.next_record(), dec.next_record()
    (b'abc', b'', <Sentinel.NEED_DATA: 'NEED_DATA'>)
    >>> dec.feed(b""); dec.next_record()
    <Sentinel.END: 'END'>
    """

    __slots__ = ("_buf", "_dead", "_eof", "_index", "_max", "_pos", "_queue", "_start")

    def __init__(self, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        # _buf is a view of fed bytes, or an owned bytearray holding one straddling record;
        # _queue holds later fed chunks (views of immutable bytes) that follow _buf directly.
        self._buf: memoryview | bytearray = bytearray()
        self._queue: deque[memoryview] = deque()
        self._pos = 0  # parse position inside _buf
        self._start = 0  # stream offset of _buf[0]
        self._index = 0  # index of the next record
        self._max = max_record_size
        self._eof = False
        self._dead: TfdropError | None = None

    @property
    def offset(self) -> int:
        """Stream offset of the next unparsed byte (the start of the next record)."""
        return self._start + self._pos

    @property
    def index(self) -> int:
        """Index of the next record (= records returned so far)."""
        return self._index

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Bytes fed but not yet parsed, and whether the input has ended (h11's habit)."""
        return b"".join([self._buf[self._pos :], *self._queue]), self._eof

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append input; ``b""`` marks the end of the input.

        ``bytes`` are kept by reference (they are immutable); other buffers are copied, so the
        caller may reuse them. Once :meth:`next_record` returns :data:`NEED_DATA`, the decoder
        holds at most one partial record of its own and no reference to any fed buffer.
        """
        if self._dead is not None:
            raise DecoderDeadError("decoder used after an error") from self._dead
        if self._eof:
            if data:
                raise RuntimeError("feed() after end of input")
            return
        if not data:
            self._eof = True
            return
        view = memoryview(data if type(data) is bytes else bytes(data))
        if self._pos == len(self._buf) and not self._queue:
            self._start += self._pos
            self._buf, self._pos = view, 0
        else:
            self._queue.append(view)

    def next_record(self) -> bytes | Literal[Sentinel.NEED_DATA, Sentinel.END]:
        """The next record as owned bytes, or :data:`NEED_DATA`, or :data:`END`."""
        if self._dead is not None:
            raise DecoderDeadError("decoder used after an error") from self._dead
        try:
            rec = self._next()
            while rec is NEED_DATA:
                if not self._refill():
                    self._own_tail()
                    return rec
                rec = self._next()
            return rec
        except TfdropError as exc:
            self._dead = exc
            raise

    def _own_tail(self) -> None:
        """Copy the unparsed tail out of a fed buffer (at most one partial record)."""
        if isinstance(self._buf, memoryview):
            self._start += self._pos
            self._buf, self._pos = bytearray(self._buf[self._pos :]), 0

    def _refill(self) -> bool:
        """Move queued input into the parse buffer; ``False`` when there is none."""
        if not self._queue:
            return False
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail == 0:  # the next chunk starts at a record boundary: parse it in place
            self._start += len(buf)
            self._buf, self._pos = self._queue.popleft(), 0
            return True
        if not isinstance(buf, bytearray) or pos:
            # a record straddles two chunks: assemble it (and only it) in an owned buffer
            self._start += pos
            with memoryview(buf) as view:  # a slice of it first would be one more copy
                buf = self._buf = bytearray(view[pos:])
            self._pos = 0
        need = HEADER_SIZE
        if avail >= HEADER_SIZE:  # header already checked by _next(): length is under the cap
            need += _LENGTH.unpack_from(buf, 0)[0] + FOOTER_SIZE
        head = self._queue[0]
        take = need - avail
        if len(head) <= take:
            buf += self._queue.popleft()
        else:
            buf += head[:take]  # a view: no copy before the one into buf
            self._queue[0] = head[take:]
        return True

    def _next(self) -> bytes | Literal[Sentinel.NEED_DATA, Sentinel.END]:
        # The hot loop: the masking is inlined and the length CRC is computed over the packed
        # length (the same 8 bytes), because each Python call here costs ~5% on small records.
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < HEADER_SIZE:
            return self._short(avail, HEADER_SIZE)
        length, length_crc = _HEADER.unpack_from(buf, pos)
        crc = _crc32c(_LENGTH.pack(length))
        if ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32) != length_crc:
            raise LengthCrcMismatchError(
                "length CRC mismatch", record=self._index, offset=self.offset
            )
        if length > self._max:
            raise RecordTooLargeError(
                f"record length {length} is over the cap: max_record_size is {self._max}, "
                f"and this input needs at least {length}",
                record=self._index,
                offset=self.offset,
                hint=_RECORD_HINT,
            )
        end = pos + HEADER_SIZE + length
        if end + FOOTER_SIZE > len(buf):
            return self._short(avail, HEADER_SIZE + length + FOOTER_SIZE)
        # one copy out of a view of the fed bytes or of the assembled record (a bytearray's
        # own slice would be one more: three records' worth at once, found with a 120 MB one)
        if isinstance(buf, bytearray):
            with memoryview(buf) as view:
                data = bytes(view[pos + HEADER_SIZE : end])
        else:
            data = bytes(buf[pos + HEADER_SIZE : end])
        crc = _crc32c(data)
        if ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32) != _CRC.unpack_from(buf, end)[0]:
            raise DataCrcMismatchError("data CRC mismatch", record=self._index, offset=self.offset)
        self._pos = end + FOOTER_SIZE
        self._index += 1
        return data

    def _short(self, avail: int, need: int) -> Literal[Sentinel.NEED_DATA, Sentinel.END]:
        if not self._eof or self._queue:
            return NEED_DATA
        if avail == 0:
            return END
        raise TruncatedRecordError(
            f"input ends inside a record ({avail} of {need} bytes present)",
            record=self._index,
            offset=self.offset,
        )


def header_length(head: bytes, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> int | None:
    """The data length a record's 12 header bytes declare; None when the length's CRC does not
    check or the length is over ``max_record_size``."""
    length, length_crc = _HEADER.unpack(head)
    if masked_crc32c(head[:8]) != length_crc or length > max_record_size:
        return None
    return int(length)


class FrameIndex:
    """Where each record of an uncompressed TFRecord stream starts, from its headers alone
    (length and its CRC checked, payloads skipped): ``feed`` chunks, then :meth:`finish`.
    ``offsets`` holds every record's start and, once finished, the stream's end. ``ok`` turns
    False for a header that does not check or a stream that ends inside a record (the
    caller then reads the stream record by record, which says where)."""

    __slots__ = ("_head", "_max", "_pos", "_skip", "offsets", "ok")

    def __init__(self, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        self.offsets: array[int] = array("Q")
        self.ok = True
        self._max = max_record_size
        self._pos = 0  # stream offset of the next byte fed
        self._skip = 0  # payload and footer bytes still to skip
        self._head = b""  # a header cut by the end of a chunk

    def feed(self, chunk: bytes) -> None:
        i, n = 0, len(chunk)
        while self.ok and i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            take = HEADER_SIZE - len(self._head)
            head = self._head + chunk[i : i + take] if self._head else chunk[i : i + take]
            i += len(head) - len(self._head)
            if len(head) < HEADER_SIZE:
                self._head = head
                break
            self._head = b""
            length = header_length(head, max_record_size=self._max)
            if length is None:
                self.ok = False
                break
            self.offsets.append(self._pos + i - HEADER_SIZE)
            self._skip = length + FOOTER_SIZE
        self._pos += n

    def finish(self) -> bool:
        """End of the stream: whether every record is whole (``offsets`` then ends with the
        stream's length)."""
        if self._skip or self._head:
            self.ok = False
        if self.ok:
            self.offsets.append(self._pos)
        return self.ok


def decode_records(data: bytes, *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> list[bytes]:
    """Decode a whole in-memory TFRecord (tests and small files only)."""
    dec = RecordDecoder(max_record_size=max_record_size)
    dec.feed(data)
    dec.feed(b"")
    out: list[bytes] = []
    while True:
        rec = dec.next_record()
        if rec is END:
            return out
        if rec is NEED_DATA:  # pragma: no cover - impossible after end of input
            raise AssertionError("decoder wants data after end of input")
        out.append(rec)
