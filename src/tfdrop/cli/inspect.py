"""``tfdrop inspect PATH``: records as readable text, or JSON lines with ``--json``.

Image bytes and masks are shown by size and SHA-256, not dumped. ``--summary``: the hand-off to
training instead, for any archive tfdrop reads (:mod:`tfdrop.cli.summary`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from tfdrop.cli.common import add_limit_argument, bare_limit, fail, limits_from_args
from tfdrop.cli.records import iter_file_records, record_files
from tfdrop.cli.summary import summarize_path, summary_json, summary_text
from tfdrop.codec.example import decode_example
from tfdrop.codec.model import Item, LabelMap
from tfdrop.errors import TfdropError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help=".tfrecord file, one shard of a set, or a zip")
    parser.add_argument(
        "-n",
        "--max-records",
        type=int,
        default=None,
        metavar="N",
        help="show at most N records (also accepted as a bare --limit N)",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="num_classes, counts per label per subset, input globs and the pipeline.config "
        "input_reader block (any format tfdrop reads)",
    )
    add_limit_argument(parser)


def item_dict(item: Item) -> dict[str, Any]:
    return {
        "filename": item.name,
        "subset": item.subset,
        "source_id": item.source_id,
        "width": item.width,
        "height": item.height,
        "format": item.image_format,
        "image_bytes": len(item.image) if item.image else 0,
        "sha256": item.sha256,
        "objects": [
            {
                "label": o.label,
                "id": o.label_id,
                "box": [o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax],
            }
            | {
                k: v
                for k, v in (
                    ("difficult", o.difficult),
                    ("truncated", o.truncated),
                    ("occluded", o.occluded),
                    ("is_crowd", o.is_crowd),
                )
                if v
            }
            | ({"view": o.view} if o.view else {})
            | ({"area": o.area} if o.area is not None else {})
            | ({"mask_bytes": len(o.mask)} if o.mask else {})
            for o in item.objects
        ],
        "other_keys": [k for k, _ in item.extra],
    }


def _finite(v: Any) -> Any:
    """NaN and infinities as strings: ``json.dumps`` would write bare NaN, which is not JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _json(d: dict[str, Any]) -> str:
    return json.dumps(_finite(d), allow_nan=False)


def _text(index: int, display: str, d: dict[str, Any]) -> str:
    lines = [
        f"[{display} #{index}] {d['filename']}  {d['width']}x{d['height']} {d['format']}"
        f"  image {d['image_bytes']} bytes  source_id {d['source_id']!r}"
    ]
    for i, o in enumerate(d["objects"]):
        box = ", ".join(f"{v:.4f}" for v in o["box"])
        flags = " ".join(k for k in ("difficult", "truncated", "occluded", "is_crowd") if o.get(k))
        lines.append(f"  {i}: {o['label']} (id {o['id']}) box [{box}] {flags}".rstrip())
    if d["other_keys"]:
        lines.append(f"  other keys: {', '.join(d['other_keys'])}")
    return "\n".join(lines)


def _summary(args: argparse.Namespace) -> int:
    try:
        tally, summary = summarize_path(args.path, limits_from_args(args, bare=True))
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        return fail(f"{exc.filename or args.path}: {exc.strerror or exc}")
    print(summary_json(tally, summary) if args.json else summary_text(tally, summary))
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.path.exists():
        return fail(f"{args.path}: no such file or folder")
    return _summary(args) if args.summary else _records(args)


def _records(args: argparse.Namespace) -> int:
    shown = 0
    limits = limits_from_args(args, bare=True)
    cap = args.max_records if args.max_records is not None else bare_limit(args)
    try:
        with record_files(args.path, limits) as (files, label_map, source):
            if not files:
                return fail(f"{args.path}: no .tfrecord, .record or shard files found")
            lm: LabelMap | None = label_map
            for rf in files:
                for index, _offset, rec in iter_file_records(rf, source, limits):
                    if cap is not None and shown >= cap:
                        return 0
                    try:
                        item = decode_example(rec, subset=rf.subset, label_map=lm)
                    except TfdropError as exc:
                        raise exc.at(archive=rf.display, record=index) from None
                    d = item_dict(item)
                    print(_json(d) if args.json else _text(index, rf.display, d))
                    shown += 1
    except TfdropError as exc:
        return fail(str(exc), hint=exc.hint)
    except OSError as exc:
        return fail(f"{exc.filename or args.path}: {exc.strerror or exc}")
    return 0
