"""What a pipeline's folders and status files say, for ``tfdrop status``.

Reads only: the drop folder's top level (drops waiting), every instance's work folder
(``<state>/work/<instance>/<job>/<name>``: claims), ``done/``, ``failed/`` with its
``<name>.error.json`` files, and the status files the daemon keeps (:mod:`.status`). So it
answers with the daemon running or stopped, on any host that mounts the folders, and needs no
socket. Whether an instance is alive: its status file says ``stopped`` (a clean stop), its pid
is gone (same host; killed), or the file has not been rewritten for three heartbeats (another
host, or a hung daemon: ``stale``). Every read is bounded (the files' sizes are capped; only
the ``recent`` newest error files are opened) and trusts nothing (:mod:`.statusdoc`): a folder
or file that cannot be read is shown as ``unreadable`` with the reason in its place, and the
rest of the survey goes on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from tfdrop.config import PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX
from tfdrop.daemon.statusdoc import Unreadable, describe, error_doc, read_json, status_doc
from tfdrop.daemon.watch import OWN_FOLDERS, matches
from tfdrop.publish import is_temp_name

STATUS_FOLDER: Final = "status"
HEARTBEAT_SECONDS: Final = 15.0
"""The daemon rewrites its status file at least this often, so the file's age tells a hung
daemon (:mod:`.status` writes it, this module reads it)."""
COUNTS: Final = (
    "seen",
    "taken",
    "published",
    "duplicate",
    "failed",
    "retried",
    "items",
    "objects",
    "bytes_in",
    "bytes_out",
)
"""The counts since start in a status file."""
STATUS_MAX_BYTES: Final = 4 << 20  # a status file holds 40 short records: far below this
ERROR_MAX_BYTES: Final = 1 << 20
STALE_HEARTBEATS: Final = 3
WAITING_SHOWN: Final = 1000  # drops listed by name (all are counted)
PID_LIMIT: Final = 1 << 22  # Linux's highest pid_max


def status_path(state: Path, instance: str) -> Path:
    """The status file of one instance in a pipeline's state folder."""
    return state / STATUS_FOLDER / f"{instance}.json"


def iso(t: float | None) -> str | None:
    """Unix seconds as UTC ISO 8601 (``2026-01-02T03:04:05Z``)."""
    if t is None:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, OSError, ValueError):  # a file's mtime set past what C time holds
        return "?"


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The folder's entries; none when it is not there (Unreadable: it cannot be listed)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:  # EACCES, ELOOP (a link loop), EIO ...
        raise Unreadable(f"{folder}: {describe(exc)}") from None


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _kind_of(entry: os.DirEntry[str]) -> str:
    """``dir``, ``file``, ``link`` or ``other`` (never following a link)."""
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "other"
    except OSError:
        return "other"


def _pid_alive(pid: object) -> bool:
    """Whether ``pid`` runs here and is a tfdrop process (a reused pid is not)."""
    if not isinstance(pid, int) or not 0 < pid < PID_LIMIT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    except OSError:
        return True  # cannot tell: trust the pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to tell: trust the pid
    return b"tfdrop" in cmdline


def liveness(doc: dict[str, Any], now: float) -> tuple[str, str]:
    """(``running`` | ``not running`` | ``stale``, why) for one status file."""
    updated = doc.get("updated_at")
    age = now - updated if isinstance(updated, int | float) else float("inf")
    if doc.get("state") == "stopped":
        return "not running", f"stopped at {iso(updated) if age != float('inf') else '?'}"
    if doc.get("host") == socket.gethostname() and not _pid_alive(doc.get("pid")):
        last = iso(updated) or "?"
        return "not running", f"pid {doc.get('pid')} is gone (killed?); last status {last}"
    beat = doc.get("heartbeat_s")
    beat = beat if isinstance(beat, int | float) and beat > 0 else HEARTBEAT_SECONDS
    if age > STALE_HEARTBEATS * beat + 5:
        return "stale", f"status not rewritten for {age:.0f} s (hung, or its host is down?)"
    return "running", ""


def _unreadable_instance(instance: str, why: str) -> dict[str, Any]:
    return {"instance": instance, "_alive": "unreadable", "_why": why}


