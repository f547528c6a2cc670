"""Atomic publication: readers never see partial files, failures leave no temp behind.

ENOSPC is produced for real on a 1 MiB tmpfs (needs root: CI runs as root, so there it must
not skip) and EACCES for real as an unprivileged user (setpriv when root, chmod otherwise).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import mounted_tmpfs, require_root
from tfdrop.archive import ZipSink
from tfdrop.publish import (
    NAME_MAX,
    atomic_path,
    atomic_write,
    cleanup_temps,
    copy_atomic,
    fsync_dir,
    is_temp_name,
    move_atomic,
    publish_no_clobber,
)

MiB = 1 << 20


def _need_root() -> None:
    require_root("tmpfs mount / setpriv")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, so ENOSPC is real."""
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mnt:
        yield mnt


class _Boom(Exception):
    pass


def _write_then_fail(final: Path) -> None:
    with atomic_write(final) as f:
        f.write(b"new but broken")
        raise _Boom


def _fill_path_then_fail(final: Path) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"x")
        raise _Boom


def _write_mib(final: Path, count: int) -> None:
    with atomic_write(final) as f:
        for _ in range(count):
            f.write(b"\xab" * MiB)


def test_the_final_name_appears_only_when_the_block_succeeds(tmp_path: Path) -> None:
    final = tmp_path / "out.zip"
    with atomic_write(final) as f:
        f.write(b"part one ")
        assert not final.exists()
        temps = [p.name for p in tmp_path.iterdir()]
        assert len(temps) == 1
        assert is_temp_name(temps[0])
        assert temps[0].startswith(".out.zip.tfdrop-")
        assert temps[0].endswith(".tmp")
        f.write(b"part two")
    assert final.read_bytes() == b"part one part two"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


def test_an_exception_removes_the_temp_and_keeps_the_old_file(tmp_path: Path) -> None:
    final = tmp_path / "out.zip"
    final.write_bytes(b"old")

    with pytest.raises(_Boom):
        _write_then_fail(final)
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]
    with pytest.raises(_Boom):
        _fill_path_then_fail(tmp_path / "b.zip")
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]


def test_overwrite_false_refuses_an_existing_name_and_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "out.zip"
    final.write_bytes(b"first")
    with pytest.raises(FileExistsError), atomic_write(final, overwrite=False) as f:
        f.write(b"second")
    assert final.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]
    with atomic_write(tmp_path / "new.zip", overwrite=False) as f:
        f.write(b"ok")
    assert (tmp_path / "new.zip").read_bytes() == b"ok"


def test_publish_no_clobber_moves_once_and_refuses_a_second_time(tmp_path: Path) -> None:
    a, b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    publish_no_clobber(a, dst)
    assert not a.exists()
    with pytest.raises(FileExistsError):
        publish_no_clobber(b, dst)
    assert b.read_bytes() == b"b"
    assert dst.read_bytes() == b"a"


def test_enospc_propagates_as_oserror_and_leaves_no_temp(tiny_fs: Path) -> None:
    with pytest.raises(OSError) as info:
        _write_mib(tiny_fs / "big.zip", 4)
    assert info.value.errno == errno.ENOSPC
    assert list(tiny_fs.iterdir()) == []
    with pytest.raises(OSError) as info2, atomic_path(tiny_fs / "big2.zip") as tmp:
        tmp.write_bytes(b"\xab" * (2 * MiB))
    assert info2.value.errno == errno.ENOSPC
    assert list(tiny_fs.iterdir()) == []
    # After a failure the folder is usable again: a small file publishes fine.
    with atomic_write(tiny_fs / "small") as f:
        f.write(b"ok")
    assert (tiny_fs / "small").read_bytes() == b"ok"


def test_copy_atomic_onto_a_full_filesystem_fails_cleanly(tiny_fs: Path, tmp_path: Path) -> None:
    src = tmp_path / "input.zip"
    src.write_bytes(os.urandom(2 * MiB))
    with pytest.raises(OSError) as info:
        copy_atomic(src, tiny_fs)
    assert info.value.errno == errno.ENOSPC
    assert list(tiny_fs.iterdir()) == []
    assert src.exists()


_EACCES_PROBE = """
import errno, sys
from tfdrop.publish import atomic_write
try:
    with atomic_write(sys.argv[1]) as f:
        f.write(b"x")
except PermissionError as exc:
    sys.exit(0 if exc.errno == errno.EACCES else 3)
sys.exit(2)
"""


