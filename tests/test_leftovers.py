"""What killed runs leave, and what the next run may remove: only what tfdrop made, never a
live run's, never the user's (an outside attack had a run delete the input it was given, a
user's folder named ``.tfdrop-run-mydata`` and files named like our temps)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from daemon_support import png, voc_xml
from tfdrop.leftovers import RUN_MARK, run_folder, sweep_run_folders
from tfdrop.publish import cleanup_temps, is_own_temp


def _old(path: Path) -> Path:
    t = time.time() - 3600
    os.utime(path, (t, t), follow_symlinks=False)
    return path


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        (".a.zip.tfdrop-0a1b2c.tmp", True),
        (".3f2a9c1d.tfdrop-ffffff.tmp", True),  # a long name stands in as its hash
        (".notes.tfdrop-abc.tmp", False),
        (".x.tfdrop-.tmp", False),
        (".mydata.tfdrop-old.tmp", False),
        (".a.zip.tfdrop-0A1B2C.tmp", False),
        (".tfdrop-0a1b2c.tmp", False),  # no name before the mark
        ("a.zip.tfdrop-0a1b2c.tmp", False),
    ],
)
def test_only_our_exact_temp_shape_is_ours(name: str, ours: bool) -> None:
    assert is_own_temp(name) is ours


def test_cleanup_never_removes_the_input_or_the_label_map(tmp_path: Path) -> None:
    src = tmp_path / ".dataset.zip.tfdrop-0a1b2c.tmp"
    src.write_bytes(b"the input")
    labels = tmp_path / ".labels.pbtxt.tfdrop-abcdef.tmp"
    labels.write_bytes(b"item {}")
    leftover = tmp_path / ".out.zip.tfdrop-123456.tmp"
    leftover.write_bytes(b"")
    for p in (src, labels, leftover):
        _old(p)
    assert cleanup_temps(tmp_path, keep=[src, labels]) == [leftover]
    assert src.read_bytes() == b"the input"
    assert labels.exists()


def _run_dir(parent: Path, suffix: str = "abcd1234", *, marked: bool = True) -> Path:
    folder = parent / f".tfdrop-run-{suffix}"
    folder.mkdir()
    (folder / "spool.bin").write_bytes(b"x")
    if marked:
        (folder / RUN_MARK).write_bytes(b"")
    return _old(folder)


def test_the_sweep_takes_only_marked_unheld_run_folders(tmp_path: Path) -> None:
    dead = _run_dir(tmp_path, "deadrun1")
    unmarked = _run_dir(tmp_path, "nomark12", marked=False)
    user = tmp_path / ".tfdrop-run-mydata"
    user.mkdir()
    (user / "keep.txt").write_text("precious")
    (user / RUN_MARK).write_bytes(b"")
    _old(user)
    target = tmp_path / "data"
    target.mkdir()
    (target / "f").write_text("x")
    link = tmp_path / ".tfdrop-run-link1234"
    link.symlink_to(target)
    assert sweep_run_folders(tmp_path) == [dead]
    assert unmarked.exists()
    assert (user / "keep.txt").read_text() == "precious"
    assert (target / "f").exists()
    assert link.is_symlink()


def test_the_sweep_never_takes_a_folder_holding_the_input(tmp_path: Path) -> None:
    folder = _run_dir(tmp_path, "input123")
    src = folder / "input.zip"
    src.write_bytes(b"x")
    assert sweep_run_folders(tmp_path, keep=[src]) == []
    assert sweep_run_folders(tmp_path, keep=[folder]) == []
    assert src.exists()


def test_a_live_run_folder_is_never_taken(tmp_path: Path) -> None:
    with run_folder(tmp_path) as live:
        _old(live)
        assert sweep_run_folders(tmp_path) == []
        assert live.is_dir()
    assert not live.exists()


def test_converting_an_input_named_like_a_leftover_keeps_it(tmp_path: Path) -> None:
    """The run's own cleanup deleted its input before opening it."""
    src = tmp_path / ".dataset.tfdrop-0a1b2c.tmp"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("Annotations/a.xml", voc_xml(0, ["cat"]))
        zf.writestr("JPEGImages/0000.png", png(0))
    _old(src)
    out = tmp_path / "o.zip"
    subprocess.run(
        [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert src.exists()
    assert out.exists()
