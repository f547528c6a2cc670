"""The daemon's Prometheus metrics: a registry of its own, the text file, and the listener.

Everything is written by prometheus_client in its text exposition format (never by hand): the
file with ``write_to_textfile`` (a temp name in the same folder, then a rename: node_exporter's
textfile collector reads ``*.prom`` and never sees half a file; never over anything but a
regular file), the body of an HTTP answer with ``generate_latest``. Both listeners, a loopback
TCP port and a Unix socket, are answered by one minimal HTTP/1.0 responder of ours in the event
loop (:meth:`MetricsServer._answer`): prometheus_client's own server spends a thread per
connection and waits on an idle client forever, so a few idle connections took the daemon's
threads and files (the status attacker found it). Each connection gets
:data:`_REQUEST_SECONDS` to send its request head; past :data:`MAX_CONNECTIONS` at once a new
one is closed at once. The registry is our own, not the process-global one, so nothing
another library registers leaks in and two services in one test process stay apart. Process
figures carry the ``tfdrop_`` prefix: in node_exporter's output an unprefixed ``process_*``
would collide with node_exporter's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import stat
from pathlib import Path
from typing import Any, Final

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    write_to_textfile,
)
from prometheus_client.exposition import generate_latest

log = structlog.get_logger("tfdrop.daemon")

DURATION_BUCKETS: Final = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
"""Job durations: a small drop takes well under a second, a large COCO export many minutes."""
_REQUEST_MAX: Final = 8192  # the request head a scraper sends is a few hundred bytes
_REQUEST_SECONDS: Final = 5.0
MAX_CONNECTIONS: Final = 16
"""Scrapes answered at once (a scraper opens one at a time); past it a connection is closed."""


class DaemonMetrics:
    """The counters, histogram and gauges of one daemon process (labels: ``pipeline``)."""

    def __init__(self) -> None:
        # no ``*_created`` series: they double the file and node_exporter's output, and a
        # counter's start shows as well in tfdrop_process_start_time_seconds (the daemon is
        # the only user of prometheus_client in its process, so the global switch is ours)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r, p = self.registry, ["pipeline"]
        self.seen = Counter("tfdrop_drops_seen", "Drops settled in a drop folder", p, registry=r)
        self.taken = Counter("tfdrop_drops_taken", "Drops claimed by this daemon", p, registry=r)
        self.published = Counter(
            "tfdrop_drops_published", "Drops converted and published", p, registry=r
        )
        self.duplicate = Counter(
            "tfdrop_drops_duplicate", "Drops whose bytes were published before", p, registry=r
        )
        self.failed = Counter(
            "tfdrop_drops_failed",
            "Drops routed to failed/ by error kind",
            [*p, "kind"],
            registry=r,
        )
        self.retried = Counter(
            "tfdrop_jobs_retried", "Job attempts ended by a transient error", p, registry=r
        )
        self.items = Counter("tfdrop_items_converted", "Items converted", p, registry=r)
        self.objects = Counter("tfdrop_objects_converted", "Objects converted", p, registry=r)
        self.bytes_in = Counter("tfdrop_input_bytes", "Bytes of the drops converted", p, registry=r)
        self.bytes_out = Counter(
            "tfdrop_output_bytes", "Bytes of the archives published", p, registry=r
        )
        self.duration = Histogram(
            "tfdrop_job_duration_seconds",
            "Time from a job's start to its outcome (published, duplicate, failed)",
            [*p, "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "tfdrop_queue_depth",
            "Drops waiting in the drop folder plus claims waiting for a worker or a retry",
            p,
            registry=r,
        )
        self.running = Gauge("tfdrop_jobs_running", "Jobs converting now", p, registry=r)
        self.last_success = Gauge(
            "tfdrop_last_success_timestamp_seconds",
            "When a drop was last published or found a duplicate (the daemon's start before)",
            p,
            registry=r,
        )
        ProcessCollector(namespace="tfdrop", registry=r)
        self._pipelines: set[str] = set()

    def add_pipeline(self, name: str, since: float) -> None:
        """Make the pipeline's series exist (at 0) so that rates and alerts see them."""
        for counter in (
            self.seen,
            self.taken,
            self.published,
            self.duplicate,
            self.retried,
            self.items,
            self.objects,
            self.bytes_in,
            self.bytes_out,
        ):
            counter.labels(pipeline=name)
        if name not in self._pipelines:  # a reload keeps what a pipeline had
            self._pipelines.add(name)
            self.last_success.labels(pipeline=name).set(since)

    def finished(
        self, name: str, status: str, detail: dict[str, Any], elapsed: float, now: float
    ) -> None:
        """A job's outcome: published, duplicate or failed (the others are no outcome)."""
        self.duration.labels(pipeline=name, outcome=status).observe(elapsed)
        if status == "failed":
            self.failed.labels(pipeline=name, kind=str(detail.get("kind", "unknown"))).inc()
            return
        self.last_success.labels(pipeline=name).set(now)
        if status == "duplicate":
            self.duplicate.labels(pipeline=name).inc()
            return
        self.published.labels(pipeline=name).inc()
        for counter, key in (
            (self.items, "items"),
            (self.objects, "objects"),
            (self.bytes_in, "bytes_in"),
            (self.bytes_out, "bytes_out"),
        ):
            value = detail.get(key)
            if isinstance(value, int) and value > 0:
                counter.labels(pipeline=name).inc(value)

    def write(self, path: Path) -> None:
        """Replace the metrics file (OSError: the caller logs it and tries again later).

        Only a regular file (or nothing) is replaced: the config refuses anything else, and a
        folder, link or device put there since is left alone (an earlier build replaced a
        device node named as the metrics file)."""
        try:
            st = path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EEXIST, "not a regular file; it is never replaced", str(path))
        write_to_textfile(str(path), self.registry)


