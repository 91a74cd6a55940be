"""GPU renderer: the project's DiffusionEngine vs a plain diffusers loop at equal batch, and each speed option on/off.

Random weights built from real architecture configs on the device (compute does not depend on the weights). Reports
images/s, the engine/plain ratio and MFU = FLOPs (counted with torch.utils.flop_counter over one pipeline call) / time
/ peak. ``--tiny`` runs the tiny CPU model instead (what CI runs, to keep the script working).

Architectures (``serving.tiny_models``): ``sd15`` (860M UNet, CLIP ViT-L/14, SD VAE; 512², 25 steps, CFG 7.5, fp16)
and ``sdxl`` (2.6B UNet, CLIP ViT-L + bigG, SDXL VAE; 1024², 25 steps, CFG 5, bf16). ``flux`` runs tiny only: the
full-size FLUX.1-schnell builder (12B transformer + T5-XXL, built directly on the GPU) is not written yet.

On a lent GPU machine (torch + diffusers there; promptbeam's own code travels with the tree):
    PYTHONPATH=. python -m benchmarks.gpu.bench_renderer --arch sd15 --batch 8 --reps 3
    PYTHONPATH=. python -m benchmarks.gpu.bench_renderer --arch sdxl --batch 8 --reps 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._util import report

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16/fp16 tensor-core peaks

OPTION_SETS = {
    "engine (same settings)": {},
    "+ channels_last": {"channels_last": True},
    "+ fused QKV": {"fuse_qkv": True},
    "+ torch.compile regional": {"compile": "regional"},
    "+ all of the above": {"channels_last": True, "fuse_qkv": True, "compile": "regional"},
}


ARCHS = {  # arch: (tiny builder, real builder, size, steps, guidance, dtype)
    "sd15": ("make_tiny_diffusion", "make_random_sd15", 512, 25, 7.5, "float16"),
    "sdxl": ("make_tiny_sdxl", "make_random_sdxl", 1024, 25, 5.0, "bfloat16"),
    "flux": ("make_tiny_flux", None, 1024, 4, 0.0, "bfloat16"),  # full-size FLUX.1-schnell builder: not yet
}


def build_pipeline(arch: str, tiny: bool, workdir: Path):
    from diffusers import AutoPipelineForText2Image

    from serving import tiny_models

    path = workdir / f"{arch}{'-tiny' if tiny else ''}"
    if ARCHS[arch][0 if tiny else 1] is None:
        raise SystemExit(f"no full-size random-weight builder for {arch!r} yet; use --tiny")
    if not path.exists():
        getattr(tiny_models, ARCHS[arch][0 if tiny else 1])(path)
    return str(path), AutoPipelineForText2Image


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, device: str, reps: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sd15", choices=sorted(ARCHS))
    ap.add_argument("--tiny", action="store_true", help="tiny CPU model (CI smoke run)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="default: the architecture's")
    ap.add_argument("--size", type=int, default=None, help="default: the architecture's")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "promptbeam-bench")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from agents.messages import RenderRequest
    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    _, _, size, steps, guidance, dtype_name = ARCHS[args.arch]
    args.size, args.steps = args.size or size, args.steps or steps
    args.guidance = guidance if args.guidance is None else args.guidance
    args.dtype = args.dtype or dtype_name
    if args.tiny:
        args.size, args.steps, args.dtype = min(args.size, 64), min(args.steps, 4), "float32"
        if args.arch == "flux":
            args.size = 32  # FLUX packs 2x2 latent patches: sizes must divide by 16
    dtype = getattr(torch, args.dtype)
    args.workdir.mkdir(parents=True, exist_ok=True)
    path, pipe_cls = build_pipeline(args.arch, args.tiny, args.workdir)
    prompts = [f"a photo of a red apple, variant {i}" for i in range(args.batch)]
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, width=args.size, height=args.size)

    def load():
        return pipe_cls.from_pretrained(path, dtype=dtype).to(device)

    # plain diffusers loop: the reference
    pipe = load()
    pipe.set_progress_bar_config(disable=True)

    def plain():
        gens = [torch.Generator(device).manual_seed(i) for i in range(args.batch)]
        with torch.inference_mode():
            pipe(prompt=prompts, generator=gens, output_type="pil", **call)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        pipe(prompt=prompts, generator=[torch.Generator(device).manual_seed(0)] * args.batch, output_type="pil", **call)
    flops = counter.get_total_flops()
    t_plain = timed(plain, device, args.reps)
    del pipe
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)

    def mfu(seconds: float):
        return f"{flops / seconds / (peak * 1e12):.3f}" if peak else "n/a (no peak for this device)"

    rows = [["plain diffusers loop", args.batch, t_plain, args.batch / t_plain, 1.0, mfu(t_plain)]]
    requests = [RenderRequest(request_id=f"r{i}", prompt=p, seed=i, steps=args.steps, guidance_scale=args.guidance,
                              width=args.size, height=args.size) for i, p in enumerate(prompts)]
    for label, options in OPTION_SETS.items():
        if args.tiny and options.get("compile"):
            continue  # inductor compile of the tiny model on 2 CPU cores only measures the compiler
        config = DiffusionEngineConfig(model=path, device=device, dtype=args.dtype, max_batch_size=args.batch, **options)
        engine = DiffusionEngine.from_pipeline(load(), config)
        t = timed(lambda: engine.render(requests), device, args.reps)
        rows.append([label, args.batch, t, args.batch / t, t_plain / t, mfu(t)])
        del engine
        if device == "cuda":
            torch.cuda.empty_cache()
    arch = f"tiny {args.arch} (CPU smoke run)" if args.tiny else f"{args.arch} arch"
    report(
        f"GPU renderer: {arch}, {args.size}², {args.steps} steps, CFG {args.guidance}, {args.dtype}",
        ["path", "batch", "median s/call", "images/s", "x plain", "MFU"],
        rows,
        notes=f"device: {name}; FLOPs per call (flop_counter): {flops / 1e12:.2f} T; engine includes PNG encoding; "
              "goal: engine >= 0.95x plain at the same settings",
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
