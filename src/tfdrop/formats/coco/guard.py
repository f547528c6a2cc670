"""Nesting depth and number length of JSON text, checked as it is buffered.

The walker (:mod:`.scan`) hands each array element to the standard library's C decoder, which
recurses once per nesting level (100k nested arrays raised RecursionError) and gives every
integer to ``int()`` (over 4,300 digits raised ValueError). :class:`Guard` sees every chunk of
text before the decoder does and raises :class:`~tfdrop.errors.LimitExceededError` for
``max_depth`` or ``max_number_length`` at the character offset where the limit is passed.

The fast path works on whole chunks at C speed: strings are cut out with one regex (brackets
and digits inside them do not count), the brackets left are turned into +1/-1 steps whose
running sum is the depth, and long runs of number characters are found with another regex.
Only when a limit is passed is the chunk walked again character by character, to name the
exact offset. State carried from one chunk to the next: the depth, whether the chunk ended
inside a string (and where to resume in it), and the length of a number still running.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

from tfdrop.limits import exceeded

_STRING: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_STRING_BODY: Final = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_NUMBER_CHARS: Final = "-+0123456789.eE"
_NUMBER_BYTES: Final = _NUMBER_CHARS.encode()
_NUMBER_MAP: Final = bytes(48 if i in _NUMBER_BYTES else 32 for i in range(256))  # "0" or " "
_NOT_BRACKET: Final = bytes(i for i in range(256) if i not in b"[]{}")
_NOT_QUOTE_OR_BRACKET: Final = bytes(i for i in range(256) if i not in b'"[]{}')
_STEPS: Final = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # int8: +1, -1


class Guard:
    """Checks JSON text chunk by chunk against a depth and a number-length cap."""

    def __init__(self, *, max_depth: int, max_number_length: int, member: str) -> None:
        self.max_depth = max_depth
        self.max_number_length = max_number_length
        self.member = member
        self._long_run = b"0" * (max_number_length + 1)
        self.depth = 0
        self.in_string = False
        self.run = 0  # number characters at the end of the text checked so far

    def check(self, buf: str, start: int, base: int) -> int:
        """Check ``buf[start:]`` (``buf[0]`` is character ``base`` of the file).

        Returns the index to resume from when more text is appended (the end, or a point
        inside a string that is not finished yet).
        """
        pos = start
        if self.in_string:
            pos = self._string_end(buf, pos)
            if self.in_string:
                return pos
        raw = buf[pos:].encode("utf-8", "surrogatepass")
        if b"\\" not in raw and self._quick(raw):
            if raw.count(b'"') % 2:  # ends inside a string: its opening quote is the last one
                self.in_string = True
                self.run = 0
                return self._string_end(buf, buf.rfind('"', pos) + 1)
            return len(buf)
        return self._exact(buf, pos, base)

    def _quick(self, raw: bytes) -> bool:
        """The common case, text without backslashes, without cutting strings out: True when
        it is within the limits (the state is then updated), False to take the exact path.

        Brackets and number characters inside strings would count, so the quick path only
        answers when it can tell there are none that matter: with every other byte deleted,
        a string without brackets leaves ``""``, and once those pairs are gone no quote may
        be left; a long run of number characters anywhere sends the chunk to the exact path.
        """
        if raw.count(b'"') % 2:
            raw = raw[: raw.rfind(b'"')]
        if raw.translate(_NUMBER_MAP).find(self._long_run) >= 0:
            return False
        lead = len(raw) - len(raw.lstrip(_NUMBER_BYTES))
        if self.run + lead > self.max_number_length:
            return False
        brackets = raw.translate(None, _NOT_QUOTE_OR_BRACKET).replace(b'""', b"")
        if b'"' in brackets:
            return False
        if not self._steps_ok(brackets):
            return False
        trail = len(raw) - len(raw.rstrip(_NUMBER_BYTES))
        self.run = self.run + lead if lead == len(raw) else trail
        return True

    def _steps_ok(self, brackets: bytes) -> bool:
        """Add the depth steps of a string of brackets; False (state unchanged) when the
        running depth passes the cap."""
        if not brackets:
            return True
        steps = array("b", brackets.translate(_STEPS))
        if max(accumulate(steps, initial=self.depth)) > self.max_depth:
            return False
        self.depth += sum(steps)
        return True

    def _exact(self, buf: str, pos: int, base: int) -> int:
        """Any text: strings cut out with a regex, then checked as in :meth:`_quick`."""
        outside = _STRING.sub("", buf[pos:])
        quote = outside.find('"')
        if quote >= 0:  # a string that is not finished in this chunk: resume inside it
            tail = len(outside) - quote
            outside = outside[:quote]
            open_at = len(buf) - tail
        if not self._outside_ok(outside.encode("utf-8", "surrogatepass")):
            self._slow(buf, pos, base)
        if quote >= 0:
            self.run = 0
            self.in_string = True
            return self._string_end(buf, open_at + 1)
        return len(buf)

    def _string_end(self, buf: str, pos: int) -> int:
        m = _STRING_BODY.match(buf, pos)
        assert m is not None  # the pattern matches the empty string
        end = m.end()
        if end < len(buf) and buf[end] == '"':
            self.in_string = False
            self.run = 0
            return end + 1
        return end  # the end, or a lone backslash that needs the next character

    def _outside_ok(self, outside: bytes) -> bool:
        """Update the state from text outside strings; False when a limit may be passed."""
        lead = len(outside) - len(outside.lstrip(_NUMBER_BYTES))
        if self.run + lead > self.max_number_length:
            return False
        if outside.translate(_NUMBER_MAP).find(self._long_run) >= 0:
            return False
        if not self._steps_ok(outside.translate(None, _NOT_BRACKET)):
            return False
        trail = len(outside) - len(outside.rstrip(_NUMBER_BYTES))
        self.run = self.run + lead if lead == len(outside) else trail
        return True

    def _slow(self, buf: str, pos: int, base: int) -> None:
        """Walk the text character by character to raise at the exact offset.

        The fast check is the stricter one (cutting strings out joins the text around them),
        so invalid JSON such as ``1"x"1`` may come here and pass: the state is then this
        walk's, and the decoder reports the JSON error."""
        depth, run, in_string, escaped = self.depth, self.run, False, False
        for i in range(pos, len(buf)):
            c = buf[i]
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
                continue
            if c in _NUMBER_CHARS:
                run += 1
                if run > self.max_number_length:
                    raise exceeded(
                        "max_number_length", run, self.max_number_length, member=self.member,
                        offset=base + i,
                    )  # fmt: skip
                continue
            run = 0
            if c == '"':
                in_string = True
            elif c in "[{":
                depth += 1
                if depth > self.max_depth:
                    raise exceeded(
                        "max_depth", depth, self.max_depth, member=self.member, offset=base + i
                    )
            elif c in "]}":
                depth -= 1
        self.depth, self.run = depth, (0 if in_string else run)
