"""An input rewritten while it is read is refused, by every source, whatever the rewrite
kept the same (size, mtime) and wherever in the read it lands.

Found by the second outside attack: a bare ``.tfrecord`` rewritten in place after it was
opened was mixed in unseen (the stamp was checked at open only), and a same-size rewrite
with its mtime put back (``os.utime``, ``touch -r``) passed the check altogether; a zip
rewritten in place failed, but on its CRC, as "corrupt".
"""

from __future__ import annotations

import os
import random
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tfdrop.archive import DirSource, FileSource, Source, ZipSource
from tfdrop.errors import ArchiveError

SIZE = 3 * 1024 * 1024  # past every read buffer, so the rewrite lands mid-read
OLD = random.Random(0).randbytes(SIZE)  # incompressible: a deflated zip stays this large


def _rewrite(path: Path, *, keep_mtime: bool) -> None:
    """Overwrite the middle of ``path`` in place (same size, a zip's directory untouched),
    optionally putting its mtime back."""
    before = path.stat()
    # File times come from the kernel's coarse clock (one tick, a few ms): wait until it has
    # passed the file's ctime, as any real rewrite after a drop was opened would have.
    while time.time_ns() < before.st_ctime_ns + 20_000_000:
        time.sleep(0.005)
    start, end = before.st_size // 2, before.st_size - 4096
    with open(path, "r+b") as f:
        f.seek(start)
        chunk = f.read(end - start)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_mtime_ns == before.st_mtime_ns


def _zip(tmp_path: Path) -> tuple[Source, Path]:
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("data.bin", OLD)
    return ZipSource(path), path


def _deflated_zip(tmp_path: Path) -> tuple[Source, Path]:
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.bin", OLD)
    return ZipSource(path), path


def _bare(tmp_path: Path) -> tuple[Source, Path]:
    path = tmp_path / "data.bin"
    path.write_bytes(OLD)
    return FileSource({"data.bin": path}, label=str(path)), path


def _folder(tmp_path: Path) -> tuple[Source, Path]:
    root = tmp_path / "drop"
    root.mkdir()
    (root / "data.bin").write_bytes(OLD)
    return DirSource(root), root / "data.bin"


SOURCES: dict[str, Callable[[Path], tuple[Source, Path]]] = {
    "stored-zip": _zip,
    "deflated-zip": _deflated_zip,
    "bare-file": _bare,
    "folder": _folder,
}


# a rewrite with its mtime put back moves only the ctime, as a chmod or a hard link does: a zip
# proves it by the member's CRC-32; a plain file has none (a documented limit, archive/plainfile.py)
CASES = [
    *((kind, False) for kind in SOURCES),
    ("stored-zip", True),
    ("deflated-zip", True),
]


@pytest.mark.parametrize(("kind", "keep_mtime"), CASES)
def test_a_rewrite_in_the_middle_of_a_streamed_read_is_refused(
    tmp_path: Path, kind: str, keep_mtime: bool
) -> None:
    src, path = SOURCES[kind](tmp_path)
    with src.open("data.bin") as f:
        first = f.read(64 * 1024)
        assert first == OLD[: len(first)]
        _rewrite(path, keep_mtime=keep_mtime)
        with pytest.raises(ArchiveError, match="changed while it was read") as info:
            f.read()
    assert info.value.member == "data.bin"


@pytest.mark.parametrize(
    ("kind", "keep_mtime"),
    [("stored-zip", False), ("bare-file", False), ("folder", False), ("stored-zip", True)],
)
def test_a_range_read_after_a_rewrite_is_refused(
    tmp_path: Path, kind: str, keep_mtime: bool
) -> None:
    src, path = SOURCES[kind](tmp_path)
    assert src.read_range("data.bin", 1000, 10) == OLD[1000:1010]
    _rewrite(path, keep_mtime=keep_mtime)
    with pytest.raises(ArchiveError, match="changed while it was read"):
        src.read_range("data.bin", 2000, 10)


@pytest.mark.parametrize("kind", list(SOURCES))
def test_an_untouched_input_reads_whole_and_in_ranges(tmp_path: Path, kind: str) -> None:
    src, _ = SOURCES[kind](tmp_path)
    with src.open("data.bin") as f:
        assert f.read() == OLD
    assert src.read_bytes("data.bin", max_size=SIZE) == OLD
    got = src.read_range("data.bin", 5, 7)
    assert got is None or got == OLD[5:12]


def test_a_bare_file_too_large_to_read_whole_is_refused_not_cut(tmp_path: Path) -> None:
    src, _ = _bare(tmp_path)
    with pytest.raises(ArchiveError, match="over the 1024-byte cap"):
        src.read_bytes("data.bin", max_size=1024)


def _touch_metadata(path: Path, how: str, tmp_path: Path) -> None:
    """What moves a file's ctime and nothing else (backup tools, permission fixes)."""
    before = path.stat().st_ctime_ns
    while time.time_ns() < before + 20_000_000:  # past the coarse clock's tick (see _rewrite)
        time.sleep(0.005)
    if how == "hard-link":
        os.link(path, tmp_path / "link")
    elif how == "hard-link-removed":
        os.link(path, tmp_path / "link")
        os.unlink(tmp_path / "link")
    elif how == "chmod":
        os.chmod(path, 0o600)
    else:  # renamed within its folder and back
        os.rename(path, path.with_name("moved"))
        os.rename(path.with_name("moved"), path)
    assert path.stat().st_ctime_ns != before  # the case is not vacuous


HOWS = ["hard-link", "hard-link-removed", "chmod", "rename"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("kind", list(SOURCES))
def test_a_metadata_change_mid_read_is_no_false_alarm(tmp_path: Path, kind: str, how: str) -> None:
    """The second attack's third finding: a hard link, a chmod or a rename during a run moved
    the ctime the stamp compared, and an untouched input failed as "changed"."""
    src, path = SOURCES[kind](tmp_path)
    with src.open("data.bin") as f:
        first = f.read(64 * 1024)
        _touch_metadata(path, how, tmp_path)
        assert first + f.read() == OLD
    (tmp_path / "link").unlink(missing_ok=True)
    _touch_metadata(path, how, tmp_path)  # and once more before a range read
    if kind != "deflated-zip":  # a deflated member has no ranges
        assert src.read_range("data.bin", 3000, 10) == OLD[3000:3010]
        assert src.read_range("data.bin", 9000, 10) == OLD[9000:9010]
    assert src.read_bytes("data.bin", max_size=SIZE) == OLD
