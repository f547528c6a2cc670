"""A SIGHUP reload: which pipelines stay, which open, which close.

Follows SPEC.md "The daemon" and the service contract in :mod:`.service`: a runtime whose
folders (drop and state) did not change is kept as it is, with its tracker, slot and running
jobs; new pipelines are opened first, so a failure (a folder that cannot be created) leaves
the running config untouched. A pipeline that goes away while a job of it runs keeps its slot
until that job ends (the service closes it then); one brought back meanwhile takes another
slot (:mod:`.claim` never hands out a slot this process holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tfdrop.config import Config
from tfdrop.daemon.runtime import Job, Runtime, open_runtime
from tfdrop.errors import TfdropError

log = structlog.get_logger("tfdrop.daemon")

_Key = tuple[Path, Path]


@dataclass(slots=True)
class Switch:
    """The outcome of :func:`switch_config`."""

    runtimes: list[Runtime] = field(default_factory=list)  # in the new config's order
    closed: list[Runtime] = field(default_factory=list)  # gone from the config
    recovered: list[Job] = field(default_factory=list)  # claims found by pipelines opened


def switch_config(current: list[Runtime], new: Config) -> Switch:
    """Open the new config's pipelines that are not running yet and sort out the rest.

    Raises TfdropError or OSError (nothing changed then: what was opened is closed again).
    """
    old: dict[_Key, Runtime] = {(rt.cfg.drop, rt.cfg.state): rt for rt in current}
    opened: dict[_Key, Runtime] = {}
    out = Switch()
    try:
        for cfg in new.pipelines:
            key = (cfg.drop, cfg.state)
            if key not in old and key not in opened:
                rt, recovered = open_runtime(cfg, new.daemon)
                opened[key] = rt
                out.recovered += [Job(rt, claimed) for claimed in recovered]
    except (TfdropError, OSError):
        for rt in opened.values():
            rt.work.close()
        raise
    for cfg in new.pipelines:
        key = (cfg.drop, cfg.state)
        rt = opened[key] if key in opened else old.pop(key)
        rt.cfg = cfg
        rt.tracker.patterns = cfg.patterns
        rt.tracker.settle = new.daemon.settle_seconds
        rt.tracker.stale = max(new.daemon.stale_seconds, new.daemon.settle_seconds)
        rt.next_rescan = 0.0
        out.runtimes.append(rt)
    out.closed = list(old.values())
    return out


def close_runtime(rt: Runtime) -> None:
    """Stop a pipeline gone from the config; its slot is freed now, or when its last
    running job ends (the service calls :func:`release_if_idle` then)."""
    rt.closed = True
    rt.stop.set()
    release_if_idle(rt)
    log.info("pipeline_closed", pipeline=rt.cfg.name, running=rt.jobs)


def release_if_idle(rt: Runtime) -> None:
    """Free the slot of a closed pipeline once none of its jobs runs: its claims left
    (retries) are adopted by a live instance of that state folder, or recovered when the
    pipeline comes back."""
    if rt.closed and rt.jobs == 0:
        rt.work.close()
