"""DirSource: a folder tree read through the same Source API as a zip (SPEC.md "Bad input")."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import require_tool
from tfdrop.archive import DirSource, Source, ZipSource, open_source
from tfdrop.errors import ArchiveError, MemberNotFoundError, UnsafeArchiveError
from tfdrop.limits import Limits

MiB = 1 << 20


def _tree(root: Path) -> Path:
    files = {
        "VOC2007/Annotations/000001.xml": b"<annotation><filename>1.jpg</filename></annotation>",
        "VOC2007/JPEGImages/000001.jpg": bytes(range(256)) * 40,
        "VOC2007/ImageSets/Main/train.txt": b"000001\n",
        "labelmap.txt": b"# label:color_rgb:parts:actions\ncat:1,2,3::\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_folder_names_are_relative_slash_separated_and_sorted(tmp_path: Path) -> None:
    root = _tree(tmp_path / "VOCdevkit")
    (root / "VOC2007" / "empty_dir").mkdir()
    with DirSource(root) as src:
        assert src.names() == [
            "VOC2007/Annotations/000001.xml",
            "VOC2007/ImageSets/Main/train.txt",
            "VOC2007/JPEGImages/000001.jpg",
            "labelmap.txt",
        ]
        assert src.size("VOC2007/JPEGImages/000001.jpg") == 256 * 40
        assert src.find("voc2007/jpegimages/000001.JPG") == "VOC2007/JPEGImages/000001.jpg"
        assert src.read_bytes("VOC2007/ImageSets/Main/train.txt", max_size=10) == b"000001\n"
        with pytest.raises(MemberNotFoundError):
            src.open("VOC2007/../labelmap.txt")


def test_folder_and_its_zip_read_the_same_through_the_source_api(tmp_path: Path) -> None:
    require_tool("zip", "zip")
    root = _tree(tmp_path / "tree")
    archive = tmp_path / "tree.zip"
    subprocess.run(["zip", "-qr", str(archive), "."], cwd=root, check=True)
    sources: list[Source] = [open_source(root), open_source(archive)]
    assert isinstance(sources[0], DirSource)
    assert isinstance(sources[1], ZipSource)
    contents = []
    for src in sources:
        with src:
            contents.append({n: src.open(n).read() for n in sorted(src.names())})
    assert contents[0] == contents[1]
    assert len(contents[0]) == 4


def test_corpus_folder_tree_reads_every_file_unchanged(corpus: Path) -> None:
    root = corpus / "cvat-ai__datumaro" / "tests" / "assets"
    if not root.is_dir():
        pytest.fail(f"corpus layout changed: {root} is missing")
    with DirSource(root) as src:
        names = src.names()
        assert len(names) > 50
        for name in names:
            assert src.read_bytes(name, max_size=64 * MiB) == (root / name).read_bytes()


def test_the_whole_corpus_zipped_by_info_zip_reads_like_the_folder(
    corpus: Path, tmp_path: Path
) -> None:
    require_tool("zip", "zip")
    archive = tmp_path / "corpus.zip"
    subprocess.run(["zip", "-qr", "-9", str(archive), "."], cwd=corpus, check=True)
    with DirSource(corpus) as folder, ZipSource(archive) as zipped:
        assert sorted(zipped.names()) == folder.names()
        assert len(folder.names()) > 300
        for name in folder.names():
            assert zipped.size(name) == folder.size(name)
            with zipped.open(name) as a, folder.open(name) as b:
                assert a.read() == b.read(), name


def test_symlink_leaving_the_root_makes_the_tree_unsafe(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "VOC2007" / "Annotations" / "evil.xml").symlink_to(outside)
    with pytest.raises(UnsafeArchiveError, match="outside") as info:
        DirSource(root)
    assert info.value.member == "VOC2007/Annotations/evil.xml"
    assert info.value.archive == str(root)


def test_symlinks_inside_the_root_read_files_but_do_not_descend_folders(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    (root / "alias.jpg").symlink_to(root / "VOC2007" / "JPEGImages" / "000001.jpg")
    (root / "loop").symlink_to(root)  # would recurse forever if followed
    with DirSource(root) as src:
        assert "alias.jpg" in src.names()
        assert not any(n.startswith("loop/") for n in src.names())
        assert src.read_bytes("alias.jpg", max_size=MiB) == bytes(range(256)) * 40


def test_link_swapped_to_outside_after_listing_is_refused_on_open(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    link = root / "alias.txt"
    link.symlink_to(root / "labelmap.txt")
    src = DirSource(root)
    outside = tmp_path / "secret.txt"
    outside.write_text("x" * src.size("alias.txt"))
    link.unlink()
    link.symlink_to(outside)
    with pytest.raises(UnsafeArchiveError, match="outside") as info:
        src.open("alias.txt")
    assert info.value.member == "alias.txt"


def test_a_named_pipe_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsafeArchiveError, match="regular file") as info:
        DirSource(root)
    assert info.value.member == "pipe"


def test_file_that_grows_or_shrinks_while_read_is_an_archive_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    target = root / "labelmap.txt"
    src = DirSource(root)
    with target.open("ab") as f:
        f.write(b"more\n")
    with pytest.raises(ArchiveError, match="grew") as info:
        src.read_bytes("labelmap.txt", max_size=MiB)
    assert info.value.member == "labelmap.txt"
    target.write_bytes(b"x")
    with pytest.raises(ArchiveError, match="changed while it was read"):
        src.read_bytes("labelmap.txt", max_size=MiB)
    with src.open("labelmap.txt") as f, pytest.raises(ArchiveError, match="changed while"):
        f.read(MiB)  # a large read goes straight into the caller's buffer


def test_folder_limits_cap_entries_and_total_size(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    with pytest.raises(UnsafeArchiveError, match="entries"):
        DirSource(root, limits=Limits(max_entries=3))
    with pytest.raises(UnsafeArchiveError, match="in total"):
        DirSource(root, limits=Limits(max_total_uncompressed=10_000))
    with pytest.raises(UnsafeArchiveError, match="cap") as info:
        DirSource(root, limits=Limits(max_member_size=1000))
    assert info.value.member == "VOC2007/JPEGImages/000001.jpg"


def test_a_huge_member_streams_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    root = tmp_path / "drop"
    root.mkdir()
    with (root / "big.tfrecord").open("wb") as f:
        f.truncate(256 * MiB)  # sparse: costs no disk
    with DirSource(root) as src, src.open("big.tfrecord") as f:
        tracemalloc.start()
        total = 0
        while chunk := f.read(4 * MiB):
            total += len(chunk)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert total == 256 * MiB
    assert peak < 16 * MiB


def test_open_source_on_a_missing_path_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "nope.zip")


def test_readers_can_run_concurrently_in_threads(tmp_path: Path) -> None:
    root = _tree(tmp_path / "drop")
    src = open_source(root)
    results: dict[str, bytes] = {}

    def read(name: str) -> None:
        results[name] = src.read_bytes(name, max_size=MiB)

    threads = [threading.Thread(target=read, args=(n,)) for n in src.names()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: (root / n).read_bytes() for n in src.names()}


def test_folders_count_towards_the_entry_cap(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    for i in range(30):
        (root / f"d{i}" / "e").mkdir(parents=True)  # sixty folders, no files at all
    with pytest.raises(UnsafeArchiveError, match="more than 50 entries"):
        DirSource(root, limits=Limits(max_entries=50))
    assert DirSource(root).names() == []
