"""YOLO's small side files: ``obj.names``, ``obj.data``, Ultralytics ``data.yaml``, ``images.meta``.

Pure parsing from text (no I/O). Layouts follow Datumaro's YOLO and YOLOv8 readers
(``datumaro/plugins/data_formats/yolo``) and darknet's ``obj.data`` convention:

- ``obj.names``: one label per line, index = line number - 1; trailing blank lines ignored, a
  blank line in the middle is an error (it would shift every index after it).
- ``obj.data``: ``key = value`` lines; every key whose value names a ``.txt`` list is a subset
  (``train = data/train.txt``); ``classes``, ``names``, ``backup`` are reserved (Datumaro's
  rule; darknet's ``eval``/``results`` are not ``.txt`` lists, so they drop out too).
- ``data.yaml``: read with PyYAML's safe loader (the YAML Ultralytics, Roboflow and CVAT write
  uses flow lists, quoting and block scalars a hand parser would misread, and a misread name
  mislabels every object), bounded by :class:`BoundedLoader`: nesting past ``max_depth`` and
  documents that expand past ``max_yaml_nodes`` (aliases counted at their full size each time
  they are used, so a 400-byte alias bomb stops at once) are refused while composing;
  ``names`` as a list or a ``{index: name}`` mapping; subsets from
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
from yaml.nodes import Node

from tfdrop.codec.model import LabelMap, LabelMapItem
from tfdrop.errors import FormatError, TfdropError
from tfdrop.limits import DEFAULT_LIMITS, Limits, exceeded

MAX_IMAGE_SIDE = 2**31 - 1
"""Pixels of an image side (PIL and the TFRecord's int64 both hold it; COCO's check too)."""
RESERVED_KEYS = frozenset({"classes", "names", "backup"})
MAX_CLASS_INDEX = 2**31 - 2
"""The largest class index: its label id, index + 1, is an int32 in TF's label map proto."""
ULTRALYTICS_SUBSETS = ("train", "val", "test", "minival")


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts what a document expands to while composing it.

    PyYAML's composer returns the anchored node itself for an alias, so an alias bomb is a
    small graph that anything walking it (a ``repr``, a check of every element) expands
    exponentially. Here every node composed counts 1 and every alias counts the full expanded
    size of its anchor, against ``max_yaml_nodes``; an alias inside its own anchor (a cycle)
    is refused. Nesting deeper than ``max_depth`` is refused before Python's recursion limit
    (the composer recurses once per level).
    """

    def __init__(self, text: str, *, limits: Limits, member: str) -> None:
        super().__init__(text)
        self._limits = limits
        self._member = member
        self._nodes = 0
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) -> expanded size, once composed

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > self._limits.max_yaml_nodes:
            raise exceeded(
                "max_yaml_nodes", self._nodes, self._limits.max_yaml_nodes, member=self._member
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        anchor = event.anchor
        if isinstance(event, yaml.AliasEvent):
            known = self.anchors.get(anchor)
            if known is not None:
                size = self._sizes.get(id(known))
                if size is None:
                    raise FormatError(
                        f"YAML alias *{anchor} is used inside its own anchor (a cycle)",
                        member=self._member,
                    )
                self._count(size)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise exceeded("max_depth", self._depth, self._limits.max_depth, member=self._member)
        start = self._nodes
        self._count(1)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if anchor is not None:
            self._sizes[id(node)] = self._nodes - start
        return node


def decode_text(data: bytes, member: str) -> str:
    """UTF-8 text (a BOM is dropped); :class:`FormatError` naming the member otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", member=member
        ) from None


def whole_number(text: str, max_digits: int = 18) -> int | None:
    """A non-negative decimal integer of ASCII digits (``"²"`` passes ``isdigit`` but not
    ``int``; 5,000 digits pass neither), or None."""
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None


_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def count_lines(text: str) -> int:
    """``len(text.splitlines())``, counted without making the list."""
    n = sum(text.count(c) for c in _BREAKS) - text.count("\r\n")
    return n + (1 if text and text[-1] not in _BREAKS else 0)


def split_lines(text: str, limit: str, limits: Limits, *, member: str, used: int = 0) -> list[str]:
    """``text.splitlines()``, after checking ``used`` + its line count against ``limit``: a
    64 MiB file of short lines would otherwise become tens of millions of strings."""
    limits.check(limit, used + count_lines(text), member=member)
    return text.splitlines()


