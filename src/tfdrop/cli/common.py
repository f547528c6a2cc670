"""Small helpers the CLI commands share: error output and label map loading."""

from __future__ import annotations

import sys
from pathlib import Path

from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import LabelMap
from tfdrop.errors import ConfigError, LabelMapError


def fail(message: str, *, hint: str = "") -> int:
    """Print ``tfdrop: error: ...`` (and a hint) to stderr; exit code 1 (bad input)."""
    print(f"tfdrop: error: {message}", file=sys.stderr)
    if hint:
        print(f"tfdrop: hint: {hint}", file=sys.stderr)
    return 1


def config_failed(exc: ConfigError) -> int:
    """Print a config error (it names the file, the key and what is allowed) and its hint;
    exit code 1. The daemon and check-config say it the same way."""
    print(f"tfdrop: {exc}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return 1


def load_label_map(path: Path) -> LabelMap:
    """Read and parse a label_map.pbtxt; unreadable files are label map errors too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LabelMapError(f"cannot read: {exc.strerror}", archive=str(path)) from None
    return parse_label_map(data, source=str(path))
