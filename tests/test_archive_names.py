"""Member-name rules (SPEC.md "Bad input"): what normalize_name lets through can never point
outside the folder, whatever the input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfdrop.archive import DirSource, normalize_name
from tfdrop.errors import UnsafeArchiveError
from tfdrop.limits import Limits

_LIMITS = Limits()
_parts = st.sampled_from(["..", ".", "", "a", "B", "C:", "c:", "x\\..", "é", " ", "..."])
_names = st.one_of(
    st.text(max_size=40),
    st.lists(_parts, min_size=1, max_size=6).map("/".join),
    st.lists(_parts, min_size=1, max_size=6).map("\\".join),
)


@given(_names)
def test_an_accepted_name_is_relative_without_dot_dot_and_stable(raw: str) -> None:
    failure: UnsafeArchiveError | None
    try:
        name, is_dir = normalize_name(raw, archive="t.zip", limits=_LIMITS)
    except UnsafeArchiveError as exc:
        failure = exc
    else:
        failure = None
    if failure is not None:
        assert failure.member is not None
        assert failure.archive == "t.zip"
        return
    if is_dir and name == "":
        return
    assert name
    assert not name.startswith("/")
    assert "\\" not in name
    assert "\0" not in name
    assert ".." not in name.split("/")
    assert "" not in name.split("/")
    assert not (len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha())
    # Joining it under a root stays under the root, as a path library sees it.
    root = Path("/srv/drop")
    assert (root / name).resolve().is_relative_to(root)
    assert normalize_name(name, archive="t.zip", limits=_LIMITS) == (name, False)


def test_over_long_names_are_refused() -> None:
    lim = Limits(max_name_length=10)
    assert normalize_name("a" * 10, archive="t", limits=lim) == ("a" * 10, False)
    with pytest.raises(UnsafeArchiveError, match="longer than 10"):
        normalize_name("a" * 11, archive="t", limits=lim)


def test_non_utf8_file_names_in_a_folder_are_listed_and_read(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.txt"  # Latin-1 bytes, not valid UTF-8
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"latin")
    os.close(fd)
    with DirSource(tmp_path) as src:
        (name,) = src.names()
        assert os.fsencode(name) == b"caf\xe9.txt"
        assert src.read_bytes(name, max_size=10) == b"latin"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("sub/", "ends in a folder"),
        (".jpg", "no file name before"),
        ("../x.jpg", "'..'"),
        ("/abs.jpg", "absolute"),
        ("C:/x.jpg", "drive letter"),
        ("a\\b.jpg", "plain relative"),
        ("a/./b.jpg", "plain relative"),
        ("a//b.jpg", "plain relative"),
    ],
)
def test_an_item_name_a_file_writer_cannot_store_is_a_format_error_naming_it(
    name: str, why: str
) -> None:
    from tfdrop.archive.limits import check_item_name
    from tfdrop.errors import FormatError

    with pytest.raises(FormatError, match=why) as info:
        check_item_name(name)
    assert info.value.item == name


@pytest.mark.parametrize("name", ["a.jpg", "sub/dir/a.jpg", ".hidden/a.jpg", "noext", "a.b.c"])
def test_plain_relative_item_names_pass(name: str) -> None:
    from tfdrop.archive.limits import check_item_name

    check_item_name(name)


@pytest.mark.parametrize("target", ["voc", "coco", "cvat", "yolo"])
def test_a_name_flagged_utf8_whose_bytes_are_not_is_a_clear_error_for_file_targets(
    tmp_path: Path, target: str
) -> None:
    # found by an outside attack: a traceback (UnicodeEncodeError) in every file-naming writer
    import io
    import zipfile

    from PIL import Image

    from conftest import tfdrop

    buf = io.BytesIO()
    Image.new("RGB", (16, 12)).save(buf, "JPEG")
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("caf\u00e9.jpg", buf.getvalue())  # zipfile sets the UTF-8 flag
        zf.writestr("ok.jpg", buf.getvalue())
    data = good.getvalue()
    assert data.count(b"caf\xc3\xa9") == 2  # the local and the central name
    src = tmp_path / "names.zip"
    src.write_bytes(data.replace(b"caf\xc3\xa9", b"caf\x82\x82"))  # same length, not UTF-8
    out = tmp_path / "o.zip"
    proc = tfdrop("convert", src, "--to", target, "-o", out)
    assert proc.returncode == 1, proc.stderr
    assert "not valid Unicode" in proc.stderr
    assert "caf" in proc.stderr
    assert "bug" not in proc.stderr
    assert not out.exists()
