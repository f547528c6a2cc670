"""Only the optional C accelerator lives here; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tfdrop.codec._wire",
            ["src/tfdrop/codec/_wire.c"],
            optional=True,  # no compiler: install anyway, run on the pure-Python path
            extra_compile_args=["-O2"],
        )
    ]
)
