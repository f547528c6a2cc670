"""structlog set-up for the daemon: JSON lines for journald and files, colours on a terminal.

Follows STYLE.md "Logging": processors are a visible list; job context (job id, pipeline,
source) is bound with contextvars per task and shows on every line; events are snake_case
names with data as keyword arguments. Lines go to stderr, which journald captures.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _lead_fields(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Put time, level and event first so a JSON line reads like a log line."""
    lead = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    lead.update(event_dict)
    return lead


def _default_renderer(log_format: str, stream: TextIO) -> Any:
    """``auto``: console when the stream is a terminal, JSON lines otherwise."""
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    if log_format == "console":
        return structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return structlog.processors.JSONRenderer(sort_keys=False)


def configure_logging(
    *, log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog process-wide (the daemon and the CLI call this once at start)."""
    stream = sys.stderr if stream is None else stream
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _lead_fields,
        _default_renderer(log_format, stream),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
