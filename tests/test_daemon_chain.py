"""Chained pipelines: one pipeline's output folder is the next one's drop folder."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from daemon_support import Daemon, files, png, wait_until, write_config
from tfdrop.config import known_formats

CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>chain</name><labels>
    <label><name>cat</name><attributes/></label>
    <label><name>dog</name><attributes/></label>
  </labels></task></meta>
  <image id="0" name="img0.png" width="16" height="16">
    <box label="cat" occluded="0" xtl="1" ytl="2" xbr="8" ybr="9" z_order="0"></box>
    <box label="dog" occluded="1" xtl="4" ytl="4" xbr="16" ybr="12" z_order="0"></box>
  </image>
  <image id="1" name="img1.png" width="16" height="16">
    <box label="dog" occluded="0" xtl="0" ytl="0" xbr="5" ybr="5" z_order="0"></box>
  </image>
</annotations>
"""


def _cvat_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations.xml", CVAT_XML)
        zf.writestr("images/img0.png", png(1))
        zf.writestr("images/img1.png", png(2))
    return buf.getvalue()


def test_cvat_to_tfrecord_to_voc_through_a_shared_folder(tmp_path: Path) -> None:
    readable, writable = known_formats()
    assert "cvat" in readable
    assert "voc" in writable
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {"name": "cvat-tf", "drop": "in", "output": "mid", "from": "cvat", "to": "tfrecord"},
            {
                "name": "tf-voc",
                "drop": "mid",
                "output": "final",
                "from": "tfrecord",
                "to": "voc",
                "patterns": ["*.zip"],
            },
        ],
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in" / "task.zip").write_bytes(_cvat_zip())
        daemon.wait_event("archive_published", 2, timeout=30)
        wait_until(lambda: files(tmp_path / "mid" / "done") == ["task.zip"])
        # the first stage's sidecars stay in the shared folder; only its archive moved on
        assert files(tmp_path / "mid") == ["task.label_map.pbtxt", "task.report.json"]
        assert files(tmp_path / "final") == [
            "task.label_map.pbtxt",
            "task.report.json",
            "task.zip",
        ]
        with zipfile.ZipFile(tmp_path / "final" / "task.zip") as zf:
            names = zf.namelist()
            xml = [n for n in names if n.startswith("Annotations/") and n.endswith(".xml")]
            assert len(xml) == 2
            assert any(n.startswith("JPEGImages/") for n in names)
            text = zf.read(sorted(xml)[0]).decode()
        assert "<name>cat</name>" in text
        assert "<name>dog</name>" in text
        published = [e["pipeline"] for e in daemon.named("archive_published")]
        assert published == ["cvat-tf", "tf-voc"]
    finally:
        assert daemon.stop() == 0
