"""DiffusionEngine: any diffusers text-to-image pipeline, a batch of requests per pipeline call."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections import defaultdict

from agents.messages import RendererInfo, RenderRequest, RenderResult
from serving.config import DiffusionEngineConfig
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


def encode_png(image) -> bytes:
    """PIL image -> PNG bytes (deterministic for identical pixels)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class DiffusionEngine:
    """Loads a text-to-image pipeline with ``AutoPipelineForText2Image.from_pretrained`` and renders batches.

    One pipeline call at a time: diffusers pipelines keep scheduler state (step index) on the object, so concurrent
    calls corrupt each other. Concurrency comes from batching requests *into* one call, not from threads.
    """

    def __init__(self, config: DiffusionEngineConfig):
        from diffusers import AutoPipelineForText2Image

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        model = os.path.expanduser(config.model)
        if looks_local(config.model) and not os.path.isdir(model):
            raise ModelLoadError(f"diffusion model directory {config.model!r} does not exist")
        t0 = time.perf_counter()
        try:
            self.pipe = AutoPipelineForText2Image.from_pretrained(
                model, dtype=self.dtype, local_files_only=config.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load diffusion model {config.model!r}: {exc}") from exc
        self._setup_pipeline()
        self.load_seconds = time.perf_counter() - t0
        self._lock = threading.Lock()
        logger.info("loaded %s on %s/%s in %.1fs", config.model, self.device, self.dtype, self.load_seconds)

    @classmethod
    def from_pipeline(cls, pipe, config: DiffusionEngineConfig) -> DiffusionEngine:
        """Wrap an already built pipeline (benchmarks build random-weight pipelines in memory on the GPU)."""
        engine = cls.__new__(cls)
        engine.config = config
        engine.device = resolve_device(config.device)
        engine.dtype = resolve_dtype(config.dtype, engine.device)
        engine.pipe = pipe if pipe.dtype == engine.dtype else pipe.to(dtype=engine.dtype)
        engine._setup_pipeline()
        engine.load_seconds = 0.0
        engine._lock = threading.Lock()
        return engine

    def _setup_pipeline(self) -> None:
        """Device, progress bar and the speed options of the config."""
        import torch

        cfg = self.config
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        denoiser = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        vae = getattr(self.pipe, "vae", None)
        if cfg.channels_last:
            for module in (denoiser, vae):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if cfg.fuse_qkv and hasattr(self.pipe, "fuse_qkv_projections"):
            self.pipe.fuse_qkv_projections()
        if cfg.vae_slicing and vae is not None:
            vae.enable_slicing()
        if cfg.vae_tiling and vae is not None:
            vae.enable_tiling()
        if cfg.compile == "regional" and denoiser is not None:
            # compile each repeated block once; dynamic=True keeps a new batch size from recompiling
            denoiser.compile_repeated_blocks(fullgraph=True, dynamic=True)
        elif cfg.compile == "full" and denoiser is not None:
            denoiser.compile(fullgraph=True, dynamic=True)

    @property
    def model_name(self) -> str:
        return self.config.model

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
        """Tokens per prompt in the limiting tokenizer, start/end tokens included (compare with ``info()``)."""
        tok, _ = self._limiting_tokenizer()
        if tok is None:
            return [len(p.split()) for p in prompts]
        return [len(ids) for ids in tok(list(prompts), truncation=False)["input_ids"]]

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        """Render all requests, in order. Requests are grouped by their shape settings (size, steps, guidance): each
        group is one pipeline call (split further at ``max_batch_size``)."""
        # 1. Check inputs
        if not requests:
            return []
        ids = [r.request_id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids in one render call must be unique")
        # 2. Group by shape-affecting settings
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[r.shape_key()].append(i)
        # 3. One pipeline call per group chunk
        results: list[RenderResult | None] = [None] * len(requests)
        for indices in groups.values():
            for start in range(0, len(indices), self.config.max_batch_size):
                chunk = indices[start : start + self.config.max_batch_size]
                for i, res in zip(chunk, self._render_same_shape([requests[i] for i in chunk])):
                    results[i] = res
        return results  # type: ignore[return-value]

    def _render_same_shape(self, batch: list[RenderRequest]) -> list[RenderResult]:
        import torch

        first = batch[0]
        if any(r.shape_key() != first.shape_key() for r in batch):
            raise ValueError(
                "requests in one pipeline call must share width, height, steps and guidance_scale; got "
                f"{sorted({r.shape_key() for r in batch})}"
            )
        # One generator per item: each image depends on its own seed only, whatever else is in the batch.
        generators = [torch.Generator(device=self.device).manual_seed(r.seed) for r in batch]
        kwargs = dict(
            prompt=[r.prompt for r in batch],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            width=first.width,
            height=first.height,
            generator=generators,
            output_type="pil",
        )
        if any(r.negative_prompt for r in batch):
            kwargs["negative_prompt"] = [r.negative_prompt or "" for r in batch]
        with self._lock:
            t0 = time.perf_counter()
            with torch.inference_mode():
                images = self.pipe(**kwargs).images
            seconds = time.perf_counter() - t0
        return [
            RenderResult(
                request_id=r.request_id,
                png=encode_png(img),
                seed=r.seed,
                model=self.config.model,
                width=first.width,
                height=first.height,
                steps=first.steps,
                batch_size=len(batch),
                render_seconds=seconds,
            )
            for r, img in zip(batch, images)
        ]

    def check_health(self) -> None:
        """Raises if the engine cannot render: shut down, or (on CUDA) a sticky device error from an earlier call,
        which ``torch.cuda.synchronize`` re-raises. Serve's health check calls this."""
        if getattr(self, "pipe", None) is None:
            raise RuntimeError(f"diffusion engine for {self.config.model!r} is shut down")
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def shutdown(self) -> None:
        """Release the pipeline and its accelerator memory. Idempotent; the engine cannot render afterwards."""
        pipe, self.pipe = getattr(self, "pipe", None), None
        if pipe is None:
            return
        del pipe
        import gc

        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
