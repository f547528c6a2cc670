"""``tfdrop validate`` against real TensorFlow (validate once said "valid" for records
``tf.io.parse_single_example`` refuses with the seed's schema).

- A record with two heights and two filenames: TensorFlow refuses it with the seed's feature
  description, and ``validate`` exits 1.
- Ordinary records TensorFlow parses: ``validate`` exits 0.
- Byte-corrupted records: whatever ``validate``'s checks pass, TensorFlow parses with the OD
  API decoder's description (the seed's keys with the decoder's defaults) into the same values.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from layout_cases import CASES
from tfdrop.codec.example import LABEL, XMIN, encode_example, parse_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.codec.wire import varint
from tfdrop.errors import TfdropError
from tfhelpers import seed_features

pytestmark = pytest.mark.interop

# a JPEG's start: APP0, a start-of-frame of 64x48 (the item's declared size), a start of scan
JPEG_64x48 = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    b"\xff\xc0\x00\x11\x08\x00\x30\x00\x40\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    b"\xff\xda\x00\x02"
)

ITEM = Item(
    name="a.jpg",
    width=64,
    height=48,
    image=JPEG_64x48 + bytes(range(256)) * 2 + b"\xff\xd9",
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
    except UnicodeDecodeError:  # TensorFlow refused it, then failed to format its message
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


def _values(tf: ModuleType, parsed: dict[str, Any]) -> tuple[object, ...]:
    dense = tf.sparse.to_dense
    return (
        int(parsed["image/height"].numpy()),
        parsed["image/filename"].numpy().decode(),
        dense(parsed["image/object/class/label"]).numpy().tolist(),
        dense(parsed["image/object/bbox/xmin"]).numpy().tolist(),
    )


def _protobuf_values(data: bytes) -> tuple[object, ...] | None:
    try:
        p = parse_example(data)  # the lenient path: protobuf's reading
    except TfdropError:
        return None
    lists = p.lists
    return (p.height, p.filename, lists.get(LABEL), lists.get(XMIN))


def test_each_layout_outside_the_canonical_one_validate_decides_as_tensorflow(
    tf: ModuleType, tmp_path: Path
) -> None:
    # validate once refused unpacked lists and unknown Example fields TensorFlow reads alike
    desc = od_features(tf)
    for case in CASES:
        got = tf_parses(tf, case.data, desc)
        theirs = _values(tf, got) if got is not None else None
        alike = theirs is not None and theirs == _protobuf_values(case.data)
        if case.alike:
            assert alike, (case.name, theirs)
            assert _validate_passes(case.data) == 1, case.name
        else:
            # TensorFlow refuses it, reads other values, or a repeated key drops one silently
            assert not alike or "twice" in case.message, (case.name, theirs)
            assert _validate_passes(case.data) is None, case.name
    path = tmp_path / "layouts.tfrecord"
    path.write_bytes(b"".join(encode_record(c.data) for c in CASES))
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", "validate", "--json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    bad = {json.loads(line)["record"] for line in proc.stdout.splitlines()[:-1]}
    assert bad == {i for i, c in enumerate(CASES) if not c.alike}


def test_a_key_without_a_value_tensorflow_refuses_and_validate_fails(
    tf: ModuleType, tmp_path: Path
) -> None:
    ex = Example.FromString(encode_example(ITEM))
    del ex.features.feature["image/key/sha256"]  # type: ignore[attr-defined]
    good = bytes(ex.SerializeToString())
    entry = b"\x0a\x04\x0a\x02zz"  # a map entry holding only the key "zz"
    body = good[2:] if good[1] < 0x80 else good[3:]
    data = b"\x0a" + varint(len(body) + len(entry)) + body + entry
    assert Example.FromString(data).features.feature["zz"].WhichOneof("kind") is None  # type: ignore[attr-defined]
    assert tf_parses(tf, data, od_features(tf)) is None  # "Could not parse example input"
    path = tmp_path / "novalue.tfrecord"
    path.write_bytes(encode_record(data))
    proc = validate(path)
    assert proc.returncode == 1, proc.stdout
    assert "zz: not in the canonical tf.train.Example layout" in proc.stdout
    assert "a key but no Feature value" in proc.stdout
