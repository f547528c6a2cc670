"""The streaming shell (stream.py): readers, writers, zip members, shard names.

Real files on disk, real zip archives; the codec underneath is proven in
test_framing.py and test_compression.py, so these tests check the plumbing: chunking, detection,
error locations, batching, and that nothing is read or held whole.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO

import pytest

from tfdrop.codec.compression import Compression
from tfdrop.codec.framing import (
    FOOTER_SIZE,
    HEADER_SIZE,
    NEED_DATA,
    RecordDecoder,
    decode_records,
    encode_record,
)
from tfdrop.errors import (
    CompressionError,
    DataCrcMismatchError,
    FormatError,
    RecordTooLargeError,
    TruncatedRecordError,
)
from tfdrop.shards import split_shard_name
from tfdrop.stream import (
    RecordPump,
    RecordWriter,
    is_tfrecord_name,
    iter_records,
    iter_records_path,
    parse_shard_name,
    shard_gaps,
    shard_name,
    shard_set,
)

RECORDS = [os.urandom(n) for n in (0, 1, 100, 5000, 70_000, 3, 12, 13)] * 3
SMALL = [os.urandom(n) for n in (0, 1, 100, 3000, 3, 12, 13)]
PLAIN = b"".join(encode_record(r) for r in RECORDS)
KINDS: list[Compression] = ["none", "gzip", "zlib"]


def packed(kind: Compression, data: bytes = PLAIN) -> bytes:
    return {"none": data, "gzip": gzip.compress(data), "zlib": zlib.compress(data)}[kind]


class CountingReader(io.RawIOBase):
    """A real readable stream that remembers the sizes asked of it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.sizes.append(size)
        return self.inner.read(size)


# --- sync reading ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("compression", ["auto", "explicit"])
@pytest.mark.parametrize("chunk_size", [1, 7, 13, 4096, 1 << 22])
def test_iter_records_reads_every_compression_in_any_chunk_size(
    kind: Compression, compression: str, chunk_size: int
) -> None:
    records = RECORDS if chunk_size > 13 else SMALL  # keep byte-at-a-time runs short
    data = packed(kind, b"".join(encode_record(r) for r in records))
    arg = "auto" if compression == "auto" else kind
    got = list(iter_records(io.BytesIO(data), compression=arg, chunk_size=chunk_size))
    assert got == records


@pytest.mark.parametrize("kind", KINDS)
def test_empty_file_is_zero_records(kind: Compression, tmp_path: Path) -> None:
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
    assert list(iter_records_path(path, compression="auto")) == []
    assert list(iter_records_path(path, compression=kind)) == []


def test_auto_detects_tiny_files_at_end_of_input() -> None:
    one = encode_record(b"")  # 16 bytes: detection must wait for 12, or for the end
    for size in (1, 5, 11, 12, 100):
        assert list(iter_records(io.BytesIO(one), chunk_size=size)) == [b""]


def test_pump_reports_the_detected_compression() -> None:
    pump = RecordPump()
    assert pump.compression is None
    assert list(pump.feed(packed("zlib")[:5])) == []
    assert pump.compression is None  # not enough bytes to decide yet
    out = list(pump.feed(packed("zlib")[5:])) + list(pump.feed(b""))
    assert pump.compression == "zlib"
    assert out == RECORDS
    assert pump.index == len(RECORDS)


def test_errors_carry_record_and_offset_of_the_decompressed_stream() -> None:
    bad = bytearray(PLAIN)
    bad_index = 4
    at = sum(HEADER_SIZE + len(r) + FOOTER_SIZE for r in RECORDS[:bad_index])
    bad[at + HEADER_SIZE + 10] ^= 0x40
    for kind in KINDS:
        with pytest.raises(DataCrcMismatchError) as info:
            list(iter_records(io.BytesIO(packed(kind, bytes(bad))), chunk_size=1000))
        assert (info.value.record, info.value.offset) == (bad_index, at)
        # the caller adds where the stream came from
        info.value.at(archive="drop.zip", member="default.tfrecord")
        assert str(info.value).startswith("drop.zip, member default.tfrecord, record 4")


def test_truncated_plain_file_raises_truncated_record(tmp_path: Path) -> None:
    path = tmp_path / "cut.tfrecord"
    path.write_bytes(PLAIN[:-3])
    with pytest.raises(TruncatedRecordError) as info:
        list(iter_records_path(path))
    assert info.value.record == len(RECORDS) - 1


