"""Several daemons on one drop folder (hosts sharing a folder): each drop converted once."""

from __future__ import annotations

import json
from pathlib import Path

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config


def test_two_daemons_on_one_drop_folder_convert_each_input_exactly_once(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "tfdrop.toml", [{"name": "shared", "drop": "in", "output": "out"}]
    )
    a = Daemon(config, tmp_path / "a.log")
    a.wait_event("daemon_ready")
    b = Daemon(config, tmp_path / "b.log")
    b.wait_event("daemon_ready")
    try:
        instances = {
            a.named("pipeline_opened")[0]["instance"],
            b.named("pipeline_opened")[0]["instance"],
        }
        assert len(instances) == 2  # one lock per live instance: never a shared work folder
        n = 30
        for i in range(n):
            (tmp_path / "in" / f"d{i:02d}.zip").write_bytes(tfrecord_zip(2, tag=f"t{i}"))
        wait_until(lambda: len(files(tmp_path / "in" / "done")) == n, timeout=60)
        published = a.named("archive_published") + b.named("archive_published")
        assert len(published) == n
        outputs = sorted(Path(e["output"]).name for e in published)
        assert outputs == [f"d{i:02d}.zip" for i in range(n)]  # no -1 names: no double work
        assert len(files(tmp_path / "out")) == 3 * n
        assert a.named("archive_published")
        assert b.named("archive_published")
        for i in range(n):
            report = json.loads((tmp_path / "out" / f"d{i:02d}.report.json").read_text())
            assert report["items"] == 2
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_work_claimed_by_an_instance_that_died_is_adopted_by_a_live_one(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "tfdrop.toml",
        [{"name": "shared", "drop": "in", "output": "out"}],
        rescan_seconds=0.3,
    )
    daemons = [Daemon(config, tmp_path / "a.log"), Daemon(config, tmp_path / "b.log")]
    for d in daemons:
        d.wait_event("daemon_ready")
    (tmp_path / "in" / "big.zip").write_bytes(tfrecord_zip(2000, tag="adopt"))
    # whichever host claimed the drop dies mid-conversion
    wait_until(lambda: any(d.named("job_progress") for d in daemons), timeout=30)
    dead, live = daemons if daemons[0].named("job_progress") else daemons[::-1]
    dead.kill()
    try:
        assert live.wait_event("claim_adopted", timeout=10)
        live.wait_event("job_done", timeout=60)
        assert files(tmp_path / "out") == ["big.label_map.pbtxt", "big.report.json", "big.zip"]
        assert files(tmp_path / "in" / "done") == ["big.zip"]
        assert dead.named("archive_published") == []
        assert len(live.named("archive_published")) == 1
    finally:
        assert live.stop() == 0
