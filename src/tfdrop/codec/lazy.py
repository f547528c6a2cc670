"""protobuf, loaded on first use.

Importing protobuf and building tfdrop's message classes (:mod:`tfdrop.codec.proto`) takes
about a sixth of a small ``tfdrop validate``'s start, and a canonical record never needs it:
the wire walk reads it. Only a record in another layout (:func:`tfdrop.codec.example` checks
it against protobuf) and a label map (parsed with ``text_format``) load it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def proto() -> ModuleType:
    """:mod:`tfdrop.codec.proto` (Example, StringIntLabelMap, the InputReader fields)."""
    return importlib.import_module("tfdrop.codec.proto")


def text_format() -> ModuleType:
    """``google.protobuf.text_format``."""
    return importlib.import_module("google.protobuf.text_format")