def _instances(state: Path, now: float) -> list[dict[str, Any]]:
    """Every status file, checked; one that cannot be used is an ``unreadable`` instance (so
    never "never started" for a daemon whose file is refused)."""
    try:
        entries = _entries(state / STATUS_FOLDER)
    except Unreadable as exc:
        return [_unreadable_instance("?", f"status folder unreadable ({exc})")]
    out = []
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        name = entry.name.removesuffix(".json")
        try:
            doc = status_doc(read_json(Path(entry.path), STATUS_MAX_BYTES))
        except FileNotFoundError:
            continue  # replaced while we looked
        except Unreadable as exc:
            out.append(_unreadable_instance(name, f"unreadable status file ({entry.path}: {exc})"))
            continue
        alive, why = liveness(doc, now)
        doc["_alive"], doc["_why"] = alive, why
        doc.setdefault("instance", name)
        out.append(doc)
    return out


def _overall(docs: list[dict[str, Any]]) -> str:
    states = {d["_alive"] for d in docs}
    for state in ("running", "stale"):
        if state in states:
            return state
    if not docs:
        return "never started"
    if "unreadable" in states:
        return "unknown"  # an unreadable status file may be a live daemon's
    newest = max(docs, key=lambda d: d.get("updated_at") or 0)
    return str(newest["_alive"])


_WAITS: Final = {"state": "claimed", "note": "taken up when its daemon starts again"}


def _claim_state(doc: dict[str, Any] | None, job: str) -> dict[str, Any]:
    """What the instance that holds a claim says about it."""
    if doc is None:
        return dict(_WAITS)
    if doc["_alive"] == "unreadable":
        return {"state": "claimed", "note": "its daemon's status file is unreadable"}
    alive = doc["_alive"] == "running"
    for r in doc.get("running", []) if alive else []:
        if r.get("job") == job:
            return {"state": "running", **{k: r.get(k) for k in ("items", "total", "started_at")}}
    for r in doc.get("retrying", []):
        if r.get("job") == job:
            keys = ("attempt", "reason", "kind", "message", "next_attempt_at")
            info = {k: r.get(k) for k in keys}
            return {"state": "retrying", **info} if alive else {**_WAITS, **info}
    if alive and doc.get("retrying_more"):
        return {"state": "claimed", "note": "queued or retrying (not among the retries listed)"}
    return {"state": "queued"} if alive else dict(_WAITS)


def _unreadable(where: str, why: Unreadable) -> dict[str, Any]:
    return {"state": "unreadable", "where": where, "why": str(why)}


