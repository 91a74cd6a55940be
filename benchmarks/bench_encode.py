"""Image encoding off the renderer's critical path (CPU, a tiny model with 512² output).

Two tables:

1. The cost of each output format per 512² image (what `DiffusionEngineConfig.image_format` and its levels choose
   between), one thread and a pool of threads: Pillow releases the GIL while it compresses, so the pool's time per
   image falls with its threads.
2. The overlap: a stream of batches rendered back-to-back as the diffusion deployment issues them (the next batch
   starts when the previous pipeline call returns), by
   (a) a plain diffusers loop (PIL images, nothing encoded): the reference,
   (b) the engine encoding inside the call (`encode_workers=0`, the renderer as it was), and
   (c) the engine with the encoder pool (the default).
   `hidden` is the share of the encoding time that (c) takes off the critical path: (t_b - t_c) / (t_b - t_a).
   `--torch-threads 1` leaves a core to the encoders, as a GPU leaves the CPU free while it computes.

The tiny model (serving.tiny_models.TINY_SD_512) has a small UNet and a narrow 16x-upsampling VAE, so a 512² image
costs little compute and the encoding weighs as it does on a GPU. On 2 CPU cores the pipeline call and the encoder
threads share the cores, which a GPU does not: the overlap here is a lower bound.

    PYTHONPATH=. python -m benchmarks.bench_encode                # full run, appended to benchmarks/RESULTS.md
    PYTHONPATH=. python -m benchmarks.bench_encode --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks._util import add_record_options, median_time, report

FORMATS = {  # label: config fields
    "png (level 6, default)": {"image_format": "png"},
    "png level 1": {"image_format": "png", "png_compress_level": 1},
    "webp lossless (method 4)": {"image_format": "webp"},
    "webp lossless method 0": {"image_format": "webp", "webp_method": 0},
    "jpeg quality 90": {"image_format": "jpeg", "jpeg_quality": 90},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batches", type=int, default=4, help="batches per stream")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4, help="encoder threads of the pool")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch's intra-op threads; 1 leaves the other core to the encoders, as a GPU leaves the CPU")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one rep (CI)")
    add_record_options(ap)
    args = ap.parse_args()
    if args.smoke:
        args.size, args.batch, args.batches, args.reps = 128, 2, 2, 1

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from agents.messages import RenderRequest
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine
    from serving.engines.diffusion import encode_image
    from serving.tiny_models import TINY_SD_512, build_sd_pipeline

    pipe = build_sd_pipeline(**TINY_SD_512)
    base = DiffusionEngineConfig(model="tiny-sd-512", device="cpu", max_batch_size=args.batch)
    stream = [[RenderRequest(request_id=f"b{b}-{i}", prompt=f"a red apple, variant {b}.{i}", seed=b * 100 + i,
                             steps=args.steps, width=args.size, height=args.size) for i in range(args.batch)]
              for b in range(args.batches)]
    images = args.batch * args.batches

    # 1. Encode cost per format, on this model's own output
    engine = DiffusionEngine.from_pipeline(pipe, base)
    sample = engine._generate(stream[0]).pixels.numpy()
    engine.shutdown()
    rows = []
    for label, fields in FORMATS.items():
        cfg = base.model_copy(update=fields)
        one = median_time(lambda: [encode_image(px, cfg) for px in sample], args.reps) / len(sample)
        with ThreadPoolExecutor(args.workers) as pool:
            pooled = median_time(lambda: list(pool.map(lambda px: encode_image(px, cfg), sample)), args.reps)
        rows.append([label, one * 1e3, pooled / len(sample) * 1e3, len(encode_image(sample[0], cfg)) / 1024])
    report(
        f"Image encoding per {args.size}² image (CPU, tiny model output)",
        ["format", "ms/image, 1 thread", f"ms/image, pool of {args.workers}", "KiB/image"],
        rows,
        notes=f"{len(sample)} images of serving.tiny_models.TINY_SD_512 ({args.steps} steps, random weights: "
              "noise-like, which compresses worse than photographs); medians of "
              f"{args.reps} after a warm-up; torch threads {torch.get_num_threads()}",
        record=args.record,
    )

    # 2. The overlap, streamed as the deployment issues batches
    def plain():
        for batch in stream:
            gens = [torch.Generator().manual_seed(r.seed) for r in batch]
            with torch.inference_mode():
                pipe(prompt=[r.prompt for r in batch], num_inference_steps=args.steps, guidance_scale=0.0,
                     width=args.size, height=args.size, generator=gens, output_type="pil")

    def served(engine):
        def run():
            futures = []
            for batch in stream:  # the next batch starts as soon as the previous pipeline call returns
                futures += engine.start_render(batch).futures
            return [f.result() for f in futures]
        return run

    inline = DiffusionEngine.from_pipeline(pipe, base.model_copy(update={"encode_workers": 0}))
    pooled = DiffusionEngine.from_pipeline(pipe, base.model_copy(update={"encode_workers": args.workers}))
    paths = {"plain": plain, "inline": served(inline), "pool": served(pooled)}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for fn in paths.values():
        fn()  # warm-up
    for _ in range(args.reps):  # interleaved, so that load from elsewhere on a shared machine hits all three alike
        for key, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    t_plain, t_inline, t_pool = (statistics.median(times[k]) for k in paths)
    busy = pooled.busy_fraction()
    inline.shutdown()
    pooled.shutdown()
    hidden = (t_inline - t_pool) / (t_inline - t_plain) if t_inline > t_plain else float("nan")
    report(
        f"Encoding overlap (CPU, tiny model, {args.size}², batch {args.batch}, {args.steps} steps, PNG)",
        ["path", "images", "median s", "images/s", "x plain"],
        [["(a) plain diffusers loop, nothing encoded", images, t_plain, images / t_plain, 1.0],
         ["(b) engine, PNG encoded inside the call", images, t_inline, images / t_inline, t_plain / t_inline],
         [f"(c) engine, encoder pool of {args.workers}", images, t_pool, images / t_pool, t_plain / t_pool],
         ["(c) over (b)", "", "", "", t_inline / t_pool],
         ["hidden: (t_b - t_c) / (t_b - t_a)", "", "", "", hidden]],
        notes=f"{args.batches} batches streamed back-to-back per rep, medians of {args.reps} interleaved reps after a "
              f"warm-up; the pooled engine's busy fraction over its life (idle while the others ran) {busy:.2f}; "
              f"{torch.get_num_threads()} torch thread(s) and "
              f"the encoder threads share {os.cpu_count()} cores (on a GPU the device computes and the CPU is free to "
              "encode: --torch-threads 1 comes closer to that); goal on GPU: engine >= 0.97x plain",
        record=args.record,
    )


if __name__ == "__main__":
    main()
