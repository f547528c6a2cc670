"""The inflater and the CRC-32 every read goes through: zlib-ng's, else the standard library's.

A conversion inflates every zip member once and takes the zip CRC-32 of every byte it reads
and writes (the input's members, the output's TFRecords, the read-back's). zlib-ng (the
``zlib-ng`` package, a dependency) inflates the same streams to the same bytes, about 15%
faster than the zlib 1.2 CPython links here on deflated JPEGs, and its CRC-32 (carry-less
multiply) is 4-6x faster; both release the GIL as the standard module does.

Only reading uses it. What tfdrop compresses (gzip or zlib TFRecords, deflated zip members)
stays with the standard library's ``zlib``: another deflater writes other, equally valid bytes,
and the output is the same bytes from release to release.

``TFDROP_NO_C`` (see :mod:`tfdrop.codec.wire`) turns zlib-ng off with the C accelerator, so
the suite's second run covers the standard library's path; so does an install without zlib-ng.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, Protocol

from tfdrop.codec.wire import C_DISABLED


class Inflater(Protocol):
    """What ``decompressobj`` returns (``zlib.Decompress``'s API, which zlib-ng's shares)."""

    @property
    def unconsumed_tail(self) -> bytes: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    def decompress(self, data: Any, max_length: int = 0, /) -> bytes: ...
    def flush(self, length: int = ..., /) -> bytes: ...


_fast: ModuleType | None = None
if not C_DISABLED:
    try:
        _fast = importlib.import_module("zlib_ng.zlib_ng")
    except ImportError:  # pragma: no cover - zlib-ng is a dependency; a bare install lacks it
        _fast = None

_impl: Any = _fast if _fast is not None else zlib

NAME: Final[str] = f"zlib-ng {_impl.ZLIBNG_VERSION}" if _fast is not None else "zlib"
"""Which inflater is in use (a missing zlib-ng costs speed, not a byte: the suite checks it)."""

crc32: Callable[[Any, int], int] = _impl.crc32
"""``zlib.crc32(data, value)``: the same numbers, whichever module computes them."""

decompressobj: Callable[[int], Inflater] = _impl.decompressobj
"""``zlib.decompressobj(wbits)``: the same API (``decompress(data, max_length)``,
``unconsumed_tail``, ``unused_data``, ``eof``, ``flush``)."""

ERRORS: Final[tuple[type[Exception], ...]] = (
    (zlib.error, _fast.error) if _fast is not None else (zlib.error,)
)
"""What a corrupt stream raises: catch these, not ``zlib.error`` alone."""