def _job_claims(
    inst: os.DirEntry[str], by_instance: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for job in _entries(Path(inst.path)):
        if _kind_of(job) != "dir":
            continue
        try:
            entries = _entries(Path(job.path))
        except Unreadable as exc:
            out.append({**_unreadable(job.path, exc), "job": job.name, "instance": inst.name})
            continue
        inputs = [e for e in entries if not e.name.startswith(".")]
        inputs = [e for e in inputs if _kind_of(e) in ("link", "file")]
        if len(inputs) != 1:
            continue
        claim: dict[str, Any] = {"job": job.name, "name": inputs[0].name}
        claim.update(instance=inst.name, claimed_at=_mtime(job))
        claim.update(_claim_state(by_instance.get(inst.name), job.name))
        out.append(claim)
    return out


def _claims(state: Path, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_instance = {d["instance"]: d for d in docs}
    out = []
    work = state / "work"
    try:
        instances = _entries(work)
    except Unreadable as exc:
        return [_unreadable(str(work), exc)]
    for inst in instances:
        if _kind_of(inst) != "dir":
            continue
        try:
            out += _job_claims(inst, by_instance)
        except Unreadable as exc:
            out.append({**_unreadable(inst.path, exc), "instance": inst.name})
    return sorted(out, key=lambda c: (c.get("job") or "", c.get("where") or ""))


def _waiting(cfg: PipelineConfig, docs: list[dict[str, Any]]) -> dict[str, Any]:
    queued = {
        q["name"]
        for d in docs
        if d["_alive"] == "running"
        for q in d.get("waiting", {}).get("queued", [])
    }
    drops = []
    for e in _entries(cfg.drop):
        name = e.name
        if name in OWN_FOLDERS or is_temp_name(name) or not matches(name, cfg.patterns):
            continue
        if _kind_of(e) == "dir":
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue  # claimed while we looked
        drops.append(
            {"name": name, "size": st.st_size, "since": st.st_mtime, "queued": name in queued}
        )
    drops.sort(key=lambda d: (d["since"], d["name"]))
    return {"count": len(drops), "drops": drops[:WAITING_SHOWN]}


def _recent_records(docs: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The daemon's records of recent outcomes, by the routed file's name."""
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        for r in d.get(key, []):
            moved = r.get("moved_to")
            out.setdefault(Path(moved).name if moved else f"\0{r.get('job')}", r)
    return out


def _done(cfg: PipelineConfig, docs: list[dict[str, Any]], recent: int) -> dict[str, Any]:
    files = [e for e in _entries(cfg.done) if not is_temp_name(e.name)]
    records = _recent_records(docs, "recent_done")
    shown = []
    for e in sorted(files, key=_mtime, reverse=True)[:recent]:
        item: dict[str, Any] = {"name": e.name, "time": _mtime(e)}
        r = records.pop(e.name, None)
        if r is not None:
            item.update({k: r[k] for k in ("job", "status", "output", "items") if k in r})
        shown.append(item)
    for key, r in records.items():  # deleted on success (on_success = "delete")
        if key.startswith("\0"):
            shown.append({k: r[k] for k in ("name", "time", "job", "status", "output") if k in r})
    shown.sort(key=lambda i: i.get("time") or 0.0, reverse=True)
    return {"count": len(files), "recent": shown[:recent]}


def _error_of(failed: Path, name: str) -> dict[str, Any]:
    """What the error file beside a failed input says, or why it says nothing."""
    path = failed / f"{name}{ERROR_SUFFIX}"
    try:
        return error_doc(read_json(path, ERROR_MAX_BYTES))
    except FileNotFoundError:
        return {"message": f"no {name}{ERROR_SUFFIX} beside it"}
    except Unreadable as exc:
        return {"message": f"unreadable error file ({path}: {exc})"}


def _failed(cfg: PipelineConfig, recent: int) -> dict[str, Any]:
    entries = _entries(cfg.failed)
    inputs = [e for e in entries if not is_temp_name(e.name) and not e.name.endswith(ERROR_SUFFIX)]
    shown = []
    for e in sorted(inputs, key=_mtime, reverse=True)[:recent]:
        item: dict[str, Any] = {"name": e.name, "time": _mtime(e)}
        item.update(_error_of(cfg.failed, e.name))
        shown.append(item)
    return {"count": len(inputs), "recent": shown}


def _counts(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts since start of the live instances (else of the newest status file)."""
    docs = [d for d in docs if d["_alive"] != "unreadable"]
    live = [d for d in docs if d["_alive"] == "running"]
    if not live and docs:
        live = [max(docs, key=lambda d: d.get("updated_at") or 0.0)]
    total = {k: sum(d.get("counts", {}).get(k, 0) for d in live) for k in COUNTS}
    starts = [d["started_at"] for d in live if "started_at" in d]
    return {"since": min(starts) if starts else None, **total}


def _piece(read: Callable[[], dict[str, Any]], empty: dict[str, Any]) -> dict[str, Any]:
    """One part of the survey; an unreadable folder is said in its place."""
    try:
        return read()
    except Unreadable as exc:
        return {**empty, "unreadable": str(exc)}


def survey(cfg: PipelineConfig, *, recent: int = 5, now: float | None = None) -> dict[str, Any]:
    """One pipeline as ``tfdrop status`` shows it (times in Unix seconds)."""
    now = time.time() if now is None else now
    docs = _instances(cfg.state, now)
    instances = [
        {
            "instance": d["instance"],
            "host": d.get("host"),
            "pid": d.get("pid"),
            "state": d["_alive"],
            "why": d["_why"],
            "started_at": d.get("started_at"),
            "updated_at": d.get("updated_at"),
        }
        for d in docs
    ]
    return {
        "pipeline": cfg.name,
        "drop": str(cfg.drop),
        "output": str(cfg.output),
        "daemon": _overall(docs),
        "instances": instances,
        "counts": _counts(docs),
        "waiting": _piece(lambda: _waiting(cfg, docs), {"count": 0, "drops": []}),
        "claimed": _claims(cfg.state, docs),
        "done": _piece(lambda: _done(cfg, docs, recent), {"count": 0, "recent": []}),
        "failed": _piece(lambda: _failed(cfg, recent), {"count": 0, "recent": []}),
    }
