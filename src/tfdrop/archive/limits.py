"""Safety caps for untrusted archives and the member-name rules (SPEC.md "Bad input").

Every name that comes out of a zip or a folder tree goes through :func:`normalize_name` before
anything uses it, and every size is checked against :class:`~tfdrop.limits.Limits` before it is
trusted. Names are only ever used as keys: tfdrop never extracts to disk by member name.
"""

from __future__ import annotations

import re

from tfdrop.errors import FormatError, UnsafeArchiveError
from tfdrop.limits import DEFAULT_LIMITS, Limits

_DRIVE = re.compile(r"^[A-Za-z]:")


def normalize_name(raw: str, *, archive: str, limits: Limits) -> tuple[str, bool]:
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
    """A name safe to print and log: every character that is not printable escaped as Python
    writes it (``\\x1b``, ``\\n``, ``\\r``, ``\\x07``, C1 ``\\x9b``, DEL ``\\x7f``, ``\\u202e``),
    and a byte of a non-UTF-8 file name (``os.fsdecode``'s surrogate escape) as ``\\xNN``."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else _escaped(c) for c in name)


def _escaped(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]


def check_write_name(name: str, *, archive: str) -> None:
    """Reject a name a writer is about to store unless it is already normal and safe.

    Writers derive member names from input data (an image file name in an annotation), so
    the same rules apply on the way out; a name is never silently rewritten.
    """
    norm, is_dir = normalize_name(name, archive=archive, limits=DEFAULT_LIMITS)
    if is_dir or norm != name:
        raise UnsafeArchiveError(
            f"refusing to write member name {name!r} (use a relative '/'-separated file name)",
            archive=archive,
            member=shown(name),
        )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_item_name(name: str) -> None:
    """Reject an item's file name that a writer of files could not store as it is.

    VOC, COCO, YOLO and CVAT archives keep each image (and its annotation file) under the
    item's name, so the name must be a normal relative path with a file part: checked once
    per item before anything of it is written, so the error names the input's item (not the
    output's member) and nothing is rewritten silently (a TFRecord target needs no check: the
    name is only a value inside the record).

    Raises:
        FormatError: the name is empty, ends in a folder, or is not a plain relative path.
    """
    why = None
    base = name.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    if not name:
        why = "it is empty"
    elif not base:
        why = "it ends in a folder"
    elif not stem:
        why = "it has no file name before the extension"
    elif not _is_unicode(name):
        # a zip name flagged UTF-8 whose bytes are not: read with surrogateescape, it has no
        # UTF-8 spelling to write (found by an outside attack: a traceback in every writer)
        why = "it is not valid Unicode: its bytes in the source are not UTF-8"
    else:
        try:
            norm, is_dir = normalize_name(name, archive="", limits=DEFAULT_LIMITS)
        except UnsafeArchiveError as exc:
            why = exc.message.removeprefix("unsafe member name: ")
        else:
            if is_dir or norm != name:
                why = "it is not a plain relative '/'-separated path"
    if why is not None:
        raise FormatError(
            f"the item's file name {shown(name)!r} cannot name a file in the output ({why})",
            item=shown(name),
            hint="fix the image file name in the source (image/filename in a TFRecord)",
        )
