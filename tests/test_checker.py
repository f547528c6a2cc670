"""RecordChecker: images hashed on a worker thread, findings still in record order."""

from __future__ import annotations

from tfdrop.checker import RecordChecker
from tfdrop.codec.example import encode_example
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.proto import Example


def _record(i: int, *, bad_sha: bool = False, bad_box: bool = False) -> bytes:
    box = Box(0.5, 0.1, 0.2, 0.9) if bad_box else Box(0.1, 0.1, 0.5, 0.9)
    item = Item(
        name=f"{i}.jpg",
        width=8,
        height=8,
        image=bytes([i % 256]) * 5000,
        image_format="jpeg",
        objects=(Annotation(label="cat", label_id=1, box=box),),
    )
    data = encode_example(item)
    if not bad_sha:
        return data
    ex = Example.FromString(data)
    ex.features.feature["image/key/sha256"].bytes_list.value[0] = b"0" * 64  # type: ignore[attr-defined]
    return bytes(ex.SerializeToString())


def test_findings_come_out_in_record_order_with_sha_and_schema_problems() -> None:
    bad_sha = {3, 40, 41}
    bad_box = {7, 41, 99}
    found = []
    with RecordChecker() as checker:
        for i in range(100):
            data = _record(i, bad_sha=i in bad_sha, bad_box=i in bad_box)
            found += list(checker.check(i, i * 10, data))
        found += list(checker.flush())
    assert [f.index for f in found] == sorted(bad_sha | bad_box)
    keys = {f.index: {p["key"] for p in f.problems} for f in found}
    assert keys[3] == {"image/key/sha256"}
    assert keys[7] == {"image/object/bbox/xmin"}
    assert keys[41] == {"image/key/sha256", "image/object/bbox/xmin"}
    assert all(f.offset == f.index * 10 for f in found)


def test_a_clean_stream_has_no_findings() -> None:
    with RecordChecker() as checker:
        found = [f for i in range(50) for f in checker.check(i, 0, _record(i))]
        found += list(checker.flush())
    assert found == []
