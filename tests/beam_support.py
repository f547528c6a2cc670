"""Datasets and readers for the Beam tests: small VOC zips (labels first seen late, two
subsets), the other formats made from them by ``tfdrop convert``, and the records of a
``tfdrop convert`` zip or a ``tfdrop beam`` output folder, per subset, as sorted bytes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from daemon_support import png, voc_xml
from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FormatName
from tfdrop.formats.tfrecord import subset_of
from tfdrop.stream import iter_records, iter_records_path

LABELS = ("cat", "dog", "bird", "fox", "owl")


def labels_of(i: int) -> list[str]:
    """Item ``i``'s labels: new ones appear late and out of order (ids depend on the past)."""
    return [LABELS[(i * 7 + k) % (1 + min(4, i // 15))] for k in range(i % 4)]


def voc_zip(path: Path, items: range, *, bad: frozenset[int] = frozenset()) -> Path:
    """A VOC zip of ``items`` (ids ``0000``...), every third in ``val``, the rest in ``train``;
    the items in ``bad`` have broken XML."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in items:
            xml = voc_xml(i, labels_of(i)) if i not in bad else "<annotation><filename>x"
            zf.writestr(f"Annotations/{i:04d}.xml", xml)
            zf.writestr(f"JPEGImages/{i:04d}.png", png(i))
        for subset, keep in (("train", 1), ("val", 0)):
            listed = "".join(f"{i:04d}\n" for i in items if (i % 3 != 0) == keep)
            zf.writestr(f"ImageSets/Main/{subset}.txt", listed)
    return path


def dataset(tmp: Path, fmt: FormatName, n: int = 60) -> Path:
    """A zip of ``n`` items in ``fmt`` (VOC, or VOC converted by ``tfdrop convert``)."""
    voc = voc_zip(tmp / "voc.zip", range(n))
    if fmt == "voc":
        return voc
    out = tmp / f"{fmt}.zip"
    convert(voc, out, ConvertOptions(target_format=fmt))
    return out


def zip_records(archive: Path) -> tuple[dict[str, list[bytes]], bytes]:
    """A TFRecord zip's records per subset (sorted) and its label_map.pbtxt."""
    out: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if ".tfrecord" in name:
                records = iter_records(io.BytesIO(zf.read(name)))
                out.setdefault(subset_of(name), []).extend(records)
        label_map = zf.read("label_map.pbtxt")
    return {k: sorted(v) for k, v in out.items()}, label_map


def folder_records(folder: Path) -> tuple[dict[str, list[bytes]], bytes]:
    """A ``tfdrop beam`` output folder's records per subset (sorted) and its label map."""
    out: dict[str, list[bytes]] = {}
    for path in sorted(folder.iterdir()):
        if ".tfrecord-" in path.name:
            out.setdefault(subset_of(path.name), []).extend(iter_records_path(path))
    return {k: sorted(v) for k, v in out.items()}, (folder / "label_map.pbtxt").read_bytes()


def converted(src: Path, out: Path, **options: object) -> tuple[dict[str, list[bytes]], bytes]:
    """What ``tfdrop convert`` makes of ``src`` (to TFRecord): records and label map."""
    convert(src, out, ConvertOptions(**options))  # type: ignore[arg-type]
    return zip_records(out)


def coco_zip(path: Path, categories: dict[int, str], objects: list[list[int]]) -> Path:
    """A COCO zip: one 16x16 image per entry of ``objects`` (its objects' category ids)."""
    images = [
        {"id": i + 1, "file_name": f"{path.stem}-{i}.png", "width": 16, "height": 16}
        for i in range(len(objects))
    ]
    anns = [
        {"id": k, "image_id": i + 1, "category_id": c, "bbox": [1, 1, 5, 5], "iscrowd": 0}
        for k, (i, c) in enumerate(((i, c) for i, cs in enumerate(objects) for c in cs), 1)
    ]
    cats = [{"id": k, "name": v} for k, v in categories.items()]
    doc = {"images": images, "annotations": anns, "categories": cats}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(doc))
        for i, image in enumerate(images):
            zf.writestr(f"images/default/{image['file_name']}", png(i))
    return path
