"""Incremental GZIP / ZLIB decompression and detection, no I/O.

TensorFlow's ``TFRecordOptions`` compresses a whole file with GZIP or ZLIB and nothing in the
file says so. A plain TFRecord read as compressed (or the other way round) fails in TF with
"corrupted record at 0"; here ``"auto"`` looks at the first bytes instead: a valid length CRC
means plain, else the gzip magic ``1f 8b`` or a zlib header (RFC 1950: CMF/FLG check) decide.
A plain record whose first length bytes happen to look like a gzip magic is still plain, because
its length CRC is checked first.

A small compressed file can inflate to gigabytes (a TFRecord of zeros compresses about 1000:1),
so the :class:`Decompressor` bounds its work as it inflates, never after: each step yields at
most :data:`OUTPUT_CHUNK` bytes from at most :data:`INPUT_STEP` compressed bytes, and the
running totals are checked against ``max_stream_bytes`` and ``max_ratio`` (past
``ratio_floor``, like the zip layer) before the step's output is handed on. The caps are plain
integers (the caller's job budget, :class:`tfdrop.limits.Limits`); the defaults here are the
budget's defaults.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Final, Literal, get_args

from tfdrop.codec import inflate
from tfdrop.codec.framing import HEADER_SIZE, masked_crc32c
from tfdrop.errors import CompressionError, LimitExceededError

Compression = Literal["none", "gzip", "zlib"]
CompressionArg = Literal["none", "gzip", "zlib", "auto"]
COMPRESSIONS: Final[tuple[Compression, ...]] = get_args(Compression)

_GZIP_MAGIC: Final = b"\x1f\x8b"
OUTPUT_CHUNK: Final = 4 * 1024 * 1024
"""Most bytes one decompress call returns (bounds memory for highly compressed input)."""
INPUT_STEP: Final = 256 * 1024
"""Most compressed bytes handed to one decompress call, so that the unconsumed tail zlib copies
out after a bounded step stays small whatever the size of the fed chunk."""
MIN_STEP: Final = 64
"""Compressed bytes of the first call on each gzip member; each later call doubles it. zlib
copies the input left after a member's end, so a file of many tiny members costs a few bytes
per member instead of a whole step each (quadratic on a chunk of 18-byte members)."""
_NON_NUL: Final = re.compile(rb"[^\x00]")
DEFAULT_MAX_STREAM_BYTES: Final = 64 * 1024**3
"""Most decompressed bytes one stream may yield by default (= ``Limits.max_stream_bytes``)."""
DEFAULT_MAX_RATIO: Final = 200
"""Highest decompressed/compressed ratio by default (= ``Limits.max_ratio``)."""
DEFAULT_RATIO_FLOOR: Final = 1024 * 1024
"""Decompressed bytes a stream may yield before the ratio is checked (= ``Limits.ratio_floor``)."""


def _exceeded(name: str, value: int, cap: int, offset: int) -> LimitExceededError:
    return LimitExceededError(
        f"{name} is {cap}, and this input needs at least {value}",
        limit=name,
        value=value,
        cap=cap,
        offset=offset,
    )


def detect(head: bytes, *, at_eof: bool = False) -> Compression | None:
    """Guess the compression from the first bytes; ``None`` if more bytes are needed."""
    if len(head) >= HEADER_SIZE:
        length_crc = struct.unpack_from("<I", head, 8)[0]
        if masked_crc32c(head[:8]) == length_crc:
            return "none"
    elif not at_eof:
        return None
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    # RFC 1950: CM = 8 (deflate), CINFO <= 7 (window), and CMF*256 + FLG divisible by 31
    if (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] << 8 | head[1]) % 31 == 0
    ):
        return "zlib"
    # neither: let the framing decoder report the broken record with its offset
    return "none"


class Decompressor:
    """Push compressed bytes in, pull decompressed chunks out; ``b""`` ends the input.

    Concatenated gzip members are read one after the other, as ``gzip`` and TF do. The whole
    file is one stream for the caps: its decompressed bytes so far must stay within
    ``max_stream_bytes``, and once past ``ratio_floor`` within ``max_ratio`` times the
    compressed bytes consumed (:class:`~tfdrop.errors.LimitExceededError`, with the compressed
    offset reached). ``"none"`` has no caps: its bytes are the file's own.
    """

    def __init__(
        self,
        compression: Compression,
        *,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
        max_ratio: int = DEFAULT_MAX_RATIO,
        ratio_floor: int = DEFAULT_RATIO_FLOOR,
    ) -> None:
        self.compression: Compression = compression
        self._obj = self._new() if compression != "none" else None
        self._consumed = 0  # compressed bytes fed so far, for error offsets
        self._done = False  # the last member has ended (zlib: the stream)
        self._started = False
        self._max_out = max_stream_bytes
        self._max_ratio = max_ratio
        self._floor = ratio_floor
        self._step = MIN_STEP  # compressed bytes per decompress call; doubles up to INPUT_STEP
        self.total_out = 0
        """Decompressed bytes yielded so far."""

    def _new(self) -> inflate.Inflater:
        wbits = 16 + zlib.MAX_WBITS if self.compression == "gzip" else zlib.MAX_WBITS
        return inflate.decompressobj(wbits)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decompressed output for ``data``, in chunks of at most :data:`OUTPUT_CHUNK`.

        With ``"none"`` the output is ``data`` itself, not a copy.
        """
        if self._obj is None:
            if data:
                yield data
            return
        if not data:
            yield from self._finish()
            return
        self._started = True
        data = bytes(data) if type(data) is not bytes else data
        base = self._consumed  # stream offset of data[0]
        self._consumed += len(data)
        view = memoryview(data)
        pos = 0  # data[:pos] has been handed to zlib
        tail = b""  # what zlib left unconsumed of the last step: data[pos - len(tail):pos]
        while tail or pos < len(data):
            if self._done:
                pos = self._next_member(data, pos, base)
                if pos == len(data):
                    return
            step: bytes | memoryview
            if tail:
                step = tail
            else:
                step = view[pos : pos + self._step]
                pos += len(step)
            start = base + pos - len(step)
            try:
                out = self._obj.decompress(step, OUTPUT_CHUNK)
            except inflate.ERRORS as exc:
                raise CompressionError(
                    f"corrupt {self.compression} stream: {exc}", offset=start
                ) from None
            if self._obj.eof:
                self._done = True
                pos -= len(self._obj.unused_data)  # those bytes are still in data
                tail = b""
            else:
                tail = self._obj.unconsumed_tail
                self._step = min(2 * self._step, INPUT_STEP)
            if out:
                self._check(len(out), base + pos - len(tail))
                yield out

    def _next_member(self, data: bytes, pos: int, base: int) -> int:
        """After a stream ended at ``pos``: where the next gzip member starts (``len(data)`` if
        only NUL padding is left); trailing bytes after a zlib stream are an error."""
        if self.compression != "gzip":
            raise CompressionError(
                f"{len(data) - pos} bytes of trailing garbage after the {self.compression} stream",
                offset=base + pos,
            )
        # Python's gzip (and tape/block tools) allow NUL padding after a member, and another
        # member after the padding: skip the NULs, keep waiting if that was all.
        m = _NON_NUL.search(data, pos)
        if m is None:
            return len(data)
        assert self._obj is not None
        self._obj, self._done = self._new(), False
        self._step = MIN_STEP  # small steps first: zlib copies what follows a member's end
        return m.start()

    def _check(self, n: int, consumed: int) -> None:
        """Count ``n`` more output bytes against the caps (``consumed``: compressed bytes used)."""
        total = self.total_out = self.total_out + n
        if total > self._max_out:
            raise _exceeded("max_stream_bytes", total, self._max_out, consumed)
        if total > self._floor and total > self._max_ratio * max(consumed, 1):
            raise _exceeded("max_ratio", -(-total // max(consumed, 1)), self._max_ratio, consumed)

    def _finish(self) -> Iterator[bytes]:
        assert self._obj is not None
        if not self._started:
            return  # an empty file is zero records, whatever its compression
        if not self._done:
            try:
                out = self._obj.flush()
            except inflate.ERRORS as exc:  # pragma: no cover - flush rarely raises
                raise CompressionError(str(exc), offset=self._consumed) from None
            if out:
                self._check(len(out), self._consumed)
                yield out
            if not self._obj.eof:
                raise CompressionError(
                    f"{self.compression} stream ends early (after {self._consumed} "
                    "compressed bytes)",
                    offset=self._consumed,
                )
