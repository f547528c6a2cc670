"""``tfdrop status [--config FILE] [--json]``: what each pipeline is waiting for and doing.

For each pipeline of the config (the same one ``tfdrop run`` would use): whether its daemon
runs, the counts since it started, the drops waiting in the drop folder, the claims (running
with their progress, retrying with the error and the next attempt, or waiting for a restart),
and the newest drops in ``done/`` and ``failed/`` (with the error kind and hint). Read from
the folders and the status files (:mod:`tfdrop.daemon.survey`): no socket, and it works with
the daemon stopped. ``--json`` prints one object for scripts, times in UTC ISO 8601. Exit 0,
or 1 for a config that cannot be read: a folder or file that cannot be read is shown as
``unreadable: <reason>`` in its place.

Names, messages and hints come from whoever wrote the drop folder, so every line of the table
goes through one escaping helper (:func:`tfdrop.archive.limits.shown`: ESC, BEL, CR, LF, C1,
DEL and other unprintable characters as ``\\xNN`` / ``\\n``, a byte of a non-UTF-8 name as
``\\xNN``): a name cannot move the cursor, retitle the terminal or forge a line. ``--json``
is valid UTF-8 (a non-UTF-8 name's bytes as ``\\xNN`` text; JSON escapes the rest).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from tfdrop.archive.limits import shown
from tfdrop.cli.common import bounded_int, config_failed, fail
from tfdrop.config import resolve_config
from tfdrop.daemon.survey import iso, survey
from tfdrop.errors import ConfigError

_TIME_KEYS: Final = frozenset(
    {"since", "time", "started_at", "updated_at", "claimed_at", "next_attempt_at"}
)
_SHOWN: Final = 20  # waiting drops and claims listed in the table (all are counted)
_PAD: Final = " " * 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config (default: $TFDROP_CONFIG, else the built-in default pipeline)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    parser.add_argument(
        "--pipeline", metavar="NAME", help="only this pipeline (default: every one)"
    )
    parser.add_argument(
        "--recent",
        type=bounded_int(1, 1000),
        default=5,
        metavar="N",
        help="newest done and failed drops shown (default 5)",
    )


def _utf8(text: str) -> str:
    """Text that encodes as UTF-8: a non-UTF-8 file name's bytes (``os.fsdecode``'s surrogate
    escapes) as ``\\xNN``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no file name makes
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")
    return text


def _for_json(value: Any) -> Any:
    """The survey with its Unix times as ISO 8601 strings and every string UTF-8 (--json)."""
    if isinstance(value, dict):
        return {
            k: iso(v) if k in _TIME_KEYS and isinstance(v, int | float) else _for_json(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_for_json(v) for v in value]
    if isinstance(value, str):
        return _utf8(value)
    return value


def _span(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def _ago(t: Any, now: float) -> str:
    return _span(now - t) if isinstance(t, int | float) else "?"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def _daemon_line(p: dict[str, Any], now: float) -> str:
    if not p["instances"]:
        return "never started (no status file in its state folder)"
    parts = []
    for i in p["instances"]:
        where = f"{i['instance']}, pid {i['pid']}"
        if i["state"] == "running":
            parts.append(f"running ({where}, status {_ago(i['updated_at'], now)} old)")
        elif i["state"] == "unreadable":
            parts.append(f"unknown ({i['instance']}: {i['why']})")
        else:
            parts.append(f"{i['state']} ({where}: {i['why']})")
    return "; ".join(parts)


def _counts_line(c: dict[str, Any]) -> str:
    if c["since"] is None:
        return "none yet"
    keys = ("seen", "taken", "published", "duplicate", "failed", "retried", "items")
    return f"since {iso(c['since'])}: " + ", ".join(f"{k} {c[k]}" for k in keys)


def _claim_line(c: dict[str, Any], now: float) -> str:
    state = c["state"]
    if state == "unreadable":
        return f"unreadable: {c['why']}"
    head = f"{c['name']}  job {c['job']}  "
    if state == "running":
        total = f"/{c['total']}" if c.get("total") else ""
        return head + f"running: {c.get('items') or 0}{total} items, {_ago(c['started_at'], now)}"
    error = f"{c['kind']}: {c['message']}" if c.get("kind") else ""
    if state == "retrying":
        when = c.get("next_attempt_at")
        due = f"in {_span(when - now)}" if isinstance(when, int | float) else "soon"
        return head + f"retrying (attempt {c.get('attempt')}, next {due}): {error}"
    if state == "queued":
        return head + "queued for a worker"
    last = f"; last error {error}" if error else ""
    return head + f"claimed by {c['instance']}, {c.get('note', '')}{last}"


def _count(piece: dict[str, Any], where: str) -> str:
    if "unreadable" in piece:
        return f"unreadable: {piece['unreadable']}"
    return f"{piece['count']}{where}"


def _lines(p: dict[str, Any], now: float) -> list[str]:
    out = [f"{p['pipeline']}: {p['drop']} -> {p['output']}"]
    out.append(f"  daemon:   {_daemon_line(p, now)}")
    out.append(f"  counts:   {_counts_line(p['counts'])}")
    w = p["waiting"]
    out.append(f"  waiting:  {_count(w, '')}")
    for d in w["drops"][:_SHOWN]:
        queued = "  (queued)" if d["queued"] else ""
        out.append(f"{_PAD}{d['name']}  {_size(d['size'])}  {_ago(d['since'], now)}{queued}")
    claims = [c for c in p["claimed"] if c["state"] != "unreadable"]
    out.append(f"  claimed:  {len(claims)}")
    shown_claims = [c for c in p["claimed"] if c["state"] == "unreadable"] + claims[:_SHOWN]
    out += [_PAD + _claim_line(c, now) for c in shown_claims]
    out.append(f"  done:     {_count(p['done'], ' in done/')}")
    for d in p["done"]["recent"]:
        what = f"{d.get('status', 'done')} {d.get('output', '')}".rstrip()
        items = f", {d['items']} items" if "items" in d else ""
        out.append(f"{_PAD}{iso(d.get('time'))}  {d.get('name')}  {what}{items}")
    out.append(f"  failed:   {_count(p['failed'], ' in failed/')}")
    for f in p["failed"]["recent"]:
        kind = f"{f['kind']}: " if "kind" in f else ""
        out.append(f"{_PAD}{iso(f['time'])}  {f['name']}  {kind}{f.get('message', '')}")
        if f.get("hint"):
            out.append(f"{_PAD}  hint: {f['hint']}")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args.config)
    except ConfigError as exc:
        return config_failed(exc)
    pipelines = [p for p in config.pipelines if args.pipeline in (None, p.name)]
    if not pipelines:
        names = ", ".join(p.name for p in config.pipelines)
        return fail(f"no pipeline named {args.pipeline!r}", hint=f"the config has: {names}")
    now = time.time()
    found = [survey(p, recent=args.recent, now=now) for p in pipelines]
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:  # never a UnicodeEncodeError, whatever the output encoding
        reconfigure(errors="backslashreplace")
    if args.json:
        source = str(config.source or "built-in default")
        doc: dict[str, Any] = {"now": iso(now), "config": source, "pipelines": found}
        json.dump(_for_json(doc), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    for i, p in enumerate(found):
        if i:
            print()
        print("\n".join(shown(line) for line in _lines(p, now)))
    return 0
