"""The daemon's main loop: watchers, the settle ticker, the job pool, signals and sd_notify.

Follows SPEC.md "The daemon" and the service contract of systemd (sd_notify(3), Type=notify):
READY=1 once the start-up scan is done, WATCHDOG=1 only while the loop and the scanner are
alive, RELOADING=1 then READY=1 around a SIGHUP reload (a bad new config is refused and the old
one stays), STOPPING=1 on SIGTERM/SIGINT, then a grace period for running jobs, then the rest
are aborted through their progress callback (their inputs stay claimed and are taken up again
on restart), exit 0. Each job runs in a thread (``asyncio.to_thread``) and its conversion in a
process of its own (:mod:`.isolate`); the loop only stats, renames and schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from tfdrop.config import Config, DaemonConfig, PipelineConfig, resolve_config
from tfdrop.daemon.fdlimit import ensure_open_files
from tfdrop.daemon.hooks import Hooks
from tfdrop.daemon.jobs import JobRunner, Outcome, Status
from tfdrop.daemon.notify import Notifier
from tfdrop.daemon.reload import close_runtime, release_if_idle, switch_config
from tfdrop.daemon.retention import apply_retention
from tfdrop.daemon.runtime import Job, Runtime, check_drop, check_state, open_runtime, watch_drop
from tfdrop.daemon.stats import report_stats
from tfdrop.daemon.status import Monitor
from tfdrop.daemon.watch import Settled
from tfdrop.errors import TfdropError

log = structlog.get_logger("tfdrop.daemon")

_ABORT_SECONDS = 10.0  # after the grace period: how long aborted jobs get to clean up


def _tick_seconds(settle: float) -> float:
    return min(0.5, max(0.05, settle / 4))


def retry_delay(d: DaemonConfig, attempt: int) -> float:
    """Exponential back-off; the exponent is capped, since a float times 2**1100 overflows
    (an outage of a few days at a short retry_max)."""
    delay: float = min(d.retry_base_seconds * 2 ** min(attempt, 40), d.retry_max_seconds)
    return delay


class Service:
    """Runs the pipelines of a :class:`Config` until SIGTERM/SIGINT."""

    def __init__(
        self, config: Config, *, config_path: Path | None, notifier: Notifier | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.runtimes: list[Runtime] = []
        self.queue: asyncio.Queue[Job | tuple[Runtime, Settled]] = asyncio.Queue()
        self.counts: Counter[Status] = Counter()
        self.running: dict[str, JobRunner] = {}
        self.active: set[str] = set()  # job ids queued, running or waiting for a retry
        self.stopping = asyncio.Event()
        self.workers: dict[int, asyncio.Task[None]] = {}
        self.busy: set[int] = set()
        self.beat = time.monotonic()
        self._status = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.clean = True
        self.exit_code = 0
        self.hooks = Hooks(lambda: self.config.daemon.max_hooks)
        self.monitor = Monitor(config.daemon)  # the status file and the metrics

    # -- pipelines --------------------------------------------------------------------------

    def _open(self, cfg: PipelineConfig) -> Runtime:
        rt, recovered = open_runtime(cfg, self.config.daemon)
        for claimed in recovered:
            self._queue_job(Job(rt, claimed))
        return rt

    def _queue_job(self, job: Job) -> None:
        """Queue a claim, unless this process has it queued, running or waiting already
        (recovery and adoption must never take up a job this process is converting)."""
        if job.claimed.job_id in self.active:
            log.info("claim_in_hand", pipeline=job.runtime.cfg.name, job=job.claimed.job_id)
            return
        self.active.add(job.claimed.job_id)
        self.monitor.claim_queued(job)
        self.queue.put_nowait(job)

    def _start_watcher(self, rt: Runtime) -> None:
        rt.stop = asyncio.Event()
        rt.watching = asyncio.Event()
        rt.watcher = asyncio.create_task(
            watch_drop(rt, rt.stop, rt.watching, self.config.daemon), name=f"watch-{rt.cfg.name}"
        )

    def _drop_present(self, rt: Runtime) -> bool:
        """Whether the drop folder is there; one that came back gets a fresh watcher."""
        state, recovered = check_drop(rt, self.config.daemon)
        for claimed in recovered:
            self._queue_job(Job(rt, claimed))
        if state == "back":
            rt.stop.set()
            self._start_watcher(rt)
        if state != "missing":
            check_state(rt)
        return state != "missing"

    async def _scan(self, rt: Runtime, now: float) -> None:
        d = self.config.daemon
        if not self._drop_present(rt):
            return
        if now >= rt.next_rescan:
            rt.next_rescan = now + d.rescan_seconds
            rt.tracker.scan(now)
            apply_retention(rt.cfg, reported=rt.retention)  # never raises
            for name in rt.work.adopt_orphans():
                claimed = rt.work.job(name)
                log.info("claim_adopted", pipeline=rt.cfg.name, job=name)
                if claimed is not None:
                    self._queue_job(Job(rt, claimed))
        for settled in await rt.tracker.settled(now):
            if not settled.complete:
                log.warning(
                    "drop_incomplete_taken",
                    pipeline=rt.cfg.name,
                    source=settled.path.name,
                    reason="no zip end record after stale_seconds",
                )
            self.monitor.seen(rt.cfg.name, settled.path.name)
            self.queue.put_nowait((rt, settled))
        p = rt.cfg
        for name, why in rt.tracker.newly_ignored:
            log.info("drop_ignored", pipeline=p.name, source=name, reason=why, patterns=p.patterns)
        rt.tracker.newly_ignored.clear()
        for name, exc in rt.tracker.check_failed:
            log.warning(
                "drop_check_failed",
                pipeline=p.name,
                source=name,
                error=exc.strerror or str(exc),
                errno=exc.errno,
                reason="zip end record not checked; tried again",
            )
        rt.tracker.check_failed.clear()

    async def _ticker(self) -> None:
        failing: set[str] = set()
        while True:
            now = time.monotonic()
            for rt in list(self.runtimes):
                try:
                    await self._scan(rt, now)
                except OSError as exc:
                    if rt.cfg.name not in failing:  # log once per outage, not per tick
                        failing.add(rt.cfg.name)
                        log.error("scan_failed", pipeline=rt.cfg.name, error=str(exc))
                else:
                    failing.discard(rt.cfg.name)
            self.beat = time.monotonic()
            self._update_status()
            await asyncio.sleep(_tick_seconds(self.config.daemon.settle_seconds))

    def _ticker_done(self, task: asyncio.Task[None]) -> None:
        """A scanner that died of a bug stops the daemon with exit 1 (systemd restarts it)."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("scanner_crashed", exc_info=task.exception())
        self.exit_code = 1
        self.stopping.set()

    async def _watchdog(self, seconds: float) -> None:
        while True:
            # a stuck scanner (a hung share) stops the pings, so systemd restarts us
            if time.monotonic() - self.beat < seconds:
                self.notifier.watchdog()
            await asyncio.sleep(seconds / 2)

    def _status_text(self) -> str:
        queued = self.queue.qsize()
        return (
            f"{len(self.runtimes)} pipeline(s); {len(self.running)} running, {queued} queued; "
            f"published {self.counts['published']}, duplicate {self.counts['duplicate']}, "
            f"failed {self.counts['failed']}"
        )

    def _stats(self) -> dict[str, object]:
        return {
            "running": len(self.running),
            "queued": self.queue.qsize(),
            "counts": dict(self.counts),
        }

    def _view(self) -> tuple[list[Runtime], dict[str, JobRunner]]:
        return self.runtimes, self.running  # for the status file (daemon/status.py)

    def _update_status(self) -> None:
        text = self._status_text()
        if text != self._status:
            self._status = text
            self.notifier.status(text)

    # -- jobs -------------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        for i in range(self.config.daemon.max_jobs):
            task = self.workers.get(i)
            if task is None or task.done():
                self.workers[i] = asyncio.create_task(self._worker(i), name=f"worker-{i}")

    async def _worker(self, index: int) -> None:
        while not self.stopping.is_set() and index < self.config.daemon.max_jobs:
            item = await self.queue.get()
            self.busy.add(index)
            job: Job | None = None
            try:
                job = item if isinstance(item, Job) else self._claim(*item)
                if job is not None and job.runtime.closed:
                    self.active.discard(job.claimed.job_id)  # its slot's next owner has it
                elif job is not None:
                    await self._run(job)
            except Exception as exc:  # the worker's boundary: a bug here must not end it
                log.error("worker_error", worker=index, exc_info=exc)
                if job is not None:
                    self._retry_later(job, job.attempt + 1, {"kind": "internal_error"})
            finally:
                self.busy.discard(index)

    def _claim(self, rt: Runtime, settled: Settled) -> Job | None:
        name = settled.path.name
        rt.tracker.forget(name)
        self.monitor.dequeued(rt.cfg.name, name)
        if rt.closed:
            return None
        try:
            check_state(rt)  # its work folder removed since the last tick: made again first
            claimed = rt.work.claim(settled.path)
        except OSError as exc:
            log.error("claim_failed", pipeline=rt.cfg.name, source=name, error=str(exc))
            return None
        if claimed is None:
            log.debug("drop_taken_elsewhere", pipeline=rt.cfg.name, source=name)
            return None
        self.monitor.taken(rt.cfg.name)
        self.active.add(claimed.job_id)
        return Job(rt, claimed)

    async def _run(self, job: Job) -> None:
        rt, claimed = job.runtime, job.claimed
        d = self.config.daemon
        with structlog.contextvars.bound_contextvars(
            job=claimed.job_id, pipeline=rt.cfg.name, source=claimed.name
        ):
            if claimed.job_id in self.running:  # never two runs of one claim
                log.error("job_already_running", attempt=job.attempt)
                return
            log.info("job_started", attempt=job.attempt, instance=rt.work.instance)
            self.monitor.started(job)
            runner = JobRunner(claimed, rt.cfg, d, rt.work, rt.ledger)
            # the jobs that will share the cores: those running, this one, those queued
            runner.sharing = len(self.running) + 1 + self.queue.qsize()
            self.running[claimed.job_id] = runner
            rt.jobs += 1
            try:
                outcome = await asyncio.to_thread(runner.run)
            except Exception as exc:  # the job boundary itself failed (its clean-up, say)
                outcome = Outcome("retry", {"error": f"{type(exc).__name__}: {exc}"})
            finally:
                rt.jobs -= 1
                self.running.pop(claimed.job_id, None)
                release_if_idle(rt)
            self.counts[outcome.status] += 1
            elapsed = round(time.monotonic() - runner.started, 3)
            self.monitor.finished(job, outcome, elapsed)
            self._log_outcome(job, outcome, elapsed)
            self.hooks.after(rt.cfg, outcome.status, outcome.detail)
            self._update_status()

    def _log_outcome(self, job: Job, outcome: Outcome, elapsed: float) -> None:
        status, detail = outcome.status, outcome.detail
        if status == "retry":
            self._retry_later(job, job.attempt + 1, detail)
            return
        if status == "waiting":  # for another instance converting the same bytes
            delay = max(self.config.daemon.settle_seconds, 0.5)
            self._retry_later(job, job.attempt, detail, reason="waiting", delay=delay)
            return
        self.active.discard(job.claimed.job_id)
        if status in ("published", "duplicate"):
            log.info("job_done", status=status, elapsed_s=elapsed, **detail)
        elif status == "failed":
            log.warning("job_failed", elapsed_s=elapsed, **detail)
        elif status == "gone":
            log.warning("job_input_gone", folder=str(job.claimed.folder))
        else:
            log.info("job_aborted", reason="shutdown", kept_in=str(job.claimed.folder))

    def _retry_later(
        self,
        job: Job,
        attempt: int,
        detail: dict[str, object],
        *,
        reason: str = "retry",
        delay: float | None = None,
    ) -> None:
        """Take the claim up again after ``delay`` (the back-off of ``attempt`` if None)."""
        if delay is None:
            delay = retry_delay(self.config.daemon, job.attempt)
        log.warning("job_retry_scheduled", reason=reason, delay_s=delay, attempt=attempt, **detail)
        self.monitor.retrying(job, attempt, detail, delay, reason)
        if self.stopping.is_set():
            self.active.discard(job.claimed.job_id)  # taken up again on restart
            return
        again = Job(job.runtime, job.claimed, attempt)
        asyncio.get_running_loop().call_later(delay, self._requeue, again)

    def _requeue(self, job: Job) -> None:
        if self.stopping.is_set() or job.runtime.closed:
            self.active.discard(job.claimed.job_id)  # its slot's next owner takes it up
            return
        self.queue.put_nowait(job)

    # -- reload and stop --------------------------------------------------------------------

    def _apply(self, new: Config) -> None:
        """Switch to a new config (:func:`.reload.switch_config`)."""
        switch = switch_config(self.runtimes, new)
        self.config = new
        self.monitor.daemon = new.daemon  # metrics_listen: taken at start only
        for rt in switch.closed:
            close_runtime(rt)
        for rt in switch.runtimes:
            rt.stop.set()
        self.runtimes = switch.runtimes
        for rt in switch.runtimes:
            self._start_watcher(rt)
        for job in switch.recovered:
            self._queue_job(job)
        self._ensure_workers()

    async def _reload(self) -> None:
        """SIGHUP: read the config again; a config that cannot be used is refused (logged,
        the running one stays) and READY=1 follows RELOADING=1 whatever happened."""
        self.notifier.reloading()
        log.info("config_reload_started", config=str(self.config_path or "built-in default"))
        try:
            new = resolve_config(self.config_path)
            ensure_open_files(new)
            self._apply(new)
        except (TfdropError, OSError, ValueError) as exc:
            details = (
                exc.to_dict()
                if isinstance(exc, TfdropError)
                else {"kind": type(exc).__name__, "message": str(exc)}
            )
            log.error("config_reload_refused", **details, kept="the running config")
        else:
            log.info("config_reloaded", pipelines=[p.name for p in new.pipelines])
        finally:
            self.notifier.ready(self._status_text())

    def _start_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reload(), name="reload")
        task.add_done_callback(self._reload_done)
        self._tasks.append(task)

    def _reload_done(self, task: asyncio.Task[None]) -> None:
        """A reload that died of a bug is logged (the running config stays in force)."""
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("config_reload_refused", kind="internal_error", exc_info=task.exception())

    async def _shutdown(self) -> bool:
        """Stop taking work, let jobs (and hooks) finish for the grace period, then abort
        them: the hooks get what is left of the one grace period once the jobs are done."""
        deadline = time.monotonic() + self.config.daemon.grace_seconds
        self.notifier.stopping()
        log.info("daemon_stopping", running=len(self.running))
        for rt in self.runtimes:
            rt.stop.set()
        for task in self._tasks:
            task.cancel()
        for index, task in self.workers.items():
            if index not in self.busy:
                task.cancel()
        busy = [t for t in self.workers.values() if not t.done()]
        clean = True
        if busy:
            _, pending = await asyncio.wait(busy, timeout=self.config.daemon.grace_seconds)
            if pending:
                log.warning("jobs_aborting", jobs=sorted(self.running))
                for runner in list(self.running.values()):
                    runner.cancel.set()
                _, pending = await asyncio.wait(pending, timeout=_ABORT_SECONDS)
                clean = not pending
        await self.hooks.drain(max(0.0, deadline - time.monotonic()))
        for rt in self.runtimes:
            if rt.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(rt.watcher, timeout=2.0)
        await self.monitor.stopped(self.runtimes, self.running)
        for rt in self.runtimes:
            rt.work.close()
        return clean

    async def run(self) -> int:
        """Start, serve until a stop signal, stop; the exit code."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="job"))
        if self.config.is_default:
            p = self.config.pipelines[0]
            log.info(
                "daemon_started",
                config="built-in default (no config file)",
                drop=str(p.drop),
                output=str(p.output),
                hint="drop annotation zips into the drop folder; see tfdrop run --help",
            )
        else:
            log.info("daemon_started", config=str(self.config.source))
        try:
            self.runtimes = [self._open(cfg) for cfg in self.config.pipelines]
        except (TfdropError, OSError) as exc:
            details = exc.to_dict() if isinstance(exc, TfdropError) else {"message": str(exc)}
            log.error("daemon_start_failed", **details)
            return 1
        try:
            await self.monitor.start(self.config)
        except OSError as exc:
            log.error("daemon_start_failed", message=f"metrics_listen: {exc}")
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._start_reload)
        # a file dropped before the watch is in place is found by the start-up scan, or by
        # the rescan the watcher asks for once it is (its first yield)
        for rt in self.runtimes:
            self._start_watcher(rt)
        now = time.monotonic()
        try:
            for rt in self.runtimes:
                await self._scan(rt, now)  # the start-up scan, before READY=1
        except OSError as exc:
            log.error("daemon_start_failed", message=str(exc))
            return 1
        self._ensure_workers()
        ticker = asyncio.create_task(self._ticker(), name="ticker")
        ticker.add_done_callback(self._ticker_done)
        self._tasks.append(ticker)
        if self.notifier.watchdog_seconds:
            self._tasks.append(
                asyncio.create_task(self._watchdog(self.notifier.watchdog_seconds), name="watchdog")
            )
        if self.config.daemon.stats_seconds > 0:
            self._tasks.append(
                asyncio.create_task(
                    report_stats(self.config.daemon.stats_seconds, self._stats), name="stats"
                )
            )
        self._tasks.append(asyncio.create_task(self.monitor.run(self._view), name="status"))
        self.beat = time.monotonic()
        self._status = self._status_text()
        log.info(
            "daemon_ready",
            pipelines=[rt.cfg.name for rt in self.runtimes],
            seen=sum(rt.tracker.pending() for rt in self.runtimes),
            queued=self.queue.qsize(),
        )
        self.notifier.ready(self._status)
        await self.stopping.wait()
        self.clean = await self._shutdown()
        log.info("daemon_stopped", clean=self.clean, counts=dict(self.counts))
        self.notifier.close()
        return self.exit_code