class MetricsServer:
    """``metrics_listen``: a loopback TCP port or a Unix socket, answered by :meth:`_answer`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None
        self._path: Path | None = None
        self._open = 0  # connections being answered

    async def start(self, listen: tuple[str, int] | Path) -> None:
        """Listen; OSError when the address is taken (the caller refuses to start)."""
        if isinstance(listen, Path):
            _clear_stale_socket(listen)
            self._server = await asyncio.start_unix_server(
                self._answer, path=str(listen), limit=_REQUEST_MAX
            )
            self._path = listen
        else:
            host, port = listen
            self._server = await asyncio.start_server(
                self._answer, host, port, limit=_REQUEST_MAX, reuse_address=True
            )
        log.info("metrics_listening", address=str(listen) if isinstance(listen, Path) else listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            self._path = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, one answer, then the connection is closed (HTTP/1.0)."""
        if self._open >= MAX_CONNECTIONS:
            writer.transport.abort()  # over the cap: closed at once, nothing read
            return
        self._open += 1
        try:
            head = await asyncio.wait_for(_request_head(reader), _REQUEST_SECONDS)
            if head is not None:
                writer.write(self._reply(head))
                await writer.drain()
        except (TimeoutError, OSError):
            pass  # a client that went away or sent no request in time: nothing to answer
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _reply(self, head: bytes) -> bytes:
        method = head.split(b" ", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", "text/plain", b"GET only\n")
        body = generate_latest(self.registry)
        return _response("200 OK", CONTENT_TYPE_LATEST, body, method == b"HEAD")


async def _request_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line and headers up to the empty line (CRLF or a bare LF, as curl and
    netcat users send); None when the client stops first or sends more than
    :data:`_REQUEST_MAX` bytes."""
    head = b""
    while len(head) <= _REQUEST_MAX:
        try:
            line = await reader.readline()
        except ValueError:  # a line over the reader's limit
            return None
        if not line.endswith(b"\n"):
            return None  # the end of the stream before the empty line
        if line in (b"\r\n", b"\n") and head:
            return head
        head += line
    return None


def _response(status: str, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    header = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    return header if head_only else header + body


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a killed run (nobody answers on it); anything else there, or
    a socket that answers, is an OSError: the address is in use."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, "not a socket; metrics_listen will not replace it", str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()
            return
    raise OSError(errno.EADDRINUSE, "another process answers on this socket", str(path))
