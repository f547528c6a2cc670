"""Escaping text for the XML tfdrop writes (CVAT's annotations.xml, VOC's annotation files).

``xml.sax.saxutils`` does the same, but importing it pulls in ``urllib.request`` (and with it
``http.client`` and ``email``: about 11 ms of every conversion's start-up).
"""

from __future__ import annotations

from typing import Final

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
