"""Reading the files ``tfdrop status`` trusts nothing about: status files and error files.

Anyone who may write to a shared drop folder may put anything in its state folder and in
``failed/``: a FIFO, a link to ``/dev/zero`` or to a file outside the share, a gigabyte, JSON
nested 100000 deep, ``NaN``, a list where an object belongs. So :func:`read_json` opens a file
without following a final symlink and without blocking (``O_NOFOLLOW | O_NONBLOCK``), checks
that it is a regular file within the size cap before reading a byte, and parses with NaN and
Infinity refused and a nesting too deep caught; :func:`status_doc` and :func:`error_doc` then
check the document's shape (counts are finite integers, times finite and in range, lists hold
objects, strings are strings) and keep only the keys the survey reads. Whatever fails is an
:class:`Unreadable` saying what, which the survey shows in the file's place.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

TIME_MAX: Final = 253402300799.0  # 9999-12-31T23:59:59Z: the last second ISO 8601 can write
COUNT_MAX: Final = 2**63 - 1
TEXT_SHOWN: Final = 4000  # characters of a string kept (a message, a name)
HEARTBEAT_MAX: Final = 86400.0

Check = Callable[[Any, str], Any]


class Unreadable(Exception):
    """A file or folder the survey cannot use; ``str()`` says why."""


def describe(exc: OSError) -> str:
    """An OS error as the table says it."""
    if exc.errno == errno.ELOOP:
        return "a symbolic link (never followed) or a loop of them"
    return exc.strerror or str(exc)


def _read_all(fd: int, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        chunk = os.read(fd, min(1 << 20, cap + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _bytes(path: Path, cap: int) -> bytes:
    """The file's bytes. FileNotFoundError when it is not there; Unreadable otherwise."""
    try:
        # a first look without opening: opening a device or a FIFO can itself do something
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise Unreadable("a symbolic link (never followed)")
        if not stat.S_ISREG(mode):
            raise Unreadable("not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(describe(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the first look
            raise Unreadable("not a regular file")
        if st.st_size > cap:
            raise Unreadable(f"{st.st_size} bytes, over the {cap}-byte cap")
        data = _read_all(fd, cap)
    except OSError as exc:
        raise Unreadable(describe(exc)) from None
    finally:
        os.close(fd)
    if len(data) > cap:
        raise Unreadable(f"grew over the {cap}-byte cap while read")
    return data


def read_json(path: Path, cap: int) -> Any:
    """A JSON value from a regular file of at most ``cap`` bytes.

    Raises:
        FileNotFoundError: The file is not there.
        Unreadable: Anything else that keeps it from being read and parsed.
    """
    data = _bytes(path, cap)
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise Unreadable("not JSON the survey reads: nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError too
        raise Unreadable(f"not JSON: {exc}") from None


# -- shapes ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(
        type(value), "a number" if isinstance(value, int | float) else "null"
    )


def _bad(where: str, expected: str, value: Any) -> Unreadable:
    return Unreadable(f"{where}: expected {expected}, got {_kind(value)}")


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _bad(where, "a string", value)
    if len(value) > TEXT_SHOWN:
        return f"{value[:TEXT_SHOWN]}... ({len(value) - TEXT_SHOWN} more characters)"
    return value


def count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, "a whole number", value)
    if not 0 <= value <= COUNT_MAX:
        raise Unreadable(f"{where}: {value} is out of range")
    return value


def when(value: Any, where: str) -> float:
    """Unix seconds, finite, between 1970 and 9999."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, "a time in Unix seconds", value)
    if not (math.isfinite(value) and 0 <= value <= TIME_MAX):
        raise Unreadable(f"{where}: {value} is not a time between 1970 and 9999")
    return float(value)


def _heartbeat(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(where, "a number of seconds", value)
    if not (math.isfinite(value) and 0 < value <= HEARTBEAT_MAX):
        raise Unreadable(f"{where}: {value} is not a heartbeat in seconds")
    return float(value)


def _state(value: Any, where: str) -> str:
    if value not in ("running", "stopped"):
        raise Unreadable(f"{where}: expected running or stopped")
    return str(value)


def record(spec: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object with these keys (each optional unless ``required``; null is absent); other
    keys are left out."""

    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad(where, "an object", value)
        out: dict[str, Any] = {}
        for key, inner in spec.items():
            item = value.get(key)
            if item is None:
                if key in required:
                    raise Unreadable(f"{where}.{key}: missing")
                continue
            out[key] = inner(item, f"{where}.{key}")
        return out

    return check


def listed(inner: Check) -> Check:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise _bad(where, "a list", value)
        return [inner(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def _counts(value: Any, where: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise _bad(where, "an object", value)
    return {str(k): count(v, f"{where}.{k}") for k, v in value.items()}


_JOB: Final = {"job": text, "name": text}
STATUS: Final = record(
    {
        "state": _state,
        "instance": text,
        "host": text,
        "pid": count,
        "started_at": when,
        "updated_at": when,
        "heartbeat_s": _heartbeat,
        "waiting": record(
            {
                "settling": count,
                "queued": listed(record({"name": text, "since": when}, ("name",))),
                "queued_more": count,
            }
        ),
        "running": listed(
            record({**_JOB, "items": count, "total": count, "started_at": when}, ("job", "name"))
        ),
        "queued_claims": listed(record(_JOB, ("job", "name"))),
        "queued_claims_more": count,
        "retrying": listed(
            record(
                {
                    **_JOB,
                    "attempt": count,
                    "reason": text,
                    "kind": text,
                    "message": text,
                    "next_attempt_at": when,
                },
                ("job",),
            )
        ),
        "retrying_more": count,
        "recent_done": listed(
            record(
                {
                    **_JOB,
                    "time": when,
                    "status": text,
                    "output": text,
                    "items": count,
                    "moved_to": text,
                }
            )
        ),
        "recent_failed": listed(
            record({**_JOB, "time": when, "kind": text, "message": text, "moved_to": text})
        ),
        "counts": _counts,
        "last_success_at": when,
    }
)
"""A status file as :mod:`.status` writes it (what the survey reads of it)."""
ERROR: Final = record({"kind": text, "message": text, "hint": text, "job": text})
"""A ``<name>.error.json`` beside a failed input (what the survey reads of it)."""


def status_doc(value: Any) -> dict[str, Any]:
    """The checked status document (Unreadable: what is wrong, and where in it)."""
    out: dict[str, Any] = STATUS(value, "status")
    return out


def error_doc(value: Any) -> dict[str, Any]:
    """The checked error document (Unreadable: what is wrong, and where in it)."""
    out: dict[str, Any] = ERROR(value, "error")
    return out
