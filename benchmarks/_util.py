"""Shared helpers for the benchmark scripts: machine description, result tables, RESULTS.md.

``benchmarks/RESULTS.md`` holds one section per table, keyed by its heading (``## <title>``; the title names the
configuration, so a run at other settings gets its own section). A script prints its tables and writes them only
when run with ``--record``; a recorded table replaces the section with the same heading, so the file keeps the
newest measurement of each benchmark, stamped with date, commit and machine.

The table helpers live in the shipped :mod:`pipelines.tables` (the installed ``promptbeam world eval`` uses them
too); they are re-exported here so every benchmark keeps importing from one place.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import time
from pathlib import Path

from pipelines import tables
from pipelines.tables import commit, machine, table

__all__ = ["RESULTS", "add_record_options", "commit", "machine", "median_time", "record_section",
           "replace_section", "report", "stamp", "table"]

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = re.compile(r"^## (.+?)\s*$")


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """``--record`` (default off: print only). ``--no-record``, the old opt-out, is still accepted and changes
    nothing."""
    parser.add_argument("--record", action="store_true",
                        help="Write the tables into benchmarks/RESULTS.md, each replacing the section with its "
                             "heading (default: print only).")
    parser.add_argument("--no-record", dest="record", action="store_false", help=argparse.SUPPRESS)


def stamp() -> str:
    """The line under a recorded heading: when, at which commit, on which machine."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now} · commit {commit()} · {machine()}"


def sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(the text before the first section, [(heading, the section's text from its ``## `` line)]). A ``## `` line
    inside a fenced code block is not a heading."""
    preamble: list[str] = []
    found: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            found.append((heading[1], [line]))
        elif found:
            found[-1][1].append(line)
        else:
            preamble.append(line)
    return "".join(preamble), [(h, "".join(lines)) for h, lines in found]


def replace_section(text: str, title: str, body: str) -> str:
    """``text`` with the section ``## title`` set to ``body``: in place of the last section with that heading (the
    earlier ones dropped), or appended when there is none."""
    preamble, found = sections(text)
    new = f"## {title}\n{body.strip()}\n\n"
    keep = [s for h, s in found if h != title.strip()]
    last = max((i for i, (h, _) in enumerate(found) if h == title.strip()), default=None)
    if last is None:
        keep.append(new)
    else:
        keep.insert(sum(1 for h, _ in found[:last] if h != title.strip()), new)
    body_text = "".join(s if s.endswith("\n\n") else s.rstrip("\n") + "\n\n" for s in keep)
    return (preamble.rstrip("\n") + "\n\n" if preamble.strip() else "") + body_text.rstrip("\n") + "\n"


def record_section(title: str, body: str, results: Path | None = None) -> Path:
    """Write ``## title``, the stamp and ``body`` into ``results`` (default: ``benchmarks/RESULTS.md``), replacing
    the section with that heading."""
    path = results or RESULTS
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    path.write_text(replace_section(old, title, f"{stamp()}\n\n{body.strip()}"))
    return path


def report(title: str, headers: list[str], rows: list[list], notes: str = "", record: bool = False,
           results: Path | None = None) -> str:
    """Print the table (with its title and notes); with ``record`` write it into RESULTS.md as the section
    ``## title`` (:func:`record_section`). Returns the table's text."""
    text = tables.report(title, headers, rows, notes, record=False)
    if record:
        record_section(title, f"{text}\n\n{notes}", results)
    return text


def median_time(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
