"""Escaping text for the XML tfdrop writes (CVAT's annotations.xml, VOC's annotation files).

``xml.sax.saxutils`` does the same, but importing it pulls in ``urllib.request`` (and with it
``http.client`` and ``email``: about 11 ms of every conversion's start-up).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tfdrop.formats.base import Notes

XML_UNSAFE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
"""What XML 1.0 cannot carry (C0 controls but tab, LF and CR; U+FFFE, U+FFFF), and lone
surrogates (a name that was not UTF-8), which UTF-8 cannot."""

_TEXT_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES: Final = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)


def escape(text: str) -> str:
    """Escape character data for XML text content (as ``xml.sax.saxutils.escape``)."""
    return text.translate(_TEXT_ESCAPES)


def quoteattr(text: str) -> str:
    """A double-quoted XML attribute value (whitespace kept as character references)."""
    return '"' + text.translate(_ATTR_ESCAPES) + '"'


class Cleaner:
    """Free text for XML (attribute values, poses), with what XML cannot carry written as
    U+FFFD and counted, for one warning at the end (:meth:`warn`). Names are not cleaned:
    the read-back must find them as they are, so one that XML cannot carry is an error."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, text: str) -> str:
        if not XML_UNSAFE.search(text):
            return text
        self.count += 1
        return XML_UNSAFE.sub("\ufffd", text)

    def warn(self, notes: Notes) -> None:
        if self.count:
            notes.warn(
                "xml_characters",
                f"{self.count} texts held characters XML 1.0 cannot carry; written as U+FFFD",
            )
