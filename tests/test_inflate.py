"""codec/inflate.py: the inflater and CRC-32 of every read give the standard library's answers.

The suite's second run (``TFDROP_NO_C=1``) runs this file on the standard library's path, where
every comparison below is zlib against itself; the first run compares zlib-ng against zlib.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.codec import inflate
from tfdrop.codec.wire import C_DISABLED


def _inflate_all(data: bytes, wbits: int, step: int) -> bytes:
    """``data`` through one decompressobj, ``step`` bytes of output at most per call."""
    obj = inflate.decompressobj(wbits)
    out = [obj.decompress(data, step)]
    while obj.unconsumed_tail:
        out.append(obj.decompress(obj.unconsumed_tail, step))
    out.append(obj.flush())
    assert obj.eof
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=20_000),
    st.sampled_from([-15, 15, 31]),
    st.sampled_from([1, 7, 4096, 1 << 20]),
    st.integers(0, 9),
)
def test_same_bytes_and_crc_as_zlib(payload: bytes, wbits: int, step: int, level: int) -> None:
    packed = zlib.compressobj(level, zlib.DEFLATED, wbits)
    data = packed.compress(payload) + packed.flush()
    assert _inflate_all(data, wbits, step) == payload
    assert inflate.crc32(payload, 0) == zlib.crc32(payload)
    half = len(payload) // 2
    assert inflate.crc32(payload[half:], inflate.crc32(payload[:half], 0)) == zlib.crc32(payload)


def test_large_mixed_stream_and_unused_data() -> None:
    """Several MB of text-like and random bytes, with bytes after the stream's end."""
    rng = random.Random(7)
    payload = b"".join(
        rng.randbytes(rng.randrange(1, 70_000))
        if rng.random() < 0.5
        else b"<object><name>cat</name></object>" * rng.randrange(1, 3000)
        for _ in range(200)
    )
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = packed.compress(payload) + packed.flush() + b"TRAILER"
    obj = inflate.decompressobj(-15)
    out = []
    for i in range(0, len(data), 65_536):
        chunk = data[i : i + 65_536]
        while chunk:
            out.append(obj.decompress(chunk, 1 << 20))
            chunk = obj.unconsumed_tail
            if obj.eof:
                break
    assert obj.eof
    assert b"".join(out) == payload
    assert obj.unused_data.endswith(b"TRAILER")
    assert inflate.crc32(memoryview(payload), 0) == zlib.crc32(payload)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:2] + b"\xff\xff" + d[4:],  # broken block header / codes
        lambda d: b"\x07" + d[1:],  # reserved block type 3
    ],
)
def test_corrupt_stream_raises_one_of_errors(damage: object) -> None:
    payload = random.Random(3).randbytes(5000) + b"abc" * 5000
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = damage(packed.compress(payload) + packed.flush())  # type: ignore[operator]
    with pytest.raises(inflate.ERRORS):
        _inflate_all(data, -15, 1 << 20)


def test_name_says_which_inflater() -> None:
    if C_DISABLED:
        assert inflate.NAME == "zlib"
    else:  # zlib-ng is a dependency: a missing one would silently cost the speed
        assert inflate.NAME.startswith("zlib-ng ")


def test_tfdrop_no_c_turns_zlib_ng_off() -> None:
    code = "from tfdrop.codec import inflate; print(inflate.NAME)"
    for value, want in (("1", "zlib"), ("0", "zlib-ng ")):
        env = {**os.environ, "TFDROP_NO_C": value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.startswith(want), (value, out.stdout)
