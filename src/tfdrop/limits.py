"""The one resource budget of a job (SPEC.md "Bad input": every job works within one budget).

:class:`Limits` holds every cap a conversion applies to untrusted input: the zip layer's
(entries, declared sizes, compression ratio, names), the TFRecord streams' (record size,
decompressed bytes), and the readers' (values per feature, objects per item, labels, mask
pixels, text sizes, nesting depth, number lengths, list lines, YAML nodes, whole-file reads).
Each cap is enforced where the work happens, before the memory is allocated or the work done,
and a violation raises :class:`~tfdrop.errors.LimitExceededError` naming the limit, the value
met and how to raise it (``[limits]`` in the config, ``--limit NAME=N`` on the command line).

The defaults are far above what real datasets need (each field says what it guards and why the
default is safe) and together keep one job's peak memory in the low hundreds of MB whatever the
input. Codec functions take the plain integers they need, so the codec stays free of this
module (STYLE.md habit 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tfdrop.errors import LimitExceededError, UnsafeArchiveError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps applied to every job's input. All are positive integers.

    Archive (zip central directory and folders):
        max_entries: Most entries (files and folders) an archive may hold.
        max_total_uncompressed: Most bytes all members may declare together.
        max_member_size: Most bytes one member may declare.
        max_ratio: Highest uncompressed/compressed ratio of one zip member or one GZIP/ZLIB
            TFRecord stream. Deflate tops out near 1032:1 on runs of zeros; real annotation
            XML/JSON stays under about 50:1 and images and TFRecords near 1:1.
        ratio_floor: Members (and streams) that are at most this many bytes skip the ratio
            check: a small member cannot be a bomb, and tiny repetitive text compresses well.
        max_name_length: Most characters in one member name.
        max_directory_size: Most bytes of zip central directory read.

    Streams and files read whole:
        max_record_size: Most bytes one TFRecord record may declare (checked before the
            buffer is allocated). An embedded image plus its annotations fits easily.
        max_stream_bytes: Most decompressed bytes one GZIP/ZLIB TFRecord stream may yield.
        max_image_bytes: Most bytes of one image read into memory to be embedded.
        max_file_bytes: Most bytes of one annotation or side file read whole (a VOC XML, a
            YOLO label file, ``obj.names``, ``data.yaml``, ``labelmap.txt``, a label map).

    Per item and per archive:
        max_values_per_feature: Most values one feature of one record may hold (a TFRecord
            bbox list, a polygon's points, a mask's RLE counts).
        max_objects_per_item: Most objects (boxes, shapes, annotations) one item may have.
        max_labels: Most distinct labels one archive may use or declare.
        max_mask_pixels: Most pixels (width x height) of one instance mask; checked from the
            declared image size before a raster is allocated. 2^26 is 8192 x 8192.
        max_text_bytes: Most bytes of one text value (a label name, an attribute value, a
            file name, an XML text node).
        max_depth: Deepest nesting of XML elements, JSON arrays/objects or YAML collections.
        max_number_length: Most characters of one number in JSON, XML or a text file (Python
            refuses to parse integers over 4,300 digits anyway; coordinates need about 20).
        max_list_lines: Most lines all list files of an archive may hold together (VOC
            ``ImageSets``, YOLO ``<subset>.txt``): ten per possible zip entry.
        max_yaml_nodes: Most nodes a YAML document may expand to (aliases counted each time
            they are used, so an alias bomb stops here instead of filling memory).
        max_xml_elements: Most elements of one XML file parsed whole into a tree (a VOC
            annotation; each costs ~150 bytes of tree): counted from the bytes before parsing.
        max_keypoints: Most keypoints one object or one label's skeleton may have (COCO's
            person has 17; every object of a record is padded to the record's K).
        max_subsets: Most distinct subsets one archive may hold (each is a reader of the
            hand-off and a column of the preview's label table).
    """

    max_entries: int = 200_000
    max_total_uncompressed: int = 64 * GiB
    max_member_size: int = 16 * GiB
    max_ratio: int = 200
    ratio_floor: int = 1 * MiB
    max_name_length: int = 1024
    max_directory_size: int = 128 * MiB
    max_record_size: int = 128 * MiB
    max_stream_bytes: int = 64 * GiB
    max_image_bytes: int = 64 * MiB
    max_file_bytes: int = 64 * MiB
    max_values_per_feature: int = 100_000
    max_objects_per_item: int = 100_000
    max_labels: int = 100_000
    max_mask_pixels: int = 1 << 26
    max_text_bytes: int = 64 * KiB
    max_depth: int = 64
    max_number_length: int = 64
    max_list_lines: int = 2_000_000
    max_yaml_nodes: int = 100_000
    max_xml_elements: int = 500_000
    max_keypoints: int = 1024
    max_subsets: int = 10_000

    def __post_init__(self) -> None:
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"limit {name} must be a positive integer, not {value!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every limit's name, in the documented order."""
        return tuple(f.name for f in fields(cls))

    def with_values(self, values: dict[str, Any]) -> Limits:
        """A copy with some limits changed; unknown names or bad values raise ValueError."""
        unknown = sorted(set(values) - set(self.names()))
        if unknown:
            raise ValueError(f"unknown limit {unknown[0]!r}; known: {', '.join(self.names())}")
        return replace(self, **values)

    def at_least(self, other: Limits) -> Limits:
        """Each limit the larger of this one's and ``other``'s: what reading back tfdrop's own
        output needs when the caps were lowered for the input (the output is checked for
        damage there, not against the input's policy, which it already met)."""
        return replace(self, **{f.name: max(getattr(self, f.name), getattr(other, f.name))
                                for f in fields(self)})  # fmt: skip

    def check(self, name: str, value: int, **where: Any) -> None:
        """Raise :class:`LimitExceededError` if ``value`` is over the limit ``name``.

        ``where`` takes the error's location fields (member, item, record, offset, ...).
        """
        cap = getattr(self, name)
        if value > cap:
            raise exceeded(name, value, cap, **where)

    def check_member(self, name: str, size: int, compressed: int | None, archive: str) -> None:
        """Raise :class:`UnsafeArchiveError` if one member's declared sizes break a cap."""
        if size > self.max_member_size:
            raise UnsafeArchiveError(
                f"member declares {size} bytes, over the {self.max_member_size}-byte cap",
                archive=archive,
                member=name,
                hint=_archive_hint("max_member_size"),
            )
        # A zero compressed size with a non-zero uncompressed one is an infinite ratio.
        if (
            compressed is not None
            and size > self.ratio_floor
            and (compressed == 0 or size / compressed > self.max_ratio)
        ):
            raise UnsafeArchiveError(
                f"compression ratio {size}/{compressed} is over {self.max_ratio}:1 (zip bomb?)",
                archive=archive,
                member=name,
                hint=_archive_hint("max_ratio"),
            )

    def check_total(self, total: int, archive: str, member: str) -> None:
        """Raise :class:`UnsafeArchiveError` once the running declared total passes the cap."""
        if total > self.max_total_uncompressed:
            raise UnsafeArchiveError(
                f"members declare more than {self.max_total_uncompressed} bytes in total "
                "(zip bomb?)",
                archive=archive,
                member=member,
                hint=_archive_hint("max_total_uncompressed"),
            )

    def check_count(self, count: int, archive: str) -> None:
        """Raise :class:`UnsafeArchiveError` if an archive holds more than max_entries."""
        if count > self.max_entries:
            raise UnsafeArchiveError(
                f"archive holds more than {self.max_entries} entries",
                archive=archive,
                hint=_archive_hint("max_entries"),
            )


def _archive_hint(limit: str) -> str:
    return (
        "rejected for safety; if the archive is genuine, raise the limit: "
        f"[limits] {limit} = N in the config, or --limit {limit}=N on the command line"
    )


def exceeded(name: str, value: int, cap: int, **where: Any) -> LimitExceededError:
    """The error for a limit that was passed (for callers that hold the cap as an int)."""
    return LimitExceededError(
        f"{name} is {cap}, and this input needs at least {value}",
        limit=name,
        value=value,
        cap=cap,
        **where,
    )


DEFAULT_LIMITS = Limits()
"""The built-in budget (frozen, so one shared instance is safe)."""
