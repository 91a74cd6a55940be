"""DiffusionEngine: any diffusers text-to-image pipeline, a batch of requests per pipeline call, in two stages.

1. The accelerator's stage: one pipeline call at a time (a lock), the images decoded and turned into uint8 pixels on
   the device, then copied to host memory (asynchronously on CUDA).
2. The CPU's stage: a pool of encoder threads turns each image into PNG/WebP/JPEG bytes, the critic's smaller variant
   and (given ``RenderRequest.image_uri``) writes it to the campaign's store (serving/images.py), while stage 1 already
   runs the next batch. Pillow releases the GIL while it compresses (two threads encode twice as fast as one on two cores,
   benchmarks/bench_encode.py), so threads are enough; processes would add a copy of every image.

On an H200 the PNG encoding of each image inside the render call (~40 ms per 512² image) cost 22% of the throughput at
25 steps and 63% at 4 steps: the GPU must never wait for it.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from agents.messages import RendererInfo, RenderRequest, RenderResult
from serving import metrics
from serving.images import finish_image
from serving.config import DiffusionEngineConfig
from serving.safety.guard import GuardedImage, OutputGuard
from serving.safety.record import ProvenanceRecord
from serving.engines.common import ModelLoadError, looks_local

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def encode_image(pixels, config: DiffusionEngineConfig) -> bytes:
    """One HxWx3 uint8 array -> image bytes in the configured format (deterministic for identical pixels)."""
    from PIL import Image

    image = Image.fromarray(pixels)
    buf = io.BytesIO()
    if config.image_format == "png":
        image.save(buf, format="PNG", compress_level=config.png_compress_level)
    elif config.image_format == "webp":
        image.save(buf, format="WEBP", lossless=True, method=config.webp_method)
    else:
        image.save(buf, format="JPEG", quality=config.jpeg_quality)
    return buf.getvalue()


@dataclass(frozen=True)
class PipelineCall:
    """One call of the pipeline: how many images it drew for callers, how many it computed, how long it took."""

    batch_size: int
    padded_size: int
    seconds: float


@dataclass
class PendingRender:
    """What :meth:`DiffusionEngine.start_render` returns once the accelerator's part is done: one future per request
    (in request order), completed by the encoder pool, and the pipeline calls made."""

    futures: list[Future]
    calls: list[PipelineCall] = field(default_factory=list)

    def results(self) -> list[RenderResult]:
        return [f.result() for f in self.futures]


@dataclass
class _Decoded:
    """Stage 1's output: uint8 pixels (N, H, W, 3) in host memory, and a CUDA event that says when the copy landed."""

    pixels: object
    ready: object | None
    call: PipelineCall


_SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                  "math": "MATH"}


