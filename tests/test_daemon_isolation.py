"""Each job converts in a process of its own (tfdrop.daemon.isolate): a conversion that dies
fails its drop with a clear error file, nothing partial is published, and the service keeps
running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config
from test_spool import _voc
from tfdrop.convert import ConvertOptions, convert
from tfdrop.pool import default_jobs


def _job_processes(daemon: Daemon) -> list[psutil.Process]:
    """The conversion processes: children of the daemon's fork server."""
    out = []
    for child in psutil.Process(daemon.proc.pid).children():
        try:
            if "forkserver" in " ".join(child.cmdline()):
                out.extend(child.children())
        except psutil.Error:
            continue
    return out


def _daemon(tmp_path: Path, **settings: object) -> tuple[Daemon, Path, Path]:
    """A daemon of one pipeline (``in`` -> ``out``) with these ``[daemon]`` settings, started
    (wait for ``daemon_ready`` in the ``try`` that stops it); the daemon, its drop folder and
    its output folder."""
    pipeline = [{"name": "p", "drop": "in", "output": "out"}]
    config = write_config(tmp_path / "tfdrop.toml", pipeline, **settings)
    return Daemon(config, tmp_path / "daemon.log"), tmp_path / "in", tmp_path / "out"


def _drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


def test_a_conversion_process_killed_fails_its_drop_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    daemon, drop, out = _daemon(tmp_path, max_jobs=1)
    try:
        daemon.wait_event("daemon_ready")
        _drop(drop, "big.zip", tfrecord_zip(6000, tag="big"))
        victims = wait_until(lambda: _job_processes(daemon), timeout=60, step=0.005)
        for proc in victims:
            proc.send_signal(signal.SIGKILL)
        wait_until(lambda: "big.zip.error.json" in files(drop / "failed"), timeout=60)
        doc = json.loads((drop / "failed" / "big.zip.error.json").read_text())
        assert doc["kind"] == "worker_died"
        assert "SIGKILL" in doc["message"]
        assert doc["archive"] == "big.zip"
        assert not [n for n in files(out) if n.startswith("big")]  # nothing partial published
        # the service is still there and converts the next drop
        _drop(drop, "next.zip", tfrecord_zip(2, tag="next"))
        wait_until(lambda: "next.zip" in files(out), timeout=60)
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0


def test_a_killed_daemon_leaves_no_conversion_running(tmp_path: Path) -> None:
    # found by the outside attack: orphaned conversions ran on beside the restarted daemon
    # and wrote tracebacks into its log
    daemon, drop, _ = _daemon(tmp_path, max_jobs=1)
    try:
        daemon.wait_event("daemon_ready")
        _drop(drop, "big.zip", tfrecord_zip(6000, tag="big"))
        jobs = wait_until(lambda: _job_processes(daemon), timeout=60, step=0.005)
    finally:
        daemon.kill()
    wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in jobs), 60)
    # an orphan would have finished its archive in the job folder; a killed one did not
    assert not list((drop / ".tfdrop" / "work").rglob("archive.zip"))
    assert "Traceback" not in daemon.text()


def test_a_drop_that_grows_while_it_converts_is_not_published_from_the_part_read(
    tmp_path: Path,
) -> None:
    # found by the outside attack: a writer that kept the file open added to it after the
    # claim, and the archive of the first part was published
    import errno

    daemon, drop, _ = _daemon(tmp_path, max_jobs=1)
    try:
        daemon.wait_event("daemon_ready")
        _drop(drop, "grow.zip", tfrecord_zip(6000, tag="grow"))
        daemon.wait_event("convert_started")
        claimed = next((drop / ".tfdrop" / "work").rglob("grow.zip"))
        with claimed.open("ab") as f:  # the writer's open file descriptor, still writing
            f.write(b"more")
        hits = wait_until(
            lambda: [
                e for e in daemon.named("job_retry_scheduled") if e.get("errno") == errno.EAGAIN
            ],
            timeout=60,
        )
        assert "changed while it was converted" in str(hits[0]["error"])
        assert not daemon.named("archive_published")
    finally:
        assert daemon.stop() == 0


def _workers_of(daemon: Daemon) -> list[psutil.Process]:
    """The worker processes of the running conversions (``job_workers``)."""
    out = []
    for job in _job_processes(daemon):
        with contextlib.suppress(psutil.Error):
            out.extend(job.children())
    return out


def test_a_job_with_workers_publishes_the_bytes_one_process_writes(tmp_path: Path) -> None:
    src = _voc(tmp_path / "voc.zip", 400)
    want = tmp_path / "one.zip"
    convert(src, want, ConvertOptions(jobs=1))
    daemon, drop, out = _daemon(tmp_path, max_jobs=1, job_workers=2)
    try:
        daemon.wait_event("daemon_ready")
        drop.mkdir(exist_ok=True)
        shutil.copy2(src, drop / ".voc.zip.part")  # the same mtime: member times
        os.rename(drop / ".voc.zip.part", drop / "voc.zip")
        wait_until(lambda: "voc.zip" in files(out), timeout=60)
        assert [e["workers"] for e in daemon.named("convert_started")] == [min(2, default_jobs())]
        assert (out / "voc.zip").read_bytes() == want.read_bytes()
    finally:
        assert daemon.stop() == 0


def test_a_lone_drop_gets_every_core_by_default(tmp_path: Path) -> None:
    """``max_jobs = 2`` and no ``job_workers``: one drop alone is read with a worker per core
    (the shares of a burst: test_daemon_units)."""
    daemon, drop, out = _daemon(tmp_path, max_jobs=2)
    try:
        daemon.wait_event("daemon_ready")
        _drop(drop, "lone.zip", tfrecord_zip(50, tag="lone"))
        wait_until(lambda: "lone.zip" in files(out), timeout=60)
        assert [e["workers"] for e in daemon.named("convert_started")] == [default_jobs()]
    finally:
        assert daemon.stop() == 0


def test_a_killed_worker_fails_its_job_and_leaves_no_process(tmp_path: Path) -> None:
    if default_jobs() < 2:
        pytest.fail("this test needs 2 cores: a job's workers are capped at the cores")
    daemon, drop, out = _daemon(tmp_path, max_jobs=1, job_workers=2)
    try:
        daemon.wait_event("daemon_ready")
        _drop(drop, "big.zip", tfrecord_zip(20000, tag="big"))
        workers = wait_until(lambda: _workers_of(daemon), timeout=60, step=0.005)
        jobs = _job_processes(daemon)
        workers[0].send_signal(signal.SIGKILL)
        wait_until(lambda: "big.zip.error.json" in files(drop / "failed"), timeout=60)
        doc = json.loads((drop / "failed" / "big.zip.error.json").read_text())
        assert doc["kind"] == "worker_died"
        assert not [n for n in files(out) if n.startswith("big")]
        everyone = jobs + workers
        wait_until(lambda: not any(p.is_running() and p.status() != "zombie" for p in everyone))
        _drop(drop, "next.zip", tfrecord_zip(2, tag="next"))
        wait_until(lambda: "next.zip" in files(out), timeout=60)
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.text()
