"""The ``tfdrop`` console script's entry point.

It imports the command line itself, so a Ctrl-C while the CLI is still importing (a tenth of a
second for the bigger commands) ends like one during a command: ``tfdrop: interrupted``, exit
130, never a traceback (found by the second outside attack). It imports nothing of its own
first (the builtin ``__import__``, not importlib, which pulls in ``warnings``): only the
interpreter's own start, before any tfdrop code runs, is left to Python.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    try:
        cli = __import__("tfdrop.cli", fromlist=["main"])
        code: int = cli.main(argv)
    except KeyboardInterrupt:
        print("tfdrop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # the command is done and has said so: a signal while the interpreter shuts down (tenths
    # of a second) must not turn its exit code into 130 or 143 without a word
    stops = __import__("tfdrop.cli.stops", fromlist=["ignore"])
    stops.ignore()
    return code
