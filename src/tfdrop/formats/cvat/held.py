"""What the CVAT reader's tree holds while one top-level element streams, counted against the
job's budget before it is all in memory."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from tfdrop.limits import Limits


@dataclass(slots=True)
class Held:
    """Counts what the tree holds of the top-level element being parsed (an ``<image>`` is
    held whole until its end; a track's shapes one at a time), before it is all in memory:
    an image's shapes against ``max_objects_per_item``, everything below them (attributes)
    against ``max_values_per_feature``."""

    limits: Limits
    member: str
    top: ET.Element | None = None
    objects: int = 0
    inner: int = 0

    def start(self, depth: int, el: ET.Element, line: int) -> None:
        if depth <= 2:
            self.top, self.objects, self.inner = (el if depth == 2 else None), 0, 0
            return
        tag = self.top.tag if self.top is not None else ""
        item = self.top.get("name") if tag == "image" and self.top is not None else None
        if depth == 3 and tag == "image":
            self.objects += 1
            self.limits.check(
                "max_objects_per_item", self.objects, member=self.member, item=item, line=line
            )
            return
        if depth == 3 and tag == "track":
            self.inner = 0  # the track's previous shape was dropped at its end
            return
        self.inner += 1
        self.limits.check(
            "max_values_per_feature", self.inner, member=self.member, item=item, line=line
        )
