"""Framing and compression interop with real TensorFlow (``tensorflow-cpu``, test extra).

Records ``tf.io.TFRecordWriter`` writes (no options, GZIP, ZLIB) read back identical through
tfdrop, with the compression detected or named; records tfdrop writes are read identical by
``tf.data.TFRecordDataset`` told the matching ``compression_type``. TensorFlow is imported once
per session by the ``tf`` fixture (conftest.py).
"""

from __future__ import annotations

import random
from pathlib import Path
from types import ModuleType

import pytest

from tfdrop.codec.compression import Compression
from tfdrop.stream import RecordWriter, iter_records_path

pytestmark = pytest.mark.interop

TF_TYPE: dict[Compression, str] = {"none": "", "gzip": "GZIP", "zlib": "ZLIB"}


def sample_records() -> list[bytes]:
    rng = random.Random(7)
    sizes = [0, 1, 11, 12, 13, 4095, 70_000, 0, 300_000, 5 * 1024 * 1024 + 3]
    sizes += [rng.randrange(2000) for _ in range(200)]
    return [rng.randbytes(n) for n in sizes]


RECORDS = sample_records()


def tf_write(tf: ModuleType, path: Path, kind: Compression) -> None:
    options = tf.io.TFRecordOptions(compression_type=TF_TYPE[kind]) if kind != "none" else None
    with tf.io.TFRecordWriter(str(path), options=options) as w:
        for r in RECORDS:
            w.write(r)


def tf_read(tf: ModuleType, path: Path, kind: Compression) -> list[bytes]:
    ds = tf.data.TFRecordDataset(str(path), compression_type=TF_TYPE[kind])
    return [bytes(t.numpy()) for t in ds]


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_records_tensorflow_writes_read_back_identical(
    tf: ModuleType, kind: Compression, tmp_path: Path
) -> None:
    path = tmp_path / f"tf-{kind}.tfrecord"
    tf_write(tf, path, kind)
    assert list(iter_records_path(path, compression="auto")) == RECORDS
    assert list(iter_records_path(path, compression=kind)) == RECORDS
    # small reads make records straddle many chunks (and gzip members' internal blocks)
    assert list(iter_records_path(path, chunk_size=4093)) == RECORDS


@pytest.mark.parametrize("kind", ["none", "gzip", "zlib"])
def test_records_tfdrop_writes_are_read_identical_by_tensorflow(
    tf: ModuleType, kind: Compression, tmp_path: Path
) -> None:
    path = tmp_path / f"tfdrop-{kind}.tfrecord"
    with open(path, "wb") as f, RecordWriter(f, compression=kind, batch_size=1 << 20) as w:
        for r in RECORDS:
            w.write(r)
    assert w.records == len(RECORDS)
    assert tf_read(tf, path, kind) == RECORDS


def test_tensorflow_reads_an_empty_file_we_write_as_zero_records(
    tf: ModuleType, tmp_path: Path
) -> None:
    for kind in ("none", "gzip", "zlib"):
        path = tmp_path / f"empty-{kind}.tfrecord"
        with open(path, "wb") as f, RecordWriter(f, compression=kind):
            pass
        assert tf_read(tf, path, kind) == []
        assert list(iter_records_path(path)) == []


def test_tensorflow_misreads_compressed_input_that_we_detect(
    tf: ModuleType, tmp_path: Path
) -> None:
    # SPEC.md peer bug: TF told nothing about compression fails with "corrupted record";
    # we detect it from the bytes.
    path = tmp_path / "gz.tfrecord"
    tf_write(tf, path, "gzip")
    with pytest.raises(tf.errors.DataLossError):
        tf_read(tf, path, "none")
    assert list(iter_records_path(path)) == RECORDS
