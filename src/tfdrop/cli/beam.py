"""``tfdrop beam SRC... --to tfrecord --output PREFIX [-- BEAM_OPTIONS...]``: one dataset
converted by an Apache Beam pipeline (DirectRunner here; Flink, Spark or Dataflow with
``-- --runner=...``).

Apache Beam is the optional extra ``tfdrop[beam]``: this module imports :mod:`tfdrop.beam`
(the only room that imports ``apache_beam``) when the command runs, and says how to install
the extra when it is missing, so ``tfdrop`` itself never needs Beam.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from tfdrop.cli.common import (
    add_format_arguments,
    add_limit_argument,
    add_write_arguments,
    bounded_int,
    fail,
    limits_from_args,
    usage_error,
)
from tfdrop.errors import TfdropError
from tfdrop.labels import load_label_map
from tfdrop.limits import Limits

if TYPE_CHECKING:
    from types import ModuleType

INSTALL_HINT: Final = "install the extra: pip install 'tfdrop[beam]' (or pip install apache-beam)"
MAX_BEAM_SHARDS: Final = 99_999
_HARNESS_LOG: Final = "--default_sdk_harness_log_level"
_TFDROP_ERROR = re.compile(r"^tfdrop\.[\w.]+(?:Error|Exceeded): (.+?)(?: \[while running .*\])?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        nargs="+",
        help="zips, folders, globs of zips (quote them), TFRecord files or globs of shards; "
        "local or any file system Beam has (gs://, s3://, hdfs://)",
    )
    add_format_arguments(parser)
    parser.add_argument(
        "-o", "--output", required=True, help="output folder (shards, label map, report)"
    )
    add_write_arguments(parser, max_shards=MAX_BEAM_SHARDS, images_help="do not embed images")
    parser.add_argument(
        "--max-bad-items",
        type=bounded_int(0, 1 << 62),
        default=0,
        help="items that may fail (into bad_items.jsonl) before the run fails (default 0)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's own logs")
    add_limit_argument(parser)
    parser.epilog = (
        "Beam's pipeline options go after a lone '--', e.g. -- --runner=FlinkRunner "
        "--flink_master=host:8081 (default: DirectRunner)."
    )


def _load_beam() -> ModuleType | None:
    try:
        return importlib.import_module("tfdrop.beam")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "apache_beam":
            return None
        raise


def _runner_error(text: str) -> str:
    """The tfdrop error inside a runner's failure text (a worker's traceback), else its end."""
    found = [m.group(1) for line in text.splitlines() if (m := _TFDROP_ERROR.match(line))]
    if found:
        return found[-1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return f"the pipeline failed: {lines[-1] if lines else 'no message'}"


def _quiet_logs(verbose: bool) -> None:
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    # Beam logs a warning on import and a traceback per failed bundle; the error is printed
    # once, below, in words
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _worker_stderr(verbose: bool) -> Iterator[None]:
    """Unless ``-v``: Beam's worker processes (``multi_processing``) log to the stderr they
    inherit, bypassing this process's logging; they get a discarded file instead while the
    pipeline runs (this process prints its error after)."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run(args: argparse.Namespace) -> int:
    if args.to != "tfrecord":
        return usage_error(
            "beam",
            f"--to {args.to}: tfdrop beam writes tfrecord (the target that scales out); "
            f"convert its output with 'tfdrop convert OUTPUT/<subset>.tfrecord-00000-of-N "
            f"--to {args.to}'",
        )
    if not args.output.strip():
        return usage_error("beam", "--output is empty: name an output folder")
    limits = limits_from_args(args)
    _quiet_logs(args.verbose)
    beam = _load_beam()
    if beam is None:
        return fail("tfdrop beam needs Apache Beam, which is not installed", hint=INSTALL_HINT)
    started = time.monotonic()
    code, result = _convert(beam, args, limits)
    if code:
        return code
    if not args.quiet:
        print(_summary(beam.read_report(args.output), beam.metric_totals(result), args, started))
    sys.stdout.flush()
    return 0


def _summary(report: dict[str, Any], totals: dict[str, int], args: Any, started: float) -> str:
    """One line, as ``tfdrop convert`` says it (skipped annotations and warnings counted)."""
    skipped = sum(report["skipped"].values())
    extra = f", {skipped} annotations skipped" if skipped else ""
    warns = sum(report["warning_counts"].values())
    extra += f", {warns} warnings" if warns else ""
    return (
        f"{report['source_format']} -> tfrecord: {report['items']} items, "
        f"{report['objects']} objects, {len(report['label_map'])} labels{extra}, "
        f"{report['bad_items']} bad items, {len(report['shards'])} shards -> "
        f"{args.output} ({time.monotonic() - started:.2f} s; metrics "
        f"{json.dumps(totals, sort_keys=True)})"
    )


def _convert(beam: ModuleType, args: argparse.Namespace, limits: Limits) -> tuple[int, object]:
    """Run the pipeline: (0, its result), or (the exit code, None) with the error printed."""
    try:
        beam.check_output(args.output)
        if beam.output_in_use(args.output):
            return usage_error(
                "beam", f"--output {args.output} holds files; choose an empty folder"
            ), None
        label_map = load_label_map(args.label_map) if args.label_map else None
        opts = beam.BeamOptions(
            source_format=args.source,
            label_map=label_map,
            masks=args.masks,
            images=args.images,
            shards=args.shards,
            compression=args.compression,
            max_bad_items=args.max_bad_items,
            limits=limits,
        )
        passthrough = list(args.passthrough)
        if not args.verbose and not any(a.startswith(_HARNESS_LOG) for a in passthrough):
            passthrough.append(f"{_HARNESS_LOG}=CRITICAL")  # worker processes log too
        with _worker_stderr(args.verbose):
            result = beam.convert_dataset(args.src, args.output, opts, passthrough)
        return 0, result
    except TfdropError as exc:
        if exc.kind == "pipeline_option":
            code = usage_error("beam", f"{exc} (after '--')")
            print(f"tfdrop: hint: {exc.hint}", file=sys.stderr)
            return code, None
        return fail(str(exc), hint=exc.hint), None
    except RuntimeError as exc:  # a portable runner's failure: the worker's traceback as text
        return fail(_runner_error(str(exc))), None
    except OSError as exc:
        return fail(f"{exc.filename or args.output}: {exc.strerror or exc}"), None
