"""``validate`` of a big bare file in ranges on worker processes says exactly what one pass says.

Every case runs ``tfdrop validate`` twice in this process, ``--jobs 1`` (one pass) and
``--jobs 2`` with the split forced on small files (tiny ranges, so problems, label
contradictions, errors and the workers' send caps fall across range boundaries), and compares
the exit code, stdout and stderr byte for byte, in text and in ``--json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tfdrop.cli import checkunits, main
from tfdrop.cli import validate as validate_cmd
from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import NEED_DATA, RecordDecoder, encode_record
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.errors import TruncatedRecordError
from tfdrop.limits import DEFAULT_LIMITS
from tfdrop.pool import can_fork

pytestmark = pytest.mark.skipif(not can_fork(), reason="ranges are checked by forked workers")


IN_IMAGE = Box(0.1, 0.2, 0.5, 0.9)


def _example(
    i: int,
    labels: list[tuple[str, int]],
    *,
    image: bytes | None = None,
    box: Box = IN_IMAGE,
) -> bytes:
    if image is None:  # start of image, of scan, its data, end of image
        image = b"\xff\xd8\xff\xda\x00\x02" + i.to_bytes(4, "big") * 50 + b"\xff\xd9"
    objs = tuple(Annotation(label=text, label_id=lid, box=box) for text, lid in labels)
    return encode_example(Item(name=f"{i}.jpg", width=4, height=4, image=image, objects=objs))


def _bad_sha(rec: bytes) -> bytes:
    start = rec.index(b"image/key/sha256")
    digest = rec[start:].split(b"\x0a\x40", 1)[1][:64]
    return rec.replace(digest, b"0" * 64)


def _file(path: Path, records: list[bytes], tail: bytes = b"") -> Path:
    with path.open("wb") as f:
        for rec in records:
            f.write(encode_record(rec))
        f.write(tail)
    return path


def _record_start(data: bytes | bytearray, record: int) -> tuple[int, int]:
    """The offset and data length of record ``record`` of a TFRecord file's bytes."""
    pos = 0
    for _ in range(record):
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 16 + length
    return pos, struct.unpack_from("<Q", data, pos)[0]


def _flip(path: Path, record: int, *, header: bool) -> None:
    """Flip a byte of a record's length CRC (``header``) or of its data CRC."""
    data = bytearray(path.read_bytes())
    pos, length = _record_start(data, record)
    data[pos + 9 if header else pos + 12 + length] ^= 0xFF
    path.write_bytes(bytes(data))


def _valid(n: int) -> list[bytes]:
    return [_example(i, [("cat", 1), ("dog", 2)][: 1 + i % 2]) for i in range(n)]


