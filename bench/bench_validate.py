"""Benchmark: ``tfdrop validate`` vs TensorFlow's fastest batched read, start-up included.

Uses bench_codec.py's generated ``images-N.tfrecord`` (default 20,000 OD examples embedding
30-120 KB JPEGs, about 1.2 GB; made once in ``/tmp/tfdrop-bench``). Runs, alternating, each a
fresh process from page cache, wall time from start to exit:

- ``tfdrop``: ``tfdrop validate images-N.tfrecord`` (framing, both CRCs, the schema check, on
  every core: ranges of records on worker processes);
- ``tfdrop-1``: the same with ``--jobs 1`` (one process: the scaling);
- ``tfdrop-zip``: the same bytes as the stored member of a zip (``images-N.zip``, made once),
  as tfdrop's archives hold them (read in one pass, the member's CRC-32 too);
- ``tf``: ``tf.data.TFRecordDataset`` + ``batch(256)`` + ``tf.io.parse_example`` with the OD
  feature description, parallel map and prefetch (bench_codec.py's ``tf`` worker), with
  ``import tensorflow``;
- ``floor``: the file read once into one buffer (the read alone; ``cat`` wrote 1.2 GB into
  the benchmark's log).

Prints medians, the ratio against the issue's target (>= 5x), peak RSS and the load average.

    python bench/bench_validate.py                   # 20,000 examples
    python bench/bench_validate.py --images 200 --repeat 2
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codec import generate
from common import alternate, arguments, finish, load, ratio, read_floor, rss, tfdrop, warm

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = arguments(__doc__).parse_args()
    print(load())
    images, _ = generate(args.cache, args.images, 10)
    warm(images)
    has_tf = importlib.util.find_spec("tensorflow") is not None
    zipped = images.with_suffix(".zip")
    if not zipped.exists():
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.write(images, "train.tfrecord")
    cmds = {
        "tfdrop": tfdrop("validate", str(images)),
        "tfdrop-1": tfdrop("validate", str(images), "--jobs", "1"),
        "tfdrop-zip": tfdrop("validate", str(zipped)),
        "tf": [sys.executable, str(HERE / "bench_codec.py"), "--worker", "tf", str(images)]
        if has_tf else None,
        "floor": read_floor(images),
    }  # fmt: skip
    print(f"\nvalidate {images.name} ({images.stat().st_size / 1e6:.0f} MB):", flush=True)
    res = alternate(cmds, args.repeat, args.cache / "validate-out")
    print("\ntargets:")
    ratio(res, "tf", "tfdrop", 5.0, "faster than TF's batched read, start-up included")
    ratio(res, "tf", "tfdrop-zip", 5.0, "the same, from a zip")
    ratio(res, "tfdrop-1", "tfdrop", 1.0, "every core against one (the issue sets no target)")
    rss(res, "tfdrop", 100.0)
    finish(res, args.json)


if __name__ == "__main__":
    main()
