"""Speed of the measuring world's parts on this machine: judge, rasterizer, and the shipped model's rendering.

    python -m benchmarks.bench_world_speed [--images 2000] [--record]

- judge: images/s on one core (``OMP/MKL`` threads and torch threads pinned to 1), over ground-truth drawings of all
  six tags (goal: >= 200 images/s at 64x64);
- rasterizer: scenes/s on the CPU, batch 256 (training draws on the GPU; this is the CPU fallback and the tests);
- rendering: seconds per image of the shipped pipeline through DiffusionEngine, batch 8, recommended steps and
  guidance (goal: ~0.1-0.2 s per image on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import random
import time

from benchmarks._util import add_record_options

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--render-batches", type=int, default=3)
    add_record_options(p)
    a = p.parse_args(argv)

    import torch

    from benchmarks._util import report
    from pipelines.world.judge import judge
    from pipelines.world.scenes import (TAGS, attributes_to_batch, draw_specs, rasterize, sample_layouts, sample_spec,
                                        scene_attributes)

    rows = []
    torch.set_num_threads(1)
    rng = random.Random(0)
    specs = [sample_spec(TAGS[i % len(TAGS)], rng, extra_colors=0.3) for i in range(a.images)]
    images, _ = draw_specs(specs, seed=0)
    t0 = time.perf_counter()
    passed = sum(judge(im, s).passed for im, s in zip(images, specs))
    dt = time.perf_counter() - t0
    rows.append(["judge (1 core), ground truth, all tags", a.images, dt, f"{a.images / dt:.0f} images/s",
                 f"accuracy {passed / a.images:.4f}"])

    batch = attributes_to_batch([scene_attributes(s, rng) for s in specs[:256]])
    gen = torch.Generator().manual_seed(0)
    rasterize(sample_layouts(batch, gen))
    t0 = time.perf_counter()
    for _ in range(5):
        rasterize(sample_layouts(batch, gen))
    dt = time.perf_counter() - t0
    rows.append(["rasterizer (1 thread), batch 256", 5 * 256, dt, f"{5 * 256 / dt:.0f} scenes/s", ""])

    torch.set_num_threads(os.cpu_count() or 1)
    from agents.messages import RenderRequest
    from pipelines.world.model import RECOMMENDED_GUIDANCE, RECOMMENDED_STEPS, WEIGHTS_DIR
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine

    engine = DiffusionEngine(DiffusionEngineConfig(model=str(WEIGHTS_DIR), device="cpu", local_files_only=True))

    def reqs(k: int) -> list[RenderRequest]:
        return [RenderRequest(request_id=f"{k}-{i}", prompt=specs[i].prompt, seed=i, steps=RECOMMENDED_STEPS,
                              guidance_scale=RECOMMENDED_GUIDANCE, width=64, height=64) for i in range(8)]

    engine.render(reqs(-1))  # warm-up
    times = []
    for k in range(a.render_batches):
        t0 = time.perf_counter()
        engine.render(reqs(k))
        times.append(time.perf_counter() - t0)
    best = min(times)
    rows.append([f"render (DiffusionEngine, {os.cpu_count()} threads), batch 8", 8 * a.render_batches, sum(times),
                 f"{best / 8:.3f} s/image (best batch)", f"{RECOMMENDED_STEPS} steps, guidance {RECOMMENDED_GUIDANCE}"])
    report("World speed: judge, rasterizer, shipped model (CPU)", ["part", "items", "seconds", "rate", "note"], rows,
           notes="goals: judge >= 200 images/s on one core; rendering ~0.1-0.2 s per image at batch 8",
           record=a.record)


if __name__ == "__main__":
    main()
