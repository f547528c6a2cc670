"""``tf.train.Example`` <-> :class:`~tfdrop.codec.model.Item`, for the TF Object Detection API.

Feature keys are the ones TF models' ``create_pascal_tf_record.py`` / ``create_coco_tf_record.py``
write and the OD API's ``TfExampleDecoder`` reads (SPEC.md table). Decoding goes through a
columnar :class:`ParsedExample` (plain lists per key) so the schema check can run over lists
without building one object per box; :func:`to_item` builds the typed item when a conversion
needs it. Keys tfdrop does not know are kept serialized and written back unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.message import DecodeError

from tfdrop.codec import wire
from tfdrop.codec.keypoints import (
    KEYPOINT_KEYS,
    KP_NUM,
    KP_TEXT,
    KP_VIS,
    KP_X,
    KP_Y,
    check_keypoint_lists,
    encode_keypoints,
    object_keypoints,
)
from tfdrop.codec.layout import layout_problem
from tfdrop.codec.lazy import proto
from tfdrop.codec.model import Annotation, Box, Item, KeypointLayout, LabelMap, Shape
from tfdrop.codec.wirescan import Malformed, feature_value_counts
from tfdrop.errors import ExampleError, SchemaError, TfdropError

# --- feature keys (TF models object_detection/core/standard_fields.py TfExampleFields) --------
FILENAME: Final = "image/filename"
SOURCE_ID: Final = "image/source_id"
HEIGHT: Final = "image/height"
WIDTH: Final = "image/width"
ENCODED: Final = "image/encoded"
FORMAT: Final = "image/format"
SHA256: Final = "image/key/sha256"
XMIN: Final = "image/object/bbox/xmin"
XMAX: Final = "image/object/bbox/xmax"
YMIN: Final = "image/object/bbox/ymin"
YMAX: Final = "image/object/bbox/ymax"
LABEL: Final = "image/object/class/label"
TEXT: Final = "image/object/class/text"
DIFFICULT: Final = "image/object/difficult"
TRUNCATED: Final = "image/object/truncated"
OCCLUDED: Final = "image/object/occluded"  # tfdrop's key for CVAT/VOC occlusion (SPEC.md)
VIEW: Final = "image/object/view"
MASK: Final = "image/object/mask"
IS_CROWD: Final = "image/object/is_crowd"
AREA: Final = "image/object/area"

BOX_KEYS: Final = (XMIN, YMIN, XMAX, YMAX)
_BYTES, _FLOAT, _INT = "bytes_list", "float_list", "int64_list"

SCALAR_KEYS: Final[dict[str, str]] = {
    FILENAME: _BYTES,
    SOURCE_ID: _BYTES,
    HEIGHT: _INT,
    WIDTH: _INT,
    ENCODED: _BYTES,
    FORMAT: _BYTES,
    SHA256: _BYTES,
}
OBJECT_KEYS: Final[dict[str, str]] = {
    XMIN: _FLOAT,
    XMAX: _FLOAT,
    YMIN: _FLOAT,
    YMAX: _FLOAT,
    LABEL: _INT,
    TEXT: _BYTES,
    DIFFICULT: _INT,
    TRUNCATED: _INT,
    OCCLUDED: _INT,
    VIEW: _BYTES,
    MASK: _BYTES,
    IS_CROWD: _INT,
    AREA: _FLOAT,
}


@dataclass(slots=True)
class ParsedExample:
    """An Example as plain values: scalars, one list per per-object key, unknown features.

    ``lists`` holds only the per-object keys present and non-empty.
    """

    filename: str = ""
    source_id: str = ""
    height: int = 0
    width: int = 0
    encoded: bytes | None = None
    format: str = ""
    sha256: str = ""
    lists: dict[str, list[Any]] = field(default_factory=dict)
    extra: list[tuple[str, bytes]] = field(default_factory=list)
    num_objects: int = 0
    keypoints: dict[str, list[Any]] = field(default_factory=dict)
    """The ``image/object/keypoint/*`` lists present and non-empty (flattened over objects)."""


_KIND_NAMES: Final = {1: _BYTES, 2: _FLOAT, 3: _INT}
_KINDS: Final = {_BYTES: 1, _FLOAT: 2, _INT: 3}
_KNOWN: Final[dict[bytes, tuple[str, int]]] = {
    k.encode(): (k, _KINDS[v]) for k, v in (SCALAR_KEYS | OBJECT_KEYS | KEYPOINT_KEYS).items()
}
_MASK_B: Final = MASK.encode()


NOT_CANONICAL: Final = "not in the canonical tf.train.Example layout"
"""The start of the message for a layout TensorFlow and protobuf read differently."""


def _features_slow(data: bytes, max_values: int = wire.DEFAULT_MAX_VALUES) -> wire.Features:
    """The reference parser (protobuf) in the fast path's shape.

    Protobuf builds every repeated field at once, so the values are counted on the wire first
    (each takes at least one byte: only a record longer than the cap needs counting).
    """
    if len(data) > max_values:
        try:
            counts = feature_value_counts(data)
        except Malformed:
            counts = {}  # protobuf names the problem below
        for key, n in counts.items():
            if n > max_values:
                raise wire.too_many_values(key, n, max_values)
    try:
        ex = proto().Example.FromString(data)
    except DecodeError as exc:
        raise ExampleError(f"not a tf.train.Example protobuf: {exc}") from None
    out: wire.Features = {}
    for key, feat in ex.features.feature.items():
        kind_name = feat.WhichOneof("kind")
        kind = _KINDS[kind_name] if kind_name else 0
        values = list(getattr(feat, kind_name).value) if kind_name else []
        out[key.encode("utf-8", "surrogateescape")] = (kind, values, feat.SerializeToString())
    return out


def _text(values: list[Any], key: str) -> str:
    if not values:
        return ""
    raw: bytes = values[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExampleError("value is not UTF-8 text", key=key) from None


_OBJECT_SPECS: Final = tuple((k.encode(), k, _KINDS[v]) for k, v in OBJECT_KEYS.items())
_KP_SPECS: Final = tuple((k.encode(), k, _KINDS[v]) for k, v in KEYPOINT_KEYS.items())
_KP_SPECS_KEYS: Final = tuple(spec[0] for spec in _KP_SPECS)
_KNOWN_KEYS: Final = frozenset(_KNOWN)
_ENC: Final = {k: k.encode() for k in SCALAR_KEYS}


def _kind_error(key: str, want: int, kind: int) -> ExampleError:
    return ExampleError(f"expected {_KIND_NAMES[want]}, found {_KIND_NAMES[kind]}", key=key)


def _scalar(feats: wire.Features, key: str, want: int) -> list[Any] | None:
    """The one value of a single-value key, as a list; ``None`` when absent.

    TensorFlow reads these keys as ``FixedLenFeature([])`` (with the OD API's defaults): an
    absent key or an empty Feature takes the default, anything else must be exactly one value.
    """
    v = feats.get(_ENC[key])
    if v is None or not v[0]:
        return None
    if v[0] != want:
        raise _kind_error(key, want, v[0])
    if len(v[1]) != 1:
        raise SchemaError(
            f"has {len(v[1])} values; a single-value key must hold exactly one "
            "(TensorFlow refuses the record)",
            key=key,
        )
    return v[1]


def parse_example(
    data: bytes, *, max_values_per_feature: int = wire.DEFAULT_MAX_VALUES, strict: bool = False
) -> ParsedExample:
    """Parse a serialized Example; wrong feature types raise :class:`ExampleError` with the key.

    Per-object lists must agree in length (the OD decoder zips them) and single-value keys
    hold exactly one value: :class:`SchemaError`. A feature with more than
    ``max_values_per_feature`` values raises :class:`~tfdrop.errors.LimitExceededError`
    before its list is built. ``strict`` (``tfdrop validate``) also refuses a record that is
    not in the canonical layout where TensorFlow's parser and protobuf disagree, TensorFlow
    refuses it, or a value is dropped (a key twice, a feature with two lists, a list split in
    runs, a key without a value: :mod:`tfdrop.codec.layout`); other layouts (unpacked lists,
    unknown Example fields) pass when protobuf reads them.
    """
    feats = _features(data, max_values_per_feature, strict=strict)
    out = ParsedExample()
    if not feats.keys() <= _KNOWN_KEYS:
        # in record order (a set difference would order them by this process's hash seed)
        out.extra.extend(
            (bkey.decode("utf-8", "replace"), v[2])
            for bkey, v in feats.items()
            if bkey not in _KNOWN_KEYS
        )
    _object_lists(feats, out)
    _single_values(feats, out)
    out.num_objects = max((len(out.lists.get(key, ())) for key in BOX_KEYS), default=0)
    if out.lists:
        _check_lengths(out)
    if _has_keypoints(feats):
        _keypoint_lists(feats, out)
        check_keypoint_lists(out.keypoints, out.num_objects)
    return out


def _has_keypoints(feats: wire.Features) -> bool:
    return any(k in feats for k in _KP_SPECS_KEYS)


def _keypoint_lists(feats: wire.Features, out: ParsedExample) -> None:
    """The keypoint lists present (an empty Feature counts as absent) into ``out.keypoints``."""
    for bkey, key, want in _KP_SPECS:
        v = feats.get(bkey)
        if v is None or not v[0]:
            continue
        if v[0] != want:
            raise _kind_error(key, want, v[0])
        if v[1]:
            out.keypoints[key] = v[1]


def _features(data: bytes, max_values: int, *, strict: bool) -> wire.Features:
    """The record's features: the fast walk, or protobuf when the layout is not canonical."""
    try:
        return wire.parse_features(data, max_values)
    except wire.NotCanonical:
        feats = _features_slow(data, max_values)  # its own errors first, as protobuf reads it
        if strict and (problem := layout_problem(data)) is not None:
            key, why = problem
            raise ExampleError(f"{NOT_CANONICAL}: {why}", key=key or None) from None
        return feats


def _object_lists(feats: wire.Features, out: ParsedExample) -> None:
    """The per-object lists present (an empty Feature counts as absent) into ``out.lists``."""
    get = feats.get
    for bkey, key, want in _OBJECT_SPECS:
        v = get(bkey)
        if v is None:
            continue
        kind, obj_values = v[0], v[1]
        if kind != want:
            if not kind:
                continue  # an empty Feature: the key is absent
            if bkey == _MASK_B and kind == wire.FLOAT_KIND:
                out.extra.append((key, v[2]))  # TF's NUMERICAL_MASKS: kept unchanged
                continue
            raise _kind_error(key, want, kind)
        if obj_values:
            out.lists[key] = obj_values


# single-value text keys and the ParsedExample field each fills
_TEXT_SCALARS: Final = (
    (FILENAME, "filename"),
    (SOURCE_ID, "source_id"),
    (FORMAT, "format"),
    (SHA256, "sha256"),
)


def _single_values(feats: wire.Features, out: ParsedExample) -> None:
    """The single-value keys (file name, ids, image bytes, size) into ``out``."""
    for key, attr in _TEXT_SCALARS:
        if (values := _scalar(feats, key, 1)) is not None:
            setattr(out, attr, _text(values, key))
    if (values := _scalar(feats, ENCODED, 1)) is not None:
        out.encoded = values[0]
    if (values := _scalar(feats, HEIGHT, 3)) is not None:
        out.height = values[0]
    if (values := _scalar(feats, WIDTH, 3)) is not None:
        out.width = values[0]


def _check_lengths(p: ParsedExample) -> None:
    """Per-object lists must agree in length (the OD decoder zips them)."""
    n = p.num_objects
    for key, values in p.lists.items():
        if len(values) != n:
            raise SchemaError(
                f"has {len(values)} values but the record has {n} boxes "
                f"(per-object lists must have one value per object)",
                key=key,
            )


def _flag(values: list[int] | None, i: int) -> bool:
    return bool(values[i]) if values else False


def to_item(
    p: ParsedExample, *, subset: str = "default", label_map: LabelMap | None = None
) -> Item:
    """Build the typed item. Names come from class/text, else from ``label_map`` by id."""
    L = p.lists
    ids = L.get(LABEL)
    views = L.get(VIEW)
    masks = L.get(MASK)
    crowd = L.get(IS_CROWD)
    areas = L.get(AREA)
    diff, trunc, occl = L.get(DIFFICULT), L.get(TRUNCATED), L.get(OCCLUDED)
    if p.num_objects:
        # parse_example leaves a missing coordinate to the schema check (which lists it as a
        # problem); building the item without it raised IndexError (found by fuzzing)
        for key in BOX_KEYS:
            if key not in L:
                raise SchemaError("missing while other box coordinates are present", key=key)
    xmin, ymin, xmax, ymax = (L.get(k, ()) for k in BOX_KEYS)
    labels = object_labels(p, label_map)
    points = None
    if p.keypoints:
        layout = label_map.keypoint_layout if label_map is not None else None
        points = object_keypoints(p.keypoints, p.num_objects, labels, layout)
    objects = []
    for i in range(p.num_objects):
        label_id = ids[i] if ids else 0
        label = labels[i]
        objects.append(
            Annotation(
                label=label,
                box=Box(xmin[i], ymin[i], xmax[i], ymax[i]),
                label_id=label_id,
                difficult=_flag(diff, i),
                truncated=_flag(trunc, i),
                occluded=_flag(occl, i),
                view=views[i].decode("utf-8", "replace") if views else "",
                mask=masks[i] if masks else None,
                is_crowd=_flag(crowd, i),
                area=areas[i] if areas else None,
                shape=Shape.MASK if masks else Shape.BOX,
                keypoints=points[i] if points else (),
            )
        )
    return Item(
        name=p.filename,
        subset=subset,
        width=p.width,
        height=p.height,
        image=p.encoded if p.encoded else None,
        image_format=p.format,
        source_id=p.source_id,
        sha256=p.sha256,
        objects=tuple(objects),
        extra=tuple(p.extra),
    )


def object_labels(p: ParsedExample, label_map: LabelMap | None) -> list[str]:
    """Each object's label: its class/text, else its id's name in ``label_map`` (else "")."""
    texts = p.lists.get(TEXT)
    if texts:
        out = []
        for i in range(p.num_objects):
            try:
                out.append(texts[i].decode("utf-8"))
            except UnicodeDecodeError:
                raise ExampleError("value is not UTF-8 text", key=TEXT, obj=i) from None
        return out
    ids = p.lists.get(LABEL)
    if not ids or label_map is None:
        return [""] * p.num_objects
    return [label_map.name_of(ids[i]) or "" for i in range(p.num_objects)]


def decode_example(
    data: bytes,
    *,
    subset: str = "default",
    label_map: LabelMap | None = None,
    max_values_per_feature: int = wire.DEFAULT_MAX_VALUES,
) -> Item:
    """Serialized Example -> :class:`Item` (see :func:`parse_example`, :func:`to_item`)."""
    parsed = parse_example(data, max_values_per_feature=max_values_per_feature)
    return to_item(parsed, subset=subset, label_map=label_map)


# --- encoding ------------------------------------------------------------------------------


def _utf8(values: list[str], key: str, item: Item, *, per_object: bool = True) -> list[bytes]:
    """Text values as UTF-8; a lone surrogate (a file name whose bytes are not UTF-8, read
    with ``surrogateescape``) is refused with the key, item and object instead of crashing."""
    try:
        return [v.encode() for v in values]
    except UnicodeEncodeError:
        bad = next(i for i, v in enumerate(values) if not _encodable(v))
        raise ExampleError(
            f"text '{values[bad].encode('utf-8', 'backslashreplace').decode()}' is not valid "
            "Unicode (undecodable bytes, e.g. a file name that is not UTF-8); rename it",
            key=key,
            item=item.name.encode("utf-8", "backslashreplace").decode(),
            obj=bad if per_object else None,
        ) from None


def _encodable(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def image_sha256(image: bytes) -> str:
    """Hex SHA-256 of the encoded image, as ``image/key/sha256`` holds it."""
    return hashlib.sha256(image).hexdigest()


def _k(key: str) -> bytes:
    return _KEY_BYTES[key]


_KEY_BYTES: Final = {k: k.encode() for k in (*SCALAR_KEYS, *OBJECT_KEYS, *KEYPOINT_KEYS)}


def encode_example(
    item: Item,
    layout: KeypointLayout | None = None,
    *,
    max_values: int = wire.DEFAULT_MAX_VALUES,
) -> bytes:
    """:class:`Item` -> serialized Example with the OD API's keys.

    Label ids must already be assigned (``label_id >= 1``; the convert path does that from the
    label map). Like TF models' pascal script, the per-object box, class, difficult, truncated
    and view lists are always written (empty for an image with no objects); occluded, mask,
    is_crowd and area only when the item has them. The bytes equal protobuf's deterministic
    serialization (map entries sorted by key), built without copying the image twice.
    With a keypoint ``layout`` (the dataset has keypoints), every object carries its slots,
    even in a record without keypoint objects (:func:`~tfdrop.codec.keypoints.encode_keypoints`);
    without one, a record's K is its objects' own.
    """
    b = wire.new_builder()
    image = item.image if item.image is not None else b""
    sha = image_sha256(image) if image else item.sha256
    try:
        b.int64_list(_k(HEIGHT), [item.height])
        b.int64_list(_k(WIDTH), [item.width])
    except OverflowError as exc:
        raise ExampleError(str(exc), key=HEIGHT, item=item.name) from None
    b.bytes_list(_k(FILENAME), _utf8([item.name], FILENAME, item, per_object=False))
    b.bytes_list(_k(SOURCE_ID), _utf8([item.source_id], SOURCE_ID, item, per_object=False))
    b.bytes_list(_k(ENCODED), [image])
    b.bytes_list(_k(FORMAT), _utf8([item.image_format], FORMAT, item, per_object=False))
    b.bytes_list(_k(SHA256), _utf8([sha], SHA256, item, per_object=False))
    objs = item.objects
    b.float_list(_k(XMIN), [o.box.xmin for o in objs])
    b.float_list(_k(XMAX), [o.box.xmax for o in objs])
    b.float_list(_k(YMIN), [o.box.ymin for o in objs])
    b.float_list(_k(YMAX), [o.box.ymax for o in objs])
    b.bytes_list(_k(TEXT), _utf8([o.label for o in objs], TEXT, item))
    try:
        b.int64_list(_k(LABEL), [o.label_id for o in objs])
    except OverflowError as exc:
        raise ExampleError(str(exc), key=LABEL, item=item.name) from None
    b.int64_list(_k(DIFFICULT), [int(o.difficult) for o in objs])
    b.int64_list(_k(TRUNCATED), [int(o.truncated) for o in objs])
    b.bytes_list(_k(VIEW), _utf8([o.view for o in objs], VIEW, item))
    if any(o.occluded for o in objs):
        b.int64_list(_k(OCCLUDED), [int(o.occluded) for o in objs])
    if any(o.mask is not None for o in objs):
        missing = [i for i, o in enumerate(objs) if o.mask is None]
        if missing:
            raise SchemaError(
                "some objects have a mask and others do not (the OD API needs one per object)",
                key=MASK,
                item=item.name,
                obj=missing[0],
            )
        b.bytes_list(_k(MASK), [o.mask for o in objs if o.mask is not None])
    if any(o.is_crowd for o in objs):
        b.int64_list(_k(IS_CROWD), [int(o.is_crowd) for o in objs])
    if objs and all(o.area is not None for o in objs):
        b.float_list(_k(AREA), [o.area for o in objs if o.area is not None])
    if objs and ((layout is not None and layout.total) or any(o.keypoints for o in objs)):
        _write_keypoints(b, item, layout, max_values)
    for key, raw in item.extra:
        bkey = key.encode("utf-8", "surrogateescape")
        if bkey not in b:
            b.raw_feature(bkey, raw)
    return b.serialize()


def _write_keypoints(
    b: wire.ExampleBuilder, item: Item, layout: KeypointLayout | None, max_values: int
) -> None:
    """The keypoint keys, flattened over objects (the same K for each: see
    :func:`tfdrop.codec.keypoints.encode_keypoints`)."""
    try:
        xs, ys, vis, names, num = encode_keypoints(item.objects, layout, max_values=max_values)
    except TfdropError as exc:
        raise exc.at(item=item.name) from None
    b.float_list(_k(KP_X), xs)
    b.float_list(_k(KP_Y), ys)
    try:
        b.int64_list(_k(KP_VIS), vis)
    except OverflowError as exc:
        raise ExampleError(str(exc), key=KP_VIS, item=item.name) from None
    b.bytes_list(_k(KP_TEXT), _utf8(names, KP_TEXT, item, per_object=False))
    b.int64_list(_k(KP_NUM), num)
