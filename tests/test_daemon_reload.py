"""SIGHUP reloads that change pipelines while their jobs run (found by the outside attack)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config

_P: dict[str, object] = {"name": "p", "drop": "in", "output": "out"}
_Q: dict[str, object] = {"name": "q", "drop": "in2", "output": "out2"}


def _reload(d: Daemon, config: Path, pipelines: list[dict[str, object]], n: int) -> None:
    write_config(config, pipelines, max_jobs=1)
    d.signal(signal.SIGHUP)
    d.wait_event("config_reloaded", count=n)


def _non_json(d: Daemon) -> list[str]:
    return [line for line in d.text().splitlines() if not line.startswith("{")]


@pytest.mark.parametrize(
    "away",
    [
        pytest.param([{**_P, "drop": "in-new"}, _Q], id="drop_folder_changed"),
        pytest.param([_Q], id="pipeline_removed"),
    ],
)
def test_a_pipeline_taken_away_and_back_while_its_job_runs_runs_that_job_once(
    tmp_path: Path, away: list[dict[str, object]]
) -> None:
    # the reopened pipeline took the slot its running job still held, "recovered" that
    # job, ran it twice and lost its only worker to a KeyError: later drops waited forever
    config = write_config(tmp_path / "tfdrop.toml", [_P, _Q], max_jobs=1)
    d = Daemon(config, tmp_path / "daemon.log")
    try:
        d.wait_event("daemon_ready")
        (tmp_path / "in" / "big.zip").write_bytes(tfrecord_zip(3000, tag="big"))
        d.wait_event("convert_started")
        _reload(d, config, away, 1)
        _reload(d, config, [_P, _Q], 2)
        closed = d.named("pipeline_closed")[0]
        assert (closed["pipeline"], closed["running"]) == ("p", 1)  # taken away mid-job
        d.wait_event("job_done", timeout=60)
        (tmp_path / "in" / "after.zip").write_bytes(tfrecord_zip(1, tag="after"))
        wait_until(lambda: "after.zip" in files(tmp_path / "in" / "done"), timeout=30)
        assert files(tmp_path / "in" / "done") == ["after.zip", "big.zip"]
        assert [n for n in files(tmp_path / "out") if n.endswith(".zip")] == [
            "after.zip",
            "big.zip",
        ]
        started = [e["source"] for e in d.named("job_started")]
        assert sorted(started) == ["after.zip", "big.zip"]
        assert not d.named("claim_recovered")
        drop = str(tmp_path / "in")
        opened = [e["instance"] for e in d.named("pipeline_opened") if e["drop"] == drop]
        assert len(opened) == 2
        assert opened[0] != opened[1]  # not the slot its job still used
    finally:
        assert d.stop() == 0
    assert _non_json(d) == []
    assert files(tmp_path / "in") == []
