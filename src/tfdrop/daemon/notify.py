"""systemd's ``sd_notify`` protocol over ``$NOTIFY_SOCKET``, without libsystemd.

Follows sd_notify(3): one AF_UNIX datagram per message of newline-separated ``KEY=VALUE``
assignments, sent to the socket path in ``$NOTIFY_SOCKET``; a leading ``@`` names a Linux
abstract socket (the ``@`` becomes a NUL byte). ``$WATCHDOG_USEC`` (with ``$WATCHDOG_PID``,
when set, naming this process) asks for ``WATCHDOG=1`` at least that often; we ping at half.
With no socket every call is a no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def _default_socket_address(env: Mapping[str, str]) -> str | None:
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not used for a local service


def _default_watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process (sd_watchdog_enabled(3))
    return int(usec) / 1_000_000


class Notifier:
    """Sends state changes to the service manager; errors sending are swallowed on purpose.

    A lost datagram must never stop the daemon: systemd notices missing READY or WATCHDOG
    itself, and that is the signal it acts on.

    Example:
        >>> n = Notifier(env={})
        >>> n.enabled
        False
        >>> n.send(READY=1)
        False
    """

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _default_socket_address(env)
        self.watchdog_seconds = _default_watchdog_seconds(env)
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines; True when the datagram went out."""
        if self._sock is None or self.address is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older
        # versions ignore it.
        return self.send(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self) -> bool:
        return self.send(STOPPING=1, STATUS="stopping")

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
