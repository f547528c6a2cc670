"""``validate`` hashes embedded images in a second thread: its verdicts and its order are those
of hashing each record in turn, and an error of the record stream comes after the records
read before it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tfdrop.cli import hashing
from tfdrop.cli.hashing import Scanned, hashed_in_order
from tfdrop.codec import wire
from tfdrop.codec.example import encode_example
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.schema import fast_scan
from tfdrop.errors import TruncatedRecordError

pytestmark = pytest.mark.skipif(not wire.HAVE_C, reason="the all-clear check is the C one")


def _record(i: int, *, good: bool) -> bytes:
    image = b"\xff\xd8" + i.to_bytes(4, "big") * 5000
    obj = Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.9))
    data = encode_example(Item(name=f"{i}", width=4, height=4, image=image, objects=(obj,)))
    sha = hashlib.sha256(image).hexdigest().encode()
    assert data.count(sha) == 1
    return data if good else data.replace(sha, b"0" * 64)


def _scanned(records: list[bytes], fail_after: int | None = None) -> Iterator[Scanned]:
    for i, rec in enumerate(records):
        if i == fail_after:
            raise TruncatedRecordError("bad frame", record=i)
        yield i, 100 * i, rec, fast_scan(rec)


@pytest.mark.parametrize("n", [0, 1, 5, 200])
def test_verdicts_and_order_are_those_of_hashing_in_turn(n: int) -> None:
    good = [i % 7 != 3 for i in range(n)]
    records = [_record(i, good=g) for i, g in enumerate(good)]
    out = list(hashed_in_order(_scanned(records)))
    assert [(i, off) for i, off, _, _ in out] == [(i, 100 * i) for i in range(n)]
    assert [rec for _, _, rec, _ in out] == records
    assert [fast is not None for _, _, _, fast in out] == good


def test_an_error_comes_after_the_records_before_it() -> None:
    records = [_record(i, good=True) for i in range(50)]
    seen: list[int] = []

    def consume() -> None:
        for index, _, _, fast in hashed_in_order(_scanned(records, fail_after=40)):
            assert fast is not None
            seen.append(index)

    with pytest.raises(TruncatedRecordError):
        consume()
    assert seen == list(range(40))


def test_no_more_than_the_bound_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records waiting for their hash stay within the bound however fast they are read."""
    monkeypatch.setattr(hashing, "AHEAD_RECORDS", 4)
    records = [_record(i, good=True) for i in range(30)]
    read = 0

    def counted() -> Iterator[Scanned]:
        nonlocal read
        for item in _scanned(records):
            read += 1
            yield item

    for index, _, _, _ in hashed_in_order(counted()):
        assert read - index <= 4 + 1
