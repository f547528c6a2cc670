"""Hostile YOLO archives through the real CLI: each is refused cleanly or converts."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

from hostile.harness import accepted, png, refused


def ultralytics(tmp: Path, yaml_text: str, label: str = "0 0.5 0.5 0.2 0.2\n") -> Path:
    path = tmp / "in.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.yaml", yaml_text)
        zf.writestr("images/train/a.png", png())
        zf.writestr("labels/train/a.txt", label)
    return path


# 400 bytes: nine levels of nine aliases expand to 9^9 strings
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_an_alias_bomb_in_kpt_shape_is_refused_at_once(tmp_path: Path) -> None:
    src = ultralytics(tmp_path, "names: [a]\n" + BOMB + "kpt_shape: *i\n")
    refused(tmp_path, src, expect=("max_yaml_nodes", "data.yaml"))


def test_an_inf_names_key_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, ultralytics(tmp_path, "names: {.inf: a}\n"), expect=("not a class index",))


def test_50k_deep_yaml_lists_are_a_depth_error(tmp_path: Path) -> None:
    src = ultralytics(tmp_path, "names: [a]\nx: " + "[" * 50_000 + "]" * 50_000 + "\n")
    refused(tmp_path, src, expect=("max_depth", "data.yaml"))


def test_non_string_names_are_refused(tmp_path: Path) -> None:
    refused(tmp_path, ultralytics(tmp_path, "names: [[1, 2]]\n"), expect=("not a label name",))


def test_a_huge_class_index_converts(tmp_path: Path) -> None:
    big = 10**20
    src = ultralytics(tmp_path, f"names: {{{big}: a}}\n", f"{big} 0.5 0.5 0.2 0.2\n")
    assert "1 objects" in accepted(tmp_path, src).stdout


def test_a_label_line_of_a_million_numbers_is_refused(tmp_path: Path) -> None:
    rnd = random.Random(1)  # varied digits: a repetitive line is stopped by the zip ratio cap
    line = "0 " + " ".join(f"{rnd.random():.6f}" for _ in range(1_000_000)) + "\n"
    src = ultralytics(tmp_path, "names: [a]\n", line)
    refused(tmp_path, src, expect=("max_values_per_feature", "labels/train/a.txt"))


def test_data_yaml_pointing_outside_the_archive_is_refused(tmp_path: Path) -> None:
    src = ultralytics(tmp_path, "path: /etc\ntrain: ../../../../etc/passwd\nnames: [a]\n")
    refused(tmp_path, src, expect=("data.yaml", "train"))
