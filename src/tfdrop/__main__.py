"""``python -m tfdrop``: the same as the ``tfdrop`` console script."""

from __future__ import annotations

import sys

from tfdrop.cli import main

sys.exit(main())
