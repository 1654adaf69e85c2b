"""The optional C masking (rawws/_speedups.c): built where it can be, chosen, and forced off.

`rawws.masking` uses the C functions when `rawws._speedups` was built and
RAWWS_PURE_PYTHON is not set, and says which path it took in a DEBUG log
line and in `python -m rawws.echo --version`. That a path gives the right
bytes is tests/test_masking.py's job; here, which path a process takes.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from rawws import masking

ROOT = Path(__file__).resolve().parent.parent
BUILT = masking.accelerated() is not None
needs_c = pytest.mark.skipif(not BUILT, reason="rawws._speedups is not built here")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` from the repository, with RAWWS_PURE_PYTHON only if given in `env`."""
    environ = {key: value for key, value in os.environ.items() if key != "RAWWS_PURE_PYTHON"}
    environ["PYTHONPATH"] = str(ROOT) + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60, check=True)


def implementation_in_a_new_process(**env: str) -> str:
    return run_python("import rawws.masking; print(rawws.masking.IMPLEMENTATION)",
                      **env).stdout.strip()


def test_the_extension_is_built_wherever_a_c_compiler_and_python_headers_are():
    # pip builds it (setup.py), but only warns when it cannot: a test run
    # that quietly fell back to pure Python on a machine with a compiler
    # would test one path twice.
    # The compiler setuptools uses: $CC, else the one Python was built with.
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[0]
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(compiler) is None or not headers.exists():
        pytest.skip("no C compiler or no Python headers: rawws runs its pure-Python masking")
    assert BUILT, "a C compiler is here, yet rawws._speedups was not built: see pip's output"


@needs_c
def test_a_new_process_masks_in_c_by_default():
    assert implementation_in_a_new_process() == "C"


@pytest.mark.parametrize("value", ["1", "yes"])
def test_rawws_pure_python_selects_the_pure_path(value):
    assert implementation_in_a_new_process(RAWWS_PURE_PYTHON=value) == "pure Python"


@needs_c
@pytest.mark.parametrize("value", ["", "0"])
def test_rawws_pure_python_empty_or_0_leaves_the_c_path(value):
    assert implementation_in_a_new_process(RAWWS_PURE_PYTHON=value) == "C"


def test_rawws_pure_python_does_not_even_load_the_extension():
    # A broken build can be worked around with the variable alone.
    code = "import sys, rawws.frames; print('rawws._speedups' in sys.modules)"
    assert run_python(code, RAWWS_PURE_PYTHON="1").stdout.strip() == "False"


def test_one_debug_line_names_the_path():
    code = ("import logging; logging.basicConfig(level=logging.DEBUG, format='%(name)s %(message)s')\n"
            "import rawws.protocol")
    pure = run_python(code, RAWWS_PURE_PYTHON="1").stderr.splitlines()
    assert [line for line in pure if "masking" in line] == ["rawws.masking masking in pure Python"]
    if BUILT:
        c = run_python(code).stderr.splitlines()
        assert [line for line in c if "masking" in line] == ["rawws.masking masking in C"]


def test_echo_version_prints_the_version_and_the_masking_path():
    code = "from rawws.echo import main; main(['--version'])"
    pure = run_python(code, RAWWS_PURE_PYTHON="1").stdout.strip()
    assert pure.startswith("rawws ") and pure.endswith(", masking in pure Python")
    if BUILT:
        assert run_python(code).stdout.strip().endswith(", masking in C")


@needs_c
def test_the_c_functions_refuse_bad_arguments_cleanly():
    from rawws import _speedups
    with pytest.raises(ValueError):
        _speedups.mask(b"abc", b"abc")                    # a key of 3 bytes
    with pytest.raises(ValueError):
        _speedups.masked_slice(b"abc", 2, 5, b"abcd")     # past the end
    with pytest.raises(ValueError):
        _speedups.masked_slice(b"abc", 2, 1, b"abcd")     # end before start
    with pytest.raises(ValueError):
        _speedups.mask_in_place(bytearray(3), b"abcd", -1)
    with pytest.raises((BufferError, TypeError)):
        _speedups.mask_in_place(b"read-only", b"abcd")    # bytes cannot be masked in place
    with pytest.raises(TypeError):
        _speedups.mask(b"abc")
    with pytest.raises(TypeError):
        _speedups.mask_in_place(bytearray(3), b"abcd", 0, 3, 4)

