"""The ordered pool (tfdrop.pool): an error in the consumer while a worker is in the middle of
sending a large result must end the pool, not leave its manager thread waiting for the rest
of that message forever (an outside attack hung disk-full conversions with --jobs 2 so).

The pool runs in a child process with a deadline: a hang is the failure, not a slow run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from tfdrop.pool import ordered

    def nothing():
        pass

    def run(unit):
        if unit == 0:
            return b"x"
        return bytes(int(sys.argv[1]))  # many pipe-fulls: the kill lands mid-message

    def main():
        results = ordered(run, range(40), 2, window=4, initializer=nothing)
        try:
            for i, result in enumerate(results):
                if i == 0:
                    time.sleep(0.3)  # the other worker is sending its large result now
                    raise OSError(28, "No space left on device")
        except OSError:
            print("stopped", flush=True)

    if __name__ == "__main__":
        main()
    """
)


def test_an_error_while_a_worker_sends_a_large_result_ends_the_pool(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for size in (200_000, 5_000_000, 60_000_000):
        proc = subprocess.run(
            [sys.executable, str(script), str(size)],
            capture_output=True,
            text=True,
            timeout=60,  # the attacked code never returned here
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "stopped\n"
        assert "Traceback" not in proc.stderr
