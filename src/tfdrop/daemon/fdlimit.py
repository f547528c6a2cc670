"""The open-file budget: a config whose jobs could run out of file descriptors is refused.

The TFRecord writer keeps every shard of every subset open while a job runs, every running
hook holds a few (its pipes), and all share the process's ``RLIMIT_NOFILE``. Running out
(EMFILE) in the middle of a job would look like a transient error and be retried forever, so
the daemon checks the worst case of the config (:func:`tfdrop.config.open_files_needed`) at
start and on reload: it raises its soft limit up to the hard one when that is enough (what
systemd recommends a service do itself), and otherwise refuses the config naming
``max_jobs``, ``shards`` and ``max_hooks``.
"""

from __future__ import annotations

import resource

from tfdrop.config import Config, open_files_needed
from tfdrop.errors import ConfigError


def raise_open_files(need: int) -> int | None:
    """Raise the soft open-file limit to ``need`` if it is lower; None when the hard limit
    is too low for that, else the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


def ensure_open_files(config: Config) -> int:
    """Make sure the process may open what ``config`` needs; the soft limit now in force.

    Raises:
        ConfigError: Even the hard limit is too low for ``max_jobs`` x ``shards``.
    """
    need = open_files_needed(config)
    soft = raise_open_files(need)
    if soft is None:
        shards = max(p.shards for p in config.pipelines)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        raise ConfigError(
            f"max_jobs = {config.daemon.max_jobs} with shards = {shards} and max_hooks = "
            f"{config.daemon.max_hooks} may need {need} open files, over the open-file limit "
            f"of {hard}",
            file=str(config.source) if config.source else None,
            key="daemon.max_jobs",
            hint="lower max_jobs, shards or max_hooks, or raise LimitNOFILE= (systemd) / ulimit -n",
        )
    return soft
