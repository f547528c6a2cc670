"""``tfdrop check-config FILE``: parse and check a daemon config without starting anything.

Prints the pipelines it would run and the limits that differ from the defaults, or the error
naming the file, the key and what is allowed. Exit 0 when valid, 1 when not. The open-file
check the daemon makes at start (``max_jobs`` x ``shards``) is made here too, and every hook's
program must be there and executable (a bare name: found on this ``PATH``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdrop.cli.common import config_failed
from tfdrop.config import changed_limits, load_config
from tfdrop.daemon.fdlimit import ensure_open_files
from tfdrop.daemon.hooks import check_hooks
from tfdrop.errors import ConfigError
from tfdrop.limits import Limits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="the TOML config to check")


def _limits_text(limits: Limits) -> str:
    changed = changed_limits(limits)
    return ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "defaults"


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        ensure_open_files(config)
        check_hooks(config)
    except ConfigError as exc:
        return config_failed(exc)
    d = config.daemon
    print(f"{args.file}: ok")
    print(
        f"daemon: max_jobs={d.max_jobs} settle={d.settle_seconds}s rescan={d.rescan_seconds}s "
        f"poll={'yes' if d.poll else 'no'} grace={d.grace_seconds}s"
    )
    for p in config.pipelines:
        label_map = f", label map {p.label_map_path}" if p.label_map_path else ""
        print(
            f"pipeline {p.name}: {p.drop} -> {p.output} "
            f"({p.source_format} -> {p.target_format}{label_map}, on success {p.on_success})"
        )
        print(f"  limits: {_limits_text(p.limits)}")
    return 0
