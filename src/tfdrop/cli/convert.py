"""``tfdrop convert SRC --to FORMAT``: the daemon's conversion, once, from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from tfdrop.cli.common import (
    add_format_arguments,
    add_limit_argument,
    add_write_arguments,
    bounded_int,
    fail,
    limits_from_args,
    usage_error,
)
from tfdrop.cli.malloc import fix_thresholds
from tfdrop.cli.progress import ProgressBar, on_terminal
from tfdrop.cli.stops import Stops, Terminated
from tfdrop.config import FILES_RESERVED, MAX_JOBS, MAX_SHARDS, SUBSETS_ASSUMED
from tfdrop.convert import ConvertOptions, Report, convert
from tfdrop.daemon.fdlimit import raise_open_files
from tfdrop.errors import TfdropError
from tfdrop.labels import load_label_map
from tfdrop.leftovers import UNHELD_AGE_S
from tfdrop.pool import default_jobs
from tfdrop.publish import NAME_MAX, atomic_write, cleanup_temps, name_fits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="a zip, a folder, or a bare .tfrecord file")
    add_format_arguments(parser)
    parser.add_argument(
        "-o", "--output", type=Path, help="output archive (.zip); default: beside SRC"
    )
    add_write_arguments(parser, max_shards=MAX_SHARDS, images_help="do not embed/copy images")
    parser.add_argument(
        "-j",
        "--jobs",
        type=bounded_int(1, MAX_JOBS),
        default=None,
        help="worker processes reading the source (default and most: the cores this process "
        "may use)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    add_limit_argument(parser)


def default_output(src: Path, target: str) -> Path:
    """``<stem>.<target>.zip`` beside the source (``.1``, ``.2`` ... if taken)."""
    stem = src.name[: -len(".zip")] if src.name.lower().endswith(".zip") else src.stem
    out = src.with_name(f"{stem}.{target}.zip")
    n = 1
    while out.exists():
        out = src.with_name(f"{stem}.{target}.{n}.zip")
        n += 1
    return out


def report_path_of(out: Path) -> Path:
    """``x.zip`` -> ``x.report.json`` beside it."""
    return out.with_name(out.name[: -len(".zip")] + ".report.json")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (one inode, through links), or would once written."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return False


def output_conflict(src: Path, out: Path, label_map: Path | None) -> str | None:
    """Why writing ``out`` (and its report) would destroy an input, or None when it is safe.

    The input and the pinned label map are read while the output is written, and the report
    is written last: neither may be, or lie inside, what is being read.
    """
    report = report_path_of(out)
    for written, what_out in ((out, "-o"), (report, "the report")):
        if not name_fits(written.name):
            return f"{what_out} name {written.name!r} is over the {NAME_MAX}-byte name limit"
    inputs = [(src, "the input")] + ([(label_map, "the label map")] if label_map else [])
    for written, what_out in ((out, "-o"), (report, f"the report {report.name}")):
        for read, what_in in inputs:
            if _same_file(written, read):
                return f"{what_out} ({written}) is {what_in}; it would be overwritten"
            if _inside(written, read):
                return f"{what_out} ({written}) lies inside {what_in} folder {read}"
    for written, what_out in ((out, "-o"), (report, "the report")):
        if written.is_dir():
            return f"{what_out} ({written}) is a folder"
    if not out.parent.is_dir():
        return f"the output folder {out.parent} does not exist"
    return None


def _write_report(report_path: Path, text: str, out: Path) -> int:
    try:
        # a temp name, then a rename: a full disk left a 0-byte report (an attack's finding)
        with atomic_write(report_path) as f:
            f.write(text.encode())
    except OSError as exc:
        return fail(
            f"{report_path}: cannot write the report: {exc.strerror or exc}",
            hint=f"the archive itself was published as {out}",
        )
    return 0


def run(args: argparse.Namespace) -> int:
    src: Path = args.src
    if not src.exists():
        return fail(f"{src}: no such file or folder")
    out: Path = args.output or default_output(src, args.to)
    if out.suffix.lower() != ".zip":
        return usage_error("convert", "-o must name a .zip archive")
    conflict = output_conflict(src, out, args.label_map)
    if conflict is not None:
        return usage_error("convert", f"{conflict}; choose another -o")
    maps = [args.label_map] if args.label_map else []
    with contextlib.suppress(OSError):  # temp archives of killed runs (never a live one's)
        cleanup_temps(out.parent, min_age=UNHELD_AGE_S, keep=[src, *maps])
    try:
        with Stops(out):  # until the report is written: a signal after publishing is no stop
            report = _convert(args, src, out, maps)
            if isinstance(report, int):
                return report
            text = json.dumps(report.to_dict(), indent=2) + "\n"
            code = _write_report(report_path_of(out), text, out)
            if code == 0 and not args.quiet:
                print(report.summary())
            return code
    except Terminated as stop:  # after the cleanup, which ran as it unwound
        print(f"tfdrop: {stop.message}", file=sys.stderr)
        return stop.exit_code


def _convert(args: argparse.Namespace, src: Path, out: Path, keep: list[Path]) -> Report | int:
    """The conversion, or the exit code of its failure (the error printed)."""
    fix_thresholds()  # before the workers fork: they stream the gigabytes
    limits = limits_from_args(args)
    # every shard of every subset is open while writing (formats/tfrecord.py)
    raise_open_files(args.shards * SUBSETS_ASSUMED + FILES_RESERVED)
    progress = ProgressBar(enabled=on_terminal() and not args.quiet)
    try:
        with progress:  # the bar is off the screen before an error is printed
            label_map = load_label_map(args.label_map) if args.label_map else None
            options = ConvertOptions(
                source_format=args.source,
                target_format=args.to,
                label_map=label_map,
                masks=args.masks,
                shards=args.shards,
                compression=args.compression,
                images=args.images,
                limits=limits,
                # more workers than cores only adds memory (each holds its own reader)
                jobs=min(args.jobs or default_jobs(), default_jobs()),
            )
            return convert(src, out, options, progress=progress, keep=keep)
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        if exc.filename is not None:
            return fail(f"{exc.filename}: {exc.strerror or exc}")
        return fail(
            f"{exc.strerror or exc} while converting {src} into {out}",
            hint=f"check the space and permissions of {out.parent} and of the temp folder "
            f"{tempfile.gettempdir()} (TMPDIR)",
        )
