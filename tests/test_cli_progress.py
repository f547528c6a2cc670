"""The progress bar of ``tfdrop convert`` / ``validate``: drawn on a real terminal (a pty the
test opens, the real CLI in a subprocess), never in a pipe or with ``--json``."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
import zipfile
from pathlib import Path

from daemon_support import png, tfrecord_bytes

ITEMS = 120
_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), COLUMNS="100")


def _images_zip(path: Path, n: int = ITEMS) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"img/{i:04d}.png", png(i))
    path.write_bytes(buf.getvalue())
    return path


def _on_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the real CLI with stdin, stdout and stderr on a new pseudo-terminal (100x30)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfdrop", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=_ENV,
        close_fds=True,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(30)
    return code, out.decode("utf-8", "replace")


def _piped(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfdrop", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_ENV,
        timeout=60,
    )


def test_convert_on_a_terminal_shows_a_bar_with_the_total_and_a_percentage(
    tmp_path: Path,
) -> None:
    src = _images_zip(tmp_path / "shots.zip")
    code, screen = _on_pty(["convert", str(src), "--to", "tfrecord", "-o", "out.zip"], tmp_path)
    assert code == 0, screen
    assert re.search(r"\d+%\|", screen), screen  # the percentage and the bar
    assert re.search(rf"\b\d+/{ITEMS} \[", screen), screen  # done / total from the zip index
    assert "item/s" in screen or "s/item" in screen, screen  # the rate
    assert f"{ITEMS} items" in screen  # the summary follows the bar


def test_convert_in_a_pipe_or_quiet_draws_no_bar(tmp_path: Path) -> None:
    src = _images_zip(tmp_path / "shots.zip")
    piped = _piped(["convert", str(src), "--to", "tfrecord", "-o", "a.zip"], tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    assert "\r" not in piped.stdout
    assert "%|" not in piped.stdout
    assert f"{ITEMS} items" in piped.stdout

    code, screen = _on_pty(["convert", str(src), "--to", "tfrecord", "-o", "b.zip", "-q"], tmp_path)
    assert code == 0, screen
    assert "%|" not in screen
    assert "item/s" not in screen


def test_validate_on_a_terminal_counts_records_with_a_rate_and_not_with_json(
    tmp_path: Path,
) -> None:
    records = tmp_path / "train.tfrecord"
    records.write_bytes(tfrecord_bytes(50))
    code, screen = _on_pty(["validate", str(records)], tmp_path)
    assert code == 0, screen
    assert "record/s" in screen or "s/record" in screen, screen  # a counter with its rate
    assert "50 records in 1 files: valid" in screen

    code, screen = _on_pty(["validate", "--json", str(records)], tmp_path)
    assert code == 0, screen
    assert "record/s" not in screen
    assert "\r" not in screen.replace("\r\n", "\n")

    piped = _piped(["validate", str(records)], tmp_path)
    assert piped.returncode == 0
    assert piped.stderr == ""
    assert "record/s" not in piped.stdout


def _voc_zip(path: Path, n: int, bad_at: int) -> Path:
    """A VOC zip whose item ``bad_at`` has a box corner that is no number."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"JPEGImages/img{i:04d}.png", png(i))
            xmax = "zz" if i == bad_at else "8"
            zf.writestr(
                f"Annotations/img{i:04d}.xml",
                f"<annotation><filename>img{i:04d}.png</filename><size><width>16</width>"
                "<height>16</height><depth>3</depth></size><object><name>cat</name><bndbox>"
                f"<xmin>1</xmin><ymin>1</ymin><xmax>{xmax}</xmax><ymax>8</ymax></bndbox>"
                "</object></annotation>",
            )
    path.write_bytes(buf.getvalue())
    return path


def test_convert_failing_part_way_takes_the_bar_off_before_the_error(tmp_path: Path) -> None:
    src = _voc_zip(tmp_path / "bad.zip", 300, bad_at=250)
    code, screen = _on_pty(["convert", str(src), "--to", "tfrecord", "-o", "out.zip"], tmp_path)
    assert code == 1, screen
    assert "%|" in screen, screen  # the bar was drawn
    at = screen.index("tfdrop: error:")
    assert screen[at - 1] in "\r\n", repr(screen[at - 120 : at + 40])  # a line of its own
    assert "xmax" in screen[at:]
    assert "%|" not in screen[at:]  # and no bar drawn after it
