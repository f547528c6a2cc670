"""What a record held that a target format has no room for, counted in one place.

SPEC.md: never drop an annotation without saying so. A TFRecord keeps every feature; the
other writers call :func:`note_item_losses` once per item, so ``lossy`` in the report counts
``feature:<key>`` (Example features tfdrop does not know, ``Item.extra``), ``source_id`` (an
``image/source_id`` the target cannot give back), ``area`` (``image/object/area``) and
``keypoints`` (objects whose keypoints the target cannot hold) the same way whatever the target.
"""

from __future__ import annotations

from tfdrop.codec.model import Item
from tfdrop.formats.base import Notes


def note_item_losses(
    item: Item,
    notes: Notes,
    *,
    keeps_area: bool = False,
    keeps_source_id: bool = False,
    keeps_keypoints: bool = False,
) -> None:
    """Count what of ``item`` the target drops (its own per-shape losses stay with it).

    ``source_id`` is lost when it says more than the name (readers of VOC and CVAT give the
    image name back as the id; YOLO gives none).
    """
    for key, _ in item.extra:
        notes.lose(f"feature:{key}")
    if not keeps_source_id and item.source_id and item.source_id != item.name:
        notes.lose("source_id")
    if not keeps_area:
        areas = sum(1 for o in item.objects if o.area is not None)
        if areas:
            notes.lose("area", areas)
    if not keeps_keypoints:
        with_keypoints = sum(1 for o in item.objects if o.keypoints)
        if with_keypoints:
            notes.lose("keypoints", with_keypoints)
