"""The daemon's configuration: one TOML file parsed once into frozen objects.

Follows SPEC.md "The daemon": each ``[[pipeline]]`` has a drop folder, an output folder and the
conversion options; ``[daemon]`` holds what applies to the whole process (job pool, settle and
rescan times, retries, logging). Environment variables ``TFDROP_<KEY>`` override ``[daemon]``
keys (``TFDROP_MAX_JOBS=4``). Every error names the file, the key and what is allowed
(STYLE.md habit 9: no module-level mutable settings; the daemon holds one :class:`Config`).

With no config file the built-in default runs one pipeline ``./tfdrop/inbox`` ->
``./tfdrop/outbox`` (auto -> tfrecord).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from tfdrop.codec.compression import COMPRESSIONS, Compression
from tfdrop.codec.model import LabelMap
from tfdrop.errors import ConfigError, LabelMapError
from tfdrop.formats import FORMATS
from tfdrop.formats.base import FormatName, SourceFormat
from tfdrop.labels import load_label_map
from tfdrop.limits import DEFAULT_LIMITS, Limits

ON_SUCCESS: Final = ("keep", "delete")
LOG_FORMATS: Final = ("auto", "json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

DEFAULT_PATTERNS: Final = (
    "*.zip",
    "*.tfrecord",
    "*.record",
    "*-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]",
)
MAX_JOBS: Final = 64
"""Most jobs at once: far above what 2..16 cores use, low enough that start-up stays instant."""
MAX_PREVIEW: Final = 10_000
"""Most items a preview page shows (``preview = N``, ``tfdrop preview --limit N``): each is an
embedded thumbnail of some 10-50 kB."""
MAX_SHARDS: Final = 256
"""Most TFRecord shards per subset. The writer keeps every shard of every subset open while a
job runs, so ``max_jobs x shards x subsets`` files may be open at once: the daemon checks that
product against the open-file limit at start (see :func:`open_files_needed`)."""
SUBSETS_ASSUMED: Final = 3
"""Subsets (train/val/test) assumed per job when counting the files a job may hold open."""
FILES_RESERVED: Final = 128
"""Open files kept for everything else (the drop being read, logs, sockets, the ledger)."""
FILES_PER_HOOK: Final = 4
"""Open files of one running hook in the daemon (its stderr pipe; its stdin file, the pipe's
other end and subprocess's own pipe while it starts)."""
STATE_FOLDER: Final = ".tfdrop"
"""Default state folder inside each drop folder (work folders, ledger); on the drop's own
file system because claiming is a rename, and shared by every host that mounts the drop."""


def known_formats() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(readable, writable) format names from ``tfdrop.formats.FORMATS``."""
    readable = tuple(n for n, spec in FORMATS.items() if spec.open_reader is not None)
    writable = tuple(n for n, spec in FORMATS.items() if spec.open_writer is not None)
    return readable, writable


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Process-wide settings (``[daemon]``)."""

    max_jobs: int = 2
    job_workers: int | None = None
    """Worker processes one job's conversion may read its drop with (``convert --jobs``);
    None: the cores spread over the jobs running, starting and queued as a job starts (at most
    ``max_jobs``), at least 1 (``daemon.jobs.workers_for``)."""
    max_hooks: int = 4  # hook processes running at once (more wait in a queue)
    job_memory_mb: int = 2048  # address space of one job's conversion process (and each worker)
    settle_seconds: float = 2.0
    rescan_seconds: float = 30.0
    poll: bool = False
    poll_interval_seconds: float = 1.0
    stale_seconds: float = 60.0
    grace_seconds: float = 20.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    progress_seconds: float = 5.0
    stats_seconds: float = 60.0
    log_format: str = "auto"
    log_level: str = "info"
    status_seconds: float = 1.0  # the status and metrics files: rewritten at most this often
    metrics_file: Path | None = None  # Prometheus text file (node_exporter's textfile collector)
    metrics_listen: tuple[str, int] | Path | None = None  # loopback (host, port) or a socket


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """One drop folder -> output folder conversion (``[[pipeline]]``)."""

    name: str
    drop: Path
    output: Path
    source_format: SourceFormat = "auto"
    target_format: FormatName = "tfrecord"
    label_map_path: Path | None = None
    label_map: LabelMap | None = field(default=None, compare=False)
    masks: bool = False
    shards: int = 1
    compression: Compression = "none"
    images: bool = True
    on_success: str = "keep"
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    state_dir: Path | None = None
    create: bool = True
    limits: Limits = DEFAULT_LIMITS
    keep_done_days: float | None = None  # None: keep forever
    keep_failed_days: float | None = None
    on_published: tuple[str, ...] | None = None  # argv, run without a shell
    on_failed: tuple[str, ...] | None = None
    hook_timeout_s: float = 60.0
    preview: int = 0  # items on <stem>.preview.html (0: no preview page)

    @property
    def state(self) -> Path:
        return self.state_dir if self.state_dir is not None else self.drop / STATE_FOLDER

    @property
    def done(self) -> Path:
        return self.drop / "done"

    @property
    def failed(self) -> Path:
        return self.drop / "failed"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole parsed configuration; ``source`` is the file (None for the built-in default)."""

    daemon: DaemonConfig
    pipelines: tuple[PipelineConfig, ...]
    source: Path | None = None

    @property
    def is_default(self) -> bool:
        return self.source is None


# seconds keys -> (lowest, highest) allowed: a NaN or an infinity is never a duration, zero
# only where it means "at once" or "off", and the highest is what stays useful (a week)
_SECONDS: Final[dict[str, tuple[float, float]]] = {
    "settle_seconds": (0.0, 3600.0),
    "rescan_seconds": (0.1, 86400.0),
    "poll_interval_seconds": (0.01, 3600.0),
    "stale_seconds": (0.0, 604800.0),
    "grace_seconds": (0.0, 3600.0),
    "retry_base_seconds": (0.01, 86400.0),
    "retry_max_seconds": (0.01, 604800.0),
    "progress_seconds": (0.0, 3600.0),
    "stats_seconds": (0.0, 86400.0),
    "status_seconds": (0.05, 3600.0),
}
# integer keys -> (lowest, highest)
_INTS: Final[dict[str, tuple[int, int]]] = {
    "max_jobs": (1, MAX_JOBS),
    "job_workers": (1, MAX_JOBS),
    "max_hooks": (1, MAX_JOBS),
    "job_memory_mb": (256, 1 << 20),
    "shards": (1, MAX_SHARDS),
    "preview": (1, MAX_PREVIEW),
}

# key -> (type, allowed values or None); the order is the documented order
_DAEMON_KEYS: Final[dict[str, tuple[type, tuple[str, ...] | None]]] = {
    "max_jobs": (int, None),
    "job_workers": (int, None),
    "max_hooks": (int, None),
    "job_memory_mb": (int, None),
    "settle_seconds": (float, None),
    "rescan_seconds": (float, None),
    "poll": (bool, None),
    "poll_interval_seconds": (float, None),
    "stale_seconds": (float, None),
    "grace_seconds": (float, None),
    "retry_base_seconds": (float, None),
    "retry_max_seconds": (float, None),
    "progress_seconds": (float, None),
    "stats_seconds": (float, None),
    "log_format": (str, LOG_FORMATS),
    "log_level": (str, LOG_LEVELS),
    "status_seconds": (float, None),
    "metrics_file": (str, None),
    "metrics_listen": (str, None),
}
_PIPELINE_KEYS: Final = (
    "name",
    "drop",
    "output",
    "from",
    "to",
    "label_map",
    "masks",
    "shards",
    "compression",
    "images",
    "on_success",
    "patterns",
    "state_dir",
    "create",
    "limits",
    "keep_done_days",
    "keep_failed_days",
    "on_published",
    "on_failed",
    "hook_timeout_s",
    "preview",
)
MAX_KEEP_DAYS: Final = 36500.0
MAX_HOOK_SECONDS: Final = 86400.0


class _Ctx:
    """Where a value came from, for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigError:
        # str(): "<file>, key <key>: <message>" (TfdropError puts the location first)
        return ConfigError(message, file=self.source, key=key, hint=hint)


_TIME_KINDS: Final = (
    (datetime.datetime, "a date-time"),
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def _scalar_text(value: str | float) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if math.isnan(value):
        return "nan"
    return str(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def toml_text(value: Any) -> str:
    """A value as it reads in TOML (for error messages): ``"x"``, ``true``, ``[1, 2]``,
    ``nan``, and the TOML types Python has no literal for named: ``a date (2023-01-01)``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | float):
        return _scalar_text(value)
    for kind, what in _TIME_KINDS:
        if isinstance(value, kind):
            return f"{what} ({value.isoformat()})"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _integer(ctx: _Ctx, key: str, value: Any) -> int:
    """A positive integer within the key's range (``max_jobs = 1e8`` is a float: refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ctx.error(key, f"expected an integer, got {toml_text(value)}")
    if value < 1:
        raise ctx.error(key, f"must be at least 1, got {value}")
    low, high = _INTS.get(key.rsplit(".", 1)[-1], (1, None))
    if high is not None and not low <= value <= high:
        raise ctx.error(key, f"must be between {low} and {high}, got {value}")
    return value


def _seconds(ctx: _Ctx, key: str, value: Any) -> float:
    """A finite number of seconds within the key's range (NaN and infinities refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ctx.error(key, f"expected a number of seconds, got {toml_text(value)}")
    if not math.isfinite(value):
        raise ctx.error(key, f"expected a finite number of seconds, got {toml_text(value)}")
    if value < 0:
        raise ctx.error(key, f"must not be negative, got {value}")
    low, high = _SECONDS.get(key.rsplit(".", 1)[-1], (0.0, math.inf))
    if not low <= value <= high:
        raise ctx.error(key, f"must be between {low:g} and {high:g} seconds, got {value}")
    return float(value)


def _typed(ctx: _Ctx, key: str, value: Any, kind: type, allowed: tuple[str, ...] | None) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ctx.error(key, f"expected true or false, got {toml_text(value)}")
        return value
    if kind is int:
        return _integer(ctx, key, value)
    if kind is float:
        return _seconds(ctx, key, value)
    if not isinstance(value, str):
        raise ctx.error(key, f"expected a string, got {toml_text(value)}")
    if allowed is not None and value not in allowed:
        raise ctx.error(key, f"{toml_text(value)} is not allowed; allowed: {', '.join(allowed)}")
    return value


_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")


def _from_env(value: str, kind: type) -> Any:
    """Environment strings to TOML-like values (type errors are reported by :func:`_typed`)."""
    if kind is bool:
        low = value.strip().lower()
        return True if low in _TRUE else False if low in _FALSE else value
    if kind is int or kind is float:
        try:
            return kind(value)
        except ValueError:
            return value
    return value


SOCKET_PATH_MAX: Final = 107
"""Longest Unix socket path (``sun_path`` holds 108 bytes with the NUL)."""


def _listen_address(ctx: _Ctx, key: str, text: str, base: Path) -> tuple[str, int] | Path:
    """``metrics_listen``: a Unix socket path (anything with a ``/``) or ``HOST:PORT`` on a
    loopback address. Metrics say what is being converted, so they are never offered to the
    network: a remote scrape goes through node_exporter (``metrics_file``) or a proxy."""
    if "/" in text:
        path = _path(ctx, key, text, base)
        if len(os.fsencode(path)) > SOCKET_PATH_MAX:
            raise ctx.error(key, f"a Unix socket path is at most {SOCKET_PATH_MAX} bytes: {path}")
        return path
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    # ASCII digits only: str.isdigit() takes "²" (and int() then fails), isdecimal() "٩١٠٨"
    if not sep or not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise ctx.error(
            key, f"expected HOST:PORT (127.0.0.1:9108) or a socket path, got {toml_text(text)}"
        )
    if "%" in host:
        raise ctx.error(
            key,
            f"a scoped IPv6 address ({toml_text(host)}) is not supported",
            hint="loopback needs no zone: use [::1]:PORT",
        )
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ctx.error(
            key,
            f"{host or 'an empty host (every address)'} is not a loopback address",
            hint="serve on 127.0.0.1 or ::1 (or a socket path); remote scrapes go through "
            "node_exporter's textfile collector (metrics_file) or a proxy",
        )
    return host, int(port_text)


_PORT: Final = re.compile(r"[0-9]{1,5}")
METRICS_SUFFIX: Final = ".prom"
"""node_exporter's textfile collector reads only ``*.prom``."""


def _metrics_file(ctx: _Ctx, key: str, text: str, base: Path) -> Path:
    """``metrics_file``: a ``*.prom`` path that is nothing yet or a regular file (it is
    replaced on every write: a folder, a link or a device there is never taken)."""
    path = _path(ctx, key, text, base)
    if path.suffix != METRICS_SUFFIX:
        raise ctx.error(
            key,
            f"must end in {METRICS_SUFFIX} (node_exporter's textfile collector reads only "
            f"*{METRICS_SUFFIX}), got {toml_text(text)}",
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise ctx.error(key, f"cannot look at {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ctx.error(
            key,
            f"{path} exists and is not a regular file; the metrics file is replaced on every "
            "write, so it must name a regular file or nothing",
        )
    return path


def _metrics_keys(values: dict[str, Any], where: str, base: Path) -> dict[str, Any]:
    """``metrics_file`` and ``metrics_listen`` from their strings (relative to ``base``)."""
    ctx = _Ctx(where)
    if "metrics_file" in values:
        values["metrics_file"] = _metrics_file(
            ctx, "daemon.metrics_file", values["metrics_file"], base
        )
    if "metrics_listen" in values:
        values["metrics_listen"] = _listen_address(
            ctx, "daemon.metrics_listen", values["metrics_listen"], base
        )
    return values


def _daemon(
    table: Mapping[str, Any], where: str, env: Mapping[str, str], base: Path | None = None
) -> DaemonConfig:
    ctx = _Ctx(where)
    unknown = sorted(set(table) - set(_DAEMON_KEYS))
    if unknown:
        raise ctx.error(f"daemon.{unknown[0]}", f"unknown key; allowed: {', '.join(_DAEMON_KEYS)}")
    values: dict[str, Any] = {}
    for key, (kind, allowed) in _DAEMON_KEYS.items():
        if key in table:
            values[key] = _typed(ctx, f"daemon.{key}", table[key], kind, allowed)
        env_name = f"TFDROP_{key.upper()}"
        if env_name in env:
            values[key] = _typed(
                _Ctx(f"environment variable {env_name}"),
                f"daemon.{key}",
                _from_env(env[env_name], kind),
                kind,
                allowed,
            )
    return DaemonConfig(**_metrics_keys(values, where, base or Path.cwd()))


def _path(ctx: _Ctx, key: str, value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ctx.error(key, f"expected a folder path string, got {toml_text(value)}")
    if "\0" in value:
        raise ctx.error(key, f"a path cannot hold a NUL character, got {toml_text(value)}")
    try:
        p = Path(value).expanduser()
    except RuntimeError as exc:  # "~nobody/x": no such user's home folder
        raise ctx.error(key, f"cannot expand {toml_text(value)}: {exc}") from None
    return p if p.is_absolute() else base / p


def _resolved(ctx: _Ctx, key: str, path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise ctx.error(key, f"cannot resolve {path}: {exc}") from None


def parse_limits(table: Any, key: str, where: str, base: Limits = DEFAULT_LIMITS) -> Limits:
    """A ``[limits]`` table (keys: the fields of :class:`~tfdrop.limits.Limits`) over ``base``.

    Every value must be a positive integer; an unknown key names the known ones.
    """
    ctx = _Ctx(where)
    if not isinstance(table, dict):
        raise ctx.error(key, "expected a table ([limits])")
    names = Limits.names()
    for name, value in table.items():
        if name not in names:
            raise ctx.error(f"{key}.{name}", f"unknown limit; known: {', '.join(names)}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(f"{key}.{name}", f"expected a positive integer, got {toml_text(value)}")
        if value < 1:
            raise ctx.error(f"{key}.{name}", f"must be at least 1, got {value}")
    return base.with_values(dict(table))


def changed_limits(limits: Limits) -> dict[str, int]:
    """The limits that differ from the defaults, in the documented order."""
    return {
        name: getattr(limits, name)
        for name in Limits.names()
        if getattr(limits, name) != getattr(DEFAULT_LIMITS, name)
    }


def _pipeline(
    table: Any, index: int, where: str, base: Path, limits: Limits = DEFAULT_LIMITS
) -> PipelineConfig:
    ctx = _Ctx(where)
    prefix = f"pipeline[{index}]"
    if not isinstance(table, dict):
        raise ctx.error(prefix, "expected a table ([[pipeline]])")
    unknown = sorted(set(table) - set(_PIPELINE_KEYS))
    if unknown:
        raise ctx.error(
            f"{prefix}.{unknown[0]}", f"unknown key; allowed: {', '.join(_PIPELINE_KEYS)}"
        )
    for required in ("drop", "output"):
        if required not in table:
            raise ctx.error(f"{prefix}.{required}", "missing (a folder path)")
    name = table.get("name", f"pipeline{index}")
    if not isinstance(name, str) or not name or "/" in name:
        raise ctx.error(
            f"{prefix}.name", f"expected a short name without '/', got {toml_text(name)}"
        )
    prefix = f"pipeline[{index}] ({name})"
    readable, writable = known_formats()
    readable = ("auto", *readable)
    drop = _path(ctx, f"{prefix}.drop", table["drop"], base)
    output = _path(ctx, f"{prefix}.output", table["output"], base)
    if _resolved(ctx, f"{prefix}.drop", drop) == _resolved(ctx, f"{prefix}.output", output):
        raise ctx.error(
            f"{prefix}.output",
            "must differ from drop",
            hint="chain pipelines instead: one's output is the next one's drop",
        )
    label_map_path = None
    label_map = None
    if "label_map" in table:
        label_map_path = _path(ctx, f"{prefix}.label_map", table["label_map"], base)
        try:
            label_map = load_label_map(label_map_path)
        except LabelMapError as exc:
            raise ctx.error(f"{prefix}.label_map", f"label map {exc}", exc.hint) from exc
    patterns = table.get("patterns", list(DEFAULT_PATTERNS))
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) and p and "/" not in p for p in patterns)
    ):
        raise ctx.error(
            f"{prefix}.patterns",
            f"expected a non-empty list of file name globs, got {toml_text(patterns)}",
        )
    state_dir = None
    if "state_dir" in table:
        state_dir = _path(ctx, f"{prefix}.state_dir", table["state_dir"], base)
    return PipelineConfig(
        name=name,
        drop=drop,
        output=output,
        source_format=_typed(ctx, f"{prefix}.from", table.get("from", "auto"), str, readable),
        target_format=_typed(ctx, f"{prefix}.to", table.get("to", "tfrecord"), str, writable),
        label_map_path=label_map_path,
        label_map=label_map,
        masks=_typed(ctx, f"{prefix}.masks", table.get("masks", False), bool, None),
        shards=_typed(ctx, f"{prefix}.shards", table.get("shards", 1), int, None),
        compression=_typed(
            ctx, f"{prefix}.compression", table.get("compression", "none"), str, COMPRESSIONS
        ),
        images=_typed(ctx, f"{prefix}.images", table.get("images", True), bool, None),
        on_success=_typed(
            ctx, f"{prefix}.on_success", table.get("on_success", "keep"), str, ON_SUCCESS
        ),
        patterns=tuple(patterns),
        state_dir=state_dir,
        create=_typed(ctx, f"{prefix}.create", table.get("create", True), bool, None),
        limits=parse_limits(table.get("limits", {}), f"{prefix}.limits", where, limits),
        preview=_preview(ctx, f"{prefix}.preview", table.get("preview", 0)),
        **_operations(ctx, prefix, table, base),
    )


def _preview(ctx: _Ctx, key: str, value: Any) -> int:
    """``preview = N``: 0 (off) or 1..MAX_PREVIEW items."""
    if type(value) is int and value == 0:
        return 0
    return int(_typed(ctx, key, value, int, None))


def _days(ctx: _Ctx, key: str, value: Any) -> float:
    """Days to keep routed files: a finite non-negative number (0: removed at the next rescan)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ctx.error(key, f"expected a number of days, got {toml_text(value)}")
    if not 0 <= value <= MAX_KEEP_DAYS:
        raise ctx.error(key, f"must be between 0 and {MAX_KEEP_DAYS:g} days, got {value}")
    return float(value)


def _argv(ctx: _Ctx, key: str, value: Any, base: Path) -> tuple[str, ...]:
    """A command as a list of strings (run without a shell). A program given as a path
    (``hooks/notify.sh``, ``~/bin/x``) is relative to ``base`` (the config's folder), as every
    relative path of a config; a bare name is looked up on ``PATH`` when it runs."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(a, str) and "\0" not in a for a in value)
        or not value[0]
    ):
        raise ctx.error(
            key,
            f"expected a command as a non-empty list of strings, got {toml_text(value)}",
            hint='e.g. ["/usr/local/bin/train", "--quick"]; it runs without a shell',
        )
    program = value[0]
    if "/" in program or program.startswith("~"):
        program = str(_path(ctx, key, program, base))
    return (program, *value[1:])


def _operations(ctx: _Ctx, prefix: str, table: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """Retention and hooks: ``keep_*_days``, ``on_published``/``on_failed``, ``hook_timeout_s``."""
    out: dict[str, Any] = {}
    for key in ("keep_done_days", "keep_failed_days"):
        if key in table:
            out[key] = _days(ctx, f"{prefix}.{key}", table[key])
    for key in ("on_published", "on_failed"):
        if key in table:
            out[key] = _argv(ctx, f"{prefix}.{key}", table[key], base)
    if "hook_timeout_s" in table:
        seconds = _seconds(ctx, f"{prefix}.hook_timeout_s", table["hook_timeout_s"])
        if not 0 < seconds <= MAX_HOOK_SECONDS:
            raise ctx.error(
                f"{prefix}.hook_timeout_s",
                f"must be above 0 and at most {MAX_HOOK_SECONDS:g} seconds, got {seconds:g}",
            )
        out["hook_timeout_s"] = seconds
    return out


def _check_pipelines(pipelines: tuple[PipelineConfig, ...], where: str) -> None:
    ctx = _Ctx(where)
    names: set[str] = set()
    drops: dict[Path, str] = {}
    for p in pipelines:
        if p.name in names:
            raise ctx.error(f"pipeline ({p.name}).name", "two pipelines have this name")
        names.add(p.name)
        drop = _resolved(ctx, f"pipeline ({p.name}).drop", p.drop)
        if drop in drops:
            raise ctx.error(
                f"pipeline ({p.name}).drop",
                f"already the drop folder of pipeline {drops[drop]!r}",
                hint="one drop folder feeds one pipeline; chain pipelines instead",
            )
        drops[drop] = p.name


def parse_config(
    text: str, *, source: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Parse TOML text. Relative paths are relative to the config file's folder."""
    where = str(source) if source is not None else "<config>"
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=where) from exc
    unknown = sorted(set(data) - {"daemon", "limits", "pipeline"})
    if unknown:
        raise _Ctx(where).error(unknown[0], "unknown table; allowed: daemon, limits, pipeline")
    base = source.parent if source is not None else Path.cwd()
    daemon_table = data.get("daemon", {})
    if not isinstance(daemon_table, dict):
        raise _Ctx(where).error("daemon", "expected a table ([daemon])")
    daemon = _daemon(daemon_table, where, env, base)
    metrics = daemon.metrics_file
    if source is not None and metrics is not None and _same_file(metrics, source):
        raise _Ctx(where).error(
            "daemon.metrics_file", "names the config file itself; it would be replaced"
        )
    tables = data.get("pipeline", [])
    if not isinstance(tables, list) or not tables:
        raise _Ctx(where).error(
            "pipeline", "no [[pipeline]] table", hint="add at least one [[pipeline]] table"
        )
    limits = parse_limits(data.get("limits", {}), "limits", where)
    pipelines = tuple(_pipeline(t, i, where, base, limits) for i, t in enumerate(tables))
    _check_pipelines(pipelines, where)
    return Config(daemon=daemon, pipelines=pipelines, source=source)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one is not there (yet): the same name is the same file
        return os.path.abspath(a) == os.path.abspath(b)


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and parse a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc}", file=str(path)) from exc
    return parse_config(text, source=path.absolute(), env=env)


def default_config(*, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Config:
    """The built-in default: ``./tfdrop/inbox`` -> ``./tfdrop/outbox``, auto -> tfrecord."""
    env = os.environ if env is None else env
    base = (cwd or Path.cwd()) / "tfdrop"
    pipeline = PipelineConfig(name="default", drop=base / "inbox", output=base / "outbox")
    return Config(daemon=_daemon({}, "<built-in default>", env), pipelines=(pipeline,))


def open_files_needed(config: Config) -> int:
    """Files the daemon may hold open at once with this config: every job writing every
    shard of :data:`SUBSETS_ASSUMED` subsets, every hook running, plus what the rest of the
    process needs."""
    shards = max(p.shards for p in config.pipelines)
    return (
        config.daemon.max_jobs * shards * SUBSETS_ASSUMED
        + config.daemon.max_hooks * FILES_PER_HOOK
        + FILES_RESERVED
        + 8 * len(config.pipelines)
    )


def with_daemon(config: Config, **changes: Any) -> Config:
    """A copy with some ``[daemon]`` values changed (tests and benchmarks)."""
    return replace(config, daemon=replace(config.daemon, **changes))


def _default_config_path(env: Mapping[str, str]) -> Path | None:
    value = env.get("TFDROP_CONFIG")
    return Path(value) if value else None


def resolve_config(path: Path | None, *, env: Mapping[str, str] | None = None) -> Config:
    """The argument, then ``$TFDROP_CONFIG``, then the built-in default."""
    env = os.environ if env is None else env
    chosen = path if path is not None else _default_config_path(env)
    if chosen is None:
        return default_config(env=env)
    return load_config(chosen, env=env)
