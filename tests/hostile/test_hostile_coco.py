"""Hostile COCO archives through the real CLI: each is refused cleanly or converts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hostile.harness import accepted, png, refused, zip_of

ANN = "annotations/instances_default.json"


def coco(tmp: Path, text: str | None = None, **doc: Any) -> Path:
    full = {
        "categories": [{"id": 1, "name": "cat"}],
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]}],
    } | doc
    body = text if text is not None else json.dumps(full)
    return zip_of(tmp / "in.zip", {ANN: body, "images/default/a.png": png()})


def test_100k_deep_arrays_are_a_depth_limit_error(tmp_path: Path) -> None:
    text = '{"categories": [{"id": 1, "name": "c", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]}"
    refused(tmp_path, coco(tmp_path, text), expect=("max_depth", ANN))


def test_an_integer_of_5000_digits_is_a_number_length_error(tmp_path: Path) -> None:
    text = '{"categories": [{"id": 1' + "0" * 5000 + ', "name": "c"}]}'
    refused(tmp_path, coco(tmp_path, text), expect=("max_number_length", ANN))


def test_a_lone_surrogate_in_a_file_name_is_refused(tmp_path: Path) -> None:
    image = '{"id": 1, "file_name": "a\\ud800.png", "width": 8, "height": 8}'
    text = '{"categories": [{"id": 1, "name": "c"}], "images": [' + image + '], "annotations": []}'
    refused(tmp_path, coco(tmp_path, text), expect=("surrogate", "images[0].file_name"))


def test_a_lone_surrogate_in_a_category_name_is_refused(tmp_path: Path) -> None:
    text = '{"categories": [{"id": 1, "name": "c\\ud800"}], "images": [], "annotations": []}'
    refused(tmp_path, coco(tmp_path, text), expect=("surrogate", "categories[0].name"))


def test_category_id_2_to_the_40_converts_with_renumbered_ids(tmp_path: Path) -> None:
    big = 2**40
    src = coco(
        tmp_path,
        categories=[{"id": big, "name": "c"}],
        annotations=[{"id": 1, "image_id": 1, "category_id": big, "bbox": [1, 1, 2, 2]}],
    )
    run = accepted(tmp_path, src)
    assert "1 objects" in run.stdout


def test_a_nan_image_width_is_refused(tmp_path: Path) -> None:
    text = ('{"images": [{"id": 1, "file_name": "a.png", "width": NaN, "height": 8}], '
            '"categories": [], "annotations": []}')  # fmt: skip
    refused(tmp_path, coco(tmp_path, text), expect=("images[0].width",))


def test_an_rle_mask_of_10_gigapixels_is_refused_before_decoding(tmp_path: Path) -> None:
    side = 100_000
    src = coco(
        tmp_path,
        images=[{"id": 1, "file_name": "a.png", "width": side, "height": side}],
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2],
                      "iscrowd": 1, "segmentation": {"size": [side, side], "counts": [side**2]}}],
    )  # fmt: skip
    refused(tmp_path, src, ("--to", "tfrecord", "--masks"), expect=("max_mask_pixels",))


def test_a_box_entirely_outside_its_image_is_refused(tmp_path: Path) -> None:
    src = coco(
        tmp_path,
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 2, 2]}],
    )
    refused(tmp_path, src, expect=("entirely outside",))


def test_a_polygon_30px_past_the_edge_converts_clipped(tmp_path: Path) -> None:
    seg = [[1, 1, 38, 1, 38, 6, 1, 6]]
    src = coco(
        tmp_path,
        annotations=[{"id": 1, "image_id": 1, "category_id": 1, "segmentation": seg}],
    )
    run = accepted(tmp_path, src, ("--to", "tfrecord", "--masks"))
    assert "1 objects" in run.stdout
    assert "1 warnings" in run.stdout


def test_a_cvat_coco_keypoints_export_converts_with_its_keypoints(tmp_path: Path) -> None:
    # it was published as an empty images zip, then refused; it is COCO with keypoints now
    member = "annotations/person_keypoints_default.json"
    doc = {"categories": [{"id": 1, "name": "person", "keypoints": ["nose"], "skeleton": []}],
           "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2],
                            "keypoints": [2, 2, 2], "num_keypoints": 1}]}  # fmt: skip
    src = zip_of(tmp_path / "kp.zip", {member: json.dumps(doc), "images/default/a.png": png()})
    run = accepted(tmp_path, src)
    assert "1 items, 1 objects" in run.stdout
    report = json.loads((tmp_path / "out" / "out.report.json").read_text())
    assert report["keypoints"] == {
        "person": {"num_keypoints": 1, "names": ["nose"], "edges": [], "offset": 0}
    }


def test_images_beside_an_unknown_json_are_refused_not_published_empty(tmp_path: Path) -> None:
    src = zip_of(tmp_path / "odd.zip", {"labels.json": "{}", "a.png": png()})
    refused(tmp_path, src, expect=("labels.json", "no format tfdrop knows"))


def test_the_same_images_convert_when_asked_for_as_images(tmp_path: Path) -> None:
    src = zip_of(tmp_path / "odd.zip", {"labels.json": "{}", "a.png": png()})
    assert "1 items" in accepted(tmp_path, src, ("--from", "images", "--to", "tfrecord")).stdout
