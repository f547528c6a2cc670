"""Safe, incremental XML parsing for annotation files (VOC xml, CVAT annotations.xml).

A sans-IO push parser in the shape of ElementTree's ``XMLPullParser`` (STYLE.md: push bytes in
with :meth:`SafeXmlParser.feed`, pull events out with :meth:`SafeXmlParser.events`), built on
expat directly so that it can refuse what makes XML dangerous before anything is expanded:

- any ``<!DOCTYPE>`` (and so every entity declaration, internal or external: billion laughs,
  XXE) is a :class:`~tfdrop.errors.FormatError` naming the member and line, as defusedxml's
  ``forbid_dtd`` does; neither CVAT nor VOC tools write one;
- the job's budget (:class:`~tfdrop.limits.Limits`) is applied as the text arrives, in the
  expat handlers: element nesting (``max_depth``), one text node or one attribute value
  (``max_text_bytes``, except the attributes a caller names as coordinate data, like CVAT's
  ``points`` and ``rle``), and one markup token (a start tag with its attributes, a comment):
  at most ``max_values_per_feature`` numbers of ``max_number_length`` characters, checked on
  the raw bytes before expat sees them (expat rescans an unfinished token on every feed, so a
  huge one would also cost quadratic time);
- the encoding is the XML declaration's: UTF-8 and UTF-16 go to expat as they are; any other
  codec Python knows (Shift_JIS, GBK, windows-1252, ...) is decoded here, incrementally, and
  handed to expat as text; an encoding Python does not know, or bytes that are not valid in
  the declared one, are a FormatError naming it. Bytes are never reinterpreted;
- every expat error (truncated file, undefined entity, bad token) becomes a FormatError with
  the line, never a raw ``ExpatError``.

Events are ``("start" | "end", element, line)``; elements are built with ElementTree's
TreeBuilder, so a caller that streams a large file clears an element after its ``end`` event.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import IO, Final, NamedTuple, NoReturn
from xml.parsers import expat

from tfdrop.errors import FormatError, LimitExceededError, TfdropError
from tfdrop.limits import DEFAULT_LIMITS, Limits, exceeded

__all__ = [
    "SafeXmlParser",
    "XmlEvent",
    "declared_encoding",
    "element_lines",
    "iterparse",
    "parse_bytes",
    "parse_small",
]

CHUNK: Final = 1 << 16
_HEAD: Final = 1024
"""Bytes looked at for the XML declaration (it must come first and is short)."""
_DECL: Final = re.compile(rb"^<\?xml\s[^>]*?encoding\s*=\s*([\"'])([A-Za-z][A-Za-z0-9._:-]*)\1")
_UTF8_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_NATIVE: Final = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be"})
"""Codecs (by Python's canonical name) that expat reads itself."""


class XmlEvent(NamedTuple):
    """One parse event: ``kind`` is "start" or "end"; ``line`` is 1-based."""

    kind: str
    element: ET.Element
    line: int


def declared_encoding(head: bytes) -> str | None:
    """The encoding an XML declaration at the start of ``head`` names, else None."""
    m = _DECL.match(head[len(_UTF8_BOM) :] if head.startswith(_UTF8_BOM) else head)
    return m.group(2).decode("ascii") if m else None


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class SafeXmlParser:
    """Push parser: ``feed(bytes)`` any number of times, ``close()`` at the end of input.

    ``long_attributes`` are attribute names holding coordinate data (CVAT's ``points``,
    ``rle``): they are bounded by the token cap, not by ``max_text_bytes``.
    After an error the parser is dead: every later call raises the same error again.
    """

    def __init__(
        self,
        *,
        member: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        long_attributes: frozenset[str] = frozenset(),
        first_line: int = 1,
    ) -> None:
        self._member = member
        self._lines = first_line - 1  # a fragment of a document: its lines are the document's
        self._limits = limits
        self._max_token = limits.max_values_per_feature * limits.max_number_length
        self._long = long_attributes
        self._depth = 0
        self._text = 0
        self._run = 0  # bytes since the last ">": the length of the markup token or text so far
        self._head: bytes | None = b""  # bytes kept until the declaration is seen
        self._decoder: codecs.IncrementalDecoder | None = None
        self._encoding = "utf-8"
        self._utf8 = True  # read as UTF-8 (declared or not): byte offsets are the input's
        self._builder = ET.TreeBuilder()
        self._pending: list[XmlEvent] = []
        self._root: ET.Element | None = None
        self._error: TfdropError | None = None
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
        """Parse more bytes; raises a TfdropError on anything unsafe, malformed or over budget."""
        self._check_alive()
        if self._head is not None:
            self._head += data
            if not self._decide(final=False):
                return
            data, self._head = self._head, None
        self._feed_pieces(data)

    def close(self) -> None:
        """End of input: a document that is not complete is a FormatError."""
        self._check_alive()
        if self._closed:
            return
        if self._head is not None:
            self._decide(final=True)
            data, self._head = self._head, None
            self._feed_pieces(data)
        self._parse(b"", final=True)
        self._closed = True
        if self._root is None:
            self._fail("no XML element found", self._line())

    def events(self) -> Iterator[XmlEvent]:
        """Events parsed so far and not yet taken, in document order."""
        pending, self._pending = self._pending, []
        yield from pending

    # -- internals -------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error

    def _feed_pieces(self, data: bytes) -> None:
        # pieces no longer than the token cap: a run between two ">" inside one piece is short
        step = min(CHUNK, self._max_token)
        for start in range(0, len(data), step):
            self._parse(data[start : start + step], final=False)

    def _decide(self, *, final: bool) -> bool:
        """Choose how to decode once the declaration can be seen (False: need more bytes)."""
        head = self._head or b""
        body = head[len(_UTF8_BOM) :] if head.startswith(_UTF8_BOM) else head
        maybe_decl = body[:5] == b"<?xml"[: len(body[:5])]
        if not final and len(head) < _HEAD and maybe_decl and b"?>" not in head:
            return False
        if head.startswith(_UTF16_BOMS) or b"\x00" in head[:4]:
            self._utf8 = False
            return True  # UTF-16 (expat reads it, and its declaration, itself)
        name = declared_encoding(head)
        if name is None:
            return True
        try:
            codec = codecs.lookup(name)
        except LookupError:
            self._fail(f"the XML declares encoding {name!r}, which is not one Python knows", 1)
        self._utf8 = codec.name == "utf-8"
        if codec.name not in _NATIVE:
            self._decoder = codec.incrementaldecoder(errors="strict")
            self._encoding = name
        return True

    def _guard(self, data: bytes) -> None:
        """Refuse one markup token (or text run) over the cap before expat buffers it."""
        first = data.find(b">")
        if first < 0:
            self._run += len(data)
            ended = self._run
        else:
            ended = self._run + first
            self._run = len(data) - data.rfind(b">") - 1
        longest = max(ended, self._run)
        if longest > self._max_token:
            lim = self._limits
            self._error = LimitExceededError(
                f"one XML tag is longer than {self._max_token} bytes (max_values_per_feature "
                f"{lim.max_values_per_feature} numbers of max_number_length "
                f"{lim.max_number_length} characters)",
                limit="max_values_per_feature",
                value=longest // lim.max_number_length + 1,
                cap=lim.max_values_per_feature,
                member=self._member,
                line=self._line(),
            )
            raise self._error

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            self._guard(data)
            if self._decoder is None:
                self._parser.Parse(data, final)
            else:
                self._parser.Parse(self._decoder.decode(data, final), final)
        except TfdropError as exc:
            self._error = exc
            raise
        except UnicodeDecodeError as exc:
            self._fail(
                f"bytes that are not valid {self._encoding} (the encoding the XML declares): "
                f"{exc.reason}",
                self._line(),
            )
        except expat.ExpatError as exc:
            line = getattr(exc, "lineno", None) or self._parser.ErrorLineNumber
            reason = expat.ErrorString(exc.code) if exc.code else str(exc)
            self._fail(f"malformed XML: {reason}", line + self._lines)
        except (LookupError, ValueError) as exc:
            # expat's own encoding handler: an unknown or multi-byte encoding it met itself
            # (a UTF-16 document declaring another encoding)
            self._fail(f"unsupported XML encoding: {exc}", self._line())

    def _fail(self, message: str, line: int | None) -> NoReturn:
        self._error = FormatError(message, member=self._member, line=line)
        raise self._error

    def _over(self, limit: str, value: int) -> NoReturn:
        cap = getattr(self._limits, limit)
        self._error = exceeded(limit, value, cap, member=self._member, line=self._line())
        raise self._error

    def _line(self) -> int:
        return int(self._parser.CurrentLineNumber) + self._lines

    def _on_doctype(self, *_: object) -> None:
        self._fail(
            "XML with a DOCTYPE (DTD or entity declarations) is refused for safety", self._line()
        )

    def _on_entity(self, name: str, *_: object) -> None:
        self._fail(f"XML entity declaration {name!r} is refused for safety", self._line())

    def _on_external(self, *_: object) -> int:
        self._fail("XML external entity reference is refused for safety", self._line())

    def _on_start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth > self._limits.max_depth:
            self._over("max_depth", self._depth)
        cap = self._limits.max_text_bytes
        for key, value in attrs.items():
            if len(value) > cap // 4 and key not in self._long and _utf8_len(value) > cap:
                self._over("max_text_bytes", _utf8_len(value))
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
        self._text += _utf8_len(text)
        if self._text > self._limits.max_text_bytes:
            self._over("max_text_bytes", self._text)
        self._builder.data(text)


def iterparse(
    stream: IO[bytes],
    *,
    member: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    long_attributes: frozenset[str] = frozenset(),
    chunk_size: int = CHUNK,
    first_line: int = 1,
) -> Iterator[XmlEvent]:
    """Events from a binary stream read in ``chunk_size`` pieces (the shell around the parser).
    ``first_line``: the stream is a fragment of a document starting on that line."""
    parser = SafeXmlParser(
        member=member, limits=limits, long_attributes=long_attributes, first_line=first_line
    )
    while chunk := stream.read(chunk_size):
        parser.feed(chunk)
        yield from parser.events()
    parser.close()
    yield from parser.events()


class TopScanner(SafeXmlParser):
    """Where each child of the document element starts, without building a tree: the
    ``(byte offset, line, tag, attributes)`` of each in :attr:`tops`, and the offset of the
    document element's end tag in :attr:`end` (a reader cuts a large file into work units at
    these offsets). Refuses what :class:`SafeXmlParser` refuses, except the text caps (the
    fragments' own parse applies them). Offsets are of the bytes fed, so only for a document
    that expat reads as it is (:attr:`native`)."""

    def __init__(self, *, member: str | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(member=member, limits=limits)
        p = self._parser
        p.StartElementHandler = self._top_start
        p.EndElementHandler = self._top_end
        p.CharacterDataHandler = None
        self.tops: list[tuple[int, int, str, dict[str, str]]] = []
        self.end = -1

    @property
    def native(self) -> bool:
        """Whether the document is UTF-8 (declared or not): byte offsets are the file's."""
        return self._utf8

    def _top_start(self, tag: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth > self._limits.max_depth:
            self._over("max_depth", self._depth)
        if self._depth == 2:
            p = self._parser
            self.tops.append((p.CurrentByteIndex, p.CurrentLineNumber, tag, attrs))
        elif self._depth == 1:
            self._root = ET.Element(tag)

    def _top_end(self, tag: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.end = self._parser.CurrentByteIndex


def check_element_count(data: bytes, limits: Limits, member: str | None) -> None:
    """Refuse a whole-file XML whose tree would pass ``max_xml_elements`` (every element
    starts with ``<``: counted at C speed before a tree is built)."""
    tags = data.count(b"<") - data.count(b"</")  # start (and empty-element) tags, roughly
    if tags > limits.max_xml_elements:
        raise exceeded("max_xml_elements", tags, limits.max_xml_elements, member=member)


def parse_bytes(
    data: bytes, *, member: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> ET.Element:
    """The document element of a small, whole XML file (one VOC annotation)."""
    check_element_count(data, limits, member)
    parser = SafeXmlParser(member=member, limits=limits)
    parser.feed(data)
    parser.close()
    root = parser.root
    assert root is not None  # close() raises when no element was found
    return root


_DOCTYPE: Final = b"<!DOCTYPE"


def _fast_ok(data: bytes) -> bool:
    """Whether the C parser with UTF-8 forced reads ``data`` exactly as declared."""
    if _DOCTYPE in data or data.startswith(_UTF16_BOMS) or b"\x00" in data[:4]:
        return False
    name = declared_encoding(data[:_HEAD])
    return name is None or name.lower().replace("_", "-") in ("utf-8", "utf8")


def _too_long(text: str | None, cap: int) -> bool:
    return text is not None and len(text) > cap // 4 and _utf8_len(text) > cap


def _too_deep(root: ET.Element, max_depth: int) -> bool:
    """Whether an element lies ``max_depth`` levels below the root (one level too deep),
    walked a level at a time (ElementPath's ``*/*/...`` search cost a generator step per
    element per level: 69 steps for a small VOC annotation)."""
    level = [root]
    for _ in range(max_depth):
        level = [child for el in level for child in el]
        if not level:
            return False
    return True


def _within_budget(root: ET.Element, limits: Limits, *, texts: bool) -> bool:
    """Whether a tree the fast path built keeps to ``max_depth`` and, when ``texts``, to
    ``max_text_bytes`` (the safe parser then says where it does not)."""
    if _too_deep(root, limits.max_depth):
        return False
    if texts:
        cap = limits.max_text_bytes
        for el in root.iter():
            if (
                _too_long(el.text, cap)
                or _too_long(el.tail, cap)
                or any(_too_long(v, cap) for v in el.attrib.values())
            ):
                return False
    return True


def parse_small(
    data: bytes, *, member: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> ET.Element:
    """The document element of a small, whole XML file, fast (one VOC annotation).

    The fast path is ElementTree's C parser with the encoding forced to UTF-8, taken only for
    a document that declares UTF-8 (or nothing) and holds no ``<!DOCTYPE``: read as UTF-8 it
    cannot declare an entity or a DTD, so nothing can expand. A document over
    ``max_text_bytes`` has its texts measured in the tree it gave (bounded by the file,
    which the caller capped). Anything else (a DOCTYPE, UTF-16, another declared encoding, a
    text over the cap, any parse error) goes through :class:`SafeXmlParser`, which refuses or
    reports it with the line. The tree's depth is measured too (``max_depth``).
    """
    check_element_count(data, limits, member)
    if _fast_ok(data):
        parser = ET.XMLParser(encoding="utf-8")  # noqa: S314  (no DOCTYPE: nothing expands)
        try:
            parser.feed(data)
            root = parser.close()
        except ET.ParseError:
            pass  # the safe parser says what is wrong, with the line
        else:
            if _within_budget(root, limits, texts=len(data) > limits.max_text_bytes):
                return root
    return parse_bytes(data, member=member, limits=limits)


def element_lines(
    data: bytes, tag: str, *, member: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> list[int]:
    """The line of each ``<tag>`` start, in document order (for error messages, on demand)."""
    parser = SafeXmlParser(member=member, limits=limits)
    parser.feed(data)
    parser.close()
    return [ev.line for ev in parser.events() if ev.kind == "start" and ev.element.tag == tag]
