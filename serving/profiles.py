"""Model profiles: which diffusion model and which LLM/VLM to serve, and how.

``tiny``: random-weight models built offline (``promptbeam models make-tiny``), CPU only, for tests and the embedded
default. ``gpu``: real models from the hub or a local cache, for a GPU machine or cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serving.config import DiffusionEngineConfig, LLMEngineConfig

DEFAULT_TINY_DIR = Path(os.environ.get("PROMPTBEAM_TINY_DIR", Path.cwd() / ".cache" / "tiny-models"))


class ModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    diffusion: DiffusionEngineConfig
    llm: LLMEngineConfig = Field(description="Serves both the rewriter and the critic (a vision-language model).")
    width: int = Field(description="Default image width for this profile's diffusion model.")
    height: int
    steps: int
    guidance_scale: float


def tiny_profile(root: str | os.PathLike | None = None) -> ModelProfile:
    root = Path(root or DEFAULT_TINY_DIR)
    return ModelProfile(
        name="tiny",
        diffusion=DiffusionEngineConfig(model=str(root / "diffusion"), device="cpu", local_files_only=True),
        llm=LLMEngineConfig(
            model=str(root / "vlm"),
            max_model_len=4096,
            max_num_seqs=16,
            kv_cache_memory_bytes=64 * 2**20,
            enforce_eager=True,
            dtype="bfloat16",
        ),
        width=64,
        height=64,
        steps=4,
        guidance_scale=0.0,
    )


def gpu_profile() -> ModelProfile:
    """SD-Turbo (1-4 steps, no CFG) + Qwen2.5-VL-7B as critic and rewriter. Swap in SDXL / FLUX.1-schnell by id."""
    return ModelProfile(
        name="gpu",
        diffusion=DiffusionEngineConfig(model="stabilityai/sd-turbo", device="cuda", dtype="float16", max_batch_size=32),
        llm=LLMEngineConfig(
            model="Qwen/Qwen2.5-VL-7B-Instruct",
            max_model_len=8192,
            max_num_seqs=128,
            gpu_memory_utilization=0.85,
            dtype="bfloat16",
        ),
        width=512,
        height=512,
        steps=4,
        guidance_scale=0.0,
    )


def get_profile(name: str, tiny_dir: str | os.PathLike | None = None) -> ModelProfile:
    if name == "tiny":
        return tiny_profile(tiny_dir)
    if name == "gpu":
        return gpu_profile()
    raise ValueError(f"unknown model profile {name!r}; choose 'tiny' or 'gpu'")
