"""``ToExamples``: items -> serialized ``tf.train.Example`` records with final label ids.

Each item goes through what ``tfdrop convert`` does to it between reader and writer:
:func:`tfdrop.units.prepare` (image size check, box masks, losses counted), label ids from the
map (pinned, or the one :class:`~tfdrop.beam.read.ReadDataset` resolved), and
:func:`tfdrop.formats.tfrecord.encode_record`. An item that fails becomes a ``BadItem`` with
the error's fields; every other element passes through. Notes are handed on once per bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from tfdrop.beam.elements import BadItem, ExampleAt, ItemAt, Noted, Position
from tfdrop.beam.failure import carried
from tfdrop.beam.labelscan import encode_item
from tfdrop.beam.read import NAMESPACE
from tfdrop.codec.model import LabelMap
from tfdrop.errors import TfdropError, ValidationError
from tfdrop.formats import Notes, ReadOptions, WriteOptions
from tfdrop.labels import LabelResolver
from tfdrop.units import JobSpec


class _Encode(beam.DoFn):  # type: ignore[misc]
    def __init__(self, pinned: bool, read: ReadOptions, write: WriteOptions) -> None:
        self.pinned = pinned
        self.spec = JobSpec(Path(), "tfrecord", read, LabelMap(), write.masks, write)
        self.items = Metrics.counter(NAMESPACE, "items")
        self.objects = Metrics.counter(NAMESPACE, "objects")
        self.bad = Metrics.counter(NAMESPACE, "bad_items")
        self._resolver: tuple[LabelMap, LabelResolver] | None = None
        self._notes = Notes()
        self._first: Position | None = None

    def _resolver_for(self, label_map: LabelMap) -> LabelResolver:
        if self._resolver is None or self._resolver[0] is not label_map:
            # a resolved map acts as the source's own map (an unnamed object fails as in
            # convert); a pinned map as pinned
            resolver = (
                LabelResolver(label_map, (), None, limits=self.spec.read.limits)
                if self.pinned
                else LabelResolver(None, (), label_map, limits=self.spec.read.limits)
            )
            self._resolver = (label_map, resolver)
        return self._resolver[1]

    def start_bundle(self) -> None:
        self._notes = Notes()
        self._first = None

    def process(self, element: Any, label_map: LabelMap) -> Iterator[Any]:
        if not isinstance(element, ItemAt):
            yield element
            return
        with carried():
            yield self._encode(element, label_map)

    def _encode(self, element: ItemAt, label_map: LabelMap) -> ExampleAt | BadItem:
        if self._first is None:
            self._first = element.pos
        resolver = self._resolver_for(label_map)
        try:
            item, record = encode_item(element.item, self.spec, resolver, self._notes)
        except TfdropError as exc:
            self.bad.inc()
            if len(resolver.map) != len(label_map):
                self._resolver = None  # it took a label of this bad item: start afresh
            where = exc.at(archive=element.archive or None, item=element.item.name)
            return BadItem(element.pos, where.to_dict(), cut_short=False)
        if len(resolver.map) != len(label_map):
            raise ValidationError(
                f"item {item.name!r} has a label the label scan did not see",
                archive=element.archive or None,
                item=item.name,
            )
        objs = item.objects
        labels = tuple(o.label for o in objs)
        self.items.inc()
        self.objects.inc(len(labels))
        return ExampleAt(
            element.pos,
            item.subset or "default",
            record,
            labels,
            tuple(o.label_id for o in objs),
            sum(o.mask is not None for o in objs),
            tuple(len(o.keypoints) for o in objs),
        )

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._first is not None:
            yield WindowedValue(Noted(self._first, self._notes), -1, [GlobalWindow()])


class ToExamples(beam.PTransform):  # type: ignore[misc]
    """``items | ToExamples(label_map=...)`` -> ``ExampleAt`` (and ``BadItem``) elements.

    Args:
        label_map: a pinned :class:`~tfdrop.codec.model.LabelMap`, or the singleton
            PCollection ``ReadDataset.label_map`` (ids as ``tfdrop convert`` gives them).
        masks: polygons and masks as PNG instance masks, boxes as filled ones (``--masks``).
        images: embed the images (``--no-images`` turns it off).
        read: the options the items were read with (their job budget).
    """

    def __init__(
        self,
        label_map: LabelMap | beam.PCollection,
        *,
        masks: bool = False,
        images: bool = True,
        read: ReadOptions | None = None,
    ) -> None:
        super().__init__()
        self.label_map = label_map
        self.read = read or ReadOptions(masks=masks, images=images)
        self.write = WriteOptions(masks=masks, images=images)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        pinned = isinstance(self.label_map, LabelMap)
        side = self.label_map if pinned else beam.pvalue.AsSingleton(self.label_map)
        return pcoll | "Encode" >> beam.ParDo(_Encode(pinned, self.read, self.write), side)
