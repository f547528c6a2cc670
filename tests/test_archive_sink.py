"""ZipSink: streaming zip output that other tools (zipfile, Info-ZIP, CVAT) read back."""

from __future__ import annotations

import os
import shutil
import subprocess
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfdrop.archive import ZipSink, ZipSource
from tfdrop.errors import FormatError, UnsafeArchiveError
from tfdrop.publish import atomic_path, atomic_write

MiB = 1 << 20


def test_records_and_images_are_stored_and_text_is_deflated(tmp_path: Path) -> None:
    path = tmp_path / "out.zip"
    tf_bytes = os.urandom(100_000)
    with ZipSink(path) as sink:
        with sink.open_member("default.tfrecord", compress=False) as w:
            w.write(tf_bytes[:50_000])
            w.write(tf_bytes[50_000:])
        sink.write_member(
            "label_map.pbtxt", b"item {\n\tid: 1\n\tname: 'cat'\n}\n\n", compress=True
        )
        assert sink.names == ["default.tfrecord", "label_map.pbtxt"]
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("default.tfrecord").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("label_map.pbtxt").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("default.tfrecord") == tf_bytes
        assert (zf.getinfo("label_map.pbtxt").external_attr >> 16) & 0o777 == 0o644
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-tq", str(path)], check=True, capture_output=True)


@pytest.mark.parametrize(
    "name", ["../x.jpg", "/abs.jpg", "C:\\x.jpg", "a\\b.jpg", "a//b.jpg", "./a.jpg", "dir/", "a\0b"]
)
def test_unsafe_or_unnormalised_names_are_refused_on_write(tmp_path: Path, name: str) -> None:
    with ZipSink(tmp_path / "out.zip") as sink:
        with pytest.raises(UnsafeArchiveError) as info:
            sink.write_member(name, b"x", compress=True)
        assert info.value.member is not None
        assert sink.names == []


def test_a_duplicate_member_name_is_refused_on_write(tmp_path: Path) -> None:
    with ZipSink(tmp_path / "out.zip") as sink:
        sink.write_member("a.txt", b"1", compress=True)
        with pytest.raises(FormatError, match="collide") as info:
            sink.write_member("a.txt", b"2", compress=True)
        assert "a.txt" in info.value.message
        assert info.value.archive is None  # the caller names its input, not our temp file


def test_add_file_and_a_large_streamed_member_use_bounded_memory(tmp_path: Path) -> None:
    shard = tmp_path / "shard.tmp"
    with shard.open("wb") as f:
        for i in range(48):
            f.write(bytes([i]) * MiB)
    path = tmp_path / "out.zip"
    tracemalloc.start()
    with ZipSink(path) as sink:
        sink.add_file("train.tfrecord", shard, compress=False)
        with sink.open_member("stream.tfrecord", compress=False) as w:
            for i in range(48):
                w.write(bytes([i]) * MiB)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * MiB
    with ZipSource(path) as src:
        for name in ("train.tfrecord", "stream.tfrecord"):
            assert src.size(name) == 48 * MiB
            with src.open(name) as f:
                for i in range(48):
                    assert f.read(MiB) == bytes([i]) * MiB


def test_sink_writes_into_an_atomic_temp_by_path_and_by_file(tmp_path: Path) -> None:
    by_path = tmp_path / "a.zip"
    with atomic_path(by_path) as tmp, ZipSink(tmp) as sink:
        sink.write_member("a.txt", b"a", compress=True)
    by_file = tmp_path / "b.zip"
    with atomic_write(by_file) as f, ZipSink(f) as sink:
        sink.write_member("b.txt", b"b", compress=True)
    assert ZipSource(by_path).read_bytes("a.txt", max_size=1) == b"a"
    assert ZipSource(by_file).read_bytes("b.txt", max_size=1) == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "b.zip"]


_names = st.lists(
    st.text(st.characters(codec="utf-8", exclude_characters="/\\\0:"), min_size=1, max_size=12)
    .filter(lambda s: s.strip(".") != "" and s.isprintable())
    .map(lambda s: f"dir/{s}"),
    min_size=1,
    max_size=8,
    unique=True,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=_names, data=st.data())
def test_whatever_the_sink_writes_the_source_reads_back_identically(
    tmp_path: Path, names: list[str], data: st.DataObject
) -> None:
    members = {n: data.draw(st.binary(max_size=3000)) for n in names}
    compress = data.draw(st.booleans())
    path = tmp_path / "rt.zip"
    with ZipSink(path) as sink:
        for name, body in members.items():
            sink.write_member(name, body, compress=compress)
    with ZipSource(path) as src:
        assert src.names() == list(members)
        assert {n: src.read_bytes(n, max_size=4000) for n in src.names()} == members


class _Boom(Exception):
    pass


def _fail_with_a_member_open(path: Path) -> None:
    with ZipSink(path) as sink:
        w = sink.open_member("default.tfrecord", compress=False)
        w.write(b"half a record")
        raise _Boom  # the member is still open: finishing the zip would raise ValueError


def test_an_error_while_writing_propagates_unchanged_not_masked_by_close(tmp_path: Path) -> None:
    with pytest.raises(_Boom):
        _fail_with_a_member_open(tmp_path / "out.zip")
    with atomic_path(tmp_path / "pub.zip") as tmp, pytest.raises(_Boom):
        _fail_with_a_member_open(tmp)
