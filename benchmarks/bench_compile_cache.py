"""torch.compile's cache across replica restarts (CPU, tiny model).

Two fresh processes ("replicas") each build a DiffusionEngine with ``compile='full'`` and the same
``compile_cache_dir`` and run its warm-up (every batch bucket compiled). The first finds the directory empty; the
second, like a restarted replica on the same volume, loads inductor's compiled graphs from it. Reported: warm-up
seconds, graphs compiled, inductor's FX-graph cache hits and misses, and the restarted replica's warm-up over the first.

    PYTHONPATH=. python -m benchmarks.bench_compile_cache            # inductor: minutes on 2 CPU cores
    PYTHONPATH=. python -m benchmarks.bench_compile_cache --backend eager   # smoke (no inductor cache)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._util import add_record_options, report


def replica(model: str, cache: str, backend: str, max_batch: int) -> None:
    """One replica's start: load, compile every bucket, print what it cost as JSON."""
    from torch._dynamo.utils import counters

    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine

    engine = DiffusionEngine(DiffusionEngineConfig(model=model, device="cpu", compile="full", compile_backend=backend,
                                                   max_batch_size=max_batch, compile_cache_dir=cache))
    seconds = engine.warmup(64, 64, steps=1)
    engine.shutdown()
    print(json.dumps({"seconds": sum(seconds.values()), "graphs": engine.compiled_graphs(),
                      "hits": counters["inductor"]["fxgraph_cache_hit"],
                      "misses": counters["inductor"]["fxgraph_cache_miss"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="inductor", choices=["inductor", "eager"])
    ap.add_argument("--max-batch", type=int, default=1, help="max_batch_size: buckets are powers of two up to it")
    add_record_options(ap)
    ap.add_argument("--replica", nargs=2, metavar=("MODEL", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replica:
        replica(*args.replica, args.backend, args.max_batch)
        return

    from serving.tiny_models import make_tiny_diffusion

    with tempfile.TemporaryDirectory() as tmp:
        model, cache = make_tiny_diffusion(Path(tmp) / "model"), Path(tmp) / "compile-cache"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        runs = []
        for _ in ("first start", "restart"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_compile_cache", "--backend", args.backend,
                                  "--max-batch", str(args.max_batch), "--replica", str(model), str(cache)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    first, again = runs
    report(
        f"Compile cache across a replica restart (CPU, tiny SD, compile='full', {args.backend})",
        ["replica", "warm-up s", "graphs compiled", "FX-graph cache hits", "misses"],
        [["first start (empty cache dir)", first["seconds"], first["graphs"], first["hits"], first["misses"]],
         ["restart (same cache dir)", again["seconds"], again["graphs"], again["hits"], again["misses"]],
         ["restart / first start", again["seconds"] / first["seconds"], "", "", ""]],
        notes=f"buckets up to max_batch_size {args.max_batch}, 64², 1 step; dynamo still traces on a restart (the "
              "cache skips inductor's code generation and C++/Triton compilation)",
        record=args.record,
    )


if __name__ == "__main__":
    main()