def _contradictions(n: int) -> list[bytes]:
    # "dog" is 2 early and 3 late; id 5 is "fox" then "owl": every later record says so again
    out = []
    for i in range(n):
        labels = [("cat", 1), ("dog", 2 if i < n // 2 else 3)]
        labels.append(("fox" if i % 7 else "owl", 5))
        out.append(_example(i, labels))
    return out


def _schema_problems(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        rec = _example(i, [("cat", 1)])
        if i % 5 == 2:
            rec = _bad_sha(rec)
        if i % 11 == 3:
            rec = b"\x0a\x03junk"  # not an Example
        if i % 13 == 4:
            rec = _example(i, [("cat", 3_000_000_000)])  # over int32
        if i == 41:  # more problems in one record than a worker sends back
            rec = _example(i, [("cat", 1)] * 9, box=Box(0.5, 0.2, 0.1, 1.5))
        out.append(rec)
    return out


def _many_pairs(n: int) -> list[bytes]:
    return [_example(i, [(f"c{i}-{k}", 1 + i * 8 + k) for k in range(8)]) for i in range(n)]


CASES: dict[str, Callable[[Path], Path]] = {
    "valid": lambda d: _file(d / "a.tfrecord", _valid(60)),
    "contradictions": lambda d: _file(d / "a.tfrecord", _contradictions(60)),
    "schema problems": lambda d: _file(d / "a.tfrecord", _schema_problems(60)),
    "many distinct pairs": lambda d: _file(d / "a.tfrecord", _many_pairs(40)),
    "truncated last record": lambda d: _file(
        d / "a.tfrecord", _valid(30), encode_record(_example(99, [("cat", 1)]))[:-7]
    ),
    "a few stray bytes at the end": lambda d: _file(d / "a.tfrecord", _valid(30), b"\x01\x02"),
}


def _data_crc(d: Path) -> Path:
    path = _file(d / "a.tfrecord", _contradictions(50))
    _flip(path, 23, header=False)
    return path


def _header(d: Path) -> Path:
    path = _file(d / "a.tfrecord", _schema_problems(50))
    _flip(path, 31, header=True)
    return path


CASES["a data CRC flipped mid-file"] = _data_crc
CASES["a header broken mid-file"] = _header


def _validate(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["validate", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


CASES["a SHA-256 mismatch in every record"] = lambda d: _file(
    d / "a.tfrecord", [_bad_sha(r) for r in _valid(40)]
)
# one range only, checked again by the parent: its records were counted as none
CASES["a single range checked again"] = lambda d: _file(d / "a.tfrecord", _many_pairs(3))
VALID = {"valid", "many distinct pairs", "a single range checked again"}
REDONE = {"schema problems", "many distinct pairs", "a single range checked again"}
"""Cases with a range whose verdict is over a send cap: the parent checks it itself."""


@pytest.fixture
def small_ranges(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Tiny ranges and send caps; counts the split runs and the ranges checked again."""
    monkeypatch.setattr(validate_cmd, "SPLIT_BYTES", 1)
    monkeypatch.setattr(checkunits, "UNIT_RECORDS", 4)
    monkeypatch.setattr(checkunits, "MAX_SENT", 6)
    monkeypatch.setattr(checkunits, "MAX_PAIRS", 12)
    seen = {"split": 0, "redo": 0}
    real_split, real_records = checkunits.checked_units, checkunits.range_records
    parent = os.getpid()

    def split(*args: Any, **kwargs: Any) -> Any:
        seen["split"] += 1
        return real_split(*args, **kwargs)

    def redo(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() == parent:  # the workers read every range through it too
            seen["redo"] += 1
        return real_records(*args, **kwargs)

    monkeypatch.setattr(checkunits, "checked_units", split)
    monkeypatch.setattr(checkunits, "range_records", redo)
    return seen


def _zipped(path: Path, *, method: int = zipfile.ZIP_STORED) -> Path:
    """The record file as the stored ``train.tfrecord`` member of a zip (as tfdrop writes)."""
    out = path.with_suffix(".zip")
    with zipfile.ZipFile(out, "w", compression=method) as zf:
        zf.write(path, "train.tfrecord")
    path.unlink()
    return out


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("flags", [(), ("--json",), ("--max-problems", "3")])
@pytest.mark.parametrize("container", ["bare", "zip"])
def test_ranges_say_what_one_pass_says(
    case: str,
    flags: tuple[str, ...],
    container: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    small_ranges: dict[str, int],
) -> None:
    path = CASES[case](tmp_path)
    if container == "zip":
        path = _zipped(path)
    one = _validate(path, capsys, "--jobs", "1", *flags)
    assert small_ranges == {"split": 0, "redo": 0}
    split = _validate(path, capsys, "--jobs", "2", *flags)
    assert split == one
    # a zip member is read in one pass (its CRC-32 is found bad before its last records)
    assert small_ranges["split"] == (container == "bare")
    assert (small_ranges["redo"] > 0) == (case in REDONE and container == "bare")
    assert one[0] == (0 if case in VALID else 1)


@pytest.mark.usefixtures("small_ranges")
def test_with_a_label_map_and_over_the_label_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path / "a.tfrecord", _contradictions(40) + _many_pairs(20))
    capped = ("--limit", "max_labels=30")
    assert _validate(path, capsys, "--jobs", "2", *capped) == _validate(
        path, capsys, "--jobs", "1", *capped
    )
    assert "max_labels" in _validate(path, capsys, "--jobs", "2", *capped)[1]
    (tmp_path / "map.pbtxt").write_text(
        'item { id: 1 name: "cat" }\nitem { id: 2 name: "dog" }\nitem { id: 5 name: "fox" }\n'
    )
    mapped = ("--label-map", str(tmp_path / "map.pbtxt"))
    one = _validate(path, capsys, "--jobs", "1", *mapped)
    assert _validate(path, capsys, "--jobs", "2", *mapped) == one
    assert one[0] == 1


@pytest.mark.parametrize("unit_records", [1, 3, 4096])
def test_the_ranges_cover_every_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit_records: int
) -> None:
    monkeypatch.setattr(checkunits, "UNIT_RECORDS", unit_records)
    jpegs = [b"\xff\xd8\xff\xda\x00\x02" + bytes(i * 37) + b"\xff\xd9" for i in range(50)]
    records = [_example(i, [("cat", 1)], image=jpegs[i]) for i in range(50)]
    path = _file(tmp_path / "a.tfrecord", records)
    size = path.stat().st_size
    with path.open("rb") as f:
        ranges = checkunits.FileRanges(f.fileno())
        units = list(checkunits.plan(ranges, size, 1 << 20))
        got = [
            rec
            for u in units
            for _, _, rec in checkunits.range_records(
                checkunits.RangeReader(ranges, u), DEFAULT_LIMITS
            )
        ]
    assert units[0].start == 0
    assert units[0].index == 0
    assert units[-1].stop is None  # the last range reads on to the end, whatever it is then
    assert all(a.stop == b.start for a, b in itertools.pairwise(units))
    assert len(units) in (-(-50 // unit_records), 50 // unit_records + 1)
    assert got == records


def test_a_sha_mismatch_is_found_by_the_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small_ranges: None
) -> None:
    records = _valid(20)
    records[13] = _bad_sha(records[13])
    path = _file(tmp_path / "a.tfrecord", records)
    code, out, _ = _validate(path, capsys, "--jobs", "2")
    assert code == 1
    assert "record 13" in out
    assert "sha256" in out
    assert hashlib.sha256(b"").hexdigest() not in out


_HOOKED = """
import os, signal, sys, time
from tfdrop.cli import checkunits, validate
validate.SPLIT_BYTES = 1
checkunits.UNIT_RECORDS = 2
real = checkunits.check_unit

def check_unit(unit):
    if unit.index >= 6:
        {action}
    return real(unit)

checkunits.check_unit = check_unit
sys.argv = ["tfdrop", "validate", sys.argv[1], "--jobs", "2"]
from tfdrop._console import main
sys.exit(main())
"""


Hooked = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def hooked(tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start ``validate --jobs 2`` with ``action`` run in a worker from its 4th range on, in a
    session of its own; whatever is left of that session is killed afterwards."""
    started: list[int] = []

    def start(action: str) -> subprocess.Popen[bytes]:
        path = _file(tmp_path / "a.tfrecord", _valid(40))
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOOKED.format(action=action), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(proc.pid)
        return proc

    yield start
    for sid in started:
        for pid in _session_alive(sid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_killed_fails_the_command_in_one_line(hooked: Hooked) -> None:
    proc = hooked("os.kill(os.getpid(), signal.SIGKILL)")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    error, hint = err.decode().splitlines()
    assert error.startswith("tfdrop: error: a worker process")
    assert hint == "tfdrop: hint: --jobs 1 checks the file in this process alone"
    assert b"Traceback" not in out + err


def test_ctrl_c_to_the_group_while_workers_check_is_one_line(
    tmp_path: Path, hooked: Hooked
) -> None:
    flag = tmp_path / "started"
    proc = hooked(f"open({str(flag)!r}, 'w').close(); time.sleep(30)")
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flag.exists()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.decode() == "tfdrop: interrupted\n"
    assert b"Traceback" not in out


def test_bytes_appended_after_the_plan_are_read_as_one_pass_reads_them(tmp_path: Path) -> None:
    records = _valid(10)
    path = _file(tmp_path / "a.tfrecord", records)
    size = path.stat().st_size
    more = _valid(13)[10:]
    with path.open("ab") as out:  # the file grows once the ranges are planned
        for rec in more:
            out.write(encode_record(rec))
        out.write(b"\x01\x02\x03")
    got: list[bytes] = []

    def read_all(fd: int) -> None:
        ranges = checkunits.FileRanges(fd)
        for unit in checkunits.plan(ranges, size, 1 << 20):
            reader = checkunits.RangeReader(ranges, unit)
            for _, _, rec in checkunits.range_records(reader, DEFAULT_LIMITS):
                got.append(rec)

    with path.open("rb") as f, pytest.raises(TruncatedRecordError) as caught:
        read_all(f.fileno())
    assert got == records + more
    assert caught.value.record == 13
    assert caught.value.offset == path.stat().st_size - 3


def test_a_straddling_record_is_copied_out_once(tmp_path: Path) -> None:
    """Decoding a big record fed in chunks holds it about twice (the assembled frame and the
    record), not three times (a bytearray's slice was a copy of its own)."""
    rec = bytes(24 << 20)
    framed = encode_record(rec)
    dec = RecordDecoder(max_record_size=64 << 20)
    tracemalloc.start()
    try:
        for i in range(0, len(framed), 4 << 20):
            dec.feed(memoryview(framed)[i : i + (4 << 20)])
            while (got := dec.next_record()) is not NEED_DATA:
                assert got == rec
                del got
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.3 * len(rec)


def _session_alive(sid: int) -> list[int]:
    """The processes still in session ``sid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists()


def _gone(sid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _session_alive(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _session_alive(sid)


@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
    (signal.SIGHUP, 129, "hung up"),
])  # fmt: skip
def test_a_stop_signal_with_a_worker_stopped_ends_at_once(
    tmp_path: Path, hooked: Hooked, sig: signal.Signals, code: int, said: str
) -> None:
    """A worker stopped (SIGSTOP) never answers: a stop signal to the parent still ends the
    run with its one line, and no process is left (SIGTERM waited forever on it)."""
    flag = tmp_path / "stopped"
    proc = hooked(f"open({str(flag)!r}, 'w').close(); os.kill(os.getpid(), signal.SIGSTOP)")
    _wait_for(flag)
    time.sleep(0.2)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode()) == (code, f"tfdrop: {said}\n")
    assert b"Traceback" not in out
    assert _gone(proc.pid)


def test_a_stopped_worker_dies_with_its_parent(tmp_path: Path, hooked: Hooked) -> None:
    flag = tmp_path / "stopped"
    proc = hooked(f"open({str(flag)!r}, 'w').close(); os.kill(os.getpid(), signal.SIGSTOP)")
    _wait_for(flag)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert _gone(proc.pid)  # its pipes would otherwise stay open for good


def test_a_problem_in_every_record_is_sent_back_not_checked_twice() -> None:
    """A range whose every record has a problem comes back with them all (an outside attack
    measured --jobs 2 1.5x slower than one pass when the parent checked such ranges again)."""
    assert checkunits.MAX_SENT >= checkunits.UNIT_RECORDS


def _swap_records(path: Path, a: int, b: int) -> None:
    """Swap two records of equal length in place: every record CRC still checks."""
    data = bytearray(path.read_bytes())
    (pa, la), (pb, lb) = _record_start(data, a), _record_start(data, b)
    assert la == lb
    n = 16 + la
    data[pa : pa + n], data[pb : pb + n] = data[pb : pb + n], data[pa : pa + n]
    path.write_bytes(bytes(data))


def test_a_zip_member_whose_crc_32_fails_is_refused_as_one_pass_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small_ranges: dict[str, int]
) -> None:
    """Records swapped inside a stored member pass their own CRC32Cs: only the member's
    CRC-32 catches it, found when its end is read: a zip member is checked in one pass."""
    records = [_example(i, [("cat", 1)]) for i in range(30)]
    path = _zipped(_file(tmp_path / "a.tfrecord", records))
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("train.tfrecord")
    with path.open("r+b") as f:  # swap two records inside the member's data
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        member = bytearray(f.read(info.compress_size))
        tmp = tmp_path / "m.tfrecord"
        tmp.write_bytes(bytes(member))
        _swap_records(tmp, 13, 17)
        f.seek(start)
        f.write(tmp.read_bytes())
    one = _validate(path, capsys, "--jobs", "1")
    split = _validate(path, capsys, "--jobs", "2")
    assert split == one
    assert small_ranges["split"] == 0  # ranges cannot say what one pass says here
    assert one[0] == 1
    assert "bad CRC-32" in one[1]


def test_a_deflated_member_is_checked_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small_ranges: dict[str, int]
) -> None:
    path = _zipped(_file(tmp_path / "a.tfrecord", _valid(20)), method=zipfile.ZIP_DEFLATED)
    assert _validate(path, capsys, "--jobs", "2")[0] == 0
    assert small_ranges["split"] == 0
