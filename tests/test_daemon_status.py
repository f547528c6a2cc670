"""Watching a running daemon: ``tfdrop status``, the status file, and the Prometheus metrics.

A real daemon process converts real drops; a conversion is held still with SIGSTOP (its
process, found with psutil) so that the status can be read while it runs and others wait.
The retry is a real OSError (the output folder moved away with ``create = false``), the failure
real bad data (a CRC mismatch). The metrics file and the HTTP answers are parsed with
prometheus_client's own parser.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_support import (
    Daemon,
    conversion_process,
    files,
    tfrecord_bytes,
    tfrecord_zip,
    wait_until,
    write_config,
)
from tfdrop.config import load_config, parse_config
from tfdrop.daemon.metrics import MAX_CONNECTIONS
from tfdrop.daemon.status import LISTED
from tfdrop.daemon.survey import HEARTBEAT_SECONDS, survey
from tfdrop.errors import ConfigError

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


def _corrupt() -> bytes:
    data = bytearray(tfrecord_bytes(2, tag="x"))
    data[40] ^= 0xFF  # inside the first record's payload: a data CRC mismatch
    return bytes(data)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfdrop", "status", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _status_json(config: Path) -> dict[str, Any]:
    result = _cli(config, "--json")
    assert result.returncode == 0, result.stderr
    (pipeline,) = json.loads(result.stdout)["pipelines"]
    assert isinstance(pipeline, dict)
    return pipeline


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Daemon]]:
    config = write_config(
        tmp_path / "tfdrop.toml",
        [{"name": "main", "drop": "in", "output": "out", "create": False}],
        max_jobs=1,
        status_seconds=0.05,
        metrics_file="tfdrop.prom",
    )
    for name in ("in", "out"):
        (tmp_path / name).mkdir()
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_event("daemon_ready")
    yield config, daemon
    if daemon.proc.poll() is None:
        assert daemon.stop() == 0


def _held_with_progress(daemon: Daemon, cfg: Any) -> tuple[psutil.Process, dict[str, Any]]:
    """Step the conversion in slices until the status file shows its first items; it is left
    stopped (SIGSTOP), so nothing it says changes while the test reads it."""
    proc = wait_until(lambda: conversion_process(daemon), timeout=60, step=0.005)
    proc.suspend()

    def progressed() -> dict[str, Any] | None:
        (claim,) = survey(cfg)["claimed"]
        if claim["state"] == "running" and claim["items"]:
            return dict(claim)
        proc.resume()
        time.sleep(0.02)  # a slice of work
        proc.suspend()
        return None

    claim: dict[str, Any] = wait_until(progressed, timeout=60, step=0.2)
    return proc, claim


def test_status_shows_the_running_job_with_progress_and_the_drops_waiting_behind_it(
    setup: tuple[Path, Daemon],
) -> None:
    config, daemon = setup
    cfg = load_config(config).pipelines[0]
    drop = cfg.drop
    _drop(drop, "big.zip", tfrecord_zip(3000, tag="big", image_size=8))
    proc, claim = _held_with_progress(daemon, cfg)
    try:
        assert claim["name"] == "big.zip"
        assert claim["instance"].endswith("-0")
        assert claim["items"] >= 1
        assert claim["claimed_at"] - 1 <= claim["started_at"] <= time.time()
        _drop(drop, "w1.zip", tfrecord_zip(2, tag="w1"))
        _drop(drop, "w2.zip", tfrecord_zip(2, tag="w2"))
        # max_jobs = 1: both settle and wait for the one worker
        wait_until(lambda: all(d["queued"] for d in _status_json(config)["waiting"]["drops"]))
        status = _status_json(config)
        assert status["daemon"] == "running"
        assert [d["name"] for d in status["waiting"]["drops"]] == ["w1.zip", "w2.zip"]
        (running,) = status["claimed"]
        assert (running["name"], running["state"]) == ("big.zip", "running")
        assert running["job"] == claim["job"]
        assert running["started_at"].endswith("Z")
        table = _cli(config)
        assert table.returncode == 0, table.stderr
        assert "daemon:   running" in table.stdout
        assert "waiting:  2" in table.stdout
        assert f"big.zip  job {claim['job']}  running: " in table.stdout
    finally:
        proc.resume()
    wait_until(lambda: len(files(drop / "done")) == 3, timeout=60)
    done = wait_until(lambda: (s := _status_json(config))["counts"]["published"] == 3 and s)
    assert done["waiting"]["count"] == 0
    assert done["claimed"] == []
    assert {d["name"] for d in done["done"]["recent"]} == {"big.zip", "w1.zip", "w2.zip"}
    assert {d["status"] for d in done["done"]["recent"]} == {"published"}


def test_status_and_metrics_tell_retries_failures_and_counts_and_survive_the_stop(
    setup: tuple[Path, Daemon], tmp_path: Path
) -> None:
    config, daemon = setup
    drop, out = tmp_path / "in", tmp_path / "out"
    _drop(drop, "bad.tfrecord", _corrupt())
    daemon.wait_event("job_failed")
    _drop(drop, "ok.zip", tfrecord_zip(3, tag="ok"))
    wait_until(lambda: "ok.zip" in files(out))
    os.rename(out, tmp_path / "out.aside")  # create = false: an OSError, retried
    _drop(drop, "later.zip", tfrecord_zip(4, tag="later"))

    def retrying() -> dict[str, Any] | None:
        claims = _status_json(config)["claimed"]
        return claims[0] if claims and claims[0]["state"] == "retrying" else None

    claim = wait_until(retrying, timeout=30)
    assert claim["name"] == "later.zip"
    assert claim["kind"] == "os_error"
    assert "output folder is missing" in claim["message"]
    assert claim["next_attempt_at"].endswith("Z")
    assert claim["attempt"] >= 1
    status = _status_json(config)
    (failed,) = status["failed"]["recent"]
    assert failed["name"] == "bad.tfrecord"
    assert failed["kind"] == "crc_mismatch"
    assert failed["hint"]
    assert status["failed"]["count"] == 1
    table = _cli(config).stdout
    assert "later.zip  job " in table
    assert "retrying (attempt " in table
    assert "bad.tfrecord  crc_mismatch: " in table
    assert "hint: " in table

    os.rename(tmp_path / "out.aside", out)
    wait_until(lambda: "later.zip" in files(out), timeout=30)
    retries = [e for e in daemon.named("job_retry_scheduled") if e["reason"] == "retry"]
    samples = wait_until(
        lambda: (
            (s := _samples((tmp_path / "tfdrop.prom").read_text()))
            and _value(s, "tfdrop_drops_published_total", pipeline="main") == 2
            and s
        )
    )
    assert _value(samples, "tfdrop_drops_failed_total", pipeline="main", kind="crc_mismatch") == 1
    assert _value(samples, "tfdrop_drops_seen_total", pipeline="main") == 3
    assert _value(samples, "tfdrop_drops_taken_total", pipeline="main") == 3
    assert _value(samples, "tfdrop_drops_duplicate_total", pipeline="main") == 0
    assert _value(samples, "tfdrop_jobs_retried_total", pipeline="main") == len(retries)
    assert _value(samples, "tfdrop_items_converted_total", pipeline="main") == 7
    assert _value(samples, "tfdrop_objects_converted_total", pipeline="main") == 14
    reports = [json.loads((out / f"{n}.report.json").read_text()) for n in ("ok", "later")]
    sizes = sum(r["input"]["size"] for r in reports)
    assert _value(samples, "tfdrop_input_bytes_total", pipeline="main") == sizes
    archives = sum((out / f"{n}.zip").stat().st_size for n in ("ok", "later"))
    assert _value(samples, "tfdrop_output_bytes_total", pipeline="main") == archives
    jobs = _value(
        samples, "tfdrop_job_duration_seconds_count", pipeline="main", outcome="published"
    )
    assert jobs == 2
    assert _value(samples, "tfdrop_queue_depth", pipeline="main") == 0
    last = _value(samples, "tfdrop_last_success_timestamp_seconds", pipeline="main")
    assert last >= _value(samples, "tfdrop_process_start_time_seconds")

    assert daemon.stop() == 0
    stopped = _status_json(config)
    assert stopped["daemon"] == "not running"
    assert stopped["instances"][0]["why"].startswith("stopped at ")
    assert (stopped["counts"]["published"], stopped["counts"]["failed"]) == (2, 1)
    assert stopped["counts"]["retried"] == len(retries)
    assert (stopped["done"]["count"], stopped["failed"]["count"]) == (2, 1)
    assert "daemon:   not running" in _cli(config).stdout


def test_status_of_a_killed_daemon_says_its_pid_is_gone_and_its_claim_waits_for_a_restart(
    setup: tuple[Path, Daemon], tmp_path: Path
) -> None:
    config, daemon = setup
    _drop(tmp_path / "in", "big.zip", tfrecord_zip(3000, tag="big", image_size=8))
    proc = wait_until(lambda: conversion_process(daemon), timeout=60, step=0.005)
    proc.suspend()
    wait_until(lambda: _status_json(config)["claimed"][0]["state"] == "running")
    pid = daemon.proc.pid
    daemon.kill()
    status = _status_json(config)
    assert status["daemon"] == "not running"
    assert f"pid {pid} is gone" in status["instances"][0]["why"]
    (claim,) = status["claimed"]
    assert (claim["name"], claim["state"]) == ("big.zip", "claimed")
    assert "starts again" in claim["note"]
    assert "daemon:   not running" in _cli(config).stdout


def test_metrics_are_served_on_a_loopback_port_and_on_a_unix_socket(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    port = _free_port()
    pipelines: list[dict[str, Any]] = [{"name": "p", "drop": "in", "output": "out"}]
    tcp_config = write_config(tmp_path / "tcp.toml", pipelines, metrics_listen=f"127.0.0.1:{port}")
    daemon = Daemon(tcp_config, tmp_path / "tcp.log")
    try:
        daemon.wait_event("daemon_ready")
        _drop(tmp_path / "in", "a.zip", tfrecord_zip(2, tag="a"))

        def scraped() -> Samples:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/metrics")
                answer = conn.getresponse()
                assert answer.status == 200
                return _samples(answer.read().decode())
            finally:
                conn.close()

        # the archive is out before the job's outcome is counted: wait for the count
        wait_until(lambda: _value(scraped(), "tfdrop_drops_published_total", pipeline="p") == 1)
        assert "a.zip" in files(tmp_path / "out")
    finally:
        assert daemon.stop() == 0

    sock_path = tmp_path / "metrics.sock"
    unix_config = write_config(tmp_path / "unix.toml", pipelines, metrics_listen=str(sock_path))
    daemon = Daemon(unix_config, tmp_path / "unix.log")
    try:
        daemon.wait_event("daemon_ready")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            reply = b"".join(iter(lambda: s.recv(65536), b""))
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK")
        samples = _samples(body.decode())
        # a new process counts from zero; the pipeline's series exist before any drop
        assert _value(samples, "tfdrop_drops_published_total", pipeline="p") == 0
    finally:
        assert daemon.stop() == 0
    assert not sock_path.exists()


@pytest.mark.parametrize("address", ["0.0.0.0:9108", ":9108", "10.1.2.3:9108", "[::]:9108"])
def test_metrics_listen_on_a_non_loopback_address_is_a_config_error(address: str) -> None:
    text = f'[daemon]\nmetrics_listen = "{address}"\n[[pipeline]]\ndrop = "a"\noutput = "b"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert info.value.key == "daemon.metrics_listen"
    assert "not a loopback address" in str(info.value)


def test_status_with_the_daemon_never_started_lists_the_folders(tmp_path: Path) -> None:
    config = write_config(tmp_path / "t.toml", [{"name": "p", "drop": "in", "output": "out"}])
    (tmp_path / "in" / "failed").mkdir(parents=True)
    _drop(tmp_path / "in", "new.zip", b"not yet looked at")
    (tmp_path / "in" / "failed" / "old.zip").write_bytes(b"x")
    error = {"kind": "bad_zip", "message": "not a zip", "hint": "export it again"}
    (tmp_path / "in" / "failed" / "old.zip.error.json").write_text(json.dumps(error))
    status = _status_json(config)
    assert status["daemon"] == "never started"
    assert [d["name"] for d in status["waiting"]["drops"]] == ["new.zip"]
    (failed,) = status["failed"]["recent"]
    assert (failed["name"], failed["kind"], failed["hint"]) == (
        "old.zip",
        "bad_zip",
        "export it again",
    )
    assert _cli(config, "--pipeline", "nope").returncode == 1


def test_a_metrics_file_that_cannot_be_written_is_logged_once_and_written_once_it_can(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": "in", "output": "out"}],
        status_seconds=0.05,
        metrics_file="textfile/tfdrop.prom",
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("status_write_failed")
        _drop(tmp_path / "in", "a.zip", tfrecord_zip(2, tag="a"))
        # the status file is written all the same
        wait_until(lambda: _status_json(config)["counts"]["published"] == 1)
        (tmp_path / "textfile").mkdir()
        daemon.wait_event("status_write_recovered")
        samples = _samples((tmp_path / "textfile" / "tfdrop.prom").read_text())
        assert _value(samples, "tfdrop_drops_published_total", pipeline="p") == 1
        assert len(daemon.named("status_write_failed")) == 1
    finally:
        assert daemon.stop() == 0


def test_metrics_keys_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "tfdrop.toml"
    path.write_text(
        '[daemon]\nmetrics_file = "m/tfdrop.prom"\nmetrics_listen = "run/metrics.sock"\n'
        'status_seconds = 0.5\n[[pipeline]]\ndrop = "a"\noutput = "b"\n'
    )
    d = load_config(path, env={}).daemon
    assert d.metrics_file == tmp_path / "m" / "tfdrop.prom"
    assert d.metrics_listen == tmp_path / "run" / "metrics.sock"
    assert d.status_seconds == 0.5
    env = load_config(path, env={"TFDROP_METRICS_LISTEN": "[::1]:9108"}).daemon
    assert env.metrics_listen == ("::1", 9108)


# -- found by the outside attack on status and metrics (tests/test_status_hostile.py has the
# -- file-shape cases) ----------------------------------------------------------------------


def _get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        answer = conn.getresponse()
        assert b"tfdrop_drops_seen_total" in answer.read()
        return answer.status
    finally:
        conn.close()


def test_idle_tcp_clients_take_no_thread_each_are_capped_and_closed_after_the_request_timeout(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    port = _free_port()
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": "in", "output": "out"}],
        metrics_listen=f"127.0.0.1:{port}",
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    idle: list[socket.socket] = []
    try:
        daemon.wait_event("daemon_ready")
        assert _get(port) == 200
        threads = psutil.Process(daemon.proc.pid).num_threads()
        for _ in range(MAX_CONNECTIONS):  # connect and say nothing
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        # prometheus_client's server spent a thread on each and waited on it for ever
        assert psutil.Process(daemon.proc.pid).num_threads() <= threads + 1
        with socket.create_connection(("127.0.0.1", port), timeout=30) as over:
            over.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            try:
                reply = over.recv(1024)
            except ConnectionResetError:
                reply = b""
            assert reply == b""  # one over the cap: closed at once, not answered
        # the daemon is not held up by them
        _drop(tmp_path / "in", "a.zip", tfrecord_zip(2, tag="a"))
        daemon.wait_event("job_done")
        for s in idle:  # each is closed by the daemon once its request time is up
            assert s.recv(1024) == b""
        assert _get(port) == 200
    finally:
        for s in idle:
            s.close()
        assert daemon.stop() == 0


def test_the_unix_socket_answers_a_request_ended_by_bare_line_feeds(tmp_path: Path) -> None:
    sock_path = tmp_path / "m.sock"
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": "in", "output": "out"}],
        metrics_listen=str(sock_path),
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        for request in (b"GET /metrics HTTP/1.0\n\n", b"GET / HTTP/1.0\nHost: x\n\n"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(sock_path))
                s.sendall(request)  # what `printf ... | nc -U` sends
                reply = b"".join(iter(lambda: s.recv(65536), b""))
            assert reply.startswith(b"HTTP/1.0 200 OK\r\n")
            assert b"tfdrop_drops_seen_total" in reply
    finally:
        assert daemon.stop() == 0


def test_the_status_file_keeps_its_heartbeat_when_status_seconds_is_long(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "t.toml",
        [{"name": "p", "drop": "in", "output": "out"}],
        status_seconds=3600.0,
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        cfg = load_config(config).pipelines[0]
        (path,) = wait_until(lambda: list((cfg.state / "status").glob("*.json")))

        def updated() -> float:
            value: float = json.loads(path.read_text())["updated_at"]
            return value

        first = wait_until(updated)
        # rewritten after HEARTBEAT_SECONDS, not after status_seconds (an hour): the reader
        # called a healthy idle daemon "stale" after 50 s
        wait_until(lambda: updated() > first, timeout=HEARTBEAT_SECONDS + 20, step=0.5)
        assert survey(cfg)["daemon"] == "running"
    finally:
        assert daemon.stop() == 0


def test_a_long_queue_keeps_the_status_file_small_and_every_drop_counted(
    setup: tuple[Path, Daemon], tmp_path: Path
) -> None:
    config, daemon = setup
    cfg = load_config(config).pipelines[0]
    _drop(cfg.drop, "big.zip", tfrecord_zip(3000, tag="big", image_size=8))
    proc = wait_until(lambda: conversion_process(daemon), timeout=60, step=0.005)
    proc.suspend()
    try:
        small = tfrecord_zip(1, tag="q")
        waiting = LISTED + 30
        for i in range(waiting):
            _drop(cfg.drop, f"{i:04d}-{'x' * 200}.zip", small)
        (path,) = (cfg.state / "status").glob("*.json")

        def listed() -> dict[str, Any] | None:
            doc: dict[str, Any] = json.loads(path.read_text())["waiting"]
            return doc if len(doc["queued"]) + doc["queued_more"] == waiting else None

        doc = wait_until(listed, timeout=30)
        assert (len(doc["queued"]), doc["queued_more"]) == (LISTED, 30)
        assert path.stat().st_size < 100_000
        status = _status_json(config)
        assert status["daemon"] == "running"
        assert status["waiting"]["count"] == waiting  # from the folder: every one
        samples = wait_until(
            lambda: (
                (s := _samples((tmp_path / "tfdrop.prom").read_text()))
                and _value(s, "tfdrop_queue_depth", pipeline="main") == waiting
                and s
            )
        )
        assert _value(samples, "tfdrop_jobs_running", pipeline="main") == 1
    finally:
        proc.resume()


def test_hostile_drop_and_member_names_reach_the_status_table_escaped(
    setup: tuple[Path, Daemon],
) -> None:
    config, daemon = setup
    drop = load_config(config).pipelines[0].drop
    evil = "\x1b]0;TITLE\x07\x1b[2J\x1b[H\n  daemon:   running (fake)\r"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{evil}notes.txt", b"hello")
    _drop(drop, "member.zip", buf.getvalue())
    _drop(drop, f"{evil}.tfrecord", _corrupt())
    daemon.wait_event("job_failed", 2)
    table = subprocess.run(
        [sys.executable, "-m", "tfdrop", "status", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    for raw in (b"\x1b", b"\x07", b"\r"):
        assert raw not in table
    lines = table.decode().splitlines()
    assert sum(line.startswith("  daemon:") for line in lines) == 1
    assert "no known annotation format found (members: \\x1b]0;TITLE\\x07" in table.decode()
    assert "\\x1b]0;TITLE\\x07\\x1b[2J\\x1b[H\\n  daemon:   running (fake)\\r.tfrecord" in (
        table.decode()
    )
