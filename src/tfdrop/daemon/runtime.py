"""A pipeline while the daemon runs: its folders, instance slot, ledger, tracker and watcher.

Follows SPEC.md "The daemon" (seen -> settled -> claimed): :func:`open_runtime` prepares a
pipeline (folders, the instance's work folder, the ledger, clean-up after a killed run) and
:func:`watch_drop` feeds file events of the drop folder's top level to the tracker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import watchfiles

from tfdrop.config import DaemonConfig, PipelineConfig
from tfdrop.daemon.claim import Claimed, WorkArea
from tfdrop.daemon.fsops import remove_own_temps
from tfdrop.daemon.ledger import Ledger
from tfdrop.daemon.retention import Reported
from tfdrop.daemon.watch import DropTracker
from tfdrop.errors import TfdropError

log = structlog.get_logger("tfdrop.daemon")

_WATCH_TIMEOUT_MS = 100  # the watcher's empty yields: its first one says the watch is set up


@dataclass(eq=False, slots=True)
class Runtime:
    """One pipeline while the daemon runs."""

    cfg: PipelineConfig
    work: WorkArea
    ledger: Ledger
    tracker: DropTracker
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None
    watching: asyncio.Event = field(default_factory=asyncio.Event)
    next_rescan: float = 0.0
    closed: bool = False
    jobs: int = 0
    drop_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the drop folder opened
    drop_missing: bool = False
    retention: Reported = field(default_factory=Reported)  # what retention logged already


@dataclass(frozen=True, slots=True)
class Job:
    runtime: Runtime
    claimed: Claimed
    attempt: int = 0


def drop_identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when it is not there (or not a folder): a folder
    removed and made again has a new inode even if that happened between two looks."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def open_runtime(cfg: PipelineConfig, d: DaemonConfig) -> tuple[Runtime, list[Claimed]]:
    """Create the pipeline's folders, take an instance slot, clean up after a killed run.

    Returns the runtime and the claims a killed run (or a dead instance) left to take up.
    """
    if cfg.create:
        for folder in (cfg.drop, cfg.output, cfg.done, cfg.failed):
            folder.mkdir(parents=True, exist_ok=True)
    for folder in (cfg.drop, cfg.output):
        if not folder.is_dir():
            raise TfdropError(
                f"pipeline {cfg.name}: {folder} is not a folder",
                hint="create it, or set create = true",
            )
    cfg.state.mkdir(parents=True, exist_ok=True)
    if cfg.state.stat().st_dev != cfg.drop.stat().st_dev:
        raise TfdropError(
            f"pipeline {cfg.name}: state_dir {cfg.state} is not on the drop folder's "
            "file system, so claiming by rename cannot work",
            key="state_dir",
        )
    work = WorkArea(cfg.state)
    rt = Runtime(
        cfg,
        work,
        Ledger(cfg.state, work.instance),
        DropTracker(cfg.drop, cfg.patterns, settle=d.settle_seconds, stale=d.stale_seconds),
        drop_id=drop_identity(cfg.drop),
    )
    removed = remove_own_temps(cfg.output, work.instance)
    removed += remove_own_temps(cfg.failed, work.instance)  # error files cut short
    removed += remove_own_temps(cfg.state / "ledger" / "sha256", work.instance)
    adopted = work.adopt_orphans()
    recovered = work.recover()
    log.info(
        "pipeline_opened",
        pipeline=cfg.name,
        drop=str(cfg.drop),
        output=str(cfg.output),
        source_format=cfg.source_format,
        target_format=cfg.target_format,
        instance=work.instance,
        recovered=len(recovered),
        adopted=len(adopted),
        temps_removed=len(removed),
    )
    for claimed in recovered:
        log.info("claim_recovered", pipeline=cfg.name, job=claimed.job_id, source=claimed.name)
    return rt, recovered


def reopen_runtime(rt: Runtime, d: DaemonConfig) -> list[Claimed]:
    """The drop folder was removed and is back: take it up again; the claims to take up.

    When the state folder survived (``state_dir`` elsewhere) the instance keeps its slot and
    ledger (closing the slot's lock file and locking it again in the same process would
    release the lock: POSIX locks belong to the process). When it went with the drop folder,
    everything is opened afresh, as at start.
    """
    cfg = rt.cfg
    tracker = DropTracker(cfg.drop, cfg.patterns, settle=d.settle_seconds, stale=d.stale_seconds)
    if rt.work.folder.is_dir():
        if cfg.create:
            for folder in (cfg.done, cfg.failed):
                folder.mkdir(exist_ok=True)
        rt.tracker, rt.drop_id = tracker, drop_identity(cfg.drop)
        return []
    rt.work.close()  # its lock file went with the folder
    fresh, recovered = open_runtime(cfg, d)
    rt.work, rt.ledger, rt.tracker, rt.drop_id = (
        fresh.work,
        fresh.ledger,
        fresh.tracker,
        fresh.drop_id,
    )
    return recovered


def check_drop(rt: Runtime, d: DaemonConfig) -> tuple[str, list[Claimed]]:
    """``("ok", [])``, ``("missing", [])`` while the drop folder is gone, or ``("back",
    claims)`` once it is there again (a new inode: removed and made again, maybe between two
    looks), taken up with :func:`reopen_runtime`; the caller starts a new watcher then.
    Going and coming back are logged once each. OSError (reopening failed): next tick again.
    """
    ident = drop_identity(rt.cfg.drop)
    if ident is not None and ident == rt.drop_id:
        return "ok", []
    if not rt.drop_missing:
        rt.drop_missing = True
        log.error(
            "drop_folder_missing",
            pipeline=rt.cfg.name,
            drop=str(rt.cfg.drop),
            hint="drops are taken again as soon as the folder is back",
        )
    if ident is None:
        return "missing", []
    recovered = reopen_runtime(rt, d)
    rt.drop_missing = False
    rt.next_rescan = 0.0
    log.info("drop_folder_back", pipeline=rt.cfg.name, drop=str(rt.cfg.drop))
    return "back", recovered


def check_state(rt: Runtime) -> None:
    """Make the state folder whole again if it was removed under us (``rm -rf .tfdrop``):
    the work folder, the slot lock (so a second instance started later does not take this
    slot) and the ledger's folders, logged once per loss. OSError (the state folder is a
    file now, say): the caller logs it and tries again on the next tick."""
    missing = rt.work.ensure()
    if missing is None:
        return
    rt.ledger.ensure()
    log.warning(
        "state_folder_recreated",
        pipeline=rt.cfg.name,
        state=str(rt.cfg.state),
        missing=missing,
        instance=rt.work.instance,
        hint="the state folder holds claims and the ledger; leave it alone while tfdrop runs",
    )


async def watch_drop(
    rt: Runtime, stop: asyncio.Event, watching: asyncio.Event, d: DaemonConfig
) -> None:
    """Note files the OS reports in the drop folder (top level only).

    ``stop`` and ``watching`` are this watcher's own events (a reload starts a new watcher
    with new ones). The first yield, an empty one after ``rust_timeout`` when nothing
    happens, proves the watch is in place; only a listing made after that point is sure
    to see every file the watch does not report, so it triggers a rescan.
    """
    while not stop.is_set():
        try:
            async for changes in watchfiles.awatch(
                rt.cfg.drop,
                watch_filter=None,
                debounce=50,
                step=20,
                stop_event=stop,
                force_polling=d.poll,
                poll_delay_ms=int(d.poll_interval_seconds * 1000),
                recursive=False,
                ignore_permission_denied=True,
                rust_timeout=_WATCH_TIMEOUT_MS,
                yield_on_timeout=True,
            ):
                if not watching.is_set():
                    watching.set()
                    rt.next_rescan = 0.0
                now = time.monotonic()
                for change, path in changes:
                    p = Path(path)
                    if change != watchfiles.Change.deleted and p.parent == rt.cfg.drop:
                        rt.tracker.note(p.name, now)
        except (OSError, RuntimeError, ExceptionGroup) as exc:
            # the folder went away, inotify ran out of watches, or a file name is not UTF-8
            # (watchfiles raises that from its task group): a rescan now still finds drops
            log.warning("watch_failed", pipeline=rt.cfg.name, error=str(exc))
            rt.next_rescan = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(d.rescan_seconds, 1.0))
