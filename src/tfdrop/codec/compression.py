"""Incremental GZIP / ZLIB decompression and detection, no I/O.

TensorFlow's ``TFRecordOptions`` compresses a whole file with GZIP or ZLIB and nothing in the
file says so. A plain TFRecord read as compressed (or the other way round) fails in TF with
"corrupted record at 0"; here ``"auto"`` looks at the first bytes instead: a valid length CRC
means plain, else the gzip magic ``1f 8b`` or a zlib header (RFC 1950: CMF/FLG check) decide.
A plain record whose first length bytes happen to look like a gzip magic is still plain, because
its length CRC is checked first.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Final, Literal

from tfdrop.codec.framing import HEADER_SIZE, masked_crc32c
from tfdrop.errors import CompressionError

Compression = Literal["none", "gzip", "zlib"]
CompressionArg = Literal["none", "gzip", "zlib", "auto"]
COMPRESSIONS: Final[tuple[str, ...]] = ("none", "gzip", "zlib")

_GZIP_MAGIC: Final = b"\x1f\x8b"
OUTPUT_CHUNK: Final = 4 * 1024 * 1024
"""Most bytes one decompress call returns (bounds memory for highly compressed input)."""


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

    Concatenated gzip members are read one after the other, as ``gzip`` and TF do.
    """

    def __init__(self, compression: Compression) -> None:
        self.compression: Compression = compression
        self._obj = self._new() if compression != "none" else None
        self._consumed = 0  # compressed bytes fed so far, for error offsets
        self._done = False  # the last member has ended (zlib: the stream)
        self._started = False

    def _new(self) -> zlib._Decompress:
        wbits = 16 + zlib.MAX_WBITS if self.compression == "gzip" else zlib.MAX_WBITS
        return zlib.decompressobj(wbits)

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
        offset = self._consumed
        self._consumed += len(data)
        while data:
            if self._done:
                if self.compression != "gzip":
                    raise CompressionError(
                        f"{len(data)} bytes of trailing garbage after the "
                        f"{self.compression} stream",
                        offset=offset,
                    )
                # Python's gzip (and tape/block tools) allow NUL padding after a member, and
                # another member after the padding: skip the NULs, keep waiting if that was all.
                stripped = data.lstrip(b"\x00")
                if not stripped:
                    return
                offset += len(data) - len(stripped)
                data = stripped
                self._obj, self._done = self._new(), False
            try:
                out = self._obj.decompress(data, OUTPUT_CHUNK)
            except zlib.error as exc:
                raise CompressionError(
                    f"corrupt {self.compression} stream: {exc}", offset=offset
                ) from None
            if out:
                yield out
            if self._obj.eof:
                self._done = True
                data = self._obj.unused_data
                offset = self._consumed - len(data)
            else:
                data = self._obj.unconsumed_tail
        return

    def _finish(self) -> Iterator[bytes]:
        assert self._obj is not None
        if not self._started:
            return  # an empty file is zero records, whatever its compression
        if not self._done:
            try:
                out = self._obj.flush()
            except zlib.error as exc:  # pragma: no cover - flush rarely raises
                raise CompressionError(str(exc), offset=self._consumed) from None
            if out:
                yield out
            if not self._obj.eof:
                raise CompressionError(
                    f"{self.compression} stream ends early (after {self._consumed} "
                    "compressed bytes)",
                    offset=self._consumed,
                )
