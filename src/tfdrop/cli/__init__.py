"""The ``tfdrop`` command line: one sub-command per module, dispatched through a table.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes:
0 success, 1 bad input (a clear message, never a traceback), 2 usage, 141 (128 + SIGPIPE, what
a shell reports for a tool killed by SIGPIPE) when whoever read stdout stopped reading
(``tfdrop inspect X | head -1``): that is not the input's fault, so nothing is printed, and it
is not a success either, so ``set -o pipefail`` still sees that the output was cut short (a
``validate`` stopped early must never look like an all-clear).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, Protocol, TextIO, cast

from tfdrop import __version__
from tfdrop.cli.common import UsageError, usage_error

EXIT_STDOUT_CLOSED: Final = 141
"""128 + SIGPIPE: the reader of stdout went away (see the module docstring)."""

# name -> (module under tfdrop.cli, one-line help). An explicit table, not plugin discovery.
COMMANDS: Final[dict[str, tuple[str, str]]] = {
    "convert": ("convert", "convert an annotation archive to another format"),
    "validate": ("validate", "check a TFRecord file, shard set or TFRecord zip"),
    "inspect": ("inspect", "print the records of a TFRecord as text or JSON lines"),
    "preview": ("preview", "draw an archive's items and annotations on an HTML page"),
    "run": ("daemon", "run the drop-folder daemon"),
    "check-config": ("check_config", "validate a daemon config file without starting"),
    "retry": ("retry", "move failed inputs back into their drop folder to convert them again"),
    "beam": ("beam", "convert one large dataset on Apache Beam (the tfdrop[beam] extra)"),
    "status": ("status", "what each pipeline waits for, runs, retries, published and failed"),
}
PASSTHROUGH: Final = frozenset({"beam"})
"""Commands whose words after a lone ``--`` are handed on unparsed (``args.passthrough``)."""


class CommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> CommandModule:
    return cast(CommandModule, importlib.import_module(f"tfdrop.cli.{module}"))


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line: the first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of the command named in ``argv`` is imported (every one
    when ``argv`` is None), so ``tfdrop --version`` and a small ``validate`` start fast."""
    parser = argparse.ArgumentParser(
        prog="tfdrop",
        description="Annotation archives <-> TensorFlow Object Detection TFRecords, "
        "without TensorFlow.",
    )
    parser.add_argument("--version", action="version", version=f"tfdrop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = None if argv is None else _command_in(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == wanted:
            _load(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


class StdoutClosed(Exception):
    """stdout's reader went away. Not an OSError on purpose: a command's ``except OSError``
    (meant for its input) must not report a closed pipe as a problem with the input."""


class _GuardedStdout:
    """sys.stdout, with EPIPE turned into :class:`StdoutClosed`."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise StdoutClosed from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise StdoutClosed from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfdrop`` console script."""
    words = sys.argv[1:] if argv is None else list(argv)
    passthrough: list[str] = []
    if _command_in(words) in PASSTHROUGH and "--" in words:
        cut = words.index("--")
        words, passthrough = words[:cut], words[cut + 1 :]
    args = build_parser(words).parse_args(words)
    args.passthrough = passthrough

    real = sys.stdout
    if real is not None and not isinstance(real, _GuardedStdout):
        sys.stdout = cast(TextIO, _GuardedStdout(real))
    try:
        code = _load(args._module).run(args)
        if sys.stdout is not None:
            sys.stdout.flush()
        return code
    except UsageError as exc:
        return usage_error(args.command, str(exc))
    except StdoutClosed:
        _silence_stdout()
        return EXIT_STDOUT_CLOSED
    except OSError as exc:
        # a path the OS refuses before a command looked at it (a name over NAME_MAX, a
        # component that is a file): the environment's answer, never a traceback
        where = exc.filename if exc.filename is not None else "input"
        print(f"tfdrop: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tfdrop: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = real


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
