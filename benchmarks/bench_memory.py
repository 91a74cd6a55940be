"""Memory in campaign size: peak RSS of the campaign runner for n and 10*n intents (1 round).

Each size runs in a fresh process. The renderer and the LLM are the scripted fakes of :mod:`pipelines.testing.fakes`
(64x64 noise PNGs, valid JSON replies), so what is measured is the runner and the store — the part that must stream
results instead of holding them — not model weights, which do not grow with the campaign.

    .venv/bin/python -m benchmarks.bench_memory [--n 100] [--record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from benchmarks._util import add_record_options, report

CHILD = r"""
import asyncio, json, resource, sys, time
from pipelines.campaign import CampaignRunner
from pipelines.records import CampaignSpec
from pipelines.store import CampaignStore
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM

n, store = int(sys.argv[1]), sys.argv[2]
spec = CampaignSpec(name="mem", intents=[{"id": f"i{k}", "text": f"a red apple number {k}"} for k in range(n)],
                    search={"rounds": 1, "candidates_per_beam": 3, "max_images": 8}, concurrency=8)
renderer = FakeRenderer(keep_calls=False, size=64)  # 64x64 noise PNGs, nothing kept by the fakes
t0 = time.perf_counter()
status = asyncio.run(CampaignRunner(spec, spec.search_config(), renderer, ScriptedLLM(keep_requests=False),
                                    CampaignStore(store)).run())
print(json.dumps({"intents": status.intents_done, "images": status.images_rendered,
                  "seconds": time.perf_counter() - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(n: int) -> dict:
    with tempfile.TemporaryDirectory() as store:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), store], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    add_record_options(ap)
    args = ap.parse_args()
    small, large = run(args.n), run(10 * args.n)
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    rows = [[r["intents"], r["images"], r["seconds"], r["peak_rss_mib"]] for r in (small, large)]
    rows.append(["growth 10x intents", "", "", f"{growth:+.1%}"])
    report("Memory in campaign size (runner + store, fake models)", ["intents", "images", "seconds", "peak RSS MiB"],
           rows, notes="1 round, 4 prompts per intent, + baseline at equal budget; goal: <= 10% growth",
           record=args.record)


if __name__ == "__main__":
    main()
