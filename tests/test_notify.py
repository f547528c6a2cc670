"""sd_notify over a real AF_UNIX datagram socket: path and abstract addresses, watchdog env."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfdrop.daemon.notify import Notifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    yield sock, address
    sock.close()


def _messages(sock: socket.socket, n: int) -> list[dict[str, str]]:
    out = []
    for _ in range(n):
        data = sock.recv(4096).decode()
        out.append(dict(line.split("=", 1) for line in data.split("\n")))
    return out


def test_notifier_sends_state_datagrams_to_a_path_socket(
    path_socket: tuple[socket.socket, str],
) -> None:
    sock, address = path_socket
    n = Notifier(env={"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("watching")
    assert n.watchdog()
    assert n.reloading()
    assert n.status("busy")
    assert n.stopping()
    ready, dog, reloading, status, stopping = _messages(sock, 5)
    assert ready == {"READY": "1", "STATUS": "watching"}
    assert dog == {"WATCHDOG": "1"}
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert status == {"STATUS": "busy"}
    assert stopping["STOPPING"] == "1"
    n.close()


def test_notifier_supports_abstract_socket_names() -> None:
    name = f"tfdrop-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier(env={"NOTIFY_SOCKET": "@" + name})
        assert n.ready("ok")
        assert _messages(sock, 1) == [{"READY": "1", "STATUS": "ok"}]
    finally:
        sock.close()


def test_without_notify_socket_every_call_is_a_harmless_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready("x")
    assert n.watchdog_seconds is None


def test_a_vanished_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.send(READY=1) is False


def test_watchdog_interval_comes_from_watchdog_usec_for_this_pid_only() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000"}
    assert Notifier(env=env).watchdog_seconds == 4.0
    assert Notifier(env={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 4.0
    assert Notifier(env={**env, "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert Notifier(env={**env, "WATCHDOG_USEC": "0"}).watchdog_seconds is None
