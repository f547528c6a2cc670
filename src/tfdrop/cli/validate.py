"""``tfdrop validate PATH``: check every record (framing, both CRCs, Example, OD schema).

Exit 0 when valid, 1 when not; each problem names the file, record index, byte offset (in the
decompressed record stream), key and what is wrong (stdout, the report; stderr gets one
``tfdrop: error:`` line with the count and the first problem). A broken frame ends that file
(there is no way to resynchronise on a TFRecord), the other files are still checked.

A record is valid only when TensorFlow parses it with the OD API's feature description and
reads what tfdrop reads: the canonical layout (each key once, one packed list per feature),
exactly one value for each single-value key present, per-object lists of one length, the
right types, and the schema rules of :mod:`tfdrop.codec.schema`. The job budget's caps
(:class:`tfdrop.limits.Limits`, changed with ``--limit NAME=N``) apply to the streams and the
values per feature. Without a label map, class ids and texts must agree across records (one
text per id, one id per text): otherwise no label map fits them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tfdrop.cli import checkunits
from tfdrop.cli.checks import own_problems, record_problems
from tfdrop.cli.checkunits import FileRanges, RangeReader, Verdict
from tfdrop.cli.common import add_limit_argument, bounded_int, fail, limits_from_args
from tfdrop.cli.hashing import hashed_in_order
from tfdrop.cli.malloc import fix_thresholds
from tfdrop.cli.progress import ProgressBar, on_terminal
from tfdrop.cli.records import RecordFile, iter_file_records, missing_shards, record_files
from tfdrop.cli.stops import Stops, Terminated
from tfdrop.codec.framing import HEADER_SIZE, header_length
from tfdrop.codec.labeltable import LabelTable
from tfdrop.codec.model import LabelMap
from tfdrop.codec.schema import fast_scan
from tfdrop.errors import TfdropError, WorkerDiedError
from tfdrop.labels import load_label_map
from tfdrop.limits import Limits
from tfdrop.pool import MAX_WORKERS, can_fork, default_jobs

if TYPE_CHECKING:
    from tfdrop.archive import Source

SPLIT_BYTES = 256 << 20
"""Record files from this size on are checked in ranges on worker processes
(:mod:`tfdrop.cli.checkunits`); a smaller one is done before a pool pays."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help=".tfrecord file, one shard of a set, or a zip")
    parser.add_argument("--label-map", type=Path, help="check class text/ids against this map")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument(
        "--max-problems", type=int, default=100, help="stop listing after this many (default 100)"
    )
    parser.add_argument(
        "--jobs",
        type=bounded_int(1, MAX_WORKERS),
        help="worker processes for a big uncompressed file (default: the cores this may use)",
    )
    add_limit_argument(parser)


def _format(problem: dict[str, Any]) -> str:
    where = [problem["file"]]
    if "record" in problem:
        where.append(f"record {problem['record']}")
    if "offset" in problem:
        where.append(f"offset {problem['offset']}")
    if "object" in problem:
        where.append(f"object {problem['object']}")
    if problem.get("key"):
        where.append(problem["key"])
    return f"{', '.join(where)}: {problem['message']}"


@dataclass(slots=True)
class _Tally:
    """What one run found, and how it prints problems (stdout: the report)."""

    as_json: bool
    max_problems: int
    bar: ProgressBar
    problems: int = 0
    records: int = 0
    files: int = 0
    first: str = ""

    def add(self, problem: dict[str, Any], *, always: bool = False) -> None:
        """Count a problem; print it unless past ``--max-problems`` (``always``: file-level)."""
        self.problems += 1
        text = _format(problem)
        if not self.first:
            self.first = text
        if always or self.problems <= self.max_problems:
            self.bar.clear()
            print(json.dumps(problem) if self.as_json else text)


@dataclass(frozen=True, slots=True)
class _Run:
    """What every file of one run is checked with."""

    label_map: LabelMap | None
    t: _Tally
    limits: Limits
    table: LabelTable | None  # no label map: the records' ids and texts must agree
    jobs: int


def _check_file(rf: RecordFile, source: Source | None, run: _Run) -> None:
    t = run.t
    t.files += 1
    fd = None
    try:
        if run.jobs >= 2 and can_fork() and source is None:
            fd = os.open(rf.path, os.O_RDONLY | os.O_CLOEXEC)
            size = _splittable(fd, run.limits)
            if size is not None:
                _check_split(fd, size, rf, run)
                return
        _check_records(iter_file_records(rf, source, run.limits), rf, run)
    except WorkerDiedError as exc:  # not the file's fault: the command fails
        hint = "--jobs 1 checks the file in this process alone"
        raise WorkerDiedError(exc.message, hint=hint) from None
    except TfdropError as exc:
        # a broken frame, stream or limit ends this file (no way to resynchronise)
        bad: dict[str, Any] = {"file": rf.display, "message": exc.message, "kind": exc.kind}
        bad |= {k: v for k, v in (("record", exc.record), ("offset", exc.offset)) if v is not None}
        t.add(bad, always=True)
    finally:
        if fd is not None:
            os.close(fd)