@pytest.mark.parametrize("kind", ["gzip", "zlib"])
def test_compressed_file_cut_short_raises_compression_error(kind: Compression) -> None:
    data = packed(kind)
    with pytest.raises(CompressionError):
        list(iter_records(io.BytesIO(data[: len(data) // 2])))


def test_max_record_size_is_passed_to_the_decoder() -> None:
    with pytest.raises(RecordTooLargeError) as info:
        list(iter_records(io.BytesIO(PLAIN), max_record_size=4999))
    assert info.value.record == 3


def test_iter_records_never_reads_more_than_chunk_size_at_once() -> None:
    reader = CountingReader(io.BytesIO(PLAIN))
    assert list(iter_records(reader, chunk_size=10_000)) == RECORDS  # type: ignore[arg-type]
    assert len(reader.sizes) > 2
    assert set(reader.sizes) == {10_000}


def test_decoder_copies_caller_buffers_so_they_can_be_reused() -> None:
    dec = RecordDecoder()
    buf = bytearray(encode_record(b"keep me"))
    dec.feed(buf[:10])
    dec.feed(memoryview(buf)[10:])
    buf[:] = bytes(len(buf))  # the caller reuses its buffer before the record is parsed
    assert dec.next_record() == b"keep me"
    assert dec.next_record() is NEED_DATA


# --- zip members -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_tfrecord_inside_a_zip_member_streams_without_extracting(
    method: int, tmp_path: Path
) -> None:
    archive = tmp_path / "drop.zip"
    with zipfile.ZipFile(archive, "w", compression=method) as zf:
        zf.writestr("label_map.pbtxt", "item {\n\tid: 1\n\tname: 'a'\n}\n\n")
        zf.writestr("default.tfrecord", PLAIN)
        zf.writestr("train.tfrecord.gz", gzip.compress(PLAIN))
    before = set(tmp_path.iterdir())
    with zipfile.ZipFile(archive) as zf:
        for member in ("default.tfrecord", "train.tfrecord.gz"):
            with zf.open(member) as raw:
                reader = CountingReader(raw)
                got = list(iter_records(reader, chunk_size=64 * 1024))  # type: ignore[arg-type]
            assert got == RECORDS
            assert max(reader.sizes) == 64 * 1024  # read in chunks, never whole (read(-1))
            assert len(reader.sizes) > 2
    assert set(tmp_path.iterdir()) == before  # nothing extracted to disk


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_size", [1, 1000, 1 << 22])
def test_record_writer_round_trips_and_counts(kind: Compression, batch_size: int) -> None:
    buf = io.BytesIO()
    with RecordWriter(buf, compression=kind, batch_size=batch_size) as w:
        for r in RECORDS:
            w.write(r)
    assert w.closed
    assert w.records == len(RECORDS)
    assert w.raw_bytes == len(PLAIN)
    assert w.written_bytes == len(buf.getvalue())
    data = buf.getvalue()
    if kind == "none":
        assert data == PLAIN
    elif kind == "gzip":
        assert gzip.decompress(data) == PLAIN  # Python's gzip reads our member
    else:
        assert zlib.decompress(data) == PLAIN
    assert list(iter_records(io.BytesIO(data))) == RECORDS


def test_record_writer_leaves_the_stream_open_and_refuses_writes_after_close() -> None:
    buf = io.BytesIO()
    w = RecordWriter(buf)
    w.write(b"x")
    w.close()
    w.close()  # idempotent
    assert not buf.closed
    assert decode_records(buf.getvalue()) == [b"x"]
    with pytest.raises(ValueError, match="closed"):
        w.write(b"y")


def test_empty_writer_output_is_zero_records() -> None:
    for kind in KINDS:
        buf = io.BytesIO()
        with RecordWriter(buf, compression=kind):
            pass
        assert list(iter_records(io.BytesIO(buf.getvalue()))) == []


# --- names -----------------------------------------------------------------------------------


def test_shard_name_is_zero_based_five_digits() -> None:
    assert shard_name("train.record", 0, 4) == "train.record-00000-of-00004"
    assert shard_name("out", 12, 100) == "out-00012-of-00100"
    with pytest.raises(ValueError, match="outside"):
        shard_name("out", 4, 4)


def test_parse_shard_name_round_trips_and_rejects_non_shards() -> None:
    for base, i, n in [("train", 0, 4), ("a-b-00001-of-x", 3, 10), ("dir.v2/val", 99, 100)]:
        assert parse_shard_name(shard_name(base, i, n)) == (base.split("/")[-1], i, n)
    assert parse_shard_name("/data/train-00003-of-00004") == ("train", 3, 4)
    for name in ("train-0001-of-00004", "train-00004-of-00004", "train.tfrecord", "-00000-of-1"):
        assert parse_shard_name(name) is None


def test_a_suffix_after_the_shard_numbers_is_a_shard_of_the_base() -> None:
    # x-00000-of-00002.tfrecord (very common) was a file of its own, subset "x-00000-of-00002"
    assert parse_shard_name("x-00001-of-00002.tfrecord") == ("x", 1, 2)
    assert parse_shard_name("d/x-00001-of-00002.record") == ("x", 1, 2)
    assert parse_shard_name("x-00002-of-00002.tfrecord") is None


def test_shard_gaps_name_the_missing_shards_with_their_suffix() -> None:
    (gap,) = shard_gaps(
        ["a/x-00000-of-00003.tfrecord", "a/x-00002-of-00003.tfrecord", "y.tfrecord"]
    )
    assert (gap.present, gap.seen, gap.count) == ("a/x-00000-of-00003.tfrecord", 2, 3)
    assert gap.missing == ("a/x-00001-of-00003.tfrecord",)
    assert shard_gaps(["x-00000-of-00001.tfrecord", "x.tfrecord-00000-of-00001"]) == []


@pytest.mark.parametrize(
    ("names", "bad", "says"),
    [
        (["t-00000-of-00002.tfrecord", "t-00002-of-00003.tfrecord"], "t-00002-of-00003", "mixes"),
        (["t-00000-of-00002", "t-00001-of-00003"], "t-00001-of-00003", "mixes"),
        (["t-00005-of-00002.tfrecord"], "t-00005-of-00002.tfrecord", "below the count"),
    ],
)
def test_shard_sets_with_mixed_counts_or_an_index_past_the_count_are_refused(
    names: list[str], bad: str, says: str
) -> None:
    with pytest.raises(FormatError, match=says) as info:
        shard_gaps(names)
    assert info.value.member is not None
    assert info.value.member.startswith(bad)


def test_a_bare_shard_with_the_suffix_after_the_numbers_brings_its_set(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"y-{i:05d}-of-00003.tfrecord").write_bytes(b"")
    (tmp_path / "y-00001-of-00003").write_bytes(b"")  # another naming, another set
    got = shard_set(tmp_path / "y-00001-of-00003.tfrecord")
    assert [p.name for p in got] == [f"y-{i:05d}-of-00003.tfrecord" for i in range(3)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("default.tfrecord", True),
        ("train.record", True),
        ("x/y/val.TFRecord", True),
        ("data.tfrecords", True),
        ("default.tfrecord.gz", True),
        ("train.record-00000-of-00004", True),
        ("coco_train-00003-of-00010", True),
        ("coco_train-00003-of-00010.gz", True),
        ("label_map.pbtxt", False),
        ("default.tfrecord.part", False),
        (".default.tfrecord.abc123", False),
        ("record", False),
        ("train-00004-of-00004", True),  # read, then refused: the index is out of range
        ("train-00001-of-00002.tfrecord", True),
        ("image.jpg", False),
    ],
)
def test_is_tfrecord_name(name: str, expected: bool) -> None:
    assert is_tfrecord_name(name) is expected


def test_is_tfrecord_name_without_regex_answers_as_the_patterns() -> None:
    """The ASCII shortcut (``str.endswith``, ``-of-``) against the patterns it stands for, on
    names built from the pieces that matter, odd cases and non-ASCII look-alikes included."""
    suffix = re.compile(r"\.(tfrecords?|record)(\.(gz|gzip|zz|zlib))?$", re.IGNORECASE)

    def by_patterns(name: str) -> bool:
        base = os.path.basename(name)
        if not base or base.startswith("."):
            return False
        if suffix.search(base):
            return True
        return split_shard_name(re.sub(r"\.(gz|gzip|zz|zlib)$", "", base, flags=re.I)) is not None

    parts = ["train", "-", "00001", "-of-", "-OF-", "-Of-", ".tfrecord", ".TFRecords", ".record",
             ".gz", ".GZIP", ".zz", ".zlib", ".jpg", "x", "/", "."]  # fmt: skip
    parts += ["\u017f", "\u0130", "\u212a"]  # long s, dotted I, Kelvin: IGNORECASE folds them
    rng = random.Random(3)
    for _ in range(20_000):
        name = "".join(rng.choice(parts) for _ in range(rng.randrange(1, 8)))
        assert is_tfrecord_name(name) == by_patterns(name), name
