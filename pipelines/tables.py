"""Result tables for measurements: a plain-text table, printed and recorded with date, commit and machine.

Shipped with the package because the world's evaluation (``promptbeam world eval``) prints and records its tables
when installed too; the benchmark scripts use the same functions through ``benchmarks/_util.py``. A table is recorded
in ``benchmarks/RESULTS.md`` of a source checkout; an installed package has no such file, so there it is only printed
(with a note saying so).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

SOURCE_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"
"""``benchmarks/RESULTS.md`` of the source checkout this module runs from (absent when installed from a wheel)."""


def machine() -> str:
    """The CPU model, core count, memory and (when present) the first GPU: the machine a number was measured on."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    desc = f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc


def commit() -> str:
    """The short commit of the checkout this module runs from, or "unknown" (installed, or git missing)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with three decimals."""
    cells = [[str(h) for h in headers]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def report(title: str, headers: list[str], rows: list[list], notes: str = "", record: bool = True,
           results: Path | None = None) -> str:
    """Print the table and, with ``record``, append it (with date, commit and machine) to ``results`` (default: the
    source checkout's ``benchmarks/RESULTS.md``; when that does not exist, say so and only print)."""
    text = table(headers, rows)
    print(f"\n{title}\n{text}\n{notes}")
    if record:
        path = results or SOURCE_RESULTS
        if results is None and not path.is_file():
            print(f"(not recorded: {path} does not exist; this package is not running from a source checkout)")
            return text
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with path.open("a") as f:
            f.write(f"\n## {title}\n{stamp} · commit {commit()} · {machine()}\n\n{text}\n\n{notes}\n")
    return text
