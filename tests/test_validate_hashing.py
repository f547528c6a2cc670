"""``validate`` hashes embedded images in a second thread: its verdicts and its order are those
of hashing each record in turn, and an error of the record stream comes after the records
read before it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfdrop.cli import hashing
from tfdrop.cli.hashing import Scanned, hashed_in_order
from tfdrop.codec import wire
from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.schema import fast_scan
from tfdrop.errors import TruncatedRecordError

pytestmark = pytest.mark.skipif(not wire.HAVE_C, reason="the all-clear check is the C one")


def _record(i: int, *, good: bool) -> bytes:
    image = b"\xff\xd8\xff\xda\x00\x02" + i.to_bytes(4, "big") * 5000 + b"\xff\xd9"
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


_PEAK = (
    "import resource, sys\n"
    "from tfdrop._console import main\n"
    "code = main(['validate', sys.argv[1]])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_large_records_cost_no_more_memory_than_on_the_pure_python_path(tmp_path: Path) -> None:
    """The hashing thread kept a hashed record alive through the next one's read: 60 MB
    records peaked 60 MB above the pure-Python path (found by an outside attack)."""
    big = 40 << 20
    path = tmp_path / "big.tfrecord"
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (8).to_bytes(4, "big") + (6).to_bytes(4, "big")
    image = png + os.urandom(big)
    obj = Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.9))
    good = encode_example(Item(name="a", width=8, height=6, image=image, objects=(obj,)))
    wrong_key = good.replace(hashlib.sha256(image).hexdigest().encode(), b"0" * 64)
    wrong_width = encode_example(Item(name="c", width=9, height=6, image=image, objects=(obj,)))
    del image
    with path.open("wb") as f:  # the attack's file: good, a wrong key, a wrong width
        for data in (good, wrong_key, wrong_width):
            f.write(encode_record(data))
    del good, wrong_key, wrong_width
    peaks = {}
    for mode, extra in (("c", {}), ("python", {"TFDROP_NO_C": "1"})):
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK, str(path)],
            env={**os.environ, **extra},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr  # two records are invalid
        peaks[mode] = int(proc.stderr.strip().splitlines()[-1]) * 1024
    assert peaks["c"] <= peaks["python"] + big // 4, peaks
