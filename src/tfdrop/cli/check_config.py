"""``tfdrop check-config FILE``: parse and check a daemon config without starting anything.

Prints the pipelines it would run, or the error naming the file, the key and what is allowed.
Exit 0 when valid, 1 when not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfdrop.cli.common import config_failed
from tfdrop.config import load_config
from tfdrop.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="the TOML config to check")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
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
    return 0
