"""The daemon and systemd's notify protocol over a real AF_UNIX datagram socket."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from daemon_support import Daemon, tfrecord_zip, wait_until, write_config


def _recv_all(sock: socket.socket, until: str, timeout: float = 15.0) -> list[dict[str, str]]:
    """Datagrams until one holds ``until`` (e.g. ``READY=1``)."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    key, value = until.split("=", 1)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        msg = dict(line.split("=", 1) for line in data.split("\n"))
        got.append(msg)
        if msg.get(key) == value:
            return got
    raise AssertionError(f"no {until} within {timeout} s; got {got}")


def test_ready_watchdog_reload_and_stop_are_notified_and_exit_is_zero(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    pipeline = {"name": "one", "drop": "in", "output": "out"}
    config = write_config(tmp_path / "tfdrop.toml", [pipeline])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "early.zip").write_bytes(tfrecord_zip(1, tag="early"))
    daemon = Daemon(
        config,
        tmp_path / "daemon.log",
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"},
    )
    try:
        before = _recv_all(sock, "READY=1")
        assert before[-1]["STATUS"]
        # READY=1 only after the start-up scan: the drop already there has been seen
        ready = daemon.named("daemon_ready")
        assert ready
        assert ready[0]["seen"] == 1
        assert _recv_all(sock, "WATCHDOG=1", timeout=2)
        wait_until((tmp_path / "out" / "early.zip").exists)

        # a good reload: a second pipeline appears
        write_config(config, [pipeline, {"name": "two", "drop": "in2", "output": "out2"}])
        daemon.signal(signal.SIGHUP)
        reload_msgs = _recv_all(sock, "RELOADING=1")
        assert int(reload_msgs[-1]["MONOTONIC_USEC"]) > 0
        _recv_all(sock, "READY=1")
        daemon.wait_event("config_reloaded")
        (tmp_path / "in2" / "second.zip").write_bytes(tfrecord_zip(1, tag="second"))
        wait_until((tmp_path / "out2" / "second.zip").exists)

        # a bad reload is refused and the running config stays
        config.write_text('[daemon]\nmax_jobs = "many"\n')
        daemon.signal(signal.SIGHUP)
        _recv_all(sock, "RELOADING=1")
        _recv_all(sock, "READY=1")
        refused = daemon.wait_event("config_reload_refused")[0]
        assert refused["key"] == "daemon.max_jobs"
        (tmp_path / "in2" / "third.zip").write_bytes(tfrecord_zip(1, tag="third"))
        wait_until((tmp_path / "out2" / "third.zip").exists)
        assert daemon.proc.poll() is None

        daemon.signal(signal.SIGTERM)
        _recv_all(sock, "STOPPING=1")
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
        sock.close()


def _stopped(pid: int) -> bool:
    """Whether the process is in the stopped state (``T`` in /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _drain(sock: socket.socket) -> None:
    """Drop the datagrams already queued on ``sock``."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(4096)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def test_watchdog_pings_keep_coming_while_idle_and_stop_while_the_daemon_hangs(
    tmp_path: Path,
) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    config = write_config(tmp_path / "tfdrop.toml", [{"drop": "in", "output": "out"}])
    daemon = Daemon(
        config, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    )
    try:
        _recv_all(sock, "READY=1")
        for _ in range(3):  # pings keep coming while idle (no rate asserted)
            _recv_all(sock, "WATCHDOG=1")
        daemon.signal(signal.SIGSTOP)  # the loop hangs: nothing may ping for it
        wait_until(lambda: _stopped(daemon.proc.pid), 10)
        _drain(sock)
        with pytest.raises(AssertionError, match="no WATCHDOG=1"):
            _recv_all(sock, "WATCHDOG=1", timeout=1.0)  # 5 periods of 0.2 s without a ping
        daemon.signal(signal.SIGCONT)
        _recv_all(sock, "WATCHDOG=1")  # and come back once it runs again
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.signal(signal.SIGCONT)
            daemon.kill()
        sock.close()
