"""Scenario 3: masking/unmasking alone, in-process, for rawws and the peers' own functions.

rawws is measured on both its paths: pure Python, and its C accelerator
(rawws/_speedups.c) when it was built.

Run by the harness as `python -m benchmarks.masking` with the interpreter of
`.bench-venv` (which also imports rawws from the repository), pinned to the
server's core; prints JSON: {implementation: {size: [MB/s per round]}}.
Masking is its own inverse (RFC 6455 §5.3), so one function does both; each
implementation is checked to give back the input when applied twice.
Timing is CPU time (`time.process_time`), in rounds alternating between the
implementations; the harness reports the median round.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

SIZES = (125, 4096, 1024 * 1024)
KEY = b"\x37\xfa\x21\x3d"


def in_a_copy(mask_in_place: Callable[[bytearray], None]) -> Callable[[bytes], bytearray]:
    """A function that masks a bytearray in place, timed with the copy into one counted."""
    def masked(data: bytes) -> bytearray:
        buffer = bytearray(data)
        mask_in_place(buffer)
        return buffer
    return masked


def implementations() -> dict[str, Callable[[bytes], object]]:
    """name -> function(data) returning the masked payload (a copy, as rawws does)."""
    found: dict[str, Callable[[bytes], object]] = {}
    # Both of rawws's paths (rawws.masking), whichever this process would use:
    # mask() makes new bytes (a client's frames); mask_in_place() is how the
    # parser unmasks a big payload, in its buffer or a StreamedFrame's.
    from rawws.masking import PURE_PYTHON, accelerated
    paths = [(PURE_PYTHON, "pure Python")]
    c_path = accelerated()
    if c_path is not None:
        paths.append((c_path, "C"))
    for impl, label in paths:
        found[f"rawws ({label})"] = lambda data, impl=impl: impl.mask(data, KEY)
        found[f"rawws in place ({label})"] = in_a_copy(
            lambda buffer, impl=impl: impl.mask_in_place(buffer, KEY))
    try:
        from websockets.utils import apply_mask as ws_python
        found["websockets (pure Python fallback)"] = lambda data: ws_python(data, KEY)
    except ImportError:
        pass
    try:
        from websockets.speedups import apply_mask as ws_c
        found["websockets (C speedups)"] = lambda data: ws_c(data, KEY)
    except ImportError:
        pass
    try:   # aiohttp masks a bytearray in place
        from aiohttp._websocket.helpers import _websocket_mask_python
        found["aiohttp (pure Python fallback)"] = in_a_copy(
            lambda buffer: _websocket_mask_python(KEY, buffer))
    except ImportError:
        pass
    try:
        from aiohttp._websocket.mask import _websocket_mask_cython
        found["aiohttp (Cython)"] = in_a_copy(lambda buffer: _websocket_mask_cython(KEY, buffer))
    except ImportError:
        pass
    return found


def rate(function: Callable[[bytes], object], data: bytes, round_time: float) -> float:
    """MB/s over one round of about `round_time` CPU seconds, calls batched ~1 ms apart."""
    cpu = time.process_time
    started = cpu()
    function(data)
    single = max(cpu() - started, 1e-7)
    batch = max(1, min(20_000, int(1e-3 / single)))
    calls = 0
    started = cpu()
    wall_stop = time.monotonic() + 5 * round_time
    while True:
        for _ in range(batch):
            function(data)
        calls += batch
        elapsed = cpu() - started
        if elapsed >= round_time or time.monotonic() >= wall_stop:
            break
    return calls * len(data) / max(elapsed, 1e-9) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-time", type=float, default=0.2)
    args = parser.parse_args(argv)
    impls = implementations()
    results: dict[str, dict[str, list[float]]] = {name: {} for name in impls}
    for size in SIZES:
        data = os.urandom(size)
        for name, function in impls.items():
            once = bytes(function(data))
            if bytes(function(once)) != data or once == data:
                print(f"{name} does not mask correctly at {size} B", file=sys.stderr)
                return 1
            results[name][str(size)] = []
        for _ in range(args.rounds):
            for name, function in impls.items():
                results[name][str(size)].append(rate(function, data, args.round_time))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