def parse_names(text: str, member: str, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """``obj.names``: label names in index order."""
    lines = [ln.strip() for ln in split_lines(text, "max_labels", limits, member=member)]
    while lines and not lines[-1]:
        lines.pop()
    for i, name in enumerate(lines, start=1):
        if not name:
            raise FormatError(
                "blank line inside the label list (it would shift every class index after it)",
                member=member,
                line=i,
            )
    # an empty list is a dataset of images without objects (a camera capture written as
    # YOLO); any label line then fails as a class index outside the list
    names = [label_name(name, i, member, limits) for i, name in enumerate(lines)]
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if first.setdefault(name, i) != i:
            raise FormatError(
                f"label {name!r} is listed twice (lines {first[name] + 1} and {i + 1}): "
                "its classes would merge",
                member=member,
                line=i + 1,
            )
    return names


def parse_obj_data(
    text: str, member: str = "obj.data", limits: Limits = DEFAULT_LIMITS
) -> dict[str, str]:
    """``obj.data`` as ``{key: value}`` (lines that are not ``key = value`` are ignored)."""
    out: dict[str, str] = {}
    for raw in split_lines(text, "max_list_lines", limits, member=member):
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


def _class_index(key: Any, member: str) -> int:
    """A ``names`` mapping key: an integer (or a string of digits), never a float or a bool."""
    if isinstance(key, str) and whole_number(key.strip()) is not None:
        key = whole_number(key.strip())
    if type(key) is not int:
        shown = repr(key)[:40] if isinstance(key, (str, int, float)) else type(key).__name__
        raise FormatError(f"names key {shown} is not a class index", member=member, key="names")
    if key < 0:
        raise FormatError(f"class index {key} is negative", member=member, key="names")
    return key


def label_name(value: Any, index: int, member: str, limits: Limits) -> str:
    """One class name: a non-empty string (or number) of UTF-8 text on one line."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        # never repr() the value: it may be a large structure
        raise FormatError(
            f"name of class {index} is {type(value).__name__}, not a label name",
            member=member,
            key="names",
        )
    text = str(value).strip()
    limits.check("max_text_bytes", len(text.encode("utf-8", "surrogatepass")), member=member)
    if not text or any(c in text for c in "\0\n\r") or not _is_utf8(text):
        raise FormatError(
            f"name of class {index} is {text[:40]!r}, not a label name (empty, a line break, "
            "a NUL or a lone surrogate)",
            member=member,
            key="names",
        )
    return text


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _names(value: Any, member: str, limits: Limits = DEFAULT_LIMITS) -> dict[int, str]:
    if isinstance(value, list):
        pairs = list(enumerate(value))
    elif isinstance(value, dict):
        pairs = [(_class_index(k, member), v) for k, v in value.items()]
    else:
        raise FormatError(
            "names must be a list or a {index: name} mapping", member=member, key="names"
        )
    limits.check("max_labels", len(pairs), member=member, key="names")
    out = {k: label_name(v, k, member, limits) for k, v in pairs}
    if len(out) < len(pairs):
        raise FormatError("names gives one class index twice", member=member, key="names")
    if not out:
        raise FormatError("names is empty", member=member, key="names")
    first: dict[str, int] = {}
    for index, name in sorted(out.items()):
        if first.setdefault(name, index) != index:
            raise FormatError(
                f"label {name!r} names classes {first[name]} and {index}: they would merge",
                member=member,
                key="names",
            )
    return dict(sorted(out.items()))


def names_label_map(names: dict[int, str]) -> LabelMap | None:
    """Class index i is label id i + 1 (README), gaps in a names mapping kept; ``None`` when
    there are no names or an index is too large for a label id (ids then go 1..N in index
    order)."""
    if not names or max(names) > MAX_CLASS_INDEX:
        return None
    return LabelMap(tuple(LabelMapItem(id=i + 1, name=n) for i, n in sorted(names.items())))


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
    # never repr() the value: an alias bomb in kpt_shape made repr() run for minutes
    shown = repr(value)[:40] if isinstance(value, (str, int, float)) else type(value).__name__
    raise FormatError(
        f"kpt_shape {shown} is not [keypoints, 2 or 3]", member=member, key="kpt_shape"
    )


def load_yaml(text: str, member: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """One YAML document, safely and within ``max_depth`` and ``max_yaml_nodes``."""
    loader = BoundedLoader(text, limits=limits, member=member)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_data_yaml(text: str, member: str, limits: Limits = DEFAULT_LIMITS) -> UltralyticsConfig:
    """An Ultralytics ``data.yaml``."""
    try:
        doc = load_yaml(text, member, limits)
    except TfdropError:
        raise  # a limit, a cycle: already says what and where
    except ValueError as exc:
        # a typed scalar that does not construct: 2001-13-45, !!int abc, 5,000 digits
        raise FormatError(
            f"not valid YAML: a value cannot be read ({str(exc)[:200]})", member=member
        ) from None
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
    names = _names(doc["names"], member, limits)
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


def parse_image_meta(
    text: str, member: str = "images.meta", limits: Limits = DEFAULT_LIMITS, used: int = 0
) -> dict[str, tuple[int, int]]:
    """``images.meta``: ``{item id: (width, height)}``.

    Datumaro's ``load_image_meta_file``: ``<name> <height> <width>`` per line, shell-like
    quoting and ``#`` comments, extra fields ignored. Lines that do not parse are skipped (the
    item then fails with a clear "no image size" error if it needs one).
    """
    out: dict[str, tuple[int, int]] = {}
    lines = split_lines(text, "max_list_lines", limits, member=member, used=used)
    for line, raw in enumerate(lines, start=1):
        try:
            fields = shlex.split(raw, comments=True)
        except ValueError:
            continue
        if len(fields) >= 3:
            height, width = whole_number(fields[1]), whole_number(fields[2])
            if height is not None and width is not None:
                if max(height, width) > MAX_IMAGE_SIDE:
                    raise FormatError(
                        f"image size {width}x{height} is not an image size (sides are at "
                        f"most {MAX_IMAGE_SIDE} pixels)",
                        member=member,
                        line=line,
                    )
                out[fields[0]] = (width, height)
    return out
