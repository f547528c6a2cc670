"""Direct I/O for the output archive (tfdrop.archive.direct, tfdrop.archive.stored): the
bulk of a TFRecord member goes to the disk past the page cache, and the read-back
reads it back the same way. Not a byte may differ from buffered writing; file systems where
it does not pay keep buffered writes; a refused or short direct write finishes buffered; and
no descriptor outlives the sink."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from conftest import mounted_tmpfs, require_root
from test_readback import _archive, _check, _item, _written
from test_spool import _unzip_checks, _voc, write_parts
from tfdrop import convert as convert_module
from tfdrop.archive import ZipSink, direct, open_source
from tfdrop.archive.direct import ALIGN, AlignedReads, fs_type, open_for, open_read
from tfdrop.archive.stored import StoredWriter
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import ArchiveError, TfdropError
from tfdrop.readback import Written, validate_archive


def _local(path: Path) -> bool:
    return fs_type(str(path)) in direct.LOCAL


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def mounted_ext4(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    """A real ext4 of ``size_mb`` on a loop device at ``mountpoint`` (ENOSPC is real, and
    direct writes are used on it)."""
    require_root("mounting an ext4 image")
    image = mountpoint.with_suffix(".img")
    with open(image, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        image.unlink()


# --- where it is used -------------------------------------------------------------------------


def test_the_file_system_type_is_the_kernels_own(tmp_path: Path) -> None:
    want = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert fs_type(str(tmp_path)) == want


def test_mountinfo_paths_with_escapes_and_nested_mounts(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:5 / /mnt/my\\040share rw - nfs4 srv:/x rw\n"
        "3 1 0:6 / /mnt/my rw - tmpfs tmpfs rw\n"
        "4 3 8:2 / /mnt/my/disk rw - xfs /dev/sdb rw\n"
        "garbage line\n"
    )
    # fs_type resolves the path first: these paths do not exist, so realpath keeps them
    assert fs_type("/mnt/my share/a.zip", str(info)) == "nfs4"
    assert fs_type("/mnt/my/a.zip", str(info)) == "tmpfs"
    assert fs_type("/mnt/my/disk/a/b.zip", str(info)) == "xfs"
    assert fs_type("/mnt/mystery/a.zip", str(info)) == "ext4"  # not under /mnt/my
    assert fs_type("/x", str(tmp_path / "missing")) is None
    # a mount point whose name is not UTF-8 matches the path as os.readlink decodes it
    info.write_bytes(b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n5 1 0:7 / /mnt/\xff rw - nfs x rw\n")
    assert fs_type(os.fsdecode(b"/mnt/\xff/a.zip"), str(info)) == "nfs"


def test_a_tmpfs_output_keeps_buffered_writes(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "fs", "4m") as fs, open(fs / "out.zip", "wb") as f:
        assert open_for(f.fileno()) is None
        assert open_read(str(fs / "out.zip"), f.fileno()) is None


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_the_environment_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with open(tmp_path / "out.bin", "wb") as f:
        found = open_for(f.fileno())
        assert (found is not None) == _local(tmp_path)  # on by default where it pays
        if found is not None:
            os.close(found)
        monkeypatch.setenv("TFDROP_DIRECT_IO", value)
        assert open_for(f.fileno()) is None


def test_a_direct_descriptor_is_the_same_file(tmp_path: Path) -> None:
    with open(tmp_path / "out.bin", "wb") as f:
        fd = open_for(f.fileno())
        if fd is None:
            assert not _local(tmp_path)
            return
        try:
            assert os.path.samestat(os.fstat(fd), os.fstat(f.fileno()))
            assert fd != f.fileno()
        finally:
            os.close(fd)
        # a path that is now another file than the one open: no descriptor
        other = tmp_path / "other.bin"
        other.write_bytes(b"x")
        assert open_read(str(other), f.fileno()) is None


# --- the bytes --------------------------------------------------------------------------------


Op = tuple[str, int, int]  # ("w", length, seed) a write, ("r", offset, length) a range


def _ops(rng: random.Random) -> list[Op]:
    lengths = [1, ALIGN - 38, 2 * ALIGN, 2 * ALIGN - 1, ALIGN, 3 * ALIGN + 1, 0, 1_000_003]
    ops: list[Op] = []
    for n in lengths + [rng.randrange(1, 300_000) for _ in range(12)]:
        if rng.random() < 0.5:
            ops.append(("w", n, rng.randrange(1 << 30)))
        else:
            ops.append(("r", rng.randrange(1 << 20), n))
    return ops


def _stored(
    tmp_path: Path, name: str, ops: list[Op], *, chunk: int, use: bool
) -> tuple[bytes, bytes, StoredWriter]:
    """A zip whose stored member, after a 37-byte member (so it starts off a boundary), is
    ``ops`` through a :class:`StoredWriter` (direct if ``use``); the file's bytes, the
    member's, and the writer."""
    src = tmp_path / "src.bin"
    if not src.exists():
        src.write_bytes(random.Random(7).randbytes(3 << 20))
    data = src.read_bytes()
    path = tmp_path / name
    want = bytearray()
    zf = zipfile.ZipFile(path, "w")
    zf.writestr(zipfile.ZipInfo("first.txt"), b"h" * 37)  # a fixed date: runs compare
    member = zf.open(zipfile.ZipInfo("a.tfrecord"), "w", force_zip64=True)
    fd = open_for(member._fileobj.fileno()) if use else None  # type: ignore[attr-defined]
    assert (fd is not None) == (use and _local(tmp_path))
    w = StoredWriter(member, fd, chunk=chunk)
    try:
        with open(src, "rb") as s:
            for kind, a, b in ops:
                if kind == "w":
                    part = random.Random(b).randbytes(a)
                    assert w.write(part) == a
                else:
                    part = data[a : a + b]
                    w.append_ranges([(s.fileno(), a, b)], zlib.crc32(part))
                want += part
        w.close()
        zf.close()
    except BaseException:
        w.abort()
        fp, zf.fp = zf.fp, None  # as ZipSink.abort: no directory written into a failed zip
        assert fp is not None
        fp.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert zf.read("a.tfrecord") == want
    return path.read_bytes(), bytes(want), w


