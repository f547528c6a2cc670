#!/usr/bin/env bash
# The project's one test command (README "Tests"): sets up everything the suite needs on a
# fresh machine (a venv with the test extras incl. tensorflow-cpu, systemd-analyze, Info-ZIP,
# chromium), runs the linters and the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,dev]'
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd) >/dev/null
  else
    echo "note: systemd-analyze is missing and cannot be installed here (needs root and apt)" >&2
  fi
fi
if ! command -v zip >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zip unzip) >/dev/null
  else
    echo "note: Info-ZIP (zip, unzip) is missing and cannot be installed here (needs root and apt)" >&2
  fi
fi
if ! command -v mkfs.ext4 >/dev/null 2>&1 || ! command -v findmnt >/dev/null 2>&1; then
  # tests/test_direct_io.py fills a real loop-mounted ext4 and reads the kernel's mount table
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq e2fsprogs util-linux) >/dev/null
  else
    echo "note: mkfs.ext4 or findmnt is missing and cannot be installed here (needs root and apt)" >&2
  fi
fi
if ! command -v chromium >/dev/null 2>&1; then
  # tests/test_preview.py opens tfdrop's preview page in a real headless browser
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: chromium is missing and cannot be installed here (needs root and apt)" >&2
  fi
fi
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# Once more on the pure-Python codec path (TFDROP_NO_C=1 keeps codec/wire.py off the C
# accelerator and codec/inflate.py on the standard zlib), so neither path goes untested: the
# codec, TFRecord and zip-reading test files only.
TFDROP_NO_C=1 exec .venv/bin/python -m pytest -q \
  tests/test_framing.py tests/test_compression.py tests/test_example.py tests/test_wire.py \
  tests/test_fast_check.py tests/test_schema.py tests/test_stream.py \
  tests/test_format_tfrecord.py tests/test_cli_tfrecord.py tests/test_interop_validate.py \
  tests/hostile/test_hostile_tfrecord.py tests/test_readback.py tests/test_units.py \
  tests/test_inflate.py tests/test_archive.py tests/test_follow.py
