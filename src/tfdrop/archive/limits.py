"""Safety caps for untrusted archives and the member-name rules (SPEC.md "Bad input").

Every name that comes out of a zip or a folder tree goes through :func:`normalize_name` before
anything uses it, and every size is checked against :class:`ArchiveLimits` before it is
trusted. Names are only ever used as keys: tfdrop never extracts to disk by member name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from tfdrop.errors import UnsafeArchiveError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_DRIVE = re.compile(r"^[A-Za-z]:")

_LIMIT_HINT = "rejected for safety; if the archive is genuine, raise the matching archive limit"


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Caps applied to every archive before and while it is read.

    Attributes:
        max_entries: Most central-directory entries (files and folders) an archive may hold.
        max_total_uncompressed: Most bytes all members may declare together.
        max_member_size: Most bytes one member may declare.
        max_ratio: Highest uncompressed/compressed ratio of one member. Deflate tops out near
            1032:1 on runs of zeros; real annotation XML/JSON stays under about 50:1 and
            images and TFRecords near 1:1, so 200:1 passes real data and stops bombs.
        ratio_floor: Members that declare at most this many bytes skip the ratio check (a
            small member cannot be a bomb, and tiny repetitive text files compress well).
        max_name_length: Most characters in one member name.
        max_directory_size: Most bytes of zip central directory read (bounds the memory
            used to list an archive whatever its end record claims).
    """

    max_entries: int = 200_000
    max_total_uncompressed: int = 64 * GiB
    max_member_size: int = 16 * GiB
    max_ratio: int = 200
    ratio_floor: int = 1 * MiB
    max_name_length: int = 1024
    max_directory_size: int = 128 * MiB

    def __post_init__(self) -> None:
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ArchiveLimits.{name} must be a positive integer, not {value!r}")

    def check_member(self, name: str, size: int, compressed: int | None, archive: str) -> None:
        """Raise :class:`UnsafeArchiveError` if one member's declared sizes break a cap."""
        if size > self.max_member_size:
            raise UnsafeArchiveError(
                f"member declares {size} bytes, over the {self.max_member_size}-byte cap",
                archive=archive,
                member=name,
                hint=_LIMIT_HINT,
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
                hint=_LIMIT_HINT,
            )

    def check_total(self, total: int, archive: str, member: str) -> None:
        """Raise :class:`UnsafeArchiveError` once the running declared total passes the cap."""
        if total > self.max_total_uncompressed:
            raise UnsafeArchiveError(
                f"members declare more than {self.max_total_uncompressed} bytes in total "
                "(zip bomb?)",
                archive=archive,
                member=member,
                hint=_LIMIT_HINT,
            )

    def check_count(self, count: int, archive: str) -> None:
        """Raise :class:`UnsafeArchiveError` if an archive holds more than max_entries."""
        if count > self.max_entries:
            raise UnsafeArchiveError(
                f"archive holds more than {self.max_entries} entries",
                archive=archive,
                hint=_LIMIT_HINT,
            )


def normalize_name(raw: str, *, archive: str, limits: ArchiveLimits) -> tuple[str, bool]:
    """Check one member name and return it normalised, with whether it names a folder.

    Backslashes count as separators (some Windows tools write them), ``.`` and empty
    components are dropped. Absolute paths, drive letters, ``..`` components, NUL bytes and
    over-long names are rejected: they are how zip-slip attacks write outside a folder.

    Args:
        raw: The name as stored in the archive.
        archive: The archive's name, for the error.
        limits: The caps (max_name_length).

    Returns:
        ``(name, is_dir)`` with ``/`` separators and no leading or trailing slash.

    Raises:
        UnsafeArchiveError: The name is unsafe; ``member`` holds the raw name.
    """

    def unsafe(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"unsafe member name: {why}", archive=archive, member=shown(raw))

    if (
        # Fast path for the common plain name: nothing below could object to it.
        0 < len(raw) <= limits.max_name_length
        and "\\" not in raw
        and "\x00" not in raw
        and "//" not in raw
        and "/." not in "/" + raw
        and raw[1:2] != ":"
        and not raw.startswith("/")
        and raw.isprintable()
    ):
        return (raw[:-1], True) if raw.endswith("/") else (raw, False)
    if "\x00" in raw:
        raise unsafe("contains a NUL byte")
    if len(raw) > limits.max_name_length:
        raise unsafe(f"longer than {limits.max_name_length} characters")
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise unsafe("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise unsafe("'..' component")
    # Checked after dropping "./" too: "./C:/x" is still C:/x to a Windows tool.
    if _DRIVE.match(name) or (parts and _DRIVE.match(parts[0])):
        raise unsafe("drive letter")
    if not parts:
        # "", "./" or "/" alone: the archive root, which is only a folder entry.
        if name.strip("/.") == "":
            return "", True
        raise unsafe("empty")
    return "/".join(parts), name.endswith("/")


def shown(name: str) -> str:
    """A name safe to print and log: control characters (NUL, newline ...) escaped."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def check_write_name(name: str, *, archive: str) -> None:
    """Reject a name a writer is about to store unless it is already normal and safe.

    Writers derive member names from input data (an image file name in an annotation), so
    the same rules apply on the way out; a name is never silently rewritten.
    """
    norm, is_dir = normalize_name(name, archive=archive, limits=ArchiveLimits())
    if is_dir or norm != name:
        raise UnsafeArchiveError(
            f"refusing to write member name {name!r} (use a relative '/'-separated file name)",
            archive=archive,
            member=shown(name),
        )
