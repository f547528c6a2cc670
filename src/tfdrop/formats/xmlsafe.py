"""Safe, incremental XML parsing for annotation files (VOC xml, CVAT annotations.xml).

A sans-IO push parser in the shape of ElementTree's ``XMLPullParser`` (STYLE.md: push bytes in
with :meth:`SafeXmlParser.feed`, pull events out with :meth:`SafeXmlParser.events`), built on
expat directly so that it can refuse what makes XML dangerous before anything is expanded:

- any ``<!DOCTYPE>`` (and so every entity declaration, internal or external: billion laughs,
  XXE) is a :class:`~tfdrop.errors.FormatError` naming the member and line, as defusedxml's
  ``forbid_dtd`` does; neither CVAT nor VOC tools write one;
- element nesting deeper than ``max_depth`` is refused (annotation files are a few levels deep);
- one element's text over ``max_text`` bytes is refused (CVAT's RLE masks are the longest);
- every expat error (truncated file, undefined entity, bad token) becomes a FormatError with
  the line, never a raw ``ExpatError``.

Events are ``("start" | "end", element, line)``; elements are built with ElementTree's
TreeBuilder, so a caller that streams a large file clears an element after its ``end`` event.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import IO, Final, NamedTuple
from xml.parsers import expat

from tfdrop.errors import FormatError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "SafeXmlParser",
    "XmlEvent",
    "element_lines",
    "iterparse",
    "parse_bytes",
    "parse_small",
]

DEFAULT_MAX_DEPTH: Final = 64
DEFAULT_MAX_TEXT: Final = 256 * 1024 * 1024
CHUNK: Final = 1 << 16


class XmlEvent(NamedTuple):
    """One parse event: ``kind`` is "start" or "end"; ``line`` is 1-based."""

    kind: str
    element: ET.Element
    line: int


class SafeXmlParser:
    """Push parser: ``feed(bytes)`` any number of times, ``close()`` at the end of input.

    After an error the parser is dead: every later call raises the same error again.
    """

    def __init__(
        self,
        *,
        member: str | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_text: int = DEFAULT_MAX_TEXT,
    ) -> None:
        self._member = member
        self._max_depth = max_depth
        self._max_text = max_text
        self._depth = 0
        self._text = 0
        self._builder = ET.TreeBuilder()
        self._pending: list[XmlEvent] = []
        self._root: ET.Element | None = None
        self._error: FormatError | None = None
        self._closed = False
        p = expat.ParserCreate()
        # Why each handler: a DOCTYPE is the only way to declare entities, so refusing it at its
        # start refuses internal (billion laughs) and external (XXE) entities alike.
        p.StartDoctypeDeclHandler = self._on_doctype
        p.EntityDeclHandler = self._on_entity
        p.ExternalEntityRefHandler = self._on_external
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._on_start
        p.EndElementHandler = self._on_end
        p.CharacterDataHandler = self._on_data
        p.buffer_text = True
        p.ordered_attributes = False
        self._parser = p

    @property
    def root(self) -> ET.Element | None:
        """The document element once its start was seen."""
        return self._root

    def feed(self, data: bytes) -> None:
        """Parse more bytes; raises :class:`FormatError` on anything unsafe or malformed."""
        self._check_alive()
        self._parse(data, final=False)

    def close(self) -> None:
        """End of input: a document that is not complete is a FormatError."""
        self._check_alive()
        if self._closed:
            return
        self._parse(b"", final=True)
        self._closed = True
        if self._root is None:
            self._fail("no XML element found", self._parser.CurrentLineNumber)

    def events(self) -> Iterator[XmlEvent]:
        """Events parsed so far and not yet taken, in document order."""
        pending, self._pending = self._pending, []
        yield from pending

    # -- internals -------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            line = getattr(exc, "lineno", None) or self._parser.ErrorLineNumber
            reason = expat.ErrorString(exc.code) if exc.code else str(exc)
            self._fail(f"malformed XML: {reason}", line)
        except LookupError as exc:
            # an XML declaration naming an encoding Python does not know (fuzzing found
            # encoding='utf-1' escaping as a bare LookupError)
            self._fail(f"malformed XML: {exc}", self._parser.CurrentLineNumber)
        except FormatError as exc:
            self._error = exc
            raise

    def _fail(self, message: str, line: int | None) -> None:
        self._error = FormatError(message, member=self._member, line=line)
        raise self._error

    def _line(self) -> int:
        return int(self._parser.CurrentLineNumber)

    def _on_doctype(self, *_: object) -> None:
        self._fail(
            "XML with a DOCTYPE (DTD or entity declarations) is refused for safety", self._line()
        )

    def _on_entity(self, name: str, *_: object) -> None:
        self._fail(f"XML entity declaration {name!r} is refused for safety", self._line())

    def _on_external(self, *_: object) -> int:
        self._fail("XML external entity reference is refused for safety", self._line())
        return 0

    def _on_start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth > self._max_depth:
            self._fail(f"XML nested deeper than {self._max_depth} elements", self._line())
        elem = self._builder.start(tag, attrs)
        if self._root is None:
            self._root = elem
        self._text = 0
        self._pending.append(XmlEvent("start", elem, self._line()))

    def _on_end(self, tag: str) -> None:
        self._depth -= 1
        self._text = 0
        elem = self._builder.end(tag)
        self._pending.append(XmlEvent("end", elem, self._line()))

    def _on_data(self, text: str) -> None:
        self._text += len(text)
        if self._text > self._max_text:
            self._fail(f"XML text longer than {self._max_text} characters", self._line())
        self._builder.data(text)


def iterparse(
    stream: IO[bytes],
    *,
    member: str | None = None,
    max_depth: int = DEFAULT_MAX_DEPTH,
    chunk_size: int = CHUNK,
) -> Iterator[XmlEvent]:
    """Events from a binary stream read in ``chunk_size`` pieces (the shell around the parser)."""
    parser = SafeXmlParser(member=member, max_depth=max_depth)
    while chunk := stream.read(chunk_size):
        parser.feed(chunk)
        yield from parser.events()
    parser.close()
    yield from parser.events()


def parse_bytes(
    data: bytes, *, member: str | None = None, max_depth: int = DEFAULT_MAX_DEPTH
) -> ET.Element:
    """The document element of a small, whole XML file (one VOC annotation)."""
    parser = SafeXmlParser(member=member, max_depth=max_depth)
    parser.feed(data)
    parser.close()
    root = parser.root
    assert root is not None  # close() raises when no element was found
    return root


_DOCTYPE: Final = b"<!DOCTYPE"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


def parse_small(data: bytes, *, member: str | None = None) -> ET.Element:
    """The document element of a small, whole XML file, fast (one VOC annotation).

    The fast path is ElementTree's C parser with the encoding forced to UTF-8: read as UTF-8,
    a document without the bytes ``<!DOCTYPE`` cannot declare an entity or a DTD, so nothing
    can expand. Anything else (a DOCTYPE, UTF-16, another declared encoding, any parse error)
    goes through :class:`SafeXmlParser`, which refuses or reports it with the line. Callers
    cap ``len(data)``; depth is not capped on the fast path (the C tree builder does not
    recurse, and a small file cannot hold a deep tree that matters).
    """
    if _DOCTYPE not in data and not data.startswith(_UTF16_BOMS) and b"\x00" not in data[:4]:
        parser = ET.XMLParser(encoding="utf-8")  # noqa: S314  (no DOCTYPE: nothing expands)
        try:
            parser.feed(data)
            return parser.close()
        except ET.ParseError:
            pass  # the safe parser says what is wrong, with the line
    return parse_bytes(data, member=member)


def element_lines(data: bytes, tag: str, *, member: str | None = None) -> list[int]:
    """The line of each ``<tag>`` start, in document order (for error messages, on demand)."""
    parser = SafeXmlParser(member=member)
    parser.feed(data)
    parser.close()
    return [ev.line for ev in parser.events() if ev.kind == "start" and ev.element.tag == tag]
