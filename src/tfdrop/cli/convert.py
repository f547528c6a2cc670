"""``tfdrop convert SRC --to FORMAT``: the daemon's conversion, once, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tfdrop.cli.common import fail, load_label_map
from tfdrop.codec.compression import COMPRESSIONS
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import TfdropError
from tfdrop.formats import FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    writable = [n for n, s in FORMATS.items() if s.open_writer is not None]
    readable = [n for n, s in FORMATS.items() if s.open_reader is not None]
    parser.add_argument("src", type=Path, help="a zip, a folder, or a bare .tfrecord file")
    parser.add_argument("--to", dest="to", required=True, choices=writable, help="target format")
    parser.add_argument(
        "--from", dest="source", default="auto", choices=["auto", *readable], help="source format"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="output archive (.zip); default: beside SRC"
    )
    parser.add_argument("--label-map", type=Path, help="pin label ids to this label_map.pbtxt")
    parser.add_argument(
        "--masks", action="store_true", help="polygons and masks -> PNG instance masks"
    )
    parser.add_argument("--shards", type=int, default=1, help="TFRecord shards per subset")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none")
    parser.add_argument(
        "--no-images", dest="images", action="store_false", help="do not embed/copy images"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")


def default_output(src: Path, target: str) -> Path:
    """``<stem>.<target>.zip`` beside the source (``.1``, ``.2`` ... if taken)."""
    stem = src.name[: -len(".zip")] if src.name.lower().endswith(".zip") else src.stem
    out = src.with_name(f"{stem}.{target}.zip")
    n = 1
    while out.exists():
        out = src.with_name(f"{stem}.{target}.{n}.zip")
        n += 1
    return out


class _Progress:
    """A one-line counter on a TTY, redrawn at most ten times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last > 0.1:
            self._last = now
            sys.stderr.write(f"\r  {done} items converted")
            sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r\033[K")


def run(args: argparse.Namespace) -> int:
    if args.shards < 1:
        print("tfdrop convert: --shards must be at least 1", file=sys.stderr)
        return 2
    src: Path = args.src
    if not src.exists():
        return fail(f"{src}: no such file or folder")
    out: Path = args.output or default_output(src, args.to)
    if out.suffix.lower() != ".zip":
        print("tfdrop convert: -o must name a .zip archive", file=sys.stderr)
        return 2
    progress = _Progress(enabled=sys.stderr.isatty() and not args.quiet)
    try:
        label_map = load_label_map(args.label_map) if args.label_map else None
        options = ConvertOptions(
            source_format=args.source,
            target_format=args.to,
            label_map=label_map,
            masks=args.masks,
            shards=args.shards,
            compression=args.compression,
            images=args.images,
        )
        report = convert(src, out, options, progress=progress)
    except TfdropError as exc:
        progress.end()
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        progress.end()
        return fail(f"{exc.filename or src}: {exc.strerror or exc}")
    progress.end()
    report_path = out.with_name(out.name[: -len(".zip")] + ".report.json")
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not args.quiet:
        print(report.summary())
    return 0
