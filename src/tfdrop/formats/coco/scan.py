"""An incremental walker over a COCO JSON file: one element at a time, in one pass.

A COCO instances file is one object whose big members are arrays (``images``, ``annotations``).
The walker reads the file in 1 MiB chunks, steps through the top-level object and its arrays
itself, and hands each array element (one image, one annotation) to the C scanner of the
standard library (``json.JSONDecoder.raw_decode``). Only the element being parsed is ever held
as Python objects; an element larger than :data:`MAX_ELEMENT` is refused.

Why not ijson: ijson's ``items(f, prefix)`` follows one prefix per pass, so images and
annotations take two full tokenizing passes of the file; measured on a 40 MB file (200k
annotations) one ``yajl2_c`` pass took about as long as this whole walk, which visits every key
in one pass (see bench/bench_coco.py). Errors say the JSON path (``annotations[12]``) and the
character offset.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any, Final, NamedTuple

from tfdrop.errors import FormatError
from tfdrop.formats.coco.guard import Guard
from tfdrop.limits import DEFAULT_LIMITS

CHUNK: Final = 1 << 20
LOW_WATER: Final = 256 << 10
"""Refill before an element when fewer characters than this are buffered."""
MAX_ELEMENT: Final = 64 << 20
"""The largest single JSON element (one image, one annotation, ``info``) accepted, in chars."""

_WS = re.compile(r"[ \t\n\r]*")
_skip_ws = _WS.match
_SEP = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_next_sep = _SEP.match
_decode = json.JSONDecoder().raw_decode


class Element(NamedTuple):
    """One value found in the top-level object.

    ``idx`` is the position inside an array member (``key[idx]``), or -1 for a member that
    is not an array (its whole ``value``). A tuple: hundreds of thousands are made per file.
    """

    key: str
    idx: int
    value: Any

    @property
    def path(self) -> str:
        return self.key if self.idx < 0 else f"{self.key}[{self.idx}]"


class _Buffer:
    def __init__(self, stream: IO[bytes], member: str, guard: Guard) -> None:
        self.stream = stream
        self.member = member
        self.guard = guard
        self.checked = 0  # buf[:checked] has passed the guard
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.base = 0  # characters consumed before buf[0]
        self.eof = False

    def fill(self) -> bool:
        """Append a chunk (dropping what is consumed); False at end of input."""
        if self.eof:
            return False
        try:
            data = self.stream.read(CHUNK)
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self.error(f"the file is not UTF-8: {exc.reason}") from None
        if not data:
            self.eof = True
        self.base += self.pos
        self.buf = self.buf[self.pos :] + text
        self.checked = max(self.checked - self.pos, 0)
        self.pos = 0
        if self.base == 0 and self.buf.startswith("\ufeff"):
            self.pos = self.checked = 1  # a UTF-8 byte order mark, as Windows tools write
        # depth and number length are checked before the C decoder sees the text
        self.checked = self.guard.check(self.buf, self.checked, self.base)
        return bool(data) or bool(text)

    def grow(self) -> None:
        """Double what is buffered after ``pos``, so re-parsing a big element stays linear."""
        want = max(2 * (len(self.buf) - self.pos), CHUNK)
        while len(self.buf) - self.pos < want and self.fill():
            pass

    def error(self, message: str, path: str | None = None) -> FormatError:
        return FormatError(
            f"{message} (character offset {self.base + self.pos})", member=self.member, key=path
        )

    def peek(self) -> str:
        """The next non-blank character ('' at end of input), without consuming it."""
        while True:
            m = _skip_ws(self.buf, self.pos)
            assert m is not None  # the pattern matches the empty string
            self.pos = m.end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def expect(self, chars: str, path: str) -> str:
        c = self.peek()
        if c == "" or c not in chars:
            what = "end of file" if c == "" else repr(c)
            if c == "":
                raise self.error(f"the JSON is truncated: expected {' or '.join(chars)}", path)
            raise self.error(f"invalid JSON: expected {' or '.join(chars)}, found {what}", path)
        self.pos += 1
        return c

    def value(self, path: str) -> Any:
        """Parse one JSON value at the current position."""
        self.peek()
        if not self.eof and len(self.buf) - self.pos < LOW_WATER:
            self.fill()
        while True:
            try:
                value, end = _decode(self.buf, self.pos)
            except RecursionError:
                # only when max_depth is raised past what the C decoder can nest
                raise self.error("JSON nesting is too deep for Python's decoder", path) from None
            except json.JSONDecodeError as exc:
                if not self.eof and len(self.buf) - self.pos <= MAX_ELEMENT:
                    self.grow()
                    continue
                if self.eof:
                    end = len(self.buf.rstrip())
                    if exc.msg.startswith("Unterminated string") or exc.pos >= end:
                        raise self.error("the JSON is truncated", path) from None
                    raise self.error(f"invalid JSON: {exc.msg}", path) from None
                raise self.error(
                    f"a JSON element is larger than {MAX_ELEMENT} characters", path
                ) from None
            except ValueError as exc:
                # int() refuses over 4,300 digits: only when max_number_length is raised past it
                raise self.error(f"a JSON number cannot be read: {exc}", path) from None
            # a number at the very end of the buffer may continue in the next chunk
            if end >= len(self.buf) and not self.eof:
                self.grow()
                continue
            self.pos = end
            return value


def walk(
    stream: IO[bytes],
    member: str,
    *,
    wanted: frozenset[str],
    until: str | None = None,
    max_depth: int = DEFAULT_LIMITS.max_depth,
    max_number_length: int = DEFAULT_LIMITS.max_number_length,
) -> Iterator[Element]:
    """Every element of the top-level arrays named in ``wanted`` (a member in ``wanted`` that
    is not an array comes whole, with ``idx`` -1, for the caller to refuse).

    Members not in ``wanted`` are skipped by :func:`_skip` at regex speed, never turned into
    Python values: a 60 MB ``info`` costs neither memory nor a parse. With ``until``, the walk
    ends after the member of that name (the rest of the file is not read).

    Raises:
        FormatError: invalid or truncated JSON, a top level that is not an object, an element
            over :data:`MAX_ELEMENT`; ``member`` and ``key`` (the JSON path) are set.
        LimitExceededError: nesting deeper than ``max_depth`` (the top-level object is depth
            1) or a number longer than ``max_number_length`` characters, with its offset.
    """
    guard = Guard(max_depth=max_depth, max_number_length=max_number_length, member=member)
    b = _Buffer(stream, member, guard)
    b.fill()
    if b.peek() == "":
        raise b.error("the file is empty")
    if b.peek() != "{":
        raise b.error("a COCO file must be a JSON object at the top level")
    b.pos += 1
    first = True
    while True:
        if b.peek() == "}":
            b.pos += 1
            break
        if not first:
            b.expect(",", "")
        first = False
        if b.peek() != '"':
            b.expect('"', "")
        key = b.value("")
        b.expect(":", key)
        if key not in wanted:
            _skip(b, key)
        elif b.peek() == "[":
            b.pos += 1
            yield from _array(b, key, True)
        else:
            yield Element(key, -1, b.value(key))
        if key == until:
            return
    if b.peek() != "":
        raise b.error("invalid JSON: data after the top-level object")


def _array(b: _Buffer, key: str, keep: bool) -> Iterator[Element]:
    # The fast path parses an element straight from the buffer and steps over the separator
    # with one regex; anything unusual (a refill, an error, the array's end) takes the slow,
    # checked path of _Buffer.
    if b.peek() == "]":
        b.pos += 1
        return
    index = 0
    while True:
        if not b.eof and len(b.buf) - b.pos < LOW_WATER:
            b.fill()
        try:
            value, end = _decode(b.buf, b.pos)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            value = b.value(f"{key}[{index}]")
        else:
            if end >= len(b.buf) and not b.eof:
                value = b.value(f"{key}[{index}]")
            else:
                b.pos = end
        if keep:
            yield Element(key, index, value)
        index += 1
        m = _next_sep(b.buf, b.pos)
        if m is not None and m.end() < len(b.buf):
            b.pos = m.end()
            if m.group(1) == "]":
                return
        elif b.expect(",]", f"{key}[{index}]") == "]":
            return


_PLAIN: Final = re.compile(r"[-+.0-9eE,: \t\n\rtruefalsnNaIiy]*")
"""What may stand between strings and brackets in JSON: numbers, literals (with Python's
NaN and Infinity), separators."""
_STRING_BODY: Final = re.compile(r'[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*')
_OPENER: Final = {"]": "[", "}": "{"}


def _skip(b: _Buffer, key: str) -> None:
    """Step over the value of a member nobody reads, without building it.

    One C-speed match takes each run of numbers, literals and separators (:data:`_PLAIN`),
    another each string; only brackets take a step in Python. The value is checked, not
    parsed: brackets pair up, strings close, nothing stands outside JSON's characters (the
    guard has checked depth and number length as the text was buffered). A string longer
    than :data:`MAX_ELEMENT` is refused as an element would be.
    """
    if b.peek() not in ("[", "{"):
        b.value(key)  # a scalar: bounded by MAX_ELEMENT like any element
        return
    stack: list[str] = []
    while True:
        if not b.eof and len(b.buf) - b.pos < LOW_WATER:
            b.fill()
        m = _PLAIN.match(b.buf, b.pos)
        assert m is not None  # the pattern matches the empty string
        b.pos = m.end()
        if b.pos >= len(b.buf):
            if b.eof:
                raise b.error("the JSON is truncated", key)
            continue
        c = b.buf[b.pos]
        if c == '"':
            _skip_string(b, key)
            continue
        b.pos += 1
        if c in "[{":
            stack.append(c)
        elif c in "]}":
            if not stack or stack.pop() != _OPENER[c]:
                raise b.error(f"invalid JSON: unexpected {c!r}", key)
            if not stack:
                return
        else:
            b.pos -= 1
            raise b.error(f"invalid JSON: unexpected {c!r}", key)


def _skip_string(b: _Buffer, key: str) -> None:
    """The string at ``b.pos`` (a long one may need more text)."""
    while True:
        m = _STRING_BODY.match(b.buf, b.pos + 1)
        assert m is not None  # the pattern matches the empty string
        end = m.end()
        if end < len(b.buf) and b.buf[end] == '"':
            b.pos = end + 1
            return
        if end < len(b.buf) and b.buf[end] != "\\":
            raise b.error("invalid JSON: a control character in a string", key)
        if b.eof:
            raise b.error("the JSON is truncated in a string", key)
        if len(b.buf) - b.pos > MAX_ELEMENT:
            raise b.error(f"a JSON element is larger than {MAX_ELEMENT} characters", key)
        b.grow()
