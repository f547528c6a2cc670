"""TFRecord framing (codec/framing.py) against TensorFlow's record_writer.cc layout.

h11's habit (``h11/tests/test_io.py``): every decoder is fed whole, one byte at a time, in a grid
of chunk sizes against an oracle, and with trailing data that must stay in its buffer. Each
corruption kind raises its own error class with the record index and byte offset.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.codec.framing import (
    DEFAULT_MAX_RECORD_SIZE,
    END,
    FOOTER_SIZE,
    HEADER_SIZE,
    NEED_DATA,
    RecordDecoder,
    decode_records,
    encode_record,
    frame,
    masked_crc32c,
)
from tfdrop.errors import (
    CrcMismatchError,
    DataCrcMismatchError,
    DecoderDeadError,
    LengthCrcMismatchError,
    RecordError,
    RecordTooLargeError,
    TruncatedRecordError,
)

RECORDS = [b"", b"a", b"hello world" * 37, bytes(range(256)) * 20, b"\x00" * 13, b"z" * 4096]
CHUNK_SIZES = [1, 2, 3, 7, 12, 13, 16, 64, 4096, 1 << 20]


def stream(records: Iterable[bytes]) -> bytes:
    return b"".join(encode_record(r) for r in records)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def feed_all(
    dec: RecordDecoder, pieces: Iterable[bytes | bytearray | memoryview], *, end: bool = True
) -> list[bytes]:
    """Push every piece, pulling records after each, as a streaming reader does."""
    out: list[bytes] = []
    for piece in [*pieces, b""] if end else pieces:
        dec.feed(piece)
        while True:
            rec = dec.next_record()
            if rec is NEED_DATA:
                break
            if rec is END:
                assert end
                return out
            out.append(rec)
    assert not end, "END never came after end of input"
    return out


def offsets(records: list[bytes]) -> list[int]:
    out, pos = [], 0
    for r in records:
        out.append(pos)
        pos += HEADER_SIZE + len(r) + FOOTER_SIZE
    return out


# --- known answers --------------------------------------------------------------------------


def test_masked_crc32c_matches_tensorflow_definition() -> None:
    # record_writer.cc / crc32c.h: rotate right by 15, add kMaskDelta
    for data in (b"", b"a", b"123456789", bytes(1000)):
        crc = google_crc32c.value(data)
        expected = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
        assert masked_crc32c(data) == expected
    # CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720)
    assert google_crc32c.value(b"123456789") == 0xE3069283


def test_encode_record_layout_is_length_lengthcrc_data_datacrc() -> None:
    rec = encode_record(b"abc")
    assert len(rec) == HEADER_SIZE + 3 + FOOTER_SIZE
    assert rec[:8] == struct.pack("<Q", 3)
    assert struct.unpack("<I", rec[8:12])[0] == masked_crc32c(rec[:8])
    assert rec[12:15] == b"abc"
    assert struct.unpack("<I", rec[15:])[0] == masked_crc32c(b"abc")
    header, footer = frame(b"abc")
    assert header + b"abc" + footer == rec


def test_empty_input_is_zero_records() -> None:
    dec = RecordDecoder()
    assert dec.next_record() is NEED_DATA
    dec.feed(b"")
    assert dec.next_record() is END
    assert dec.next_record() is END  # END is stable
    assert decode_records(b"") == []


# --- feeding patterns ---------------------------------------------------------------------


def test_fed_whole_gives_every_record_as_owned_bytes() -> None:
    out = feed_all(RecordDecoder(), [stream(RECORDS)])
    assert out == RECORDS
    assert all(type(r) is bytes for r in out)


def test_fed_one_byte_at_a_time_gives_same_records() -> None:
    data = stream(RECORDS[:4])
    dec = RecordDecoder()
    assert feed_all(dec, chunks(data, 1)) == RECORDS[:4]
    assert dec.index == 4
    assert dec.offset == len(data)


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_chunk_size_grid_matches_oracle(size: int) -> None:
    data = stream(RECORDS)
    oracle = decode_records(data)
    assert oracle == RECORDS
    assert feed_all(RecordDecoder(), chunks(data, size)) == oracle


def test_records_kept_by_caller_are_not_overwritten_by_later_records() -> None:
    # vahidk/tfrecord's reader yields views into one reused buffer; ours must not.
    dec = RecordDecoder()
    kept = feed_all(dec, chunks(stream([b"A" * 100, b"B" * 100, b"C" * 100]), 50))
    assert kept == [b"A" * 100, b"B" * 100, b"C" * 100]


@pytest.mark.parametrize("trailing", [b"x", b"\x05" * 11, encode_record(b"partial")[:-1]])
def test_trailing_partial_data_stays_in_the_buffer(trailing: bytes) -> None:
    dec = RecordDecoder()
    out = feed_all(dec, [stream(RECORDS) + trailing], end=False)
    assert out == RECORDS
    assert dec.next_record() is NEED_DATA
    assert dec.trailing_data == (trailing, False)
    assert dec.offset == len(stream(RECORDS))


def test_trailing_data_survives_buffer_compaction() -> None:
    dec = RecordDecoder()
    big = stream([b"q" * 1000] * 10)
    out = feed_all(dec, [*chunks(big, 700), b"tail"], end=False)
    assert len(out) == 10
    assert dec.trailing_data == (b"tail", False)
    dec.feed(b"")
    assert dec.trailing_data == (b"tail", True)


# --- corruption ------------------------------------------------------------------------------


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("where", "error"),
    [
        (0, LengthCrcMismatchError),  # a length byte
        (8, LengthCrcMismatchError),  # the length CRC itself
        (HEADER_SIZE, DataCrcMismatchError),  # the first data byte
        (-1, DataCrcMismatchError),  # the data CRC itself
    ],
)
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_flipped_bit_raises_its_crc_error_with_record_and_offset(
    where: int, error: type[CrcMismatchError], size: int
) -> None:
    bad_index = 2
    recs = [b"first", b"second record", b"third one!", b"fourth"]
    good = [encode_record(r) for r in recs]
    good[bad_index] = flip(good[bad_index], where % len(good[bad_index]))
    dec = RecordDecoder()
    with pytest.raises(error) as info:
        feed_all(dec, chunks(b"".join(good), size))
    assert info.value.record == bad_index
    assert info.value.offset == offsets(recs)[bad_index]
    assert info.value.part == ("length" if error is LengthCrcMismatchError else "data")
    assert isinstance(info.value, ValueError)  # data errors are also ValueError


@pytest.mark.parametrize(
    ("cut", "label"),
    [(5, "in header"), (HEADER_SIZE + 3, "in data"), (HEADER_SIZE + 10 + 2, "in footer")],
)
@pytest.mark.parametrize("size", [1, 3, 4096])
def test_input_ending_inside_a_record_raises_truncated(cut: int, label: str, size: int) -> None:
    recs = [b"one", b"two", b"0123456789"]
    data = stream(recs[:2]) + encode_record(recs[2])[:cut]
    dec = RecordDecoder()
    with pytest.raises(TruncatedRecordError) as info:
        feed_all(dec, chunks(data, size))
    assert info.value.record == 2, label
    assert info.value.offset == offsets(recs)[2], label


def test_truncation_is_not_an_error_until_end_of_input() -> None:
    dec = RecordDecoder()
    dec.feed(encode_record(b"abc")[:-2])
    assert dec.next_record() is NEED_DATA
    dec.feed(b"")
    with pytest.raises(TruncatedRecordError):
        dec.next_record()


def header_with_length(length: int) -> bytes:
    raw = struct.pack("<Q", length)
    return raw + struct.pack("<I", masked_crc32c(raw))


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, DEFAULT_MAX_RECORD_SIZE + 1])
def test_length_over_default_cap_raises_before_the_data_arrives(length: int) -> None:
    dec = RecordDecoder()
    dec.feed(encode_record(b"ok") + header_with_length(length))  # valid length CRC, no data
    assert dec.next_record() == b"ok"
    with pytest.raises(RecordTooLargeError) as info:
        dec.next_record()  # raised now, without waiting for (or allocating) `length` bytes
    assert info.value.record == 1
    assert info.value.offset == HEADER_SIZE + 2 + FOOTER_SIZE


def test_max_record_size_is_configurable() -> None:
    data = stream([b"x" * 100, b"y" * 101])
    assert decode_records(data, max_record_size=101) == [b"x" * 100, b"y" * 101]
    with pytest.raises(RecordTooLargeError) as info:
        decode_records(data, max_record_size=100)
    assert info.value.record == 1
    assert info.value.offset == HEADER_SIZE + 100 + FOOTER_SIZE


def test_decoder_is_dead_after_an_error() -> None:
    dec = RecordDecoder()
    dec.feed(flip(encode_record(b"abc"), 0))
    with pytest.raises(LengthCrcMismatchError) as first:
        dec.next_record()
    with pytest.raises(DecoderDeadError) as again:
        dec.next_record()
    assert again.value.__cause__ is first.value
    with pytest.raises(DecoderDeadError):
        dec.feed(b"more")
    with pytest.raises(DecoderDeadError):
        dec.feed(b"")


def test_feed_after_end_of_input_is_a_programming_error() -> None:
    dec = RecordDecoder()
    dec.feed(b"")
    dec.feed(b"")  # a repeated end is harmless
    with pytest.raises(RuntimeError):
        dec.feed(b"late")


def test_all_record_errors_share_one_base_class() -> None:
    for cls in (LengthCrcMismatchError, DataCrcMismatchError, TruncatedRecordError):
        assert issubclass(cls, RecordError)
    assert issubclass(RecordTooLargeError, RecordError)


def test_memoryview_and_bytearray_input_are_accepted() -> None:
    data = stream(RECORDS)
    dec = RecordDecoder()
    half = len(data) // 2
    assert feed_all(dec, [memoryview(data)[:half], bytearray(data[half:])]) == RECORDS


# --- round trips -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(st.binary(max_size=300), max_size=20),
    size=st.integers(min_value=1, max_value=600),
)
def test_random_record_lists_round_trip_in_any_chunking(records: list[bytes], size: int) -> None:
    data = stream(records)
    assert decode_records(data) == records
    assert feed_all(RecordDecoder(), chunks(data, size)) == records


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(st.binary(max_size=100), min_size=1, max_size=8),
    data=st.data(),
)
def test_random_single_byte_corruption_is_always_detected(
    records: list[bytes], data: st.DataObject
) -> None:
    raw = stream(records)
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    bad = raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1 :]
    # CRC-32C catches every single-bit error, so a flipped length bit never gets to be trusted
    with pytest.raises(CrcMismatchError) as info:
        decode_records(bad)
    index = max(i for i, off in enumerate(offsets(records)) if off <= at)
    assert info.value.record == index
    assert info.value.offset == offsets(records)[index]


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(st.binary(max_size=200), min_size=1, max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
    mutable=st.booleans(),
    data=st.data(),
)
def test_corruption_found_at_the_same_place_whatever_the_chunking(
    records: list[bytes], cuts: list[int], mutable: bool, data: st.DataObject
) -> None:
    # zero-copy views of fed bytes and assembled straddling records must agree on offsets
    raw = bytearray(stream(records))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= 0x80
    bounds = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    pieces = [bytes(raw[a:b]) for a, b in itertools.pairwise(bounds)]
    fed = [bytearray(p) for p in pieces] if mutable else pieces
    with pytest.raises(CrcMismatchError) as info:
        feed_all(RecordDecoder(), fed)
    index = max(i for i, off in enumerate(offsets(records)) if off <= at)
    assert (info.value.record, info.value.offset) == (index, offsets(records)[index])