@pytest.mark.parametrize("chunk", [ALIGN, 3 * ALIGN, 1 << 20])
@pytest.mark.parametrize("seed", [1, 2])
def test_direct_and_buffered_members_are_the_same_bytes(
    tmp_path: Path, chunk: int, seed: int
) -> None:
    ops = _ops(random.Random(seed))
    got, _, w = _stored(tmp_path, "direct.zip", ops, chunk=chunk, use=True)
    assert w.wrote_direct == _local(tmp_path)
    assert not w.refused
    assert got == _stored(tmp_path, "plain.zip", ops, chunk=chunk, use=False)[0]


def test_a_stored_writers_buffer_is_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple"):
        StoredWriter(None, None, chunk=ALIGN + 1)  # type: ignore[arg-type]


Faulty = Callable[[Callable[..., int], int, memoryview, int], int]


def _stored_faulty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Faulty
) -> tuple[StoredWriter, bytes]:
    """:func:`_stored` with the direct descriptor's writes going through
    ``fault(real_pwrite, fd, buf, offset)`` (a fault injected: this machine's disks take every
    direct write); the writer, and whether the zip is the same bytes as written buffered."""
    if not _local(tmp_path):
        pytest.fail("the test folder must be on a local block file system (ext4 here)")
    ops = _ops(random.Random(5))
    want = _stored(tmp_path, "plain.zip", ops, chunk=64 * 1024, use=False)[0]
    real = os.pwrite

    def pwrite(fd: int, buf: memoryview, offset: int) -> int:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        return fault(real, fd, buf, offset) if flags & os.O_DIRECT else real(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    got, _, w = _stored(tmp_path, "faulty.zip", ops, chunk=64 * 1024, use=True)
    monkeypatch.undo()
    assert got == want
    return w, got


def test_a_refused_alignment_finishes_buffered_and_stays_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []

    def einval(real: Callable[..., int], fd: int, buf: memoryview, offset: int) -> int:
        refused.append(offset)  # a file system that wants another alignment
        raise OSError(errno.EINVAL, "Invalid argument")

    w, _ = _stored_faulty(tmp_path, monkeypatch, einval)
    assert w.refused
    assert not w.wrote_direct
    assert len(refused) == 1  # asked once, then never again


def test_a_short_direct_write_finishes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shorts: list[int] = []

    def short(real: Callable[..., int], fd: int, buf: memoryview, offset: int) -> int:
        shorts.append(offset)
        return real(fd, buf[:ALIGN], offset)  # a disk nearly full: one block goes in

    w, _ = _stored_faulty(tmp_path, monkeypatch, short)
    assert not w.refused
    assert w.wrote_direct
    assert len(shorts) > 10  # every full buffer tried direct again


def test_a_direct_write_error_is_the_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(real: Callable[..., int], fd: int, buf: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        _stored_faulty(tmp_path, monkeypatch, full)
    assert err.value.errno == errno.ENOSPC


def _direct_file(tmp_path: Path, size: int) -> tuple[bytes, int | None]:
    """A file of ``size`` random bytes and an O_DIRECT descriptor of it (None where the
    test folder is not on a local block file system: then there must be none)."""
    path = tmp_path / "f.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    with open(path, "rb") as f:
        fd = open_read(str(path), f.fileno())
    assert (fd is not None) == _local(tmp_path)
    return data, fd


def test_aligned_reads_give_any_range(tmp_path: Path) -> None:
    data, fd = _direct_file(tmp_path, 5 * ALIGN + 123)
    if fd is not None:
        reads = AlignedReads(fd, size=2 * ALIGN)
        try:
            rng = random.Random(3)
            cases = [(0, 1), (ALIGN - 1, 2), (ALIGN, ALIGN), (len(data) - 5, 100), (len(data), 9)]
            cases += [(rng.randrange(len(data)), rng.randrange(1, 4 * ALIGN)) for _ in range(200)]
            for offset, n in cases:
                view = memoryview(bytearray(n))
                got = reads.pread_into(view, offset)
                want = data[offset : offset + min(n, reads.size)]
                assert got == len(want), (offset, n)
                assert bytes(view[:got]) == want, (offset, n)
        finally:
            reads.close()


def test_aligned_reads_read_ahead_in_order_and_stop_cleanly(tmp_path: Path) -> None:
    data, fd = _direct_file(tmp_path, 40 * ALIGN + 17)
    path = tmp_path / "f.bin"
    if fd is not None:
        for step in (3 * ALIGN, 3 * ALIGN - 1, 7 * ALIGN + 5, 1):
            reads = AlignedReads(os.dup(fd), size=4 * ALIGN)
            out, offset = bytearray(), 0
            while True:
                view = memoryview(bytearray(step))
                got = reads.pread_into(view, offset)
                assert got is not None
                if got == 0:
                    break
                out += view[:got]
                offset += got
                if step == 1 and offset == 3 * ALIGN:  # closed mid-way, a read ahead running
                    break
            reads.close()
            assert bytes(out) == data[: len(out)]
            assert len(out) == (3 * ALIGN if step == 1 else len(data))
        os.close(fd)
    assert _fds_after_close(path)


def _fds_after_close(path: Path) -> bool:
    """No descriptor of ``path`` is still open in this process."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return False
    return True


# --- the archive ------------------------------------------------------------------------------


def test_a_sink_appending_direct_writes_a_checking_zip_and_closes_its_descriptor(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    parts = [os.urandom(n) for n in (5, 70_000, 1, 3 * ALIGN, 300_000)]
    spool.write_bytes(b"".join(parts))
    before = _fds()
    for name, fail in (("ok.zip", False), ("aborted.zip", True)):
        with (
            contextlib.suppress(RuntimeError),
            ZipSink(tmp_path / name) as sink,
            open(spool, "rb") as f,
        ):
            w = write_parts(sink, "a.tfrecord", f, parts, b"head", b"tail")
            if fail:
                raise RuntimeError("stop")  # a member left open: abort drops its buffer
            w.close()
            assert sink.wrote_direct == _local(tmp_path)
        assert _fds() == before
    _unzip_checks(tmp_path / "ok.zip")
    with zipfile.ZipFile(tmp_path / "ok.zip") as zf:
        assert zf.read("a.tfrecord") == b"head" + b"".join(parts) + b"tail"
    with open_source(tmp_path / "ok.zip", direct=True) as src, src.open("a.tfrecord") as m:
        assert m.read() == b"head" + b"".join(parts) + b"tail"
    assert _fds() == before


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_conversion_is_the_same_bytes_direct_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    src = _voc(tmp_path / "in.zip", 300)
    before = _fds()
    direct_used: list[bool] = []
    real = validate_archive

    def validate(out: Path, target: str, written: Written, *args: object, **kw: object) -> int:
        direct_used.append(written.direct)
        return real(out, target, written, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(convert_module, "validate_archive", validate)
    convert(src, tmp_path / "direct.zip", ConvertOptions(jobs=jobs))
    assert _fds() == before
    monkeypatch.setenv("TFDROP_DIRECT_IO", "0")
    convert(src, tmp_path / "buffered.zip", ConvertOptions(jobs=jobs))
    assert direct_used == [_local(tmp_path), False]  # a single process writes direct too
    assert (tmp_path / "direct.zip").read_bytes() == (tmp_path / "buffered.zip").read_bytes()


def test_the_direct_read_back_finds_a_byte_changed_on_the_disk(tmp_path: Path) -> None:
    out = _archive(tmp_path / "a.zip", [_item(f"{i}.jpg") for i in range(400)])
    with zipfile.ZipFile(out) as zf:
        info = zf.getinfo("train.tfrecord")
    raw = bytearray(out.read_bytes())
    head = raw[info.header_offset : info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(head[26:28], "little")
    start += int.from_bytes(head[28:30], "little")
    assert _check(out, replace(_written(400, 400), direct=True)) == 400
    raw[start + info.file_size // 2 + ALIGN] ^= 0x01  # past the first aligned block
    out.write_bytes(bytes(raw))
    with open_source(out, direct=True) as src:
        assert (getattr(src, "_direct", None) is not None) == _local(tmp_path)
    with pytest.raises(TfdropError):
        _check(out, replace(_written(400, 400), direct=True))


@pytest.mark.parametrize("change", ["cut", "rewrite"])
def test_a_zip_changed_under_a_direct_read_says_so(tmp_path: Path, change: str) -> None:
    path = tmp_path / "m.zip"
    data = os.urandom(6 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a", os.urandom(1 << 20))
        zf.writestr("b", data)
    for direct_read in (False, True):
        work = tmp_path / f"{direct_read}.zip"
        shutil.copyfile(path, work)
        with open_source(work, direct=direct_read) as src, src.open("b") as f:
            got = f.read(1 << 20)
            at = (2 << 20) + (1 << 20)  # within what the reads ahead already hold
            if change == "cut":
                os.truncate(work, at)
            else:
                with open(work, "r+b") as w:
                    w.seek(at)
                    w.write(b"\x00" if data[(1 << 20) + 4096] else b"\x01")
            with pytest.raises(ArchiveError, match="changed while it was read"):
                _read_rest(f)
        assert got == data[: 1 << 20]


def _read_rest(f: BinaryIO) -> None:
    while f.read(1 << 20):
        pass


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_full_ext4_output_folder_is_one_os_error_and_leaves_nothing(
    tmp_path: Path, jobs: int
) -> None:
    if shutil.which("mkfs.ext4") is None:
        pytest.fail("mkfs.ext4 (e2fsprogs) is needed: .ci/run installs it")
    src = _voc(tmp_path / "in.zip", 600)
    convert(src, tmp_path / "whole.zip", ConvertOptions(jobs=2))
    size = (tmp_path / "whole.zip").stat().st_size
    with mounted_ext4(tmp_path / "disk", 8) as disk:
        filler = disk / "filler"
        vfs = os.statvfs(disk)
        free = vfs.f_bfree * vfs.f_frsize  # root may use the reserved blocks too
        filler.write_bytes(b"x" * (free - size // 2))  # room for half the output
        before = sorted(disk.iterdir())
        with pytest.raises(OSError) as info:
            convert(src, disk / "out.zip", ConvertOptions(jobs=jobs), workdir=tmp_path)
        assert info.value.errno == errno.ENOSPC
        assert sorted(disk.iterdir()) == before  # no temp archive, nothing published
