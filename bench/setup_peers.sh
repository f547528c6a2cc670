#!/usr/bin/env bash
# Peers for bench/bench_voc.py: a SEPARATE venv with Datumaro (`datum
# convert -if voc -f tf_detection_api`) and tensorflow-cpu (the TF models pascal-script
# approach). Kept apart from .venv so the project's own environment never depends on them.
#
#   bash bench/setup_peers.sh            # creates /work/main/.bench-venv (or $BENCH_VENV)
#
# Prints the datum version and runs a tiny `datum convert` to prove the peer works.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BENCH_VENV:-$here/.bench-venv}"
python="${PYTHON:-python3.11}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "datumaro[cli]" tensorflow-cpu psutil pillow

"$venv/bin/datum" --version

# Smoke: a one-image VOC tree through Datumaro's tf_detection_api exporter with media.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/voc/Annotations" "$tmp/voc/JPEGImages" "$tmp/voc/ImageSets/Main"
"$venv/bin/python" - "$tmp/voc" <<'PY'
import sys
from pathlib import Path
from PIL import Image
root = Path(sys.argv[1])
Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "JPEGImages" / "a.jpg")
(root / "Annotations" / "a.xml").write_text(
    "<annotation><filename>a.jpg</filename><size><width>40</width><height>30</height>"
    "<depth>3</depth></size><object><name>cat</name><pose>Unspecified</pose>"
    "<truncated>0</truncated><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>"
    "<xmax>20</xmax><ymax>25</ymax></bndbox></object></annotation>"
)
(root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
PY
"$venv/bin/datum" convert -if voc -i "$tmp/voc" -f tf_detection_api -o "$tmp/out" -- --save-media
ls -l "$tmp/out"
echo "peers ready in $venv"
