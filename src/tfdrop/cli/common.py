"""Small helpers the CLI commands share: error output, the job budget flag (``--limit NAME=N``),
bounded numeric flags and the conversion flags ``convert`` and ``beam`` both take."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tfdrop.archive.limits import shown
from tfdrop.codec.compression import COMPRESSIONS
from tfdrop.errors import ConfigError
from tfdrop.formats import FORMATS
from tfdrop.limits import DEFAULT_LIMITS, Limits

LIMIT_DEST = "limit_values"
"""Where :func:`add_limit_argument` stores the parsed ``--limit`` values."""


def fail(message: str, *, hint: str = "") -> int:
    """Print ``tfdrop: error: ...`` (and a hint) to stderr; exit code 1 (bad input). Both
    escaped (:func:`~tfdrop.archive.limits.shown`): they quote names from the input."""
    print(f"tfdrop: error: {shown(message)}", file=sys.stderr)
    if hint:
        print(f"tfdrop: hint: {shown(hint)}", file=sys.stderr)
    return 1


def config_failed(exc: ConfigError) -> int:
    """Print a config error (it names the file, the key and what is allowed) and its hint;
    exit code 1. The daemon and check-config say it the same way."""
    print(f"tfdrop: {exc}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return 1


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer flag within ``low..high`` (else a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def add_format_arguments(parser: argparse.ArgumentParser) -> None:
    """``--to`` (a format tfdrop writes; required) and ``--from`` (one it reads, or auto)."""
    writable = [n for n, s in FORMATS.items() if s.open_writer is not None]
    readable = [n for n, s in FORMATS.items() if s.open_reader is not None]
    parser.add_argument("--to", dest="to", required=True, choices=writable, help="target format")
    parser.add_argument(
        "--from", dest="source", default="auto", choices=["auto", *readable], help="source format"
    )


def add_write_arguments(
    parser: argparse.ArgumentParser, *, max_shards: int, images_help: str
) -> None:
    """What a conversion writes: ``--label-map``, ``--masks``, ``--shards`` (1..max_shards),
    ``--compression`` and ``--no-images`` (``args.images``)."""
    parser.add_argument("--label-map", type=Path, help="pin label ids to this label_map.pbtxt")
    parser.add_argument(
        "--masks", action="store_true", help="polygons and masks -> PNG instance masks"
    )
    parser.add_argument(
        "--shards",
        type=bounded_int(1, max_shards),
        default=1,
        help=f"TFRecord shards per subset (1..{max_shards})",
    )
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none")
    parser.add_argument("--no-images", dest="images", action="store_false", help=images_help)


def parse_limit(text: str) -> tuple[str, int]:
    """``NAME=N`` -> (name, n); a usage error that lists the names for anything else."""
    names = Limits.names()
    if "=" not in text and text.strip().isdigit():
        return "", int(text.strip())  # the older ``inspect --limit N`` (records shown)
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in names:
        raise argparse.ArgumentTypeError(
            f"expected NAME=N with NAME one of: {', '.join(names)}; got {text!r}"
        )
    try:
        n = int(value.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{name}: expected a positive integer, got {value!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{name}: must be at least 1, got {n}")
    return name, n


parse_limit.__name__ = "limit"


def add_limit_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--limit NAME=N`` (one field of :class:`~tfdrop.limits.Limits`).

    A bare ``--limit N`` parses as ``("", N)``: ``inspect`` had that flag for "show at most N
    records" before the budget existed and still takes it (:func:`bare_limit`); every other
    command refuses it through :func:`limits_from_args`.
    """
    parser.add_argument(
        "--limit",
        dest=LIMIT_DEST,
        metavar="NAME=N",
        action="append",
        type=parse_limit,
        default=[],
        help="raise or lower one limit of the job budget (repeatable); names: "
        + ", ".join(Limits.names()),
    )


class UsageError(Exception):
    """A bad flag found after parsing; the command prints it and exits 2."""


def limits_from_args(args: argparse.Namespace, *, bare: bool = False) -> Limits:
    """The job budget: the defaults with every ``--limit NAME=N`` applied (the last wins).

    Raises:
        UsageError: A bare ``--limit N`` where ``bare`` is False.
    """
    pairs: list[tuple[str, int]] = getattr(args, LIMIT_DEST, None) or []
    if not bare and any(name == "" for name, _ in pairs):
        raise UsageError(f"--limit takes NAME=N with NAME one of: {', '.join(Limits.names())}")
    values = {name: n for name, n in pairs if name}
    return DEFAULT_LIMITS.with_values(values) if values else DEFAULT_LIMITS


def bare_limit(args: argparse.Namespace) -> int | None:
    """The last bare ``--limit N`` given, if any (``inspect``'s record count)."""
    pairs: list[tuple[str, int]] = getattr(args, LIMIT_DEST, None) or []
    counts = [n for name, n in pairs if not name]
    return counts[-1] if counts else None


def usage_error(command: str, message: str) -> int:
    """Print ``tfdrop COMMAND: message`` to stderr; exit code 2 (usage)."""
    print(f"tfdrop {command}: {message}", file=sys.stderr)
    return 2
