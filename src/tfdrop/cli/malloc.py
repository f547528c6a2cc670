"""glibc malloc thresholds for the commands that stream gigabytes.

Every 4 MiB read and 1 MiB inflate step returns fresh ``bytes``; glibc's dynamic mmap
threshold hands many of them out of new pages and gives them back when freed (its trim
threshold), so the kernel faults them in again and again: on this project's VM a validate of
1.2 GB spent 0.8-3.5 s in the kernel, 0.44 s with the thresholds fixed (bench/README.md,
"Why the -tuned runs"). Fixed thresholds keep at most :data:`TRIM` bytes of freed heap, so
the peak RSS stays as it was (measured: 38 MB and 71 MB, unchanged).
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

_M_TRIM_THRESHOLD: Final = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD: Final = -3
MMAP: Final = 8 << 20
"""Allocations at least this large get pages of their own (not the 1-4 MiB chunks)."""
TRIM: Final = 32 << 20
"""Freed heap above this is returned to the system."""


def fix_thresholds() -> bool:
    """Fix the thresholds for this process (and the workers it forks); False where the C
    library is not glibc or the user set their own (``GLIBC_TUNABLES``)."""
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM))