def _check_records(records: Iterator[tuple[int, int, bytes]], rf: RecordFile, run: _Run) -> None:
    """One pass over records: framing and the all-clear check here, the SHA-256s in threads."""
    t, label_map, table = run.t, run.label_map, run.table
    cap = run.limits.max_values_per_feature
    scanned = (
        (index, offset, rec, fast_scan(rec, label_map, max_values_per_feature=cap,
                                       labels=table is not None))
        for index, offset, rec in records
    )  # fmt: skip
    for index, offset, rec, fast in hashed_in_order(scanned):
        t.records += 1
        t.bar(t.records)
        own = own_problems(rec, fast, label_map, cap)
        for p in record_problems(own, table, f"record {index} of {rf.display}"):
            t.add({"file": rf.display, "record": index, "offset": offset} | p.to_dict())


def _splittable(fd: int, limits: Limits) -> int | None:
    """The size of a bare record file open at ``fd`` when it is big and uncompressed (its
    first header checks), else None. A zip member is read in one pass: its CRC-32 is found
    bad when its end is read, before the records of that last chunk, which ranges cannot
    repeat (an outside attack saw other problems and errors with --jobs 2)."""
    size = os.fstat(fd).st_size
    if not SPLIT_BYTES <= size <= limits.max_stream_bytes:
        return None
    head = os.pread(fd, HEADER_SIZE, 0)
    if len(head) < HEADER_SIZE or header_length(head) is None:
        return None
    return size


def _check_split(fd: int, size: int, rf: RecordFile, run: _Run) -> None:
    """Ranges checked by worker processes; their verdicts replayed here in record order
    against the label table (:mod:`tfdrop.cli.checkunits`)."""
    t, table = run.t, run.table
    base = t.records
    ranges = FileRanges(fd)
    verdicts = checkunits.checked_units(
        ranges, size, run.label_map, run.limits, labels=table is not None, jobs=run.jobs
    )
    for v in verdicts:
        t.records = base + v.unit.index
        if v.redo:  # too much to send back: checked here instead
            reader = RangeReader(ranges, v.unit)
            _check_records(checkunits.range_records(reader, run.limits), rf, run)
            # the records it counted (an attack found a redone last range counted as none)
            v.records = t.records - base - v.unit.index
        else:
            _replay(v, rf, run, base)
        t.records = base + v.unit.index + v.records
        t.bar(t.records)
        if v.error is not None:
            raise v.error.at(archive=rf.display)


def _replay(v: Verdict, rf: RecordFile, run: _Run, base: int) -> None:
    """A worker's verdict on one range, its label pairs observed in record order."""
    t, table = run.t, run.table
    known = [p in table.known for p in v.pairs] if table is not None else []
    for e in v.entries:
        t.records = base + e.index + 1
        problems = e.before
        if table is not None and e.pairs and not all(known[i] for i in e.pairs):
            texts = [v.pairs[i][0] for i in e.pairs]
            ids = [v.pairs[i][1] for i in e.pairs]
            where = f"record {e.index} of {rf.display}"
            problems = problems + [p.to_dict() for p in table.observe(texts, ids, where)]
            for i in e.pairs:
                known[i] = v.pairs[i] in table.known
        for p in problems + e.after:
            t.add({"file": rf.display, "record": e.index, "offset": e.offset} | p)


BIG_INPUT = 64 << 20


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def run(args: argparse.Namespace) -> int:
    if not args.path.exists():
        return fail(f"{args.path}: no such file or folder")
    if _size(args.path) > BIG_INPUT:  # a small file's start-up is left as it is
        fix_thresholds()
    bar = ProgressBar(unit="record", enabled=on_terminal() and not args.json)
    t = _Tally(as_json=args.json, max_problems=args.max_problems, bar=bar)
    try:
        # Stops: a signal unwinds the workers too; the bar is off the screen before a message
        with Stops(), bar:
            code = _check_path(args, t)
    except Terminated as stop:
        print(f"tfdrop: {stop.message}", file=sys.stderr)
        return stop.exit_code
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        return fail(f"{exc.filename or args.path}: {exc.strerror or exc}")
    return code if code is not None else _summary(args, t)


def _check_path(args: argparse.Namespace, t: _Tally) -> int | None:
    """Every record file behind the path checked into ``t``; an exit code when there is none."""
    limits = limits_from_args(args)
    pinned = load_label_map(args.label_map) if args.label_map else None
    with record_files(args.path, limits) as (files, found_map, source):
        if not files:
            return fail(f"{args.path}: no .tfrecord, .record or shard files found")
        label_map = pinned or found_map
        for display, name in missing_shards(files):
            # a shard set with a file missing is an incomplete dataset
            t.add({"file": display, "message": f"shard set incomplete: {name} is missing"})
        # no label map: the records' ids and texts must agree with each other
        table = LabelTable(limits.max_labels) if label_map is None else None
        jobs = min(args.jobs or default_jobs(), default_jobs())
        checking = _Run(label_map, t, limits, table, jobs)
        for rf in files:
            _check_file(rf, source, checking)
    return None


def _summary(args: argparse.Namespace, t: _Tally) -> int:
    summary = {
        "valid": t.problems == 0,
        "files": t.files,
        "records": t.records,
        "problems": t.problems,
    }
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        state = "valid" if t.problems == 0 else f"INVALID: {t.problems} problems"
        print(f"{args.path}: {t.records} records in {t.files} files: {state}")
    if t.problems:
        # the report is on stdout; stderr says in one line that (and why) the input failed
        return fail(f"{args.path}: not valid ({t.problems} problems); the first: {t.first}")
    return 0
