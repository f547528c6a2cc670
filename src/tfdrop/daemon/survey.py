"""What a pipeline's folders and status files say, for ``tfdrop status``.

Reads only: the drop folder's top level (drops waiting), every instance's work folder
(``<state>/work/<instance>/<job>/<name>``: claims), ``done/``, ``failed/`` with its
``<name>.error.json`` files, and the status files the daemon keeps (:mod:`.status`). So it
answers with the daemon running or stopped, on any host that mounts the folders, and needs no
socket. Whether an instance is alive: its status file says ``stopped`` (a clean stop), its pid
is gone (same host; killed), or the file has not been rewritten for three heartbeats (another
host, or a hung daemon: ``stale``). Every read is bounded (the files' sizes are capped; only
the ``recent`` newest error files are opened).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from tfdrop.config import PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX
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


def status_path(state: Path, instance: str) -> Path:
    """The status file of one instance in a pipeline's state folder."""
    return state / STATUS_FOLDER / f"{instance}.json"


def iso(t: float | None) -> str | None:
    """Unix seconds as UTC ISO 8601 (``2026-01-02T03:04:05Z``)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The folder's entries; none when it is not there."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0


def _read_json(path: Path, cap: int) -> dict[str, Any] | None:
    """A JSON object from a file of at most ``cap`` bytes; None when absent or not one."""
    try:
        with path.open("rb") as f:
            data = f.read(cap + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None
    if len(data) > cap:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _pid_alive(pid: object) -> bool:
    """Whether ``pid`` runs here and is a tfdrop process (a reused pid is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
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
        return "not running", f"pid {doc.get('pid')} is gone (killed?); last status {iso(updated)}"
    beat = doc.get("heartbeat_s")
    beat = beat if isinstance(beat, int | float) and beat > 0 else HEARTBEAT_SECONDS
    if age > STALE_HEARTBEATS * beat + 5:
        return "stale", f"status not rewritten for {age:.0f} s (hung, or its host is down?)"
    return "running", ""


def _instances(state: Path, now: float) -> list[dict[str, Any]]:
    out = []
    for entry in sorted(_entries(state / STATUS_FOLDER), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.name.endswith(".json"):
            continue
        doc = _read_json(Path(entry.path), STATUS_MAX_BYTES)
        if doc is None:
            continue
        alive, why = liveness(doc, now)
        doc["_alive"], doc["_why"] = alive, why
        doc.setdefault("instance", entry.name.removesuffix(".json"))
        out.append(doc)
    return out


def _overall(docs: list[dict[str, Any]]) -> str:
    states = {d["_alive"] for d in docs}
    for state in ("running", "stale"):
        if state in states:
            return state
    if not docs:
        return "never started"
    newest = max(docs, key=lambda d: d.get("updated_at") or 0)
    return str(newest["_alive"])


def _claim_state(doc: dict[str, Any] | None, job: str) -> dict[str, Any]:
    """What the instance that holds a claim says about it."""
    if doc is None:
        return {"state": "claimed", "note": "taken up when its daemon starts again"}
    for r in doc.get("running", []):
        if r.get("job") == job and doc["_alive"] == "running":
            return {"state": "running", **{k: r.get(k) for k in ("items", "total", "started_at")}}
    for r in doc.get("retrying", []):
        if r.get("job") == job:
            keys = ("attempt", "reason", "kind", "message", "next_attempt_at")
            info = {k: r.get(k) for k in keys}
            if doc["_alive"] == "running":
                return {"state": "retrying", **info}
            return {"state": "claimed", "note": "taken up when its daemon starts again", **info}
    if doc["_alive"] == "running":
        return {"state": "queued"}
    return {"state": "claimed", "note": "taken up when its daemon starts again"}


def _claims(state: Path, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_instance = {d["instance"]: d for d in docs}
    out = []
    for inst in _entries(state / "work"):
        if not inst.is_dir(follow_symlinks=False):
            continue
        for job in _entries(Path(inst.path)):
            if not job.is_dir(follow_symlinks=False):
                continue
            inputs = [e for e in _entries(Path(job.path)) if not e.name.startswith(".")]
            inputs = [e for e in inputs if e.is_symlink() or e.is_file(follow_symlinks=False)]
            if len(inputs) != 1:
                continue
            claim: dict[str, Any] = {"job": job.name, "name": inputs[0].name}
            claim.update(instance=inst.name, claimed_at=_mtime(job))
            claim.update(_claim_state(by_instance.get(inst.name), job.name))
            out.append(claim)
    return sorted(out, key=lambda c: c["job"])


def _waiting(cfg: PipelineConfig, docs: list[dict[str, Any]]) -> dict[str, Any]:
    queued = {
        q.get("name")
        for d in docs
        if d["_alive"] == "running"
        for q in d.get("waiting", {}).get("queued", [])
    }
    drops = []
    for e in _entries(cfg.drop):
        name = e.name
        if name in OWN_FOLDERS or is_temp_name(name) or not matches(name, cfg.patterns):
            continue
        if e.is_dir(follow_symlinks=False):
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
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
    shown.sort(key=lambda i: i.get("time") or 0, reverse=True)
    return {"count": len(files), "recent": shown[:recent]}


def _failed(cfg: PipelineConfig, recent: int) -> dict[str, Any]:
    entries = _entries(cfg.failed)
    inputs = [e for e in entries if not is_temp_name(e.name) and not e.name.endswith(ERROR_SUFFIX)]
    shown = []
    for e in sorted(inputs, key=_mtime, reverse=True)[:recent]:
        error = _read_json(cfg.failed / f"{e.name}{ERROR_SUFFIX}", ERROR_MAX_BYTES)
        item: dict[str, Any] = {"name": e.name, "time": _mtime(e)}
        if error is None:
            item["message"] = f"no readable {e.name}{ERROR_SUFFIX} beside it"
        else:
            item.update({k: error[k] for k in ("kind", "message", "hint", "job") if k in error})
        shown.append(item)
    return {"count": len(inputs), "recent": shown}


def _counts(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts since start of the live instances (else of the newest status file)."""
    live = [d for d in docs if d["_alive"] == "running"]
    if not live and docs:
        live = [max(docs, key=lambda d: d.get("updated_at") or 0)]
    total = {k: sum(int(d.get("counts", {}).get(k) or 0) for d in live) for k in COUNTS}
    starts = [d["started_at"] for d in live if isinstance(d.get("started_at"), int | float)]
    return {"since": min(starts) if starts else None, **total}


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
        "waiting": _waiting(cfg, docs),
        "claimed": _claims(cfg.state, docs),
        "done": _done(cfg, docs, recent),
        "failed": _failed(cfg, recent),
    }
