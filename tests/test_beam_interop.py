"""tfdrop's Beam shards and the TensorFlow ecosystem's: real TensorFlow parses every shard
``tfdrop beam`` writes with the seed's feature description; Beam's own ``ReadFromTFRecord``
reads them; and tfdrop reads shards written by Beam's ``WriteToTFRecord`` (the way TF models'
dataset tools and TFDS write them, ``-SSSSS-of-NNNNN`` names)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_support import converted, folder_records, voc_zip
from tfdrop.beam import BeamOptions, convert_dataset
from tfdrop.cli import main
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.stream import iter_records_path
from tfhelpers import seed_features

pytestmark = pytest.mark.interop


def _beam_output(tmp: Path, n: int, shards: int) -> Path:
    src = voc_zip(tmp / "voc.zip", range(n))
    convert_dataset([str(src)], str(tmp / "out"), BeamOptions(shards=shards))
    return tmp / "out"


def test_tensorflow_parses_every_shard_with_the_seed_schema(tmp_path: Path, tf: ModuleType) -> None:
    out = _beam_output(tmp_path, 40, 3)
    label_map = parse_label_map((out / "label_map.pbtxt").read_bytes())
    shards = sorted(out.glob("*.tfrecord-*"))
    assert len(shards) == 6  # train and val, 3 each
    desc = seed_features(tf)
    seen = 0
    for shard in shards:
        for raw in tf.data.TFRecordDataset(str(shard)):
            ex = tf.io.parse_single_example(raw, desc)
            ids = tf.sparse.to_dense(ex["image/object/class/label"]).numpy().tolist()
            texts = tf.sparse.to_dense(ex["image/object/class/text"]).numpy().tolist()
            assert [label_map.id_of(t.decode()) for t in texts] == ids
            assert tf.io.decode_png(ex["image/encoded"]).shape[:2] == (16, 16)
            seen += 1
    assert seen == 40


def test_beams_read_from_tfrecord_reads_tfdrops_shards(tmp_path: Path) -> None:
    out = _beam_output(tmp_path, 30, 2)
    want = sorted(r for p in out.glob("*.tfrecord-*") for r in iter_records_path(p))
    assert len(want) == 30
    with beam.Pipeline() as p:
        records = p | beam.io.ReadFromTFRecord(str(out / "*.tfrecord-*"))
        assert_that(records, equal_to(want))  # raises in the pipeline when they differ


def test_tfdrop_reads_shards_written_by_beams_write_to_tfrecord(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(30))
    want, label_map = converted(src, tmp_path / "want.zip")
    shards = tmp_path / "beam"
    shards.mkdir()
    (shards / "label_map.pbtxt").write_bytes(label_map)
    with beam.Pipeline() as p:
        _ = (
            p
            | beam.Create(want["train"])
            | beam.io.WriteToTFRecord(str(shards / "train.tfrecord"), num_shards=3)
        )
    names = sorted(p.name for p in shards.glob("train.tfrecord-*"))
    assert names == [f"train.tfrecord-0000{i}-of-00003" for i in range(3)]
    assert main(["validate", str(shards / names[0])]) == 0
    assert main(["beam", "--to", "tfrecord", "-q", "-o", str(tmp_path / "out"), str(shards)]) == 0
    got, got_map = folder_records(tmp_path / "out")
    assert (got, got_map) == ({"train": want["train"]}, label_map)
