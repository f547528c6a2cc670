"""What the daemon is doing, kept current in a status file per pipeline and in the metrics.

Follows SPEC.md "Operate it" (issue 14): ``tfdrop status`` reads the state folders and this
file, so it needs no socket and works with the daemon stopped. Each instance writes
``<state>/status/<instance>.json`` (one per pipeline and instance, so several hosts on one
share never write the same file) through the atomic-write stack (:func:`.fsops.write_replace`):
waiting drops, running jobs with their progress, retries with their error and next attempt,
the last :data:`RECENT` done and failed, and the counts since start. The service reports
events (:class:`Monitor` methods, called in the event loop); :meth:`Monitor.run` builds the
documents there and writes them in a thread, at most every ``status_seconds`` and only when
something changed, or every :data:`HEARTBEAT_SECONDS` at least (it wakes every
``min(status_seconds, HEARTBEAT_SECONDS)``: a ``status_seconds`` over the heartbeat once made
a healthy daemon look hung), so a reader can tell a live daemon from a hung one by the file's
age. The file is bounded whatever the backlog: each list holds at most :data:`LISTED` entries
and a count of the rest (``*_more``), each message at most :data:`TEXT_MAX` characters (20000
waiting drops once made a 5 MB file the reader refused, rewritten five times a second).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final

import structlog

from tfdrop.config import Config, DaemonConfig
from tfdrop.daemon.fsops import remove_own_temps, write_replace
from tfdrop.daemon.jobs import JobRunner, Outcome
from tfdrop.daemon.metrics import DaemonMetrics, MetricsServer
from tfdrop.daemon.runtime import Job, Runtime
from tfdrop.daemon.survey import COUNTS, HEARTBEAT_SECONDS, status_path

log = structlog.get_logger("tfdrop.daemon")

STATUS_VERSION: Final = 1
RECENT: Final = 20
"""Done and failed drops kept in the status file (the folders themselves hold all of them)."""
LISTED: Final = 100
"""Entries of a list in the status file (queued drops, queued claims, retries); the rest are
counted."""
TEXT_MAX: Final = 2000
"""Characters of an error message or hint kept in the status file."""


@dataclass(slots=True)
class _Board:
    """One pipeline's events since start (what the folders cannot tell)."""

    counts: Counter[str] = field(default_factory=Counter)
    queued: dict[str, float] = field(default_factory=dict)  # settled drop -> since (wall)
    claims: dict[str, str] = field(default_factory=dict)  # claim queued: job id -> name
    retrying: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> retry
    done: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    failed: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    last_success: float | None = None


def _clip(text: str) -> str:
    if len(text) <= TEXT_MAX:
        return text
    return f"{text[:TEXT_MAX]}... ({len(text) - TEXT_MAX} more characters)"


def _message(detail: Mapping[str, Any]) -> str:
    return _clip(str(detail.get("message") or detail.get("error") or ""))


