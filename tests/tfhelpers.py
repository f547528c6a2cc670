"""TensorFlow helpers for the format tests: the seed's feature description and a reader that
parses every ``.tfrecord`` member of an output zip with real TensorFlow (SPEC.md "Record
payload"). Imported like conftest: ``from tfhelpers import tf_records``."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any


def seed_features(tf: ModuleType, *, masks: bool = False) -> dict[str, Any]:
    """The seed's feature description (TF models' OD API decoder keys), ``masks`` adds
    ``image/object/mask``."""
    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    out = {
        "image/filename": fixed([], tf.string),
        "image/source_id": fixed([], tf.string),
        "image/height": fixed([], tf.int64),
        "image/width": fixed([], tf.int64),
        "image/encoded": fixed([], tf.string),
        "image/format": fixed([], tf.string),
        "image/object/bbox/xmin": var(tf.float32),
        "image/object/bbox/xmax": var(tf.float32),
        "image/object/bbox/ymin": var(tf.float32),
        "image/object/bbox/ymax": var(tf.float32),
        "image/object/class/label": var(tf.int64),
        "image/object/class/text": var(tf.string),
    }
    if masks:
        out["image/object/mask"] = var(tf.string)
    return out


def tf_records(
    tf: ModuleType,
    archive: Path,
    tmp: Path,
    *,
    masks: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every record of every .tfrecord member, parsed by TensorFlow with :func:`seed_features`
    (plus ``extra`` features), in archive order. Lists become Python lists, scalars numpy
    values; each record also carries ``"subset"``, its member's name without ``.tfrecord``."""
    desc = seed_features(tf, masks=masks) | dict(extra or {})
    out: list[dict[str, Any]] = []
    with zipfile.ZipFile(archive) as zf:
        members = [n for n in zf.namelist() if n.endswith(".tfrecord")]
        assert members
        for name in members:
            path = tmp / f"tf-{name}"
            path.write_bytes(zf.read(name))
            for raw in tf.data.TFRecordDataset(str(path)):
                ex = tf.io.parse_single_example(raw, desc)
                dense = {
                    k: tf.sparse.to_dense(v).numpy().tolist()
                    if hasattr(v, "indices")
                    else v.numpy()
                    for k, v in ex.items()
                }
                out.append(dense | {"subset": name.removesuffix(".tfrecord")})
    return out


def tf_records_by_name(tf: ModuleType, archive: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """:func:`tf_records` keyed by ``subset/filename``."""
    return {
        f"{r['subset']}/{r['image/filename'].decode()}": r for r in tf_records(tf, archive, tmp)
    }
