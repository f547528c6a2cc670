"""``preview = N``: the daemon publishes ``<stem>.preview.html`` (the first N items of the
output) beside the report and before the archive; without the key, no page."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config


def _start(tmp_path: Path, **pipeline: object) -> Daemon:
    p: dict[str, object] = {"name": "main", "drop": "in", "output": "out"}
    p.update(pipeline)
    daemon = Daemon(write_config(tmp_path / "tfdrop.toml", [p]), tmp_path / "daemon.log")
    daemon.wait_event("daemon_ready")
    return daemon


def test_the_preview_page_is_published_before_the_archive(tmp_path: Path) -> None:
    daemon = _start(tmp_path, preview=2)
    out = tmp_path / "out"
    seen_archive_without_page: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # whenever the archive is visible, its page already is
        while not stop.is_set():
            names = files(out)
            if "drop.zip" in names and "drop.preview.html" not in names:
                seen_archive_without_page.append("drop.zip")
            stop.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        (tmp_path / "in" / "drop.zip").write_bytes(tfrecord_zip(5, image_size=32))
        daemon.wait_event("job_done")
        wait_until((out / "drop.zip").exists)
    finally:
        stop.set()
        watcher.join()
        assert daemon.stop() == 0
    assert seen_archive_without_page == []
    page = out / "drop.preview.html"
    assert page.stat().st_ctime_ns <= (out / "drop.zip").stat().st_ctime_ns
    text = page.read_text(encoding="utf-8")
    assert "tfrecord: 5 items, 10 objects, 2 labels" in text  # counted over the whole output
    assert text.count("<figure") == 2
    assert "a_00000.png" in text
    assert "a_00002.png" not in text
    assert not [n for n in files(out) if n.startswith(".")]  # no temp left


def test_without_the_key_no_preview_page_is_published(tmp_path: Path) -> None:
    daemon = _start(tmp_path)
    try:
        (tmp_path / "in" / "drop.zip").write_bytes(tfrecord_zip(2))
        daemon.wait_event("job_done")
    finally:
        assert daemon.stop() == 0
    assert files(tmp_path / "out") == ["drop.label_map.pbtxt", "drop.report.json", "drop.zip"]
