"""Incremental GZIP / ZLIB decompression and detection (codec/compression.py).

TensorFlow compresses whole TFRecord files with GZIP or ZLIB and nothing in the file says so; a
reader must be told, or detect it. Python's ``gzip`` module is the oracle for gzip edge cases
(concatenated members, NUL padding after a member).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.codec.compression import (
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_STREAM_BYTES,
    DEFAULT_RATIO_FLOOR,
    OUTPUT_CHUNK,
    Compression,
    Decompressor,
    detect,
)
from tfdrop.codec.framing import (
    DEFAULT_MAX_RECORD_SIZE,
    decode_records,
    encode_record,
    masked_crc32c,
)
from tfdrop.codec.wire import DEFAULT_MAX_VALUES
from tfdrop.errors import CompressionError, DataError, LimitExceededError
from tfdrop.limits import Limits

RECORDS = [b"", b"abc", os.urandom(5000), b"\x00" * 3000]
PLAIN = b"".join(encode_record(r) for r in RECORDS)
CHUNK_SIZES = [1, 2, 3, 7, 12, 13, 64, 4096, 1 << 20]


def compress(data: bytes, kind: Compression) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "zlib":
        return zlib.compress(data)
    return data


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def decompress_all(kind: Compression, pieces: Iterable[bytes], **caps: int) -> list[bytes]:
    dec = Decompressor(kind, **caps)
    out: list[bytes] = []
    for piece in [*pieces, b""]:
        out.extend(dec.feed(piece))
    return out


# --- decompression ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_chunk_size_grid_matches_oracle(kind: Compression, size: int) -> None:
    packed = compress(PLAIN, kind)
    out = b"".join(decompress_all(kind, chunks(packed, size)))
    assert out == PLAIN
    assert decode_records(out) == RECORDS


def test_concatenated_gzip_members_are_read_one_after_the_other() -> None:
    parts = [b"".join(encode_record(r) for r in RECORDS[i : i + 2]) for i in (0, 2)]
    packed = gzip.compress(parts[0]) + gzip.compress(parts[1])
    assert gzip.decompress(packed) == PLAIN  # the oracle agrees
    for size in (1, 5, len(gzip.compress(parts[0])), 1 << 20):
        assert b"".join(decompress_all("gzip", chunks(packed, size))) == PLAIN


@pytest.mark.parametrize("size", [1, 4, 4096])
def test_nul_padding_after_gzip_is_accepted_like_python_gzip(size: int) -> None:
    # bug fixed: NUL padding after the last member raised "trailing garbage"
    packed = gzip.compress(PLAIN) + b"\x00" * 10
    assert gzip.decompress(packed) == PLAIN
    assert b"".join(decompress_all("gzip", chunks(packed, size))) == PLAIN


@pytest.mark.parametrize("size", [1, 4, 4096])
def test_gzip_member_after_nul_padding_is_read(size: int) -> None:
    # bug fixed: the NULs were handed to the next member's header parser ("incorrect header")
    packed = gzip.compress(PLAIN) + b"\x00" * 7 + gzip.compress(PLAIN)
    assert gzip.decompress(packed) == PLAIN * 2
    assert b"".join(decompress_all("gzip", chunks(packed, size))) == PLAIN * 2


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
@pytest.mark.parametrize("keep", [1, 10, 0.5, -1])
def test_stream_that_ends_early_raises_compression_error(kind: Compression, keep: float) -> None:
    packed = compress(PLAIN, kind)
    cut = int(len(packed) * keep) if isinstance(keep, float) else keep
    with pytest.raises(CompressionError) as info:
        decompress_all(kind, chunks(packed[:cut], 64))
    assert info.value.offset is not None
    assert isinstance(info.value, DataError)


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_garbage_raises_compression_error(kind: Compression) -> None:
    with pytest.raises(CompressionError):
        decompress_all(kind, [b"this is not compressed at all, not even close"])


def test_garbage_after_zlib_stream_raises_with_its_offset() -> None:
    packed = zlib.compress(PLAIN)
    with pytest.raises(CompressionError) as info:
        decompress_all("zlib", [packed + b"junk"])
    assert info.value.offset == len(packed)


def test_garbage_after_gzip_member_raises() -> None:
    with pytest.raises(CompressionError):
        decompress_all("gzip", [gzip.compress(PLAIN) + b"junk that is not a gzip member"])


def test_corrupt_deflate_data_raises_compression_error() -> None:
    packed = bytearray(zlib.compress(os.urandom(2000), 0))  # stored blocks: length checks
    packed[3] ^= 0xFF
    with pytest.raises(CompressionError):
        decompress_all("zlib", [bytes(packed)])


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_empty_file_is_zero_records_whatever_the_compression(kind: Compression) -> None:
    assert decompress_all(kind, []) == []


def test_highly_compressible_input_yields_bounded_chunks() -> None:
    raw = bytes(3 * OUTPUT_CHUNK + 123)
    for kind in ("gzip", "zlib"):
        packed = compress(raw, kind)
        assert len(packed) < OUTPUT_CHUNK // 100  # a ~12 MB bomb in a few KB
        out = decompress_all(kind, [packed], max_ratio=10**6)
        assert max(len(c) for c in out) <= OUTPUT_CHUNK
        assert len(out) >= 4
        assert b"".join(out) == raw


def test_none_passes_chunks_through_without_copying_them() -> None:
    piece = b"abc" * 100
    dec = Decompressor("none")
    (out,) = list(dec.feed(piece))
    assert out is piece


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=20000), size=st.integers(min_value=1, max_value=5000))
def test_random_payloads_round_trip_through_gzip_and_zlib(data: bytes, size: int) -> None:
    for kind in ("gzip", "zlib"):
        packed = compress(data, kind)
        assert b"".join(decompress_all(kind, chunks(packed, size))) == data


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_detect_recognises_each_compression(kind: Compression) -> None:
    assert detect(compress(PLAIN, kind)[:64]) == kind


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_detect_recognises_zlib_at_every_level(level: int) -> None:
    assert detect(zlib.compress(PLAIN, level)[:12]) == "zlib"


def test_plain_record_whose_length_looks_like_gzip_magic_is_plain() -> None:
    rec = encode_record(b"x" * 0x8B1F)
    assert rec[:2] == b"\x1f\x8b"  # the first two length bytes equal the gzip magic
    assert detect(rec[:64]) == "none"
    assert decode_records(rec) == [b"x" * 0x8B1F]


def test_plain_record_whose_length_looks_like_a_zlib_header_is_plain() -> None:
    rec = encode_record(b"y" * 0x9C78)  # little-endian length bytes 78 9c
    assert rec[:2] == b"\x78\x9c"
    assert detect(rec[:12]) == "none"


def test_detect_needs_twelve_bytes_unless_at_end_of_input() -> None:
    packed = gzip.compress(PLAIN)
    assert detect(packed[:5]) is None
    assert detect(packed[:5], at_eof=True) == "gzip"
    assert detect(b"") is None
    assert detect(b"", at_eof=True) == "none"  # empty file: zero records


def test_detect_leaves_broken_plain_input_to_the_framing_decoder() -> None:
    raw = struct.pack("<Q", 5) + struct.pack("<I", masked_crc32c(b"wrong!!!"))
    assert detect(raw) == "none"


# --- caps, checked as the stream inflates (a 228 KB GZIP TFRecord took 3 GB) -----------


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_a_bomb_stops_at_max_ratio_soon_after_the_floor(kind: Compression) -> None:
    packed = compress(bytes(40 << 20), kind)
    dec = Decompressor(kind)  # the budget's defaults: 200:1 past 1 MiB
    with pytest.raises(LimitExceededError) as info:
        _drain(dec, packed)
    assert (info.value.limit, info.value.cap) == ("max_ratio", DEFAULT_MAX_RATIO)
    assert dec.total_out <= DEFAULT_RATIO_FLOOR + OUTPUT_CHUNK  # stopped as it inflated
    assert info.value.offset is not None
    assert info.value.offset < len(packed)


def _drain(dec: Decompressor, packed: bytes) -> None:
    for piece in (packed, b""):
        for _ in dec.feed(piece):
            pass


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_max_stream_bytes_counts_the_whole_file(kind: Compression) -> None:
    data = os.urandom(250_000)  # incompressible: the ratio check never fires
    # gzip: two members (the caps count the file, not one member)
    packed = compress(data, kind) * 2 if kind == "gzip" else compress(data * 2, kind)
    assert len(b"".join(decompress_all(kind, [packed], max_stream_bytes=500_000))) == 500_000
    with pytest.raises(LimitExceededError, match="max_stream_bytes is 400000"):
        decompress_all(kind, chunks(packed, 4096), max_stream_bytes=400_000)


def test_streams_within_the_ratio_floor_are_not_ratio_checked() -> None:
    raw = bytes(1 << 20)
    out = decompress_all("gzip", [compress(raw, "gzip")])
    assert b"".join(out) == raw


def test_the_none_compression_has_no_caps() -> None:
    assert decompress_all("none", [bytes(5000)], max_stream_bytes=1, ratio_floor=1) == [bytes(5000)]


def test_many_tiny_gzip_members_and_padding_read_like_python_gzip() -> None:
    members = b"".join(gzip.compress(bytes([i % 256]) * (i % 7)) for i in range(3000))
    padded = members + b"\x00" * 100 + gzip.compress(b"tail")
    want = gzip.decompress(padded)
    for size in (1, 100, 1 << 20):
        assert b"".join(decompress_all("gzip", chunks(padded, size))) == want


def test_codec_defaults_are_the_budget_defaults() -> None:
    limits = Limits()
    assert limits.max_stream_bytes == DEFAULT_MAX_STREAM_BYTES
    assert limits.max_ratio == DEFAULT_MAX_RATIO
    assert limits.ratio_floor == DEFAULT_RATIO_FLOOR
    assert limits.max_record_size == DEFAULT_MAX_RECORD_SIZE
    assert limits.max_values_per_feature == DEFAULT_MAX_VALUES
