"""rawws's optional C accelerator, `rawws/_speedups.c`; everything else is in pyproject.toml.

`pip install .` (or `-e .`, or `make`) compiles it when a C compiler and
Python's headers are there. It is optional: where it cannot be built, pip
prints the compiler's error as a warning and installs rawws without it, and
rawws masks in pure Python (`rawws.masking` says which path it uses).
"""
import sys

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("rawws._speedups", ["rawws/_speedups.c"], optional=True,
              # -O3: gcc and clang unroll and vectorize the word loop.
              extra_compile_args=[] if sys.platform == "win32" else ["-O3"]),
])
