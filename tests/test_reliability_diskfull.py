"""Disk full: ENOSPC in the output folder and in the work folder.

Each test mounts a real small tmpfs (needs root, as CI runs; skipped otherwise, but failed
under ``CI=true``), fills it with a filler file so that the conversion cannot fit, and drops
an input into a running daemon. The job must hit ENOSPC, leave no partial file anywhere in
the output folder, keep its input claimed (not in ``done/`` nor ``failed/``), retry with a
growing backoff, and succeed once the filler is removed; the daemon never exits.
"""

from __future__ import annotations

import errno
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import mounted_tmpfs
from daemon_support import LABEL_MAP, Daemon, files, png, wait_until, write_config
from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item

KiB = 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "fs", "2m") as mnt:
        yield mnt


def _input(size: int = 600 * KiB) -> bytes:
    """A TFRecord zip whose images are incompressible (the archive is about ``size``): a real
    16x16 PNG with random bytes after it (readers check the header, not what follows)."""
    records = []
    for i in range(6):
        item = Item(
            name=f"img{i}.png",
            width=16,
            height=16,
            image=png(i) + os.urandom(size // 6),
            image_format="png",
            objects=(Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1),),
        )
        records.append(encode_record(encode_example(item)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("default.tfrecord", b"".join(records))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    return buf.getvalue()


def _fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` so that about ``leave`` bytes stay free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler.bin"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def _retries(daemon: Daemon) -> list[dict[str, object]]:
    return [e for e in daemon.named("job_retry_scheduled") if e.get("errno") == errno.ENOSPC]


def _check_full_then_freed(daemon: Daemon, drop: Path, out: Path, filler: Path, name: str) -> None:
    retries = wait_until(lambda: len(_retries(daemon)) >= 3 and _retries(daemon), timeout=60)
    delays = [float(str(e["delay_s"])) for e in retries]
    assert delays[1] > delays[0]  # backoff grows
    assert daemon.proc.poll() is None
    # no partial or temp file is visible in the output folder, the input is still claimed
    assert [p.name for p in out.iterdir()] == []
    assert files(drop / "done") == []
    assert files(drop / "failed") == []
    claimed = [p.name for p in (drop / ".tfdrop" / "work").rglob(name)]
    assert claimed == [name]
    filler.unlink()
    daemon.wait_event("job_done", timeout=60)
    stem = name.removesuffix(".zip")
    assert sorted(files(out)) == [f"{stem}.label_map.pbtxt", f"{stem}.report.json", f"{stem}.zip"]
    assert files(drop / "done") == [name]
    assert not list((drop / ".tfdrop" / "work").rglob(name))


def test_output_folder_full_keeps_the_input_retries_with_backoff_then_publishes(
    tmp_path: Path, tmpfs: Path
) -> None:
    out = tmpfs / "out"
    out.mkdir()
    drop = tmp_path / "in"
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": str(drop), "output": str(out)}],
        retry_base_seconds=0.3,
        retry_max_seconds=2.0,
    )
    data = _input()
    filler = _fill(tmpfs, leave=200 * KiB)  # the archive (~600 KiB) cannot fit
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (drop / "big.zip").write_bytes(data)
        _check_full_then_freed(daemon, drop, out, filler, "big.zip")
    finally:
        code = daemon.stop()
    assert code == 0


def test_work_folder_full_keeps_the_input_retries_with_backoff_then_publishes(
    tmp_path: Path, tmpfs: Path
) -> None:
    drop = tmpfs / "in"
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": str(drop), "output": str(out)}],
        retry_base_seconds=0.3,
        retry_max_seconds=2.0,
    )
    data = _input()
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        # room for the input but not for the archive written beside it in the work folder
        filler = _fill(tmpfs, leave=len(data) + 150 * KiB)
        tmp = drop / ".big.zip.part"
        tmp.write_bytes(data)
        tmp.rename(drop / "big.zip")
        _check_full_then_freed(daemon, drop, out, filler, "big.zip")
    finally:
        code = daemon.stop()
    assert code == 0
