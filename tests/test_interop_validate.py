"""``tfdrop validate`` against real TensorFlow (validate once said "valid" for records
``tf.io.parse_single_example`` refuses with the seed's schema).

- A record with two heights and two filenames: TensorFlow refuses it with the seed's feature
  description, and ``validate`` exits 1.
- Ordinary records TensorFlow parses: ``validate`` exits 0.
- Byte-corrupted records: whatever ``validate``'s checks pass, TensorFlow parses with the OD
  API decoder's description (the seed's keys with the decoder's defaults) into the same values.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tfdrop.codec.example import encode_example, parse_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import TfdropError
from tfhelpers import seed_features

pytestmark = pytest.mark.interop

ITEM = Item(
    name="a.jpg",
    width=64,
    height=48,
    image=bytes(range(256)) * 2,
    image_format="jpeg",
    source_id="7",
    objects=(
        Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.6)),
        Annotation(label="dog", label_id=2, box=Box(0.3, 0.1, 0.9, 0.8)),
    ),
)


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfdrop", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def tf_parses(tf: ModuleType, data: bytes, desc: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dict(tf.io.parse_single_example(data, desc))
    except tf.errors.InvalidArgumentError:
        return None


def od_features(tf: ModuleType) -> dict[str, Any]:
    """The seed's keys as the OD API's TfExampleDecoder reads them (with its defaults)."""
    fixed = tf.io.FixedLenFeature
    desc = seed_features(tf)
    defaults = {"image/height": 1, "image/width": 1, "image/format": "jpeg"}
    for key in ("image/filename", "image/source_id", "image/encoded", "image/format"):
        desc[key] = fixed([], tf.string, default_value=defaults.get(key, ""))
    desc["image/key/sha256"] = fixed([], tf.string, default_value="")
    for key in ("image/height", "image/width"):
        desc[key] = fixed([], tf.int64, default_value=defaults[key])
    return desc


def test_two_heights_and_two_filenames_tensorflow_refuses_and_validate_fails(
    tf: ModuleType, tmp_path: Path
) -> None:
    ex = Example.FromString(encode_example(ITEM))
    feats = ex.features.feature  # type: ignore[attr-defined]
    feats["image/height"].int64_list.value.append(96)
    feats["image/filename"].bytes_list.value.append(b"b.jpg")
    data = bytes(ex.SerializeToString())
    assert tf_parses(tf, data, seed_features(tf)) is None
    assert tf_parses(tf, data, od_features(tf)) is None
    path = tmp_path / "two.tfrecord"
    path.write_bytes(encode_record(data))
    proc = validate(path)
    assert proc.returncode == 1, proc.stdout
    assert "exactly one" in proc.stdout


def test_a_normal_record_tensorflow_parses_validate_accepts(tf: ModuleType, tmp_path: Path) -> None:
    ex = tf.train.Example.FromString(encode_example(ITEM))  # and written by TF itself
    data = ex.SerializeToString()
    assert tf_parses(tf, data, seed_features(tf)) is not None
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(data)
    proc = validate(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("1 records in 1 files: valid")


def _validate_passes(data: bytes) -> int | None:
    """The box count when validate's checks pass the record, else None."""
    if (n := fast_check(data)) is not None:
        return n
    try:
        parsed = parse_example(data, strict=True)
    except TfdropError:
        return None
    return None if check_parsed(parsed) else parsed.num_objects


def test_what_validate_passes_in_corrupted_records_tensorflow_parses_alike(
    tf: ModuleType,
) -> None:
    rng = random.Random(2026)
    ex = Example.FromString(encode_example(ITEM))
    del ex.features.feature["image/key/sha256"]  # type: ignore[attr-defined]
    good = bytes(ex.SerializeToString())  # flips inside the image keep it valid now
    desc = od_features(tf)
    passed = 0
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(rng.choice([1, 1, 2])):
            i = rng.randrange(len(bad))
            op = rng.randrange(3)
            if op == 0:
                bad[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                bad.insert(i, rng.randrange(256))
            else:
                del bad[i]
        n = _validate_passes(bytes(bad))
        if n is None:
            continue
        passed += 1
        parsed = tf_parses(tf, bytes(bad), desc)
        assert parsed is not None, f"validate passed bytes TensorFlow refuses: {bytes(bad)!r}"
        ours = parse_example(bytes(bad))
        assert int(parsed["image/height"].numpy()) == ours.height
        assert int(parsed["image/width"].numpy()) == ours.width
        assert parsed["image/filename"].numpy().decode() == ours.filename
        xmin = tf.sparse.to_dense(parsed["image/object/bbox/xmin"]).numpy().tolist()
        assert len(xmin) == n
    assert passed > 20  # flips inside the image or float bytes keep records valid
