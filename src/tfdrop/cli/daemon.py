"""``tfdrop run [--config FILE]``: run the drop-folder daemon in the foreground.

Without ``--config`` (and without ``$TFDROP_CONFIG``) it runs the built-in default pipeline
``./tfdrop/inbox`` -> ``./tfdrop/outbox`` (auto -> tfrecord), creating the folders. Stops on
SIGTERM/SIGINT with exit 0; SIGHUP reloads the config. systemd: see ``systemd/tfdrop.service``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tfdrop.cli.common import config_failed
from tfdrop.config import resolve_config
from tfdrop.daemon.fdlimit import ensure_open_files
from tfdrop.daemon.logs import configure_logging
from tfdrop.daemon.notify import Notifier
from tfdrop.daemon.service import Service
from tfdrop.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config (default: $TFDROP_CONFIG, else ./tfdrop/inbox -> ./tfdrop/outbox)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args.config)
        ensure_open_files(config)
    except ConfigError as exc:
        return config_failed(exc)
    configure_logging(log_format=config.daemon.log_format, level=config.daemon.log_level)
    path = args.config if args.config is not None else config.source
    service = Service(config, config_path=path, notifier=Notifier())
    code = asyncio.run(_serve(service))
    if not service.clean:
        # a job thread ignored its abort; its input stays claimed and is retried on restart,
        # so leave without waiting for the thread (asyncio.run would join it forever)
        sys.stderr.flush()
        os._exit(code)
    return code


async def _serve(service: Service) -> int:
    return await service.run()
