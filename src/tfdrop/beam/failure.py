"""tfdrop's errors across a Beam runner, whole.

A runner does not hand a worker's exception back as it was raised: Beam rebuilds it as
``type(exn)(exn.args[0] + " [while running 'step']")`` (the fields and the hint are lost), and a
runner with worker processes (DirectRunner's ``multi_processing``, Flink, Spark, Dataflow) hands
back only the worker's traceback as text. So every step of tfdrop's pipeline runs inside
:func:`carried`: a :class:`~tfdrop.errors.TfdropError` leaves the step as a
:class:`CarriedError` whose message is the error's ``to_dict()`` as JSON after a marker, which
survives both (Beam's rebuild appends to it; a traceback's text contains it).
:func:`recover` finds it again in whatever the runner raised and rebuilds the original error
with its location fields and hint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, ParamSpec, TypeVar

from tfdrop.errors import TfdropError, error_from_dict

MARK: Final = "tfdrop-error:"

_P = ParamSpec("_P")
_R = TypeVar("_R")


class CarriedError(Exception):
    """A TfdropError on its way out of a Beam step (its ``to_dict()`` in the message)."""


@contextmanager
def carried() -> Iterator[None]:
    """Run a step's body; a TfdropError leaves it as a :class:`CarriedError`."""
    try:
        yield
    except TfdropError as exc:
        raise CarriedError(MARK + json.dumps(exc.to_dict(), sort_keys=True)) from None


def carrying(step: Callable[_P, _R]) -> Callable[_P, _R]:
    """A plain-function step (``beam.Map``, ``FlatMap``) whose body runs inside
    :func:`carried`; use it as the decorator, so the module's name is the carrying one (a
    worker unpickles the step by that name)."""

    @functools.wraps(step)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with carried():
            return step(*args, **kwargs)

    return run


def recover(text: str) -> TfdropError | None:
    """The error carried in ``text`` (a runner's exception message or a worker's traceback),
    rebuilt; None when it carries none. The first marker that decodes wins: it is the outer
    one (an error message quoting a marker has it JSON-escaped inside the outer one)."""
    decoder = json.JSONDecoder()
    start = text.find(MARK)
    while start >= 0:
        try:
            data, _ = decoder.raw_decode(text, start + len(MARK))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return error_from_dict(data)
        start = text.find(MARK, start + 1)
    return None
