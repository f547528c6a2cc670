"""The ``<meta>`` block of a CVAT for images/video 1.1 file: labels, attributes, subsets, size.

CVAT writes ``meta/task`` for a task export, ``meta/job`` for a job, and ``meta/project`` (with
``tasks/task/subset`` and ``subsets``) for a project export (CVAT's
``dataset_manager/bindings.py``). A label's ``<parent>`` marks a skeleton's point sub-label,
which is not a label of its own for detection but one of its skeleton's keypoints. A video
task carries the frame size in ``original_size``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tfdrop.errors import FormatError

_HOLDERS = ("task", "job", "project")
_MAX_SIDE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute a label declares (``input_type``: checkbox, radio, select, text, number)."""

    name: str
    input_type: str = "text"
    default: str = ""
    values: tuple[str, ...] = ()
    mutable: bool = False


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """One label of the meta block with the attributes it declares."""

    name: str
    attributes: tuple[AttributeSpec, ...] = ()
    type: str = ""
    parent: str = ""
    svg: str = ""
    """A skeleton label's drawing (its nodes and edges, see :mod:`.skeleton`)."""


@dataclass(frozen=True, slots=True)
class Meta:
    """What a file's ``<meta>`` says (everything optional: CVAT imports files without meta)."""

    labels: tuple[LabelSpec, ...] = ()
    subsets: tuple[str, ...] = ()
    subset: str = ""
    mode: str = ""
    frame_size: tuple[int, int] | None = None


def _text(el: ET.Element | None, tag: str) -> str:
    if el is None:
        return ""
    child = el.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _values(text: str) -> tuple[str, ...]:
    # CVAT joins values with newlines (a value may hold spaces)
    return tuple(v.strip() for v in text.split("\n") if v.strip())


def _label(el: ET.Element) -> LabelSpec:
    attrs = []
    holder = el.find("attributes")
    for a in holder.findall("attribute") if holder is not None else ():
        attrs.append(
            AttributeSpec(
                name=_text(a, "name"),
                input_type=_text(a, "input_type") or "text",
                default=_text(a, "default_value"),
                values=_values(_text(a, "values")),
                mutable=_text(a, "mutable").lower() == "true",
            )
        )
    return LabelSpec(
        name=_text(el, "name"),
        attributes=tuple(attrs),
        type=_text(el, "type"),
        parent=_text(el, "parent"),
        svg=_text(el, "svg"),
    )


def _size(holder: ET.Element, member: str) -> tuple[int, int] | None:
    size = holder.find("original_size")
    if size is None:
        return None
    try:
        width, height = int(_text(size, "width")), int(_text(size, "height"))
    except ValueError:
        raise FormatError("meta original_size is not two integers", member=member) from None
    if width > _MAX_SIDE or height > _MAX_SIDE:
        raise FormatError(f"meta original_size {width}x{height} is not a pixel size", member=member)
    return (width, height) if width > 0 and height > 0 else None


def parse_meta(meta: ET.Element, *, member: str) -> Meta:
    """The facts of a ``<meta>`` element (the whole subtree, parsed)."""
    holder = next((h for t in _HOLDERS if (h := meta.find(t)) is not None), None)
    if holder is None:
        return Meta()
    labels_el = holder.find("labels")
    labels = tuple(
        _label(el) for el in (labels_el.findall("label") if labels_el is not None else ())
    )
    subsets: list[str] = list(_values(_text(holder, "subsets")))
    tasks = holder.find("tasks")
    for task in tasks.findall("task") if tasks is not None else ():
        name = _text(task, "subset")
        if name and name not in subsets:
            subsets.append(name)
    return Meta(
        labels=tuple(label for label in labels if label.name),
        subsets=tuple(subsets),
        subset=_text(holder, "subset") if holder.tag != "project" else "",
        mode=_text(holder, "mode"),
        frame_size=_size(holder, member),
    )
