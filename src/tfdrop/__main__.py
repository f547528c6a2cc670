"""``python -m tfdrop``: the same as the ``tfdrop`` console script."""

from __future__ import annotations

import sys

from tfdrop._console import main

sys.exit(main())
