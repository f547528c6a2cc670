"""YOLO's small side files: ``obj.names``, ``obj.data``, Ultralytics ``data.yaml``, ``images.meta``.

Pure parsing from text (no I/O). Layouts follow Datumaro's YOLO and YOLOv8 readers
(``datumaro/plugins/data_formats/yolo``) and darknet's ``obj.data`` convention:

- ``obj.names``: one label per line, index = line number - 1; trailing blank lines ignored, a
  blank line in the middle is an error (it would shift every index after it).
- ``obj.data``: ``key = value`` lines; every key whose value names a ``.txt`` list is a subset
  (``train = data/train.txt``); ``classes``, ``names``, ``backup`` are reserved (Datumaro's
  rule; darknet's ``eval``/``results`` are not ``.txt`` lists, so they drop out too).
- ``data.yaml``: read with ``yaml.safe_load`` (the YAML Ultralytics, Roboflow and CVAT write
  uses flow lists, quoting and block scalars a hand parser would misread, and a misread name
  mislabels every object); ``names`` as a list or a ``{index: name}`` mapping; subsets from
  ``train``/``val``/``test``/``minival`` (a folder, a ``.txt`` list, or a list of either).
- ``images.meta`` (Datumaro's image-size side file): ``<item id> <height> <width>`` lines
  (shell quoting), used
  when an image is not in the archive (YOLO files carry no image size).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from tfdrop.errors import FormatError

RESERVED_KEYS = frozenset({"classes", "names", "backup"})
ULTRALYTICS_SUBSETS = ("train", "val", "test", "minival")
MAX_SIDE_FILE = 8 << 20
"""Cap for reading obj.names / obj.data / data.yaml / list files whole."""


def decode_text(data: bytes, member: str) -> str:
    """UTF-8 text (a BOM is dropped); :class:`FormatError` naming the member otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", member=member
        ) from None


def parse_names(text: str, member: str) -> list[str]:
    """``obj.names``: label names in index order."""
    lines = [ln.strip() for ln in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, name in enumerate(lines, start=1):
        if not name:
            raise FormatError(
                "blank line inside the label list (it would shift every class index after it)",
                member=member,
                line=i,
            )
    if not lines:
        raise FormatError("the label list is empty", member=member)
    return lines


def parse_obj_data(text: str) -> dict[str, str]:
    """``obj.data`` as ``{key: value}`` (lines that are not ``key = value`` are ignored)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        key, eq, value = raw.partition("=")
        key, value = key.strip(), value.strip()
        if eq and key.isidentifier() and value:
            out[key] = value
    return out


def obj_data_subsets(config: dict[str, str]) -> dict[str, str]:
    """The subsets an ``obj.data`` declares: ``{subset: list path}``."""
    return {
        k: v for k, v in config.items() if k not in RESERVED_KEYS and v.lower().endswith(".txt")
    }


@dataclass(frozen=True, slots=True)
class UltralyticsConfig:
    """What tfdrop uses of a ``data.yaml``."""

    names: dict[int, str]
    subsets: dict[str, tuple[str, ...]]
    path: str = ""
    kpt_values: int | None = None


def _names(value: Any, member: str) -> dict[int, str]:
    if isinstance(value, list):
        out = dict(enumerate(value))
    elif isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                index = int(k)
            except (TypeError, ValueError):
                raise FormatError(
                    f"names key {repr(k)[:40]} is not a class index", member=member, key="names"
                ) from None
            out[index] = v
    else:
        raise FormatError(
            "names must be a list or a {index: name} mapping", member=member, key="names"
        )
    for k, v in out.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or str(v).strip() == "":
            # never repr() the value: YAML aliases can make it a billion-element structure
            shown = repr(v)[:40] if isinstance(v, (str, int, float)) else type(v).__name__
            raise FormatError(
                f"name of class {k} is {shown}, not a label name", member=member, key="names"
            )
        if k < 0:
            raise FormatError(f"class index {k} is negative", member=member, key="names")
    if not out:
        raise FormatError("names is empty", member=member, key="names")
    return {k: str(v).strip() for k, v in sorted(out.items())}


def _paths(value: Any, key: str, member: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise FormatError(f"{key} must be a path or a list of paths", member=member, key=key)
    return tuple(v.strip() for v in items)


def _kpt_values(value: Any, member: str) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        and value[1] in (2, 3)
    ):
        return int(value[0]) * int(value[1])
    raise FormatError(
        f"kpt_shape {repr(value)[:40]} is not [keypoints, 2 or 3]", member=member, key="kpt_shape"
    )


def parse_data_yaml(text: str, member: str) -> UltralyticsConfig:
    """An Ultralytics ``data.yaml``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise FormatError(f"not valid YAML: {problem}", member=member, line=line) from None
    if not isinstance(doc, dict):
        raise FormatError("data.yaml is not a mapping of keys", member=member)
    if "names" not in doc:
        raise FormatError(
            "data.yaml has no names", member=member, key="names", hint="add names: [a, b, ...]"
        )
    names = _names(doc["names"], member)
    subsets = {
        key: _paths(doc[key], key, member)
        for key in ULTRALYTICS_SUBSETS
        if doc.get(key) is not None
    }
    path = doc.get("path")
    return UltralyticsConfig(
        names=names,
        subsets=subsets,
        path=path.strip() if isinstance(path, str) else "",
        kpt_values=_kpt_values(doc.get("kpt_shape"), member),
    )


def parse_image_meta(text: str) -> dict[str, tuple[int, int]]:
    """``images.meta``: ``{item id: (width, height)}``.

    Datumaro's ``load_image_meta_file``: ``<name> <height> <width>`` per line, shell-like
    quoting and ``#`` comments, extra fields ignored. Lines that do not parse are skipped (the
    item then fails with a clear "no image size" error if it needs one).
    """
    out: dict[str, tuple[int, int]] = {}
    for raw in text.splitlines():
        try:
            fields = shlex.split(raw, comments=True)
        except ValueError:
            continue
        if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
            out[fields[0]] = (int(fields[2]), int(fields[1]))
    return out
