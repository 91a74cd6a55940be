"""The report at campaign scale: file sizes, write time and the time headless Chromium takes to open the index.

Synthetic finished campaigns (records written directly, 2 search + 2 baseline candidates per intent, 8x8 PNGs; no
models) of n and 10*n intents. Every file of the report must stay bounded per intent or per page, and the index must
open in a browser at 10k intents.

    .venv/bin/python -m benchmarks.bench_report [--n 1000] [--record]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._util import add_record_options, report


def measure(n: int, workdir: Path) -> list:
    from pipelines.report import write_report
    from pipelines.testing.synthetic import synthetic_store

    root = workdir / f"c{n}"
    root.mkdir()
    store = synthetic_store(root, n)
    t0 = time.perf_counter()
    index = Path(write_report(store))
    write_s = time.perf_counter() - t0
    pages = sorted((root / "report").glob("page-*.html"))
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    t0 = time.perf_counter()
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={workdir / 'profile'}", "--dump-dom", f"file://{index}"],
                         capture_output=True, check=True, timeout=600).stdout
    load_s = time.perf_counter() - t0
    rows = dom.count(b"<tr>") - 1
    return [n, write_s, index.stat().st_size / 2**20, len(pages), max((p.stat().st_size for p in pages), default=0) / 2**10,
            load_s, rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    add_record_options(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        small, large = measure(args.n, Path(d)), measure(10 * args.n, Path(d))
    rows = [small, large, ["ratio 10x intents", large[1] / small[1], large[2] / small[2], "", large[4] / small[4],
                           large[5] / small[5], ""]]
    report("Report at campaign scale (synthetic store, headless Chromium)",
           ["intents", "write s", "index MiB", "pages", "largest page KiB", "Chromium open index s", "rows in DOM"],
           rows, notes="index: summary + one table row per intent, no images; pages of 100 intents link images "
                       "(lazy, thumbnails above 256 px); goal: per-page size flat, index linear and opening",
           record=args.record)


if __name__ == "__main__":
    main()
