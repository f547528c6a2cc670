"""Signals during a parallel conversion (real processes, real signals): the CLI cleans up
after SIGTERM as after Ctrl-C, Ctrl-C prints one line, and workers never outlive a killed
parent (all found by an outside attack: orphans stayed alive forever, holding the input)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from daemon_support import png, voc_xml


@pytest.fixture(scope="module")
def big_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOC zip that takes a few seconds to convert with two workers."""
    path = tmp_path_factory.mktemp("sig") / "voc.zip"
    image = png(3, size=256)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(8000):
            xml = voc_xml(i, ["cat", "dog"]).replace(">16<", ">256<")  # the image's size
            zf.writestr(f"Annotations/{i:04d}.xml", xml)
            zf.writestr(f"JPEGImages/{i:04d}.png", image)
    return path


def _start(src: Path, tmp: Path, *, group: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
    work = tmp / "tmpdir"
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work))
    cmd = [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord",
           "-o", str(tmp / "out" / "out.zip"), "--jobs", "2", "--quiet"]  # fmt: skip
    (tmp / "out").mkdir()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group
    )
    return proc, work


def _workers_running(proc: subprocess.Popen[bytes], work: Path) -> list[psutil.Process]:
    """Wait until the spool folder is made and both workers forked; the workers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        spools = list(work.glob(".tfdrop-spool-*"))
        if spools:
            kids = psutil.Process(proc.pid).children()
            if len(kids) >= 2:
                return kids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the pool never started")


def _gone(procs: list[psutil.Process], within: float = 10.0) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=within)
    for p in alive:
        p.kill()
    return not alive


def test_sigterm_cleans_up_like_ctrl_c(big_voc: Path, tmp_path: Path) -> None:
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.decode().strip() == "tfdrop: terminated"
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []  # no temp archive
    assert list(work.iterdir()) == []  # no spool folder


def test_ctrl_c_to_the_group_prints_one_line_and_leaves_nothing(
    big_voc: Path, tmp_path: Path
) -> None:
    proc, work = _start(big_voc, tmp_path, group=True)
    workers = _workers_running(proc, work)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.decode().strip() == "tfdrop: interrupted"  # no worker tracebacks
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []
    assert list(work.iterdir()) == []


def test_workers_end_when_their_parent_is_killed(big_voc: Path, tmp_path: Path) -> None:
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(workers), "a worker outlived its killed parent"
