"""The ``tfdrop`` command line: one sub-command per module, dispatched through a table.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes:
0 success, 1 bad input (a clear message, never a traceback), 2 usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final, Protocol, cast

from tfdrop import __version__

# name -> (module under tfdrop.cli, one-line help). An explicit table, not plugin discovery.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "convert": ("convert", "convert an annotation archive to another format"),
    "validate": ("validate", "check a TFRecord file, shard set or TFRecord zip"),
    "inspect": ("inspect", "print the records of a TFRecord as text or JSON lines"),
    "run": ("daemon", "run the drop-folder daemon"),
    "check-config": ("check_config", "validate a daemon config file without starting"),
}


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> CommandModule:
    return cast(CommandModule, importlib.import_module(f"tfdrop.cli.{module}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfdrop",
        description="Annotation archives <-> TensorFlow Object Detection TFRecords, "
        "without TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"tfdrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        try:
            command = _load(module)
        except ModuleNotFoundError as exc:
            # only while a command is being written; every command of the table ships
            if exc.name != f"tfdrop.cli.{module}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        command.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfdrop`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _load(args._module).run(args)
    except KeyboardInterrupt:
        print("tfdrop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
