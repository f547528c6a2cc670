"""The ordered pool (tfdrop.pool): an error in the consumer while a worker is in the middle of
sending a large result must end the pool, not leave its manager thread waiting for the rest
of that message forever (an outside attack hung disk-full conversions with --jobs 2 so).

The pool runs in a child process with a deadline: a hang is the failure, not a slow run."""

from __future__ import annotations

import os
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


DIES_MID_MESSAGE = textwrap.dedent(
    """
    import gc, os, signal, struct, time
    from multiprocessing.queues import SimpleQueue
    from tfdrop.errors import WorkerDiedError
    from tfdrop.pool import ordered

    def nothing():
        pass

    def run(unit):
        if unit == 0:
            # the first 10 bytes of a 100,000-byte result on the pool's own results pipe, then
            # death: what a kill -9 in the middle of sending a large result leaves
            results = next(o for o in gc.get_objects() if isinstance(o, SimpleQueue))
            os.write(results._writer.fileno(), struct.pack("!i", 100_000) + b"x" * 10)
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(120)  # the other worker lives on, holding the pipe open

    if __name__ == "__main__":
        try:
            for _ in ordered(run, range(2), 2, window=4, initializer=nothing):
                pass
        except WorkerDiedError as e:
            print("died:", e, flush=True)
    """
)


def test_a_worker_killed_in_the_middle_of_a_result_is_a_dead_worker(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(DIES_MID_MESSAGE)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,  # the attacked code waited for the rest of that result for ever
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("died: a worker process reading the source died")
    assert "Traceback" not in proc.stderr


def _priority(_unit: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def _nothing() -> None:
    pass


def test_workers_run_below_their_parent_so_the_serial_stage_keeps_its_core() -> None:
    """The parent (COCO's pass 2, the in-order writer) must not lose its core to its own
    workers: each runs :data:`WORKER_NICE` below it."""
    from tfdrop.pool import WORKER_NICE, ordered

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    got = list(ordered(_priority, range(4), 2, window=4, initializer=_nothing))
    assert got == [min(mine + WORKER_NICE, 19)] * 4
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the parent's own stays


def _mark(path: str) -> None:
    Path(path).write_text("ran")


def test_a_worker_whose_parent_died_before_it_was_set_up_ends_at_once(tmp_path: Path) -> None:
    """A parent killed between the fork and a worker's set-up left that worker running for
    good: the kernel's death signal was not set yet, and its watch took the new parent for
    its own (a kill -9 in the suite, under load, waited 60 s on the worker's pipes)."""
    from tfdrop import pool

    marker = tmp_path / "ran"
    pid = os.fork()
    if pid == 0:  # the child, told of a parent that is not its parent (it died, say)
        try:
            pool._init(os.getppid() + 1_000_000, _mark, (str(marker),))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert not marker.exists()
