"""``label_map.pbtxt``: TF models' ``StringIntLabelMap`` in protobuf text format.

Parsed with protobuf's own ``text_format`` (fields in any order, either quote style, ``#``
comments, ``item {`` or ``item: {``), never with a regex: Datumaro's regex reader silently drops
items that carry ``display_name``. Written the way CVAT's TFRecord 1.0 export wrote it::

    item {
    \tid: 1
    \tname: 'label_0'
    }

Ids start at 1; id 0 is only for ``background`` (TF models' label_map_util). Duplicate ids or
names are errors naming the line of the second item.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any, Final

from tfdrop.codec.lazy import proto, text_format
from tfdrop.codec.model import Keypoint, LabelMap, LabelMapItem
from tfdrop.errors import LabelMapError, LimitExceededError

BACKGROUND = "background"
EDGES_COMMENT: Final = "# keypoint_edges:"
"""tfdrop's comment in an item for its skeleton's edges (``a-b`` keypoint id pairs)."""
_EDGE: Final = re.compile(r"^([0-9]{1,9})-([0-9]{1,9})$")


def _edges_by_item(text: str, lines: list[int]) -> dict[int, tuple[tuple[int, int], ...]]:
    """Item index -> the edges of its ``# keypoint_edges:`` comment (malformed pairs skipped:
    a comment never fails a label map)."""
    out: dict[int, tuple[tuple[int, int], ...]] = {}
    if EDGES_COMMENT not in text:
        return out
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith(EDGES_COMMENT):
            continue
        n = sum(1 for start in lines if start <= lineno) - 1
        if n < 0:
            continue
        pairs = (_EDGE.match(tok) for tok in stripped[len(EDGES_COMMENT) :].split())
        out[n] = tuple((int(m.group(1)), int(m.group(2))) for m in pairs if m is not None)
    return out


def _item_lines(text: str) -> list[int]:
    """1-based line of each top-level ``item`` field, to point errors at the right line.

    This only locates items (braces outside strings and comments); parsing is text_format's.
    """
    lines: list[int] = []
    depth = 0
    quote = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        i = 0
        while i < len(line):
            ch = line[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif ch == "#":
                break
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif depth == 0 and line.startswith("item", i):
                lines.append(lineno)
                i += 3
            i += 1
    return lines


DEFAULT_MAX_LABELS: Final = 100_000
"""The budget's default ``max_labels`` (tfdrop.limits; the codec takes plain ints)."""
DEFAULT_MAX_TEXT_BYTES: Final = 64 * 1024
"""The budget's default ``max_text_bytes``."""
_ITEM_START: Final = re.compile(r"\bitem\s*:?\s*\{")


def _text(data: str | bytes, error: Callable[[str, int | None], LabelMapError]) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"not UTF-8 text ({exc.reason})", bad_line) from None


def parse_label_map(
    text: str | bytes,
    *,
    file: str | None = None,
    member: str | None = None,
    max_labels: int = DEFAULT_MAX_LABELS,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
) -> LabelMap:
    """Parse and check a label map; errors name the ``file`` or archive ``member`` it came from.

    The items are counted before protobuf parses anything (a 62 MB map of 2 million items
    took minutes and 1.5 GB before ``max_labels`` was checked), and each name is checked
    against ``max_text_bytes``.
    """

    def error(message: str, line: int | None) -> LabelMapError:
        return LabelMapError(message, file=file, member=member, line=line)

    def too_many(name: str, value: int, cap: int, line: int | None = None) -> LimitExceededError:
        return LimitExceededError(
            f"{name} is {cap}, and this label map needs at least {value}",
            limit=name,
            value=value,
            cap=cap,
            file=file,
            member=member,
            line=line,
        )

    text = _text(text, error)
    count = sum(1 for _ in itertools.islice(_ITEM_START.finditer(text), max_labels + 1))
    if count > max_labels:
        raise too_many("max_labels", count, max_labels)
    msg: Any = proto().StringIntLabelMap()
    parser = text_format()
    try:
        parser.Parse(text, msg)
    except parser.ParseError as exc:
        line = exc.GetLine() if hasattr(exc, "GetLine") else None
        raise error(f"not a StringIntLabelMap: {exc}", line) from None
    lines = _item_lines(text)
    edges = _edges_by_item(text, lines)
    items: list[LabelMapItem] = []
    seen_ids: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    seen_idents: set[tuple[str, str]] = set()
    for n, m in enumerate(msg.item):
        line = lines[n] if n < len(lines) else None
        if not m.HasField("id"):
            raise error(f"item {m.name!r} has no id", line)
        if not m.name and not m.display_name:
            raise error(f"item with id {m.id} has no name", line)
        name = m.name or m.display_name
        longest = max(len(name.encode()), len(m.display_name.encode()))
        if longest > max_text_bytes:
            raise too_many("max_text_bytes", longest, max_text_bytes, line)
        if m.id < 0 or (m.id == 0 and name != BACKGROUND):
            raise error(
                f"id {m.id} of {name!r}: ids start at 1 (0 is reserved for 'background')", line
            )
        if m.id in seen_ids:
            raise error(f"duplicate id {m.id} (first used on line {seen_ids[m.id]})", line)
        # a repeated name is fine while display names tell the items apart (TF's own
        # mscoco_label_map.pbtxt repeats "NA"); otherwise the label map is ambiguous
        ident = (name, m.display_name)
        if name in seen_names and (not m.display_name or ident in seen_idents):
            raise error(f"duplicate name {name!r} (first used on line {seen_names[name]})", line)
        seen_names[name] = line or 0
        seen_idents.add(ident)
        seen_ids[m.id] = line or 0
        items.append(
            LabelMapItem(
                id=m.id,
                name=name,
                display_name=m.display_name,
                keypoints=tuple(Keypoint(k.id, k.label) for k in m.keypoints),
                ancestor_ids=tuple(m.ancestor_ids),
                descendant_ids=tuple(m.descendant_ids),
                frequency=m.frequency,
                instance_count=m.instance_count if m.HasField("instance_count") else None,
                keypoint_edges=edges.get(n, ()),
            )
        )
    return LabelMap(tuple(items))


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def format_label_map(label_map: LabelMap) -> str:
    """CVAT's layout: tab-indented ``id`` then ``name``, a blank line after each item.

    Fields CVAT never wrote (display_name, keypoints, ...) follow when a pinned map has them.
    """
    out: list[str] = []
    for it in label_map.items:
        out.append(f"item {{\n\tid: {it.id}\n\tname: {_quote(it.name)}\n")
        if it.display_name:
            out.append(f"\tdisplay_name: {_quote(it.display_name)}\n")
        for kp in it.keypoints:
            out.append(f"\tkeypoints {{\n\t\tid: {kp.id}\n\t\tlabel: {_quote(kp.label)}\n\t}}\n")
        if it.keypoint_edges:
            edges = " ".join(f"{a}-{b}" for a, b in it.keypoint_edges)
            out.append(f"\t{EDGES_COMMENT} {edges}\n")
        out.extend(f"\tancestor_ids: {a}\n" for a in it.ancestor_ids)
        out.extend(f"\tdescendant_ids: {d}\n" for d in it.descendant_ids)
        if it.frequency:
            out.append(f"\tfrequency: {it.frequency}\n")
        if it.instance_count is not None:
            out.append(f"\tinstance_count: {it.instance_count}\n")
        out.append("}\n\n")
    return "".join(out)
