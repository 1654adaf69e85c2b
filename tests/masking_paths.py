"""Run tests on each masking implementation: pure Python, and C when it is built.

rawws uses one implementation of `rawws.masking` for the whole process (the
C one when it was built, unless RAWWS_PURE_PYTHON is set). A test module
that should pass on both writes

    from tests.masking_paths import masking_path  # noqa: F401 (a fixture)
    pytestmark = pytest.mark.usefixtures("masking_path")

and each of its tests runs once per implementation, ids `[pure]` and `[C]`.
A test that takes `masking_path` as an argument gets the `Implementation`.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rawws import masking

FUNCTIONS = ("mask", "mask_chunks", "mask_in_place", "masked_slice")

ACCELERATED = masking.accelerated()
IMPLEMENTATIONS = [masking.PURE_PYTHON] + ([ACCELERATED] if ACCELERATED is not None else [])
IDS = ["pure" if impl is masking.PURE_PYTHON else "C" for impl in IMPLEMENTATIONS]


@contextmanager
def using(impl: masking.Implementation) -> Iterator[masking.Implementation]:
    """Make every loaded rawws module use `impl`'s masking functions, then put back the old.

    Modules hold the functions under their public names (`rawws.protocol`
    imports `mask_chunks`; `rawws.frames` calls `masking.mask_in_place`), so
    each public module attribute that is one of the active functions is
    swapped for `impl`'s function of the same name.
    """
    active = masking.ACTIVE
    swaps = [(getattr(active, name), getattr(impl, name)) for name in FUNCTIONS]
    undo: list[tuple[object, str, object]] = []
    modules = [module for name, module in list(sys.modules.items())
               if module is not None and (name == "rawws" or name.startswith("rawws."))]
    try:
        for module in modules:
            for attr, value in list(vars(module).items()):
                if attr.startswith("_"):
                    continue   # the pure functions' own names, and module internals
                for old, new in swaps:
                    if value is old and old is not new:
                        setattr(module, attr, new)
                        undo.append((module, attr, old))
        masking.ACTIVE, masking.IMPLEMENTATION = impl, impl.name
        yield impl
    finally:
        masking.ACTIVE, masking.IMPLEMENTATION = active, active.name
        for module, attr, old in reversed(undo):
            setattr(module, attr, old)


@pytest.fixture(params=IMPLEMENTATIONS, ids=IDS)
def masking_path(request: pytest.FixtureRequest) -> Iterator[masking.Implementation]:
    """The test runs with this implementation of rawws.masking in use everywhere."""
    with using(request.param) as impl:
        yield impl
