"""Shared helpers for the benchmark scripts: machine description, result tables, RESULTS.md.

The table and recording functions live in the shipped :mod:`pipelines.tables` (the installed ``promptbeam world
eval`` uses them too); they are re-exported here so every benchmark keeps importing from one place.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from pipelines.tables import commit, machine, report, table

__all__ = ["RESULTS", "commit", "machine", "median_time", "report", "table"]

RESULTS = Path(__file__).with_name("RESULTS.md")


def median_time(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