def _pick(detail: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {
        k: _clip(v) if isinstance(v, str) else v for k in keys if (v := detail.get(k)) is not None
    }


def _listed(entries: Iterable[dict[str, Any]], total: int) -> tuple[list[dict[str, Any]], int]:
    """The first :data:`LISTED` entries and how many more there are."""
    shown = list(islice(entries, LISTED))
    return shown, total - len(shown)


class Monitor:
    """Counts, recent outcomes and retries per pipeline; the status and metrics files."""

    def __init__(self, daemon: DaemonConfig) -> None:
        self.daemon = daemon
        self.metrics = DaemonMetrics()
        self.server = MetricsServer(self.metrics.registry)
        self.since = time.time()
        self.boards: dict[str, _Board] = {}
        self._written: dict[Path, tuple[str, float]] = {}  # path -> (document, when)
        self._failing = False
        self._writing: asyncio.Future[OSError | None] | None = None

    def board(self, pipeline: str) -> _Board:
        b = self.boards.get(pipeline)
        if b is None:
            b = self.boards[pipeline] = _Board()
            self.metrics.add_pipeline(pipeline, self.since)
        return b

    async def start(self, config: Config) -> None:
        """Every pipeline's series from the start (at 0), then ``metrics_listen`` if set
        (OSError: the address is taken)."""
        for p in config.pipelines:
            self.board(p.name)
        if config.daemon.metrics_listen is not None:
            await self.server.start(config.daemon.metrics_listen)

    # -- events (all in the event loop) -----------------------------------------------------

    def seen(self, pipeline: str, name: str) -> None:
        b = self.board(pipeline)
        b.queued[name] = time.time()
        b.counts["seen"] += 1
        self.metrics.seen.labels(pipeline=pipeline).inc()

    def dequeued(self, pipeline: str, name: str) -> None:
        """A worker picked a settled drop up (to claim it)."""
        self.board(pipeline).queued.pop(name, None)

    def taken(self, pipeline: str) -> None:
        self.board(pipeline).counts["taken"] += 1
        self.metrics.taken.labels(pipeline=pipeline).inc()

    def claim_queued(self, job: Job) -> None:
        """A claim (recovered, adopted) waits for a worker."""
        self.board(job.runtime.cfg.name).claims[job.claimed.job_id] = job.claimed.name

    def started(self, job: Job) -> None:
        b = self.board(job.runtime.cfg.name)
        b.claims.pop(job.claimed.job_id, None)
        b.retrying.pop(job.claimed.job_id, None)

    def retrying(
        self, job: Job, attempt: int, detail: Mapping[str, Any], delay: float, reason: str
    ) -> None:
        pipeline = job.runtime.cfg.name
        b = self.board(pipeline)
        b.retrying[job.claimed.job_id] = {
            "job": job.claimed.job_id,
            "name": job.claimed.name,
            "attempt": attempt,
            "reason": reason,
            "kind": str(detail.get("kind", reason)),
            "message": _message(detail) or "another instance converts the same bytes",
            "next_attempt_at": time.time() + delay,
        }
        if reason == "retry":
            b.counts["retried"] += 1
            self.metrics.retried.labels(pipeline=pipeline).inc()

    def finished(self, job: Job, outcome: Outcome, elapsed: float) -> None:
        """A job ended; retries and waits are reported through :meth:`retrying`."""
        status, detail = outcome.status, outcome.detail
        if status in ("retry", "waiting"):
            return
        pipeline, now = job.runtime.cfg.name, time.time()
        b = self.board(pipeline)
        b.retrying.pop(job.claimed.job_id, None)
        if status not in ("published", "duplicate", "failed"):
            return  # cancelled (taken up on restart) or gone
        b.counts[status] += 1
        self.metrics.finished(pipeline, status, detail, elapsed, now)
        entry = {"job": job.claimed.job_id, "name": job.claimed.name, "time": now}
        if status == "failed":
            entry.update(_pick(detail, "kind", "message", "hint", "moved_to"))
            b.failed.appendleft(entry)
            return
        b.last_success = now
        for key in ("items", "objects", "bytes_in", "bytes_out"):
            value = detail.get(key)
            if isinstance(value, int):
                b.counts[key] += value
        entry.update(status=status, elapsed_s=round(elapsed, 3))
        entry.update(_pick(detail, "output", "items", "objects", "moved_to"))
        b.done.appendleft(entry)

    # -- documents ------------------------------------------------------------------------

    def document(self, rt: Runtime, runners: Iterable[JobRunner], state: str) -> dict[str, Any]:
        """The status file's content for one pipeline (``updated_at`` is added on writing)."""
        b = self.board(rt.cfg.name)
        now_wall, now_mono = time.time(), time.monotonic()
        running = [
            {
                "job": r.claimed.job_id,
                "name": r.claimed.name,
                "items": r.items,
                "total": r.total,
                "started_at": round(now_wall - (now_mono - r.started), 3),
            }
            for r in runners
        ]
        # in the order seen (oldest first): no sort of a backlog of thousands on each write
        queued, queued_more = _listed(
            ({"name": n, "since": t} for n, t in b.queued.items()), len(b.queued)
        )
        claims, claims_more = _listed(
            ({"job": j, "name": n} for j, n in b.claims.items()), len(b.claims)
        )
        retrying = sorted(b.retrying.values(), key=lambda r: r["next_attempt_at"])
        retrying, retrying_more = _listed(iter(retrying), len(retrying))
        return {
            "version": STATUS_VERSION,
            "state": state,
            "pipeline": rt.cfg.name,
            "instance": rt.work.instance,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.since,
            "heartbeat_s": HEARTBEAT_SECONDS,
            "waiting": {
                "settling": rt.tracker.pending(),
                "queued": queued,
                "queued_more": queued_more,
            },
            "running": running,
            "queued_claims": claims,
            "queued_claims_more": claims_more,
            "retrying": retrying,
            "retrying_more": retrying_more,
            "recent_done": list(b.done),
            "recent_failed": list(b.failed),
            "counts": {k: b.counts[k] for k in COUNTS},
            "last_success_at": b.last_success,
        }

    def _gauges(self, rt: Runtime, running: int) -> None:
        b = self.board(rt.cfg.name)
        depth = rt.tracker.pending() + len(b.queued) + len(b.claims) + len(b.retrying)
        self.metrics.queue.labels(pipeline=rt.cfg.name).set(depth)
        self.metrics.running.labels(pipeline=rt.cfg.name).set(running)

    def _due(
        self,
        runtimes: list[Runtime],
        running: Mapping[str, JobRunner],
        state: str,
        beat: float = HEARTBEAT_SECONDS,
    ) -> Any:
        """The documents that changed (or are due for the heartbeat): path -> (text, doc)."""
        due: dict[Path, tuple[str, dict[str, Any]]] = {}
        now = time.monotonic()
        for rt in runtimes:
            if rt.drop_missing or rt.closed:
                continue  # never make a removed drop folder again through its state folder
            mine = [r for r in running.values() if r.work is rt.work]
            doc = self.document(rt, mine, state)
            self._gauges(rt, len(mine))
            text = json.dumps(doc, sort_keys=True)
            path = status_path(rt.cfg.state, rt.work.instance)
            last = self._written.get(path)
            if last is None or last[0] != text or now - last[1] >= beat:
                due[path] = (text, doc)
        return due

    def _write_one(self, path: Path, text: str, doc: dict[str, Any]) -> None:
        data = json.dumps(dict(doc, updated_at=time.time()), indent=1, ensure_ascii=False)
        path.parent.mkdir(exist_ok=True)  # not parents: the state folder is check_state's
        instance = path.stem
        if path not in self._written:
            remove_own_temps(path.parent, instance)  # cut short by a kill
        write_replace(path, (data + "\n").encode("utf-8", "backslashreplace"), instance)
        self._written[path] = (text, time.monotonic())

    def _write(self, due: dict[Path, tuple[str, dict[str, Any]]]) -> OSError | None:
        """In a worker thread: the status files, then the metrics file; the first error (each
        file is tried: one pipeline's state folder gone must not stop the others)."""
        errors: list[OSError] = []
        for path, (text, doc) in due.items():
            try:
                self._write_one(path, text, doc)
            except OSError as exc:
                errors.append(exc)
        if self.daemon.metrics_file is not None:
            try:
                self.metrics.write(self.daemon.metrics_file)
            except OSError as exc:
                errors.append(exc)
        return errors[0] if errors else None

    def _wrote(self, exc: OSError | None) -> None:
        """Log a failing write once per outage, and its end."""
        if exc is not None and not self._failing:
            log.error("status_write_failed", error=str(exc), filename=exc.filename)
        elif exc is None and self._failing:
            log.info("status_write_recovered")
        self._failing = exc is not None

    async def run(self, view: Callable[[], tuple[list[Runtime], Mapping[str, JobRunner]]]) -> None:
        """Write the files whenever something changed, at most every ``status_seconds``, and
        every :data:`HEARTBEAT_SECONDS` at least."""
        last = -math.inf  # when the files were last written (monotonic)
        while True:
            tick = min(self.daemon.status_seconds, HEARTBEAT_SECONDS)  # a reload may change it
            since = time.monotonic() - last
            beat = HEARTBEAT_SECONDS - tick / 2  # the tick that is due, not the one after it
            if since >= min(self.daemon.status_seconds - tick / 2, beat):
                runtimes, running = view()
                due = self._due(runtimes, running, "running", beat)
                if due or since >= beat:
                    last = time.monotonic()
                    loop = asyncio.get_running_loop()
                    self._writing = loop.run_in_executor(None, self._write, due)
                    self._wrote(await asyncio.shield(self._writing))  # a stop waits for it
            await asyncio.sleep(tick)

    async def stopped(self, runtimes: list[Runtime], running: Mapping[str, JobRunner]) -> None:
        """The last word at shutdown (after :meth:`run` was cancelled): every status file
        says ``stopped``, written after any write still under way."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
        self._written.clear()
        self._wrote(self._write(self._due(runtimes, running, "stopped")))
        await self.server.close()
