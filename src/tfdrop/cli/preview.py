"""``tfdrop preview SRC``: look at an archive's items and annotations without TensorFlow.

Writes one self-contained HTML page (``-o``, default ``<stem>.preview.html`` beside SRC) with
the first ``--limit N`` items drawn (boxes, label names and ids, masks, keypoints, flags) and
the counts of the whole archive per label and subset; ``--png DIR`` writes the items drawn at
full size as PNG files instead. Problems validate would report (a box outside the image, an
image whose size disagrees with its record, an image that does not decode) are marked on the
item. Exit 0, or 1 when the archive cannot be read (when reading stops part way, the page is
still written and says where).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tfdrop.cli.common import (
    UsageError,
    add_limit_argument,
    bare_limit,
    fail,
    limits_from_args,
    usage_error,
)
from tfdrop.config import MAX_PREVIEW
from tfdrop.errors import TfdropError
from tfdrop.formats import FORMATS
from tfdrop.preview import (
    DEFAULT_ITEMS,
    PreviewOptions,
    Summary,
    preview_path_of,
    write_pngs,
    write_preview,
)

PRINTED_PROBLEMS = 20
"""Items with problems ``--png`` lists on the terminal (the rest are counted)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    readable = [n for n, s in FORMATS.items() if s.open_reader is not None]
    parser.add_argument("src", type=Path, help="a zip, a folder, or a bare .tfrecord file")
    parser.add_argument(
        "-o", "--output", type=Path, help="the page (.html); default: <stem>.preview.html"
    )
    parser.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        metavar="NAME",
        help="show only items with an object of this label (repeatable)",
    )
    parser.add_argument("--subset", help="show only items of this subset")
    parser.add_argument(
        "--png", type=Path, metavar="DIR", help="write the items drawn at full size as PNGs"
    )
    parser.add_argument(
        "--from", dest="source", default="auto", choices=["auto", *readable], help="source format"
    )
    add_limit_argument(parser)
    parser.epilog = (
        f"--limit N: items shown (default {DEFAULT_ITEMS}, at most {MAX_PREVIEW}); "
        "--limit NAME=N changes the job budget"
    )


def _options(args: argparse.Namespace) -> PreviewOptions:
    limit = bare_limit(args)
    if limit is not None and not 1 <= limit <= MAX_PREVIEW:
        raise UsageError(f"--limit N must be between 1 and {MAX_PREVIEW}, got {limit}")
    return PreviewOptions(
        limit=DEFAULT_ITEMS if limit is None else limit,
        labels=frozenset(args.labels),
        subset=args.subset,
        source_format=args.source,
        limits=limits_from_args(args, bare=True),
    )


def _output(args: argparse.Namespace, src: Path) -> Path | str:
    """The page's path, or why it cannot be written. ``src`` is resolved (``preview .``)."""
    if args.output is None and not src.name:
        return f"the input is {src}: there is no folder beside it for the page"
    out: Path = args.output or preview_path_of(src)
    if out.suffix.lower() not in (".html", ".htm"):
        return "-o must name an .html file"
    if out.is_dir():
        return f"-o ({out}) is a folder"
    if not out.parent.is_dir():
        return f"the output folder {out.parent} does not exist"
    if out.exists() and out.resolve() == src.resolve():
        return f"-o ({out}) is the input; it would be overwritten"
    return out


def _png_folder(args: argparse.Namespace, src: Path) -> Path | str:
    """The ``--png`` folder, or why it cannot be written: not a file, not the input folder
    nor inside it (the PNGs would land among the items being read)."""
    folder: Path = args.png
    if folder.exists() and not folder.is_dir():
        return f"--png ({folder}) is not a folder"
    real, top = folder.resolve(), src.resolve()
    if real == top or (top.is_dir() and real.is_relative_to(top)):
        return f"--png ({folder}) is inside the input {src}; the PNGs would be written among it"
    return folder


def _finish(summary: Summary, done: str) -> int:
    print(done)
    if summary.stops:
        return fail(
            f"reading stopped: {summary.stops[0]}",
            hint="the items read before it are shown",
        )
    return 0


def _png_done(summary: Summary, folder: Path) -> str:
    """The ``--png`` run in lines: the counts, then each item with problems (there is no page
    to show them), at most :data:`PRINTED_PROBLEMS`."""
    c = summary.counts
    bad = f", {summary.with_problems} with problems" if summary.with_problems else ""
    lines = [
        f"{summary.format}: {c.items} items, {c.objects} objects"
        + (f", {c.unreadable} unreadable records" if c.unreadable else "")
        + f"; {summary.shown} shown, "
        f"{summary.drawn} drawn{bad} -> {folder}"
    ]
    lines += [f"  {where}: {first}" for _, where, first in summary.problems[:PRINTED_PROBLEMS]]
    if len(summary.problems) > PRINTED_PROBLEMS:
        lines.append(f"  ... {len(summary.problems) - PRINTED_PROBLEMS} more with problems")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not args.src.exists():
        return fail(f"{args.src}: no such file or folder")
    src = Path(os.path.abspath(args.src))  # "." and ".." named (symlinks kept: beside the link)
    options = _options(args)
    out = _png_folder(args, src) if args.png is not None else _output(args, src)
    if isinstance(out, str):
        choose = "--png" if args.png is not None else "-o"
        return usage_error("preview", f"{out}; choose another {choose}")
    try:
        if args.png is not None:
            out.mkdir(parents=True, exist_ok=True)
            summary = write_pngs(src, out, options)
            done = _png_done(summary, out)
        else:
            summary = write_preview(src, out, options)
            done = summary.line(out)
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        return fail(f"{exc.filename or src}: {exc.strerror or exc}")
    return _finish(summary, done)
