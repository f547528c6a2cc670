"""YOLO label text: one object per line, ``class cx cy w h`` normalised to [0, 1].

Pure parsing (no I/O): a label file's text in, rows out, so every rule is tested on strings.
Which rows are accepted, and why (Ultralytics ``verify_image_label`` is the reference):

- ``class cx cy w h``: a box. cx, cy, w, h must be finite and in [0, 1] (Ultralytics rejects
  "non-normalized or out of bounds coordinates" and negative values); anything else is a
  :class:`FormatError` naming the member and line. A box whose corners stick out of the image
  (cx - w/2 < 0) is legal YOLO: it is clipped to the image, with a counted warning when it
  sticks out by more than rounding (6-decimal exports give -5e-7 on a box at the edge).
- ``class x1 y1 x2 y2 x3 y3 ...`` (an even number >= 6 of values): a segmentation polygon
  (Ultralytics segment) or an oriented box (OBB: 4 corners, 8 values; nothing in the file tells
  the two apart). Both become their bounding box, and the points are kept.
- With ``kpt_shape`` [k, d] from data.yaml (pose): ``class cx cy w h`` + k*d keypoint values;
  the box is kept, the keypoints are counted as lost.
- Anything else (a line with 4 numbers, 6 values, words, NaN, a class out of range) is an error.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from tfdrop.codec.model import Box
from tfdrop.errors import FormatError
from tfdrop.formats.yolo.config import split_lines
from tfdrop.limits import DEFAULT_LIMITS, Limits

# YOLO exports write 6 decimals; a box on the image edge then computes a corner of -5e-7.
EDGE_TOLERANCE = 1e-5


@dataclass(frozen=True, slots=True)
class Row:
    """One parsed label line.

    ``box`` is clipped to [0, 1]; ``clipped`` says it stuck out by more than rounding.
    ``polygon`` holds the normalised points of a polygon / oriented-box row (else empty);
    ``keypoints`` the number of keypoint values dropped from a pose row.
    """

    cls: int
    box: Box
    line: int
    polygon: tuple[float, ...] = ()
    clipped: bool = False
    keypoints: int = 0


def _clip(v: float) -> tuple[float, bool]:
    if v < 0.0:
        return 0.0, v < -EDGE_TOLERANCE
    if v > 1.0:
        return 1.0, v > 1.0 + EDGE_TOLERANCE
    return v, False


def _box(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[Box, bool]:
    (x0, a), (y0, b), (x1, c), (y1, d) = _clip(xmin), _clip(ymin), _clip(xmax), _clip(ymax)
    return Box(x0, y0, x1, y1), a or b or c or d


def _numbers(tokens: list[str], member: str, line: int, limits: Limits) -> list[float]:
    out: list[float] = []
    for tok in tokens:
        limits.check("max_number_length", len(tok), member=member, line=line)
        if not tok.isascii() or "_" in tok:
            # float() also reads "0.5_0" and Arabic-Indic digits: not what YOLO writes
            raise FormatError(f"{tok!r} is not a number", member=member, line=line)
        try:
            v = float(tok)
        except ValueError:
            raise FormatError(f"{tok!r} is not a number", member=member, line=line) from None
        if not math.isfinite(v):
            raise FormatError(f"coordinate {tok!r} is not finite", member=member, line=line)
        out.append(v)
    return out


def _class_index(tok: str, num_classes: int, member: str, line: int, limits: Limits) -> int:
    limits.check("max_number_length", len(tok), member=member, line=line)
    if not tok.isascii() or "_" in tok:
        raise FormatError(f"class index {tok!r} is not a whole number", member=member, line=line)
    try:
        cls = int(tok)
    except ValueError:
        raise FormatError(
            f"class index {tok!r} is not a whole number", member=member, line=line
        ) from None
    if not 0 <= cls < num_classes:
        raise FormatError(
            f"class index {cls} is out of range: the label list has {num_classes} names "
            f"(indices 0..{num_classes - 1})",
            member=member,
            line=line,
            hint="the label file and obj.names / data.yaml names do not match",
        )
    return cls


def _box_row(cls: int, vals: list[float], member: str, line: int, kpts: int) -> Row:
    cx, cy, w, h = vals[:4]
    for name, v in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not 0.0 <= v <= 1.0:
            raise FormatError(
                f"{name} = {v!r} is not a normalised value in [0, 1]",
                member=member,
                line=line,
                hint="YOLO boxes are centre x, centre y, width, height divided by the image size",
            )
    box, clipped = _box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return Row(cls, box, line, clipped=clipped, keypoints=kpts)


def _fast_box(tokens: list[str], num_classes: int, line: int) -> Row | None:
    """The common valid ``class cx cy w h`` row, or None to take the checking path (which
    also words the error). Chained comparisons are False for NaN, so NaN falls through."""
    try:
        cls = int(tokens[0])
        cx, cy, w, h = float(tokens[1]), float(tokens[2]), float(tokens[3]), float(tokens[4])
    except ValueError:
        return None
    if not (
        0 <= cls < num_classes
        and 0.0 <= cx <= 1.0
        and 0.0 <= cy <= 1.0
        and 0.0 <= w <= 1.0
        and 0.0 <= h <= 1.0
    ):
        return None
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if x0 >= 0.0 and y0 >= 0.0 and x1 <= 1.0 and y1 <= 1.0:
        return Row(cls, Box(x0, y0, x1, y1), line)
    box, clipped = _box(x0, y0, x1, y1)
    return Row(cls, box, line, clipped=clipped)


def parse_row(
    text: str,
    *,
    num_classes: int,
    member: str,
    line: int,
    kpt_values: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Row | None:
    """One line of a label file; None for a blank line.

    Args:
        text: The line, without its newline.
        num_classes: How many names the label list has (class indices are 0-based).
        member: The label file's name, for errors.
        line: The 1-based line number, for errors.
        kpt_values: k*d from data.yaml ``kpt_shape`` for pose datasets, else None.
        limits: ``max_values_per_feature`` (values on one line, checked before they are
            split out) and ``max_number_length``.

    Raises:
        FormatError: The line is not a box, polygon or (pose) box + keypoints row.
        LimitExceededError: Too many values on the line, or a number too long.
    """
    cap = limits.max_values_per_feature
    tokens = text.split(maxsplit=cap + 1)  # at most cap + 2 strings, whatever the line
    limits.check("max_values_per_feature", len(tokens) - 1, member=member, line=line)
    if not tokens:
        return None
    if (
        len(tokens) == 5
        and kpt_values is None
        and text.isascii()
        and "_" not in text
        and len(max(tokens, key=len)) <= limits.max_number_length
    ):
        fast = _fast_box(tokens, num_classes, line)
        if fast is not None:
            return fast
    cls = _class_index(tokens[0], num_classes, member, line, limits)
    vals = _numbers(tokens[1:], member, line, limits)
    n = len(vals)
    if kpt_values is not None and n in (4 + kpt_values, 4):
        return _box_row(cls, vals, member, line, n - 4)
    if n == 4:
        return _box_row(cls, vals, member, line, 0)
    if n >= 6 and n % 2 == 0 and kpt_values is None:
        xs, ys = vals[0::2], vals[1::2]
        box, clipped = _box(min(xs), min(ys), max(xs), max(ys))
        return Row(cls, box, line, polygon=tuple(vals), clipped=clipped)
    expected = (
        f"class + 4 box values + {kpt_values} keypoint values (kpt_shape)"
        if kpt_values is not None
        else "class cx cy w h, or class + an even number (>= 6) of polygon coordinates"
    )
    raise FormatError(
        f"line has {n + 1} numbers; expected {expected}",
        member=member,
        line=line,
    )


def parse_label_text(
    text: str,
    *,
    num_classes: int,
    member: str,
    kpt_values: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Row]:
    """Every row of a label file's text (blank lines skipped).

    One object per line: the line count is checked against ``max_objects_per_item`` before
    the text is split (a 64 MiB file of short lines is tens of millions of strings).
    """
    rows: list[Row] = []
    lines = split_lines(text, "max_objects_per_item", limits, member=member)
    for i, raw in enumerate(lines, start=1):
        row = parse_row(
            raw, num_classes=num_classes, member=member, line=i, kpt_values=kpt_values,
            limits=limits,
        )  # fmt: skip
        if row is not None:
            rows.append(row)
    return rows


_F32 = struct.Struct("<f")
_F32X4 = struct.Struct("<4f")


def f32(v: float) -> float:
    """``v`` rounded to float32, as ``image/object/bbox/*`` stores it."""
    return float(_F32.unpack(_F32.pack(v))[0])


def _f32x4(a: float, b: float, c: float, d: float) -> tuple[float, ...]:
    return _F32X4.unpack(_F32X4.pack(a, b, c, d))


def format_row(cls: int, box: Box) -> str:
    """``class cx cy w h`` for a normalised box, in the fewest digits (6 at least, as YOLO
    exports write) whose read-back corners equal the box's corners in float32 (SPEC.md: boxes
    are exact to float32); 17 significant digits always read back to the same double.
    """
    cx = (box.xmin + box.xmax) / 2
    cy = (box.ymin + box.ymax) / 2
    w = box.xmax - box.xmin
    h = box.ymax - box.ymin
    target = _f32x4(box.xmin, box.ymin, box.xmax, box.ymax)
    for digits in range(6, 18):
        fmt = f"{{:.{digits}g}}"
        texts = [fmt.format(v) for v in (cx, cy, w, h)]
        tx, ty, tw, th = (float(t) for t in texts)
        if not (0.0 <= tx <= 1.0 and 0.0 <= ty <= 1.0 and 0.0 <= tw <= 1.0 and 0.0 <= th <= 1.0):
            continue
        # exactly what the reader computes (_fast_box / _box_row), clipping included
        back, _ = _box(tx - tw / 2, ty - th / 2, tx + tw / 2, ty + th / 2)
        if _f32x4(back.xmin, back.ymin, back.xmax, back.ymax) == target:
            return " ".join([str(cls), *texts])
    return " ".join([str(cls), *(repr(v) for v in (cx, cy, w, h))])
