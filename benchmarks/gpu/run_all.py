"""The renderer on one GPU, in one run that fits a wall-clock budget: SD1.5, SDXL and FLUX.1-schnell architectures,
a plain diffusers loop against the served engine and against each speed option.

Random weights of the real architectures (:func:`benchmarks.gpu.architectures.build_random_pipeline`), built directly
on the GPU, nothing saved (compute does not depend on the weights). Rows run in order of importance and each is printed
as soon as it is measured; a row whose estimated cost no longer fits ``--budget-s`` is skipped with a line saying so,
and a watchdog ends the run at the budget whatever is running (the table so far is kept).

  group a  SD1.5 512², 4 steps, no CFG, fp16, batch 16 (like SD-Turbo), and 25 steps, CFG 7.5, batch 8: plain loop vs
           the engine served as the deployment issues batches (the next batch starts when the pipeline call returns;
           encoding in the pool) and vs encoding inside the call (the renderer as it was). Goal: engine >= 0.97x.
  group b  compile='full' (denoiser + VAE decoder, static shapes) on SD1.5 4-step; the SDPA backends; SDXL 1024²,
           25 steps, CFG 5, bf16, batch 4: plain eager vs the engine's defaults vs compile='full'.
  group c  FLUX.1-schnell 1024², 4 steps, bf16: plain eager vs the engine vs compile='full'.
  group d  fp8 (torchao) on FLUX (compiled), with the image difference against bf16; CUDA graphs on SD1.5 4-step.

Throughput is steady state: a stream of batches, images of batches 2..N over the time between the first and the last
batch's completion (the same definition for the plain loop and the engine), median over reps after a warm-up stream.
Warm-up (incl. compile) seconds and the graphs compiled during warm-up and during measurement (recompiles: want 0) are
reported separately. MFU = FLOPs counted with torch.utils.flop_counter over one plain call / time / dense bf16 peak.

On the GPU machine (diffusers + pydantic carried as wheels; torchao for group d):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 python3 -m benchmarks.gpu.run_all --budget-s 230 --out $OUT/gpu.md
Expected on an H100 (estimates the script plans with): group a ~80 s, SDPA rows ~20 s, SD1.5 compile ~75 s, SDXL eager
~80 s, SDXL compile ~130 s, FLUX build + eager ~120 s, FLUX compile ~160 s, fp8 ~170 s: 230 s covers group a and SD1.5's
compile; `--groups cd --budget-s 300` in a second call measures FLUX.
CI runs ``--tiny`` on CPU: the same rows on the same builders at test shapes (compile with the 'eager' backend).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

from benchmarks._util import add_record_options, record_section, stamp, table

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16/fp16 tensor-core peaks
HEADERS = ["group", "arch", "setting", "path", "img/s", "x plain", "MFU", "warm-up s", "graphs warm-up/steady",
           "notes"]


@dataclass(frozen=True)
class Setting:
    arch: str
    size: int
    steps: int
    guidance: float
    batch: int
    dtype: str
    batches: int  # per stream

    def label(self) -> str:
        return f"{self.size}², {self.steps} steps, CFG {self.guidance:g}, {self.dtype}, batch {self.batch}"


@dataclass
class Run:
    """The state of one budgeted run: the deadline, the rows printed so far, what each setting's plain loop took."""

    args: argparse.Namespace
    deadline: float
    rows: list[list] = field(default_factory=list)
    plain: dict = field(default_factory=dict)  # Setting -> (images/s, flops per batch, pixels of the first batch)
    current: str = "start-up"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, what: str, estimate: float) -> bool:
        if self.left() >= estimate:
            self.current = what
            return True
        print(f"SKIPPED {what}: needs ~{estimate:.0f} s, {self.left():.0f} s of the budget left", flush=True)
        self.rows.append(["", "", "", f"skipped: {what}", "", "", "", "", "", f"needs ~{estimate:.0f} s"])
        return False

    def add(self, row: list) -> None:
        self.rows.append(row)
        print("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in row) + " |", flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stream_rate(run_batch, batches: int, batch: int, reps: int, after_warmup=None) -> tuple[float, float]:
    """(steady-state images/s as the median over reps, seconds of the warm-up stream). ``run_batch(i, done)`` starts
    batch i and calls ``done()`` when its images are complete (possibly later, from another thread)."""
    def one_stream() -> float:
        stamps: list[float] = [0.0] * batches
        events = [threading.Event() for _ in range(batches)]

        def done_cb(i):
            def done():
                sync()
                stamps[i] = time.perf_counter()
                events[i].set()
            return done

        t0 = time.perf_counter()
        for i in range(batches):
            run_batch(i, done_cb(i))
        for e in events:
            e.wait()
        if batches == 1:
            return batch / (stamps[0] - t0)
        return (batches - 1) * batch / (stamps[-1] - stamps[0])

    t0 = time.perf_counter()
    one_stream()
    warm = time.perf_counter() - t0
    if after_warmup is not None:
        after_warmup()
    return statistics.median(one_stream() for _ in range(reps)), warm


def requests_for(s: Setting):
    from agents.messages import RenderRequest

    return [[RenderRequest(request_id=f"b{b}-{i}", prompt=f"a photo of a red apple, variant {b}.{i}", seed=b * 1000 + i,
                           steps=s.steps, guidance_scale=s.guidance, width=s.size, height=s.size)
             for i in range(s.batch)] for b in range(s.batches)]


def guarded(measure):
    """A row that fails (an out-of-memory, a compile error) is reported as failed and the run goes on: one device
    call has to bring back every row it can."""
    import functools
    import traceback

    @functools.wraps(measure)
    def wrapper(run: Run, group: str, pipe, s: Setting, device: str, path: str = "plain diffusers loop", **options):
        try:
            measure(run, group, pipe, s, device, path, **options)
        except Exception as exc:  # noqa: BLE001 - reported in the table and on stderr
            traceback.print_exc()
            run.add([group, s.arch, s.label(), path, "", "", "", "", "", f"failed: {type(exc).__name__}: {exc}"[:300]])
    return wrapper


@guarded
def measure_plain(run: Run, group: str, pipe, s: Setting, device: str, path: str) -> None:
    """The reference: the pipeline called directly, PIL images out, nothing encoded. Counts FLOPs on its first call."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    reqs = requests_for(s)

    def call(i):
        batch = reqs[i]
        with torch.inference_mode():
            return pipe(prompt=[r.prompt for r in batch], num_inference_steps=s.steps, guidance_scale=s.guidance,
                        width=s.size, height=s.size, output_type="pil",
                        generator=[torch.Generator(device).manual_seed(r.seed) for r in batch]).images

    with FlopCounterMode(display=False) as counter:
        first = call(0)
    flops = counter.get_total_flops()

    def run_batch(i, done):
        call(i)
        done()

    rate, warm = stream_rate(run_batch, s.batches, s.batch, run.args.reps)
    run.plain[s] = (rate, flops, np.stack([np.asarray(im) for im in first]))
    run.add([group, s.arch, s.label(), path, rate, 1.0, mfu(run, flops, rate, s.batch), warm, "",
             f"{flops / 1e12:.2f} TFLOP per call"])


def mfu(run: Run, flops: float, rate: float, batch: int) -> str:
    if run.args.peak is None:
        return "n/a"
    return f"{flops * rate / batch / (run.args.peak * 1e12):.3f}"


@guarded
def measure_engine(run: Run, group: str, pipe, s: Setting, device: str, path: str, **options) -> None:
    """The engine on ``pipe`` with ``options``, batches issued back-to-back as the deployment issues them: the next
    starts when the previous pipeline call returns, the images finish encoding in the pool."""
    import numpy as np
    from PIL import Image

    from serving.config import DiffusionEngineConfig
    from serving.engines import DiffusionEngine

    config = DiffusionEngineConfig(model=f"random-{s.arch}", device=device, dtype=s.dtype, max_batch_size=s.batch,
                                   **options)
    try:
        engine = DiffusionEngine.from_pipeline(pipe, config)
    except (ValueError, ImportError) as exc:  # an option this machine cannot run (fp8 on CPU, no torchao): say why
        run.add([group, s.arch, s.label(), path, "", "", "", "", "", f"not run: {exc}"])
        return
    reqs = requests_for(s)
    first: list = []  # the futures of the latest stream's first batch, compared with the plain loop's images

    def run_batch(i, done):
        futures = engine.start_render(reqs[i]).futures
        if i == 0:
            first[:] = futures
        remaining = [len(futures)]
        lock = threading.Lock()

        def one_done(_):
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done()

        for f in futures:
            f.add_done_callback(one_done)

    graphs = [engine.compiled_graphs()]
    rate, warm = stream_rate(run_batch, s.batches, s.batch, run.args.reps,
                             after_warmup=lambda: graphs.append(engine.compiled_graphs()))
    graphs.append(engine.compiled_graphs())
    # graphs compiled during the warm-up stream, and after it (recompiles in steady state: want 0)
    graphs_warm, graphs_steady = graphs[1] - graphs[0], graphs[2] - graphs[1]
    first = [f.result() for f in first]
    engine.shutdown()
    plain_rate, flops, plain_pixels = run.plain.get(s, (None, None, None))
    notes = [f"encode: {config.image_format}, {config.encode_workers} threads"]
    if plain_pixels is not None:
        got = np.stack([np.asarray(Image.open(io.BytesIO(r.png)).convert("RGB")) for r in first])
        diff = np.abs(got.astype(np.int16) - plain_pixels.astype(np.int16))
        mse = float((diff.astype(np.float64) ** 2).mean())
        psnr = "inf" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f}"
        notes.append(f"image vs plain: mean |d| {diff.mean():.2f}/255, PSNR {psnr} dB")
    run.add([group, s.arch, s.label(), path, rate, rate / plain_rate if plain_rate else "",
             mfu(run, flops, rate, s.batch) if flops else "", warm, f"{graphs_warm}/{graphs_steady}",
             "; ".join(notes)])


def free() -> None:
    """Give the GPU memory of the pipelines dropped by the caller back (the next architecture needs it)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build(run: Run, arch: str, dtype: str, device: str):
    import torch

    from benchmarks.gpu.architectures import build_random_pipeline

    t0 = time.perf_counter()
    pipe = build_random_pipeline(arch, tiny=run.args.tiny, device=device, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    sync()
    print(f"built {arch} on {device} in {time.perf_counter() - t0:.1f} s", flush=True)
    return pipe


def settings(tiny: bool) -> dict[str, Setting]:
    if tiny:  # the same rows at test shapes on CPU
        return {"sd15-4": Setting("sd15", 64, 2, 0.0, 2, "float32", 2),
                "sd15-25": Setting("sd15", 64, 2, 7.5, 2, "float32", 2),
                "sdxl": Setting("sdxl", 64, 2, 5.0, 2, "float32", 2),
                "flux": Setting("flux", 32, 2, 0.0, 2, "float32", 2)}
    return {"sd15-4": Setting("sd15", 512, 4, 0.0, 16, "float16", 4),
            "sd15-25": Setting("sd15", 512, 25, 7.5, 8, "float16", 2),
            "sdxl": Setting("sdxl", 1024, 25, 5.0, 4, "bfloat16", 2),
            "flux": Setting("flux", 1024, 4, 0.0, 4, "bfloat16", 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, required=True, help="hard wall-clock budget for the whole run")
    ap.add_argument("--groups", default="abcd", help="which groups to run, in order (default: abcd)")
    ap.add_argument("--reps", type=int, default=3, help="timed streams per row (median), after one warm-up stream")
    ap.add_argument("--sdpa", default="cudnn,flash", help="SDPA backends to measure on SD1.5 4-step (group b)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (CI smoke run)")
    ap.add_argument("--out", default=None, help="also write the final table to this file")
    add_record_options(ap)
    args = ap.parse_args()
    run = Run(args=args, deadline=time.monotonic() + args.budget_s)

    def finish(reason: str) -> None:
        title = f"GPU renderer, all architectures{' (tiny, CPU smoke run)' if args.tiny else ''}"
        body = (f"{table(HEADERS, run.rows)}\n\n{reason}; budget {args.budget_s:.0f} s; steady-state images/s, "
                f"medians of {args.reps} streams after a warm-up stream; random weights of the real architectures")
        block = f"\n## {title}\n{stamp()}\n\n{body}\n"
        print(block, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(block)
        if args.record:
            record_section(title, body)

    def watchdog() -> None:
        print(f"BUDGET of {args.budget_s:.0f} s reached while running {run.current}: stopping here", flush=True)
        finish(f"stopped by the budget during {run.current}")
        sys.stdout.flush()
        os._exit(0)

    timer = threading.Timer(max(args.budget_s - 3, 1), watchdog)  # 3 s to write the table
    timer.daemon = True
    timer.start()

    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    args.peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    compile_backend = "eager" if device == "cpu" else "inductor"  # inductor on 2 CPU cores: minutes per graph
    print(f"device {name}; torch {torch.__version__}; budget {args.budget_s:.0f} s", flush=True)
    print("| " + " | ".join(HEADERS) + " |", flush=True)
    S = settings(args.tiny)
    full = {"compile": "full", "compile_backend": compile_backend}
    scale = 0.05 if args.tiny else 1.0  # estimates in seconds of an H100 run

    if "a" in args.groups and run.fits("build sd15", 20 * scale):
        sd15 = build(run, "sd15", "float16" if device == "cuda" else "float32", device)
        if run.fits("sd15 4-step rows", 25 * scale):
            measure_plain(run, "a", sd15, S["sd15-4"], device)
            measure_engine(run, "a", sd15, S["sd15-4"], device, "engine (defaults, encoder pool)")
        if run.fits("sd15 25-step rows", 30 * scale):
            measure_plain(run, "a", sd15, S["sd15-25"], device)
            measure_engine(run, "a", sd15, S["sd15-25"], device, "engine (defaults, encoder pool)")
        if run.fits("sd15 4-step, encoding inside the call", 20 * scale):
            measure_engine(run, "a", sd15, S["sd15-4"], device, "engine, encoding inside the call", encode_workers=0)
    else:
        sd15 = None
    if "b" in args.groups:
        if sd15 is None and run.fits("build sd15", 20 * scale):
            sd15 = build(run, "sd15", "float16" if device == "cuda" else "float32", device)
            measure_plain(run, "b", sd15, S["sd15-4"], device)
        for backend in [b for b in args.sdpa.split(",") if b]:
            if sd15 is not None and run.fits(f"sd15 SDPA {backend}", 10 * scale):
                measure_engine(run, "b", sd15, S["sd15-4"], device, f"engine + SDPA {backend}",
                               attention_backend=backend)
        if sd15 is not None and run.fits("sd15 compile='full'", 75 * scale):
            measure_engine(run, "b", sd15, S["sd15-4"], device, "engine + compile='full'", **full)
    if "b" in args.groups and run.fits("build sdxl + eager rows", 80 * scale):
        sdxl = build(run, "sdxl", S["sdxl"].dtype, device)
        measure_plain(run, "b", sdxl, S["sdxl"], device)
        measure_engine(run, "b", sdxl, S["sdxl"], device, "engine (defaults)")
        if run.fits("sdxl compile='full'", 130 * scale):
            measure_engine(run, "b", sdxl, S["sdxl"], device, "engine + compile='full'", **full)
        sdxl = None
        free()
    flux = None
    if ("c" in args.groups or "d" in args.groups) and run.fits("build flux + eager rows", 120 * scale):
        flux = build(run, "flux", S["flux"].dtype, device)  # ~34 GB beside SD1.5's 2 GB
        measure_plain(run, "c", flux, S["flux"], device)
        measure_engine(run, "c", flux, S["flux"], device, "engine (defaults)")
        if "c" in args.groups and run.fits("flux compile='full'", 160 * scale):
            measure_engine(run, "c", flux, S["flux"], device, "engine + compile='full'", **full)
    if "d" in args.groups and sd15 is None and device == "cuda" and run.fits("build sd15 for CUDA graphs", 100):
        sd15 = build(run, "sd15", "float16", device)
        measure_plain(run, "d", sd15, S["sd15-4"], device)
    if "d" in args.groups and sd15 is not None and device == "cuda" and run.fits("sd15 CUDA graphs", 80 * scale):
        measure_engine(run, "d", sd15, S["sd15-4"], device, "engine + compile='full' + CUDA graphs", **full,
                       cuda_graphs=True)
    sd15 = None
    if "d" in args.groups and flux is not None and run.fits("flux fp8 + compile='full'", 170 * scale):
        measure_engine(run, "d", flux, S["flux"], device, "engine + fp8 (torchao) + compile='full'", **full,
                       quantization="fp8")
    flux = None
    free()
    timer.cancel()
    finish("finished")


if __name__ == "__main__":
    main()
