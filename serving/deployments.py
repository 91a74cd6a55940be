"""Ray Serve deployments: thin wrappers over the engines.

The classes here are plain (undecorated); ``build_*`` applies ``serve.deployment`` with options from config, as Ray
Serve LLM's builder does. Each deployment autoscales on its own.

Why not ``ray.serve.llm`` for the critic/rewriter: the planner speaks ``ChatRequest``/``ChatResult`` (images as PNG
bytes, JSON schema, parsed output, token counts) through one engine class in-process and on Serve, so the same tests
cover both; the CPU workarounds (torchvision shim, no chunked prefill with seeded requests) live in that engine; and
on a 2-core machine ``ray.serve.llm``'s placement group needs 4 logical CPUs and ~50 s to start. The OpenAI-compatible
API it would add is not used by the planner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from serving import metrics
from serving.config import DiffusionEngineConfig, LLMEngineConfig

logger = logging.getLogger(__name__)


class ServeOptions(BaseModel):
    """Replica count, autoscaling, resources and backpressure of one deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    target_ongoing_requests: float = Field(
        default=4.0, gt=0, description="Scale up when replicas average more in-flight requests than this."
    )
    upscale_delay_s: float = Field(default=5.0, ge=0)
    downscale_delay_s: float = Field(default=60.0, ge=0)
    max_ongoing_requests: int = Field(default=32, ge=1, description="Per replica; more wait in the handle's queue.")
    max_queued_requests: int = Field(default=1024, ge=-1, description="Beyond this, callers get BackPressureError.")
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources, e.g. to pin a deployment to a KubeRay worker group."
    )

    @model_validator(mode="after")
    def _bounds(self) -> ServeOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self

    def deployment_options(self) -> dict:
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            },
            "ray_actor_options": {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                **({"resources": dict(self.resources)} if self.resources else {}),
            },
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
        }


class DiffusionServeOptions(ServeOptions):
    max_batch_size: int = Field(default=8, ge=1, le=256, description="Largest batch @serve.batch forms.")
    batch_wait_timeout_s: float = Field(default=0.05, ge=0, le=10, description="How long a batch waits to fill.")

    @model_validator(mode="after")
    def _batch_fits(self) -> DiffusionServeOptions:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least max_batch_size "
                f"({self.max_batch_size}), or batches can never fill"
            )
        return self


class DiffusionDeployment:
    """Renders one request per call; ``@serve.batch`` turns concurrent calls into one pipeline call."""

    def __init__(self, engine_config: DiffusionEngineConfig, max_batch_size: int = 8, batch_wait_timeout_s: float = 0.05):
        from serving.engines import DiffusionEngine

        self.engine = DiffusionEngine(engine_config)
        self._render_batch.set_max_batch_size(max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def render(self, request: RenderRequest) -> RenderResult:
        # The batch hands back a future per request as soon as the pipeline call is done; the image is encoded in
        # the engine's pool while the next batch already runs.
        encoded = await self._render_batch(request)
        return await asyncio.wrap_future(encoded)

    def info(self) -> RendererInfo:
        return self.engine.info()

    def count_tokens(self, prompts: list[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _render_batch(self, requests: list[RenderRequest]) -> list[concurrent.futures.Future]:
        # The pipeline call blocks for seconds: run it off the replica's event loop so it keeps accepting requests
        # (which form the next batch meanwhile). Ray 2.60's batcher forms batches regardless of
        # max_concurrent_batches, which only caps how many run this function at once: returning after the
        # accelerator's stage (not after encoding) is what lets the next batch start while these images encode.
        pending = await asyncio.to_thread(self.engine.start_render, requests)
        for call in pending.calls:
            metrics.observe(metrics.RENDER_BATCH_SIZE, call.batch_size)
            metrics.observe(metrics.RENDER_LATENCY, call.seconds)
            metrics.inc(metrics.RENDERER_BUSY_SECONDS, call.seconds)
        return pending.futures


class LLMDeployment:
    """The critic/rewriter model: vLLM's async engine, which batches concurrent requests itself."""

    def __init__(self, engine_config: LLMEngineConfig):
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        from serving.engines import LLMEngine

        # vLLM's own engine metrics (tokens, queue, KV cache, latencies) through Ray's metrics agent: ray_vllm_*
        self.engine = LLMEngine(engine_config, stat_loggers=[RayPrometheusStatLogger])

    async def chat(self, request: ChatRequest) -> ChatResult:
        result = await self.engine.chat(request)
        kind = request.purpose
        metrics.observe(metrics.LLM_LATENCY, result.seconds, kind=kind)
        metrics.inc(metrics.LLM_TOKENS, result.prompt_tokens, kind=kind, type="prompt")
        metrics.inc(metrics.LLM_TOKENS, result.completion_tokens, kind=kind, type="completion")
        return result

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def build_diffusion_deployment(engine: DiffusionEngineConfig, options: DiffusionServeOptions):
    return serve.deployment(DiffusionDeployment, name="diffusion", **options.deployment_options()).bind(
        engine, options.max_batch_size, options.batch_wait_timeout_s
    )


def build_llm_deployment(engine: LLMEngineConfig, options: ServeOptions):
    return serve.deployment(LLMDeployment, name="llm", **options.deployment_options()).bind(engine)
