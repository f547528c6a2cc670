"""Schema checks on a parsed Example, as the TF Object Detection API expects records.

List lengths are checked while parsing (:func:`tfdrop.codec.example.parse_example`); this
module checks values: boxes finite, inside [0, 1] and ordered; class ids >= 1 (0 only for a
``background`` item of the label map); keypoint visibilities COCO's 0/1/2 and counts within K
(their lengths are checked while parsing, :mod:`tfdrop.codec.keypoints`); both class id and
text (the OD API reads both); class text and id agreeing with the label map; the embedded
image being a JPEG or PNG whose header size is image/height x image/width and whose kind
image/format names; the SHA-256 key matching it; masks being PNGs of the image's size
(headers only, nothing is decoded). Each check runs over whole lists first and builds
per-object problems only when a list fails, because most records are clean.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

from tfdrop.codec.example import (
    BOX_KEYS,
    ENCODED,
    FORMAT,
    HEIGHT,
    LABEL,
    MASK,
    SHA256,
    TEXT,
    WIDTH,
    XMAX,
    XMIN,
    YMAX,
    YMIN,
    ParsedExample,
)
from tfdrop.codec.imagehead import image_complete, image_kind, image_size, png_size
from tfdrop.codec.keypoints import keypoint_problems
from tfdrop.codec.model import LabelMap
from tfdrop.codec.wire import DEFAULT_MAX_VALUES, boxes_ok
from tfdrop.codec.wire import od_check as _od_check

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE_FORMATS = ("jpeg", "png")
"""The ``image/format`` values the OD API's decoder reads (and tfdrop writes)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a record: the feature key, the object index, what is wrong."""

    key: str
    message: str
    obj: int | None = None

    def to_dict(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {"key": self.key, "message": self.message}
        if self.obj is not None:
            out["object"] = self.obj
        return out


def _in_unit(values: list[float]) -> bool:
    return all(0.0 <= v <= 1.0 for v in values)  # False for NaN and inf too


def _check_boxes(p: ParsedExample, out: list[Problem]) -> None:
    lists = p.lists
    if not all(k in lists for k in BOX_KEYS):
        missing = [k for k in BOX_KEYS if k not in lists]
        out.append(Problem(missing[0], "missing while other box coordinates are present"))
        return
    if boxes_ok(lists[XMIN], lists[YMIN], lists[XMAX], lists[YMAX]):
        return
    for key in BOX_KEYS:
        values = lists[key]
        if not _in_unit(values):
            for i, v in enumerate(values):
                if not 0.0 <= v <= 1.0:
                    out.append(Problem(key, f"{v!r} is not a normalised coordinate in [0, 1]", i))
    for lo, hi in ((XMIN, XMAX), (YMIN, YMAX)):
        a, b = lists[lo], lists[hi]
        if not all(x <= y for x, y in zip(a, b, strict=True)):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                if x > y:
                    out.append(Problem(lo, f"{lo.rsplit('/', 1)[1]} {x!r} > {hi} {y!r}", i))


def image_problems(fmt: str, encoded: bytes | None, height: int, width: int) -> list[Problem]:
    """What is wrong with the embedded image and the keys describing it (its header only)."""
    out: list[Problem] = []
    if fmt and fmt not in IMAGE_FORMATS:
        out.append(Problem(FORMAT, f"{fmt!r} is not 'jpeg' or 'png' (what the OD API decodes)"))
    if not encoded:
        return out
    kind = image_kind(encoded)
    if kind is None:
        out.append(Problem(ENCODED, "is neither a JPEG nor a PNG image"))
        return out
    if fmt in IMAGE_FORMATS and fmt != kind:
        out.append(Problem(FORMAT, f"says {fmt!r} but {ENCODED} is a {kind.upper()} image"))
    if not image_complete(encoded):  # TensorFlow's decoder refuses it
        out.append(Problem(ENCODED, f"is a {kind.upper()} image cut short (it has no end marker)"))
    size = image_size(encoded)
    if size is not None:
        for key, declared, real in ((WIDTH, width, size[0]), (HEIGHT, height, size[1])):
            if declared > 0 and declared != real:
                what = "wide" if key == WIDTH else "high"
                out.append(Problem(key, f"is {declared} but the image is {real} pixels {what}"))
    return out


def _check_mask_sizes(p: ParsedExample, masks: list[bytes], out: list[Problem]) -> None:
    want = (p.width, p.height)
    if want[0] <= 0 or want[1] <= 0:
        return
    for i, m in enumerate(masks):
        size = png_size(m)
        if size is not None and size != want:
            out.append(
                Problem(
                    MASK,
                    f"instance mask is {size[0]}x{size[1]} but the image is {want[0]}x{want[1]}",
                    i,
                )
            )


def _check_labels(
    p: ParsedExample, label_map: LabelMap | None, out: list[Problem], *, need_both: bool
) -> None:
    ids: list[int] | None = p.lists.get(LABEL)
    texts: list[bytes] | None = p.lists.get(TEXT)
    if ids is None and texts is None:
        out.append(Problem(LABEL, "objects have boxes but neither class/label nor class/text"))
        return
    if need_both and (ids is None or texts is None):
        missing, present = (LABEL, TEXT) if ids is None else (TEXT, LABEL)
        out.append(Problem(missing, f"missing while {present} is present (the OD API needs both)"))
    bad_text = _check_text_utf8(texts, out)
    if _labels_all_clear(ids, texts, label_map):
        return
    if ids is not None and min(ids) < 1:
        _check_ids_positive(ids, label_map, out)
    if label_map is not None:
        _check_against_map(p.num_objects, ids, texts, label_map, bad_text, out)


def _check_text_utf8(texts: list[bytes] | None, out: list[Problem]) -> set[int]:
    """The indexes of class texts that are not UTF-8 (each reported): readers refuse them
    (to_item), so validate must say so too."""
    bad_text: set[int] = set()
    if texts is not None and not b"".join(texts).isascii():
        for i, t in enumerate(texts):
            try:
                t.decode("utf-8")
            except UnicodeDecodeError:
                bad_text.add(i)
                out.append(Problem(TEXT, f"class text {t!r} is not UTF-8", i))
    return bad_text


def _labels_all_clear(
    ids: list[int] | None, texts: list[bytes] | None, label_map: LabelMap | None
) -> bool:
    """The fast paths (set operations run in C): True when no label can be a problem."""
    if label_map is None:
        return ids is None or min(ids) >= 1
    if texts is not None and ids is not None:
        return set(zip(texts, ids, strict=True)) <= label_map.text_id_pairs
    return ids is not None and set(ids) <= label_map.ids and min(ids) >= 1


def _check_ids_positive(ids: list[int], label_map: LabelMap | None, out: list[Problem]) -> None:
    for i, v in enumerate(ids):
        bg = label_map is not None and v == 0 and label_map.get(0) is not None
        if v < 1 and not bg:
            out.append(Problem(LABEL, f"class id {v} (ids start at 1; 0 is background)", i))


def _check_against_map(
    n: int,
    ids: list[int] | None,
    texts: list[bytes] | None,
    label_map: LabelMap,
    bad_text: set[int],
    out: list[Problem],
) -> None:
    """Each object's text and id agree with the pinned label map."""
    for i in range(n):
        if i in bad_text:
            continue
        text = texts[i].decode("utf-8", "replace") if texts is not None and texts[i] else None
        label_id = ids[i] if ids is not None else None
        if text is not None:
            _check_text_in_map(text, label_id, label_map, i, out)
        elif label_id is not None and label_id >= 1 and label_map.get(label_id) is None:
            out.append(Problem(LABEL, f"class id {label_id} is not in the label map", i))


def _check_text_in_map(
    text: str, label_id: int | None, label_map: LabelMap, i: int, out: list[Problem]
) -> None:
    expected = label_map.id_of(text)
    if expected is None:
        out.append(Problem(TEXT, f"label {text!r} is not in the label map", i))
    elif label_id is not None and label_id != expected:
        out.append(
            Problem(LABEL, f"id {label_id} but the label map gives {text!r} id {expected}", i)
        )


def check_parsed(
    p: ParsedExample,
    label_map: LabelMap | None = None,
    *,
    verify_sha256: bool = True,
    need_both: bool = True,
) -> list[Problem]:
    """Every value problem of one parsed record (empty when the record is valid).

    ``verify_sha256=False`` skips the checks of the embedded image (its hash, its header
    against image/format, height and width, the masks' sizes): for reading back what tfdrop
    itself just wrote (the frame's CRC-32C already covers the bytes) or when images are not
    kept. ``need_both=False`` (a reader, which fills the other in) lets objects carry only a
    class id or only a class text.
    """
    out: list[Problem] = []
    if p.height <= 0:
        out.append(Problem(HEIGHT, "missing or not positive"))
    if p.width <= 0:
        out.append(Problem(WIDTH, "missing or not positive"))
    if p.num_objects:
        _check_boxes(p, out)
        _check_labels(p, label_map, out, need_both=need_both)
    if p.keypoints:
        out += [Problem(k, m, i) for k, m, i in keypoint_problems(p.keypoints, p.num_objects)]
    masks = p.lists.get(MASK)
    if masks is not None:
        for i, m in enumerate(masks):
            if not m.startswith(_PNG_MAGIC):
                out.append(Problem(MASK, "instance mask is not a PNG", i))
            elif not image_complete(m):  # TensorFlow's decoder refuses it
                out.append(Problem(MASK, "instance mask is a PNG cut short (no IEND chunk)", i))
        if verify_sha256:
            _check_mask_sizes(p, masks, out)
    if verify_sha256:
        out += image_problems(p.format, p.encoded, p.height, p.width)
    if (
        verify_sha256
        and p.encoded
        and p.sha256
        and hashlib.sha256(p.encoded).hexdigest() != p.sha256.lower()
    ):
        out.append(Problem(SHA256, f"does not match the SHA-256 of {ENCODED}"))
    return out


class Fast(NamedTuple):
    """What the C all-clear check found in a record it passed (spans are ``[start, end)``)."""

    objects: int
    enc_start: int
    enc_end: int
    sha_start: int
    sha_end: int
    fmt_start: int
    fmt_end: int
    height: int
    width: int
    texts: tuple[bytes, ...] = ()
    """The objects' class texts (with ``labels=True``)."""
    ids: tuple[int, ...] = ()
    """The objects' class ids (with ``labels=True``)."""


def fast_scan(
    data: bytes,
    label_map: LabelMap | None = None,
    *,
    max_values_per_feature: int = DEFAULT_MAX_VALUES,
    labels: bool = False,
) -> Fast | None:
    """The C all-clear check of a serialized record, all but the SHA-256 comparison
    (:func:`sha_matches`): what it found, or ``None`` ("run :func:`parse_example`
    (``strict=True``) and :func:`check_parsed`", which name the problems, if any; always
    ``None`` without the accelerator). ``labels`` also returns the class texts and ids."""
    if _od_check is None:
        return None
    text_ids = label_map.text_ids if label_map is not None else None
    res = _od_check(data, text_ids, max_values_per_feature, labels)
    return None if res is None else Fast(*res)


def sha_matches(data: bytes, fast: Fast) -> bool:
    """Whether ``image/key/sha256`` is the SHA-256 of ``image/encoded`` (true when either is
    absent). Safe in another thread: hashlib lets go of the GIL while it hashes."""
    if fast.enc_end <= fast.enc_start or fast.sha_end <= fast.sha_start:
        return True
    with memoryview(data) as mv:
        digest = hashlib.sha256(mv[fast.enc_start : fast.enc_end]).hexdigest()
    return digest == data[fast.sha_start : fast.sha_end].decode().lower()


def fast_check(
    data: bytes,
    label_map: LabelMap | None = None,
    *,
    max_values_per_feature: int = DEFAULT_MAX_VALUES,
    verify_sha256: bool = True,
) -> int | None:
    """The number of objects when a serialized record is valid, else ``None``.

    With the C accelerator this checks a canonical record without building Python objects;
    ``None`` means "run :func:`parse_example` (``strict=True``) and :func:`check_parsed`"
    (which name the problems, if any). It never says valid for a record that those fault.
    ``verify_sha256=False`` skips hashing the embedded image, as :func:`check_parsed` does.
    """
    fast = fast_scan(data, label_map, max_values_per_feature=max_values_per_feature)
    if fast is None or (verify_sha256 and not sha_matches(data, fast)):
        return None
    return fast.objects
