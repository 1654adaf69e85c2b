"""rawws benchmarks: `python -m bench` (from the repository root) prints figures.

Each benchmark is a generator of `Result` rows (name, figure, unit, notes),
printed as a table as they come. Figures are measured, never asserted: a
benchmark that cannot run (a missing optional tool, a server that would not
start) prints a row saying so and the run goes on.

Every loop is bounded twice, by a count and by a time budget, and all traffic
stays on 127.0.0.1. See docs/performance.md for what each figure means.

    python -m bench                 # everything: about 40 s on 2 cores, under 2 minutes
    python -m bench --quick         # a few seconds: a smoke check
    python -m bench parse echo      # only these
    python -m bench --list
"""
