"""Beam's pipeline options (what follows ``--`` on ``tfdrop beam``'s command line), checked
before a pipeline is built: an unknown option, a bad value, an unknown runner or a runner
missing what it needs is one :class:`PipelineOptionError` naming the option, not Beam's usage
screen or a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)
from apache_beam.runners.runner import create_runner

from tfdrop.errors import TfdropError

_DATAFLOW = "DataflowRunner"


class PipelineOptionError(TfdropError):
    """A Beam pipeline option is unknown, malformed, or missing for the runner."""

    kind = "pipeline_option"
    default_hint = "Beam's options go after a lone '--', e.g. -- --runner=DirectRunner"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise PipelineOptionError(message.replace("argument ", "", 1))


def _option_classes() -> list[type[PipelineOptions]]:
    seen: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    return list(seen.values())


def _check_flags(args: Sequence[str]) -> None:
    """Parse the flags as Beam does, refusing what Beam would ignore or print a usage for."""
    parser = _Parser(allow_abbrev=False, add_help=False)
    parser.add_value_provider_argument = parser.add_argument  # type: ignore[attr-defined]
    for cls in _option_classes():
        cls._add_argparse_args(parser)
    _known, unknown = parser.parse_known_args(list(args))
    if unknown:
        name = unknown[0].split("=", 1)[0]
        raise PipelineOptionError(
            f"unknown Beam pipeline option {name!r}",
            hint="see Beam's pipeline options (python -m apache_beam.examples.wordcount "
            "--help lists them); tfdrop's own flags go before the '--'",
        )


def _check_values(options: PipelineOptions) -> None:
    runner: Any = options.view_as(StandardOptions).runner
    if runner is not None and not isinstance(runner, str):
        return
    name = runner or "DirectRunner"
    try:
        create_runner(name)
    except (ValueError, ImportError) as exc:
        raise PipelineOptionError(
            f"--runner={name}: {str(exc).split('. Valid values')[0]}"
        ) from None
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise PipelineOptionError(
            f"--direct_num_workers={workers}: must be 0 (one per core) or more",
        )
    if name.endswith(_DATAFLOW):
        cloud = options.view_as(GoogleCloudOptions)
        for key in ("project", "region", "temp_location"):
            if not getattr(cloud, key, None):
                raise PipelineOptionError(f"--runner={name} needs --{key}", hint=_dataflow_hint())


def _dataflow_hint() -> str:
    return (
        "e.g. -- --runner=DataflowRunner --project=P --region=R "
        "--temp_location=gs://BUCKET/tmp (and pip install 'apache-beam[gcp]')"
    )


def pipeline_options(args: Sequence[str]) -> PipelineOptions:
    """Beam's options from ``args``, checked.

    Raises:
        PipelineOptionError: an unknown or malformed option, an unknown runner, or one that
            lacks what it needs (Dataflow: project, region, temp_location).
    """
    _check_flags(args)
    options = PipelineOptions(list(args))
    _check_values(options)
    return options
