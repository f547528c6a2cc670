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

from conftest import mounted_tmpfs
from daemon_support import png, voc_xml
from tfdrop.cli.convert import _write_report
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


def _marked_old_run_folder(parent: Path, suffix: str) -> Path:
    folder = parent / f".tfdrop-run-{suffix}"
    folder.mkdir(parents=True)
    (folder / RUN_MARK).write_bytes(b"")
    return folder


def _voc_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Annotations/a.xml", voc_xml(0, ["cat"]))
        zf.writestr("JPEGImages/0000.png", png(0))
    return path


@pytest.mark.parametrize("held", ["label-map", "output"])
def test_the_sweep_spares_a_folder_holding_the_label_map_or_the_output(
    tmp_path: Path, held: str
) -> None:
    """A marked old folder in TMPDIR that held the --label-map, or the -o folder, was removed
    (the fifth outside attack)."""
    work = tmp_path / "tmp"
    folder = _marked_old_run_folder(work, "inuse123")
    (folder / "lm.pbtxt").write_text("item { id: 1 name: 'cat' }\n")
    _old(folder)
    src = _voc_zip(tmp_path / "in.zip")
    out, extra = tmp_path / "o.zip", ["--label-map", str(folder / "lm.pbtxt")]
    if held == "output":
        out, extra = folder / "o.zip", []
    cmd = [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o", str(out)]
    proc = subprocess.run(
        [*cmd, *extra], env={**os.environ, "TMPDIR": str(work)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    assert (folder / "lm.pbtxt").exists()


def test_a_report_that_does_not_fit_leaves_no_empty_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk left a 0-byte report beside the published archive; the report is written
    under a temp name and renamed, so the old one stays until the new one is whole."""
    with mounted_tmpfs(tmp_path / "fs", "64k") as fs:
        report = fs / "a.report.json"
        report.write_text('{"old": true}')
        filler = fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        code = _write_report(report, '{"new": true}' * 2000, fs / "a.zip")
        assert code == 1
        err = capsys.readouterr().err
        assert "cannot write the report" in err
        assert f"published as {fs / 'a.zip'}" in err
        assert report.read_text() == '{"old": true}'
        assert sorted(p.name for p in fs.iterdir()) == ["a.report.json", "filler"]