def test_eacces_propagates_as_permission_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv is needed to drop root for this test")
        os.chmod(tmp_path, 0o755)
        locked.chmod(0o755)  # root-owned: not writable by nobody
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        result = subprocess.run(
            [*cmd, sys.executable, "-c", _EACCES_PROBE, str(locked / "out.zip")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    else:
        locked.chmod(0o555)
        try:
            with pytest.raises(PermissionError), atomic_write(locked / "out.zip") as f:
                f.write(b"x")
        finally:
            locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_copy_and_move_atomic_publish_whole_files(tmp_path: Path) -> None:
    src = tmp_path / "in" / "drop.zip"
    src.parent.mkdir()
    body = os.urandom(3 * MiB + 5)
    src.write_bytes(body)
    out = tmp_path / "out"
    out.mkdir()
    copied = copy_atomic(src, out, "copy.zip")
    assert copied == out / "copy.zip"
    assert copied.read_bytes() == body
    moved = move_atomic(src, out)
    assert moved == out / "drop.zip"
    assert moved.read_bytes() == body
    assert not src.exists()
    other = tmp_path / "in" / "drop.zip"
    other.write_bytes(b"again")
    with pytest.raises(FileExistsError):
        move_atomic(other, out, overwrite=False)
    assert other.exists()


def test_move_atomic_across_filesystems_copies_then_unlinks(tiny_fs: Path, tmp_path: Path) -> None:
    src = tmp_path / "done.zip"
    src.write_bytes(b"z" * 1000)
    moved = move_atomic(src, tiny_fs)
    assert moved.read_bytes() == b"z" * 1000
    assert not src.exists()
    assert [p.name for p in tiny_fs.iterdir()] == ["done.zip"]


def test_cleanup_removes_only_our_leftover_temps(tmp_path: Path) -> None:
    leftovers = [tmp_path / ".a.zip.tfdrop-0a1b2c.tmp", tmp_path / ".b.tfrecord.tfdrop-ffffff.tmp"]
    keep = [
        tmp_path / "a.zip",
        tmp_path / ".a.zip.abc123",  # someone else's temp name
        tmp_path / "x.tfdrop-000000.tmp",  # not a dot name
        tmp_path / ".partial.tmp",
    ]
    for p in leftovers + keep:
        p.write_bytes(b"x")
    (tmp_path / ".dir.tfdrop-000000.tmp").mkdir()  # not a file: left alone
    removed = cleanup_temps(tmp_path)
    assert sorted(removed) == sorted(leftovers)
    assert all(p.exists() for p in keep)


def test_cleanup_min_age_spares_a_live_temp(tmp_path: Path) -> None:
    old = tmp_path / ".old.zip.tfdrop-aaaaaa.tmp"
    live = tmp_path / ".live.zip.tfdrop-bbbbbb.tmp"
    old.write_bytes(b"x")
    live.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert cleanup_temps(tmp_path, min_age=600) == [old]
    assert live.exists()


def test_a_killed_writer_leaves_only_a_temp_that_cleanup_removes(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from tfdrop.publish import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write(b'x' * 100000); f.flush()\n"
        "    print('writing', flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    final = tmp_path / "out.zip"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(final)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == -9
    assert "writing" in proc.stdout
    assert not final.exists()
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1
    assert is_temp_name(names[0])
    assert len(cleanup_temps(tmp_path)) == 1
    assert list(tmp_path.iterdir()) == []


def test_cleanup_never_takes_a_temp_a_live_writer_holds_however_old(tmp_path: Path) -> None:
    """The CLI sweeps its output folder when it starts: another run's temp archive in the
    same folder is held (flock) while written, so it is spared whatever its mtime."""
    script = (
        "import sys, time\n"
        "from tfdrop.publish import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    f.write(b'done')\n"
    )
    final = tmp_path / "out.zip"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(final)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline() == "writing\n"
    (tmp,) = tmp_path.iterdir()
    an_hour_ago = time.time() - 3600
    os.utime(tmp, (an_hour_ago, an_hour_ago))
    assert cleanup_temps(tmp_path, min_age=600) == []
    proc.stdin.write("\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert final.read_bytes() == b"done"


def test_fsync_dir_accepts_a_folder_and_rejects_a_missing_one(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def _zip_too_big(final: Path) -> None:
    with atomic_path(final) as tmp, ZipSink(tmp) as sink:
        sink.write_member("label_map.pbtxt", b"item {}\n", compress=True)
        with sink.open_member("default.tfrecord", compress=False) as w:
            for _ in range(4):
                w.write(os.urandom(MiB))


def test_a_zip_that_runs_out_of_space_fails_with_enospc_and_no_temp(tiny_fs: Path) -> None:
    with pytest.raises(OSError) as info:
        _zip_too_big(tiny_fs / "out.zip")
    assert info.value.errno == errno.ENOSPC
    assert list(tiny_fs.iterdir()) == []


def test_a_final_name_near_name_max_still_gets_a_temp_name_that_fits(tmp_path: Path) -> None:
    final = tmp_path / ("x" * 250 + ".zip")
    with atomic_path(final) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX
        assert is_temp_name(tmp.name)
        tmp.write_bytes(b"data")
    assert final.read_bytes() == b"data"
    assert cleanup_temps(tmp_path) == []
