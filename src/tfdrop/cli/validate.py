"""``tfdrop validate PATH``: check every record (framing, both CRCs, Example, OD schema).

Exit 0 when valid, 1 when not; each problem names the file, record index, byte offset (in the
decompressed record stream), key and what is wrong. A broken frame ends that file (there is no
way to resynchronise on a TFRecord), the other files are still checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tfdrop.cli.common import fail, load_label_map
from tfdrop.cli.records import iter_file_records, missing_shards, record_files
from tfdrop.codec.example import parse_example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import DataError, TfdropError
from tfdrop.limits import DEFAULT_LIMITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help=".tfrecord file, one shard of a set, or a zip")
    parser.add_argument("--label-map", type=Path, help="check class text/ids against this map")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument(
        "--max-problems", type=int, default=100, help="stop listing after this many (default 100)"
    )


def _emit(problem: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(problem))
        return
    where = [problem["file"]]
    if "record" in problem:
        where.append(f"record {problem['record']}")
    if "offset" in problem:
        where.append(f"offset {problem['offset']}")
    if "object" in problem:
        where.append(f"object {problem['object']}")
    if problem.get("key"):
        where.append(problem["key"])
    print(f"{', '.join(where)}: {problem['message']}")


def run(args: argparse.Namespace) -> int:
    if not args.path.exists():
        return fail(f"{args.path}: no such file or folder")
    problems = records = 0
    files_checked = 0
    try:
        pinned = load_label_map(args.label_map) if args.label_map else None
        limits = DEFAULT_LIMITS  # the lead's --limit flag replaces this
        cap = limits.max_values_per_feature
        with record_files(args.path, limits) as (files, found_map, source):
            if not files:
                return fail(f"{args.path}: no .tfrecord, .record or shard files found")
            label_map = pinned or found_map
            for display, name in missing_shards(files):
                problems += 1  # a shard set with a file missing is an incomplete dataset
                _emit(
                    {"file": display, "message": f"shard set incomplete: {name} is missing"},
                    args.json,
                )
            for rf in files:
                files_checked += 1
                offset = 0
                try:
                    for index, offset, rec in iter_file_records(rf, source, limits):
                        records += 1
                        if fast_check(rec, label_map, max_values_per_feature=cap) is not None:
                            continue  # all clear (C accelerator); else name the problems
                        try:
                            parsed = parse_example(rec, max_values_per_feature=cap, strict=True)
                            found = [p.to_dict() for p in check_parsed(parsed, label_map)]
                        except DataError as exc:
                            found = [{"key": exc.key or "", "message": exc.message}]
                        for p in found:
                            problems += 1
                            if problems <= args.max_problems:
                                _emit(
                                    {"file": rf.display, "record": index, "offset": offset} | p,
                                    args.json,
                                )
                except TfdropError as exc:
                    problems += 1
                    bad: dict[str, Any] = {
                        "file": rf.display,
                        "message": exc.message,
                        "kind": exc.kind,
                    }
                    bad |= {
                        k: v
                        for k, v in (("record", exc.record), ("offset", exc.offset))
                        if v is not None
                    }
                    _emit(bad, args.json)
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        return fail(f"{exc.filename or args.path}: {exc.strerror or exc}")
    summary = {
        "valid": problems == 0,
        "files": files_checked,
        "records": records,
        "problems": problems,
    }
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        state = "valid" if problems == 0 else f"INVALID: {problems} problems"
        print(f"{args.path}: {records} records in {files_checked} files: {state}")
    return 0 if problems == 0 else 1
