"""``ToExamples``: items -> serialized ``tf.train.Example`` records with final label ids.

Each item goes through what ``tfdrop convert`` does to it between reader and writer:
:func:`tfdrop.units.prepare` (image size check, box masks, losses counted), label ids from the
map (pinned, or the one :class:`~tfdrop.beam.read.ReadDataset` resolved), and
:func:`tfdrop.formats.tfrecord.encode_record`. An item that fails becomes a ``BadItem`` with
the error's fields; every other element passes through. Notes are handed on once per bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from tfdrop.beam.elements import BadItem, ExampleAt, ItemAt, Noted, Position
from tfdrop.beam.read import NAMESPACE
from tfdrop.codec.model import LabelMap
from tfdrop.errors import TfdropError, ValidationError
from tfdrop.formats import Notes, ReadOptions, WriteOptions
from tfdrop.formats.tfrecord import encode_record
from tfdrop.labels import LabelResolver
from tfdrop.units import JobSpec, prepare


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
        if self._first is None:
            self._first = element.pos
        resolver = self._resolver_for(label_map)
        try:
            item = resolver.assign(prepare(element.item, self.spec, self._notes))
            if len(resolver.map) != len(label_map):
                raise ValidationError(
                    f"item {item.name!r} has a label the label scan did not see",
                    item=item.name,
                )
            wopts = replace(
                self.spec.encode or WriteOptions(), keypoints=resolver.map.keypoint_layout
            )
            record = encode_record(item, wopts, self._notes)
        except ValidationError:
            raise
        except TfdropError as exc:
            self.bad.inc()
            yield BadItem(element.pos, exc.at(item=element.item.name).to_dict(), cut_short=False)
            return
        labels = tuple(o.label for o in item.objects)
        self.items.inc()
        self.objects.inc(len(labels))
        yield ExampleAt(element.pos, item.subset or "default", record, labels)

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