class DiffusionEngine:
    """Loads a text-to-image pipeline with ``AutoPipelineForText2Image.from_pretrained`` and renders batches.

    One pipeline call at a time, on one thread: diffusers pipelines keep scheduler state (step index) on the object,
    so concurrent calls corrupt each other. Concurrency comes from batching requests *into* one call, and from encoding
    the last batch's images while the next batch runs (see the module docstring).

    ``busy_seconds`` adds up the wall time spent inside pipeline calls; over wall time it is the replica's busy
    fraction (``serving.metrics.RENDERER_BUSY_SECONDS``).
    """

    def __init__(self, config: DiffusionEngineConfig):
        from diffusers import AutoPipelineForText2Image

        model = os.path.expanduser(config.model)
        if looks_local(config.model) and not os.path.isdir(model):
            raise ModelLoadError(f"diffusion model directory {config.model!r} does not exist")
        device = resolve_device(config.device)
        t0 = time.perf_counter()
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                model, dtype=resolve_dtype(config.dtype, device), local_files_only=config.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load diffusion model {config.model!r}: {exc}") from exc
        self._setup(pipe, config)
        self.load_seconds = time.perf_counter() - t0
        logger.info("loaded %s on %s/%s in %.1fs", config.model, self.device, self.dtype, self.load_seconds)

    @classmethod
    def from_pipeline(cls, pipe, config: DiffusionEngineConfig) -> DiffusionEngine:
        """Wrap an already built pipeline (benchmarks build random-weight pipelines in memory on the GPU)."""
        engine = cls.__new__(cls)
        engine._setup(pipe, config)
        engine.load_seconds = 0.0
        return engine

    # -- setup ---------------------------------------------------------------------------------------------------------

    def _setup(self, pipe, config: DiffusionEngineConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if config.cuda_graphs and self.device != "cuda":
            raise ValueError(f"cuda_graphs needs device 'cuda' but the engine runs on {self.device!r}")
        if config.quantization == "fp8":
            _check_fp8_support(self.device)
        self.pipe = pipe if pipe.dtype == self.dtype else pipe.to(dtype=self.dtype)
        self._buckets = config.buckets()
        # Every pipeline call runs on this one thread: calls stay one at a time, and state that torch keeps per
        # thread (CUDA graph trees, inference mode) is made once, whichever thread a caller (Serve's to_thread) uses.
        self._pipeline_thread = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        self._closed = False
        self._counting_tokenizer = None  # count_tokens' own copy (see there)
        self._counting_lock = threading.Lock()
        self._pool = (ThreadPoolExecutor(config.encode_workers, thread_name_prefix="encode",
                                         initializer=_yield_to_the_pipeline) if config.encode_workers else None)
        # Output safety runs in the encoder threads, beside the encoding: a flagged image's pixels never leave.
        self.guard = OutputGuard(config.output_safety) if config.output_safety is not None else None
        self.busy_seconds = 0.0
        self.pipeline_calls = 0
        self._started = time.monotonic()
        self._setup_pipeline()

    def _setup_pipeline(self) -> None:
        """Device, progress bar and the speed options of the config, in the order they compose: memory format and
        fused projections change the modules, fp8 swaps their linear weights, compile traces the result."""
        import torch

        cfg = self.config
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        denoiser = self.denoiser
        vae = getattr(self.pipe, "vae", None)
        if cfg.channels_last:
            for module in (denoiser, vae):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if cfg.fuse_qkv and hasattr(self.pipe, "fuse_qkv_projections"):
            self.pipe.fuse_qkv_projections()
        if denoiser is not None:
            self._force_attention_backend(denoiser)
        if cfg.quantization == "fp8" and denoiser is not None:
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

            quantize_(denoiser, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
        if cfg.vae_slicing and vae is not None:
            vae.enable_slicing()
        if cfg.vae_tiling and vae is not None:
            vae.enable_tiling()
        if cfg.compile != "none" and cfg.compile_cache_dir:
            # inductor reads the variable whenever it opens its caches (FX graphs, AOTAutograd, Triton kernels)
            os.makedirs(cfg.compile_cache_dir, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(cfg.compile_cache_dir)
        options = {"backend": cfg.compile_backend, "fullgraph": True}
        if cfg.compile_backend == "inductor" and cfg.cuda_graphs:
            options["mode"] = "reduce-overhead"
        if cfg.compile == "regional" and denoiser is not None:
            # compile each repeated block once; dynamic=True keeps a new batch size from recompiling
            denoiser.compile_repeated_blocks(dynamic=True, **options)
        elif cfg.compile == "full":
            # One graph per batch bucket and shape: room for every bucket with and without CFG at a few image sizes.
            limit = max(8, 8 * len(self._buckets))
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
            if denoiser is not None:
                denoiser.compile(dynamic=False, **options)
            if vae is not None:
                # the decoder module, not vae.decode: decode() also takes the callers' generators, which would
                # become guards and recompile every call
                vae.decoder.compile(dynamic=False, **options)

    @property
    def denoiser(self):
        return getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)

    @property
    def model_name(self) -> str:
        return self.config.model

    # -- prompts -------------------------------------------------------------------------------------------------------

    def _limiting_tokenizer(self):
        """The tokenizer whose limit truncates prompts: T5's where the pipeline has one (FLUX, SD3), else CLIP's."""
        tok2 = getattr(self.pipe, "tokenizer_2", None)
        if tok2 is not None and "T5" in type(tok2).__name__:
            return tok2, 512  # FluxPipeline's default max_sequence_length
        tok = getattr(self.pipe, "tokenizer", None)
        if tok is None:
            return None, None
        return tok, int(tok.model_max_length)

    def info(self) -> RendererInfo:
        """The model and the number of tokens its text encoder reads (longer prompts are cut silently by diffusers)."""
        tok, limit = self._limiting_tokenizer()
        return RendererInfo(model=self.config.model, max_prompt_tokens=limit,
                            tokenizer=type(tok).__name__ if tok is not None else None)

    def count_tokens(self, prompts: list[str]) -> list[int]:
        """Tokens per prompt in the limiting tokenizer, start/end tokens included (compare with ``info()``).

        Counts with a private copy of the tokenizer: a fast (Rust) tokenizer used from two threads at once fails
        ("Already borrowed"), and the pipeline thread uses the pipeline's own while a render runs."""
        tok, _ = self._limiting_tokenizer()
        if tok is None:
            return [len(p.split()) for p in prompts]
        with self._counting_lock:
            if self._counting_tokenizer is None:
                import copy

                self._counting_tokenizer = copy.deepcopy(tok)
            return [len(ids) for ids in self._counting_tokenizer(list(prompts), truncation=False)["input_ids"]]

    # -- rendering -----------------------------------------------------------------------------------------------------

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        """Render all requests, in order, and wait for their encoded images."""
        return self.start_render(requests).results()

    def start_render(self, requests: list[RenderRequest]) -> PendingRender:
        """Run the pipeline calls for ``requests`` and return as soon as the last one is done, with one future per
        request that the encoder pool completes. Requests are grouped by their shape settings (size, steps,
        guidance): each group is one pipeline call, split further at ``max_batch_size``. While a group's images
        encode, the next group (or the next caller's batch) already runs."""
        # 1. Check inputs
        if self._closed:
            raise RuntimeError("the diffusion engine is shut down")
        if not requests:
            return PendingRender(futures=[])
        ids = [(r.campaign, r.request_id) for r in requests]  # campaigns name their candidates independently
        if len(set(ids)) != len(ids):
            raise ValueError("request ids in one render call must be unique within each campaign")
        # 2. Group by shape-affecting settings
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[r.shape_key()].append(i)
        # 3. One pipeline call per group chunk; its encoding goes to the pool
        pending = PendingRender(futures=[None] * len(requests))  # type: ignore[list-item]
        for indices in groups.values():
            for start in range(0, len(indices), self.config.max_batch_size):
                chunk = indices[start : start + self.config.max_batch_size]
                batch = [requests[i] for i in chunk]
                decoded = self._generate(batch)
                pending.calls.append(decoded.call)
                for j, i in enumerate(chunk):
                    pending.futures[i] = self._submit_encode(decoded, j, batch[j])
        return pending

    def _bucket(self, n: int) -> int:
        return next((b for b in self._buckets if b >= n), n)

    def _generate(self, batch: list[RenderRequest]) -> _Decoded:
        """Stage 1: one pipeline call, padded up to its batch bucket, decoded to uint8 on the device."""
        return self._pipeline_thread.submit(self._call_pipeline, batch).result()

    def _call_pipeline(self, batch: list[RenderRequest]) -> _Decoded:
        import torch

        first = batch[0]
        if any(r.shape_key() != first.shape_key() for r in batch):
            raise ValueError(
                "requests in one pipeline call must share width, height, steps and guidance_scale; got "
                f"{sorted({r.shape_key() for r in batch})}"
            )
        n, size = len(batch), self._bucket(len(batch))
        padded = batch + [batch[-1]] * (size - n)  # padding repeats the last request; its images are dropped
        # One generator per item: each image depends on its own seed only, whatever else is in the batch.
        generators = [torch.Generator(device=self.device).manual_seed(r.seed) for r in padded]
        kwargs = dict(
            prompt=[r.prompt for r in padded],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            width=first.width,
            height=first.height,
            generator=generators,
            output_type="pt",
        )
        if any(r.negative_prompt for r in batch):
            kwargs["negative_prompt"] = [r.negative_prompt or "" for r in padded]
        t0 = time.perf_counter()
        with torch.inference_mode():
            images = self.pipe(**kwargs).images  # (size, 3, H, W) in [0, 1], on the device
            # the same arithmetic as diffusers' numpy_to_pil, in float32, so the bytes match output_type="pil"
            pixels = images[:n].float().mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            host, ready = self._to_host(pixels)
        seconds = time.perf_counter() - t0
        self.busy_seconds += seconds
        self.pipeline_calls += 1
        return _Decoded(host, ready, PipelineCall(batch_size=n, padded_size=size, seconds=seconds))

    def _to_host(self, pixels):
        """Copy to pinned host memory without waiting: the next pipeline call is queued behind the copy, and the
        encoder threads wait on the event instead of the caller."""
        import torch

        if pixels.device.type != "cuda":
            return pixels, None
        host = torch.empty(pixels.shape, dtype=pixels.dtype, pin_memory=True)
        host.copy_(pixels, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return host, ready

    def _force_attention_backend(self, denoiser) -> None:
        """Run the denoiser's attention on the configured SDPA kernel, and only the denoiser's: the VAE's mid-block
        attention is one head of 512 channels (SD1.5, SDXL, FLUX), beyond the 256 that flash and cuDNN attention
        take, so forcing either for the whole pipeline call failed in the decoder ("No available kernel", H200,
        2026-11-27). The text encoders and the VAE keep PyTorch's own choice; the denoiser holds nearly all the
        attention work. Wrapping ``forward`` before compiling puts the choice inside the compiled graph."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        # an engine made earlier on the same pipeline (from_pipeline) may have left its wrapper: start from the original
        original = getattr(denoiser.forward, "unforced", denoiser.forward)
        denoiser.forward = original
        backend = self.config.attention_backend
        if backend == "auto":
            return
        if self.device == "cpu" and backend in ("efficient", "cudnn"):
            raise ValueError(f"attention_backend={backend!r} has no CPU kernel (the engine runs on 'cpu'); "
                             "use 'auto', 'flash' or 'math'")
        if self.device == "cuda" and backend in ("flash", "cudnn") and self.dtype not in (torch.float16,
                                                                                          torch.bfloat16):
            raise ValueError(f"attention_backend={backend!r} needs dtype float16 or bfloat16, got {self.dtype}")
        kernel = getattr(SDPBackend, _SDPA_BACKENDS[backend])

        @functools.wraps(original)
        def forward_on_the_forced_kernel(*args, **kwargs):
            with sdpa_kernel(kernel):
                return original(*args, **kwargs)

        forward_on_the_forced_kernel.unforced = original
        denoiser.forward = forward_on_the_forced_kernel

    def _submit_encode(self, decoded: _Decoded, j: int, request: RenderRequest) -> Future:
        """Stage 2 for one image: in the pool, or at once when ``encode_workers`` is 0."""
        if self._pool is not None:
            return self._pool.submit(self._encode, decoded, j, request)
        future: Future = Future()
        future.set_result(self._encode(decoded, j, request))
        return future

    def _encode(self, decoded: _Decoded, j: int, request: RenderRequest) -> RenderResult:
        if decoded.ready is not None:
            decoded.ready.synchronize()
        call = decoded.call
        pixels = decoded.pixels[j].numpy()
        guarded = self._guard(pixels, request) if self.guard is not None else None
        data = encode_image(pixels, self.config) if guarded is None else guarded.png or b""
        # the critic's variant and the store write happen here, beside the encoding: the campaign gets a reference
        png, stored, critic_image = finish_image(pixels, data, request)
        return RenderResult(
            request_id=request.request_id,
            png=png,
            stored=stored,
            critic_image=critic_image,
            withheld_reason=guarded.withheld_reason if guarded is not None else None,
            nsfw_score=guarded.verdict.score if guarded is not None and guarded.verdict is not None else None,
            seed=request.seed,
            model=self.config.model,
            width=request.width,
            height=request.height,
            steps=request.steps,
            batch_size=call.batch_size,
            render_seconds=call.seconds,
        )

    def _guard(self, pixels, request: RenderRequest) -> GuardedImage:
        """Check one image and stamp it with its provenance (or withhold it); counted in serving.metrics."""
        record = ProvenanceRecord(
            campaign=request.campaign, intent=request.intent, candidate=request.request_id, prompt=request.prompt,
            negative_prompt=request.negative_prompt, seed=request.seed, model=self.config.model, width=request.width,
            height=request.height, steps=request.steps,
        )
        t0 = time.perf_counter()
        (guarded,) = self.guard.process([pixels], [record])
        metrics.observe(metrics.OUTPUT_GUARD_SECONDS, time.perf_counter() - t0)
        if guarded.verdict is not None:
            metrics.observe(metrics.NSFW_SCORE, guarded.verdict.score)
        if guarded.withheld:
            metrics.inc(metrics.IMAGES_WITHHELD)
        elif guarded.watermarked:
            metrics.inc(metrics.IMAGES_STAMPED)
        return guarded

    # -- compile, accounting, lifecycle --------------------------------------------------------------------------------

    def warmup(self, width: int, height: int, guidance_scale: float = 0.0, steps: int = 1) -> dict[int, float]:
        """Run one pipeline call per batch bucket (or at max_batch_size without buckets) so that compilation happens
        now rather than on the first requests; returns seconds per batch size."""
        seconds = {}
        for size in self._buckets or (self.config.max_batch_size,):
            reqs = [RenderRequest(request_id=f"warmup-{size}-{i}", prompt="warm-up", seed=i, steps=steps,
                                  guidance_scale=guidance_scale, width=width, height=height) for i in range(size)]
            t0 = time.perf_counter()
            self.render(reqs)
            seconds[size] = time.perf_counter() - t0
        return seconds

    @staticmethod
    def compiled_graphs() -> int:
        """Graphs torch.compile has compiled in this process so far (a recompile adds one)."""
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])

    def busy_fraction(self) -> float:
        """Seconds inside pipeline calls over wall time since the engine started."""
        return self.busy_seconds / max(time.monotonic() - self._started, 1e-9)

    def check_health(self) -> None:
        """Raise when the engine cannot render: shut down, or the CUDA context broken (sticky errors surface at the
        next synchronization)."""
        if self._closed:
            raise RuntimeError("the diffusion engine is shut down")
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def shutdown(self) -> None:
        """Stop taking work, let the encoder pool finish the images already handed to it, then release the pipeline
        and its accelerator memory. Idempotent; the engine cannot render afterwards."""
        self._closed = True
        self._pipeline_thread.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        pipe, self.pipe = getattr(self, "pipe", None), None
        if pipe is None:
            return
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if denoiser is not None and hasattr(denoiser.forward, "unforced"):
            denoiser.forward = denoiser.forward.unforced  # a pipeline shared with other engines runs as it did
        del pipe
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _yield_to_the_pipeline() -> None:
    """Encoder threads run at a lower priority (Linux niceness is per thread): they use the CPU the pipeline thread
    leaves, and never delay the thread that feeds the accelerator. Where that cannot be set, they run as they are."""
    import threading

    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):
        pass


def _check_fp8_support(device: str) -> None:
    import importlib.util

    import torch

    if device != "cuda" or torch.cuda.get_device_capability() < (8, 9):
        where = device if device != "cuda" else f"a GPU of compute capability {torch.cuda.get_device_capability()}"
        raise ValueError(f"quantization='fp8' needs a CUDA GPU of compute capability >= 8.9, but runs on {where}")
    if importlib.util.find_spec("torchao") is None:
        raise ValueError("quantization='fp8' needs the torchao package (pip install torchao)")
