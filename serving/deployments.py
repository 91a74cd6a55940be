"""Ray Serve deployments: thin wrappers over an engine class they are given.

The classes here are plain (undecorated) and take the engine class as a parameter, as Ray Serve LLM's ``LLMServer``
takes ``engine_cls``: the real engines in production, fake engines in the fast Serve test tier. ``build_*`` applies
``serve.deployment`` with this module's default options merged under the caller's, the way Ray Serve LLM's builder
does. An operator changes replicas, autoscaling, resources and batching in the Serve config's ``deployments:``
section, which Serve applies in place (``user_config`` reaches :meth:`reconfigure` without a restart).

Health: Serve calls ``check_health`` every ``health_check_period_s``; it asks the engine, so a dead vLLM engine core or a
broken CUDA context makes Serve replace the replica. Shutdown: engines stop in an explicit ``shutdown()``; Serve's only
replica-stop hook, ``__del__``, hands that coroutine to Serve and does nothing when the garbage collector calls it.

``ray.serve.llm`` is the other backend for the critic/rewriter (``serving/serve_llm.py``, ``AppConfig.llm_backend``).
:class:`LLMDeployment` stays the default: the planner's ``ChatRequest``/``ChatResult`` go through one engine class
in-process and on Serve, so the same tests cover both, and its placement group needs no extra logical CPUs on small
machines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import inspect
import logging
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from serving import metrics
from serving.clients import RendererCapacity
from serving.config import DiffusionEngineConfig, LLMEngineConfig

logger = logging.getLogger(__name__)


class DiffusionBatchConfig(BaseModel):
    """The diffusion deployment's ``user_config``: how ``@serve.batch`` forms batches. Changing it in the Serve config
    reconfigures running replicas in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=8, ge=1, le=256, description="Largest batch @serve.batch forms.")
    batch_wait_timeout_s: float = Field(default=0.05, ge=0, le=10, description="How long a batch waits to fill.")


def default_batching(engine: DiffusionEngineConfig) -> DiffusionBatchConfig:
    """Batches as large as the engine's own ``max_batch_size`` (the preset's choice for its model and device)."""
    return DiffusionBatchConfig(max_batch_size=engine.max_batch_size)


def _replicas_of_this_deployment() -> int:
    """Replicas this deployment may run: autoscaling's ``max_replicas``, else its fixed ``num_replicas``. Ray 2.60
    exposes the replica's deployment config only as ``ReplicaContext._deployment_config``; without it, the number of
    replicas running now (``world_size``) is the best public answer."""
    ctx = serve.get_replica_context()
    config = getattr(ctx, "_deployment_config", None)
    autoscaling = getattr(config, "autoscaling_config", None)
    if autoscaling is not None:
        return max(1, int(autoscaling.max_replicas))
    if config is not None and getattr(config, "num_replicas", None):
        return int(config.num_replicas)
    return max(1, int(ctx.world_size))


class _StopsEngineOnReplicaStop:
    """Ray Serve stops a replica by calling ``__del__`` on its event loop, once, and awaiting what it returns (its
    only shutdown hook). Here that hook hands back the explicit ``shutdown()`` coroutine; called by Python's garbage
    collector (no event loop running) it does nothing, so cleanup never happens implicitly."""

    async def shutdown(self) -> None:  # pragma: no cover - each deployment defines it
        raise NotImplementedError

    def __del__(self):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self.shutdown()


class DiffusionDeployment(_StopsEngineOnReplicaStop):
    """Renders one request per call; ``@serve.batch`` turns concurrent calls into one pipeline call."""

    def __init__(self, engine_config: DiffusionEngineConfig, engine_cls: type | None = None):
        if engine_cls is None:
            from serving.engines import DiffusionEngine as engine_cls
        self.engine = engine_cls(engine_config)
        self._apply(default_batching(engine_config))  # until Serve passes the user_config

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's ``user_config`` at start and on every in-place config update."""
        batching = DiffusionBatchConfig.model_validate(user_config or {})
        if batching.max_batch_size > self.engine.config.max_batch_size:
            raise ValueError(
                f"user_config max_batch_size ({batching.max_batch_size}) exceeds the engine's max_batch_size "
                f"({self.engine.config.max_batch_size}); raise the engine's or lower the deployment's"
            )
        self._apply(batching)

    def _apply(self, batching: DiffusionBatchConfig) -> None:
        self.batching = batching
        self._render_batch.set_max_batch_size(batching.max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def render(self, request: RenderRequest) -> RenderResult:
        # The batch hands back a future per request as soon as the pipeline call is done; the image is encoded in
        # the engine's pool while the next batch already runs.
        encoded = await self._render_batch(request)
        return await asyncio.wrap_future(encoded)

    def info(self) -> RendererInfo:
        return self.engine.info()

    def count_tokens(self, prompts: list[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    def capacity(self) -> RendererCapacity:
        """Batch size times replicas: how many images the campaign must keep in flight to fill the renderer."""
        return RendererCapacity(max_batch_size=self.batching.max_batch_size, replicas=_replicas_of_this_deployment())

    def busy_seconds(self) -> float:
        """Seconds this replica's engine has spent inside pipeline calls (``RENDERER_BUSY_SECONDS`` exports the same
        sum; benchmarks read it here to divide by their own wall time)."""
        return self.engine.busy_seconds

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _render_batch(self, requests: list[RenderRequest]) -> list[concurrent.futures.Future]:
        # The pipeline call blocks for seconds: run it off the replica's event loop so it keeps accepting requests
        # (which form the next batch meanwhile). Ray 2.60's batcher forms batches regardless of
        # max_concurrent_batches, which only caps how many run this function at once: returning after the
        # accelerator's stage (not after encoding) is what lets the next batch start while these images encode.
        try:
            return await self._start(requests)
        except Exception:
            if len(requests) == 1:
                raise
        # A batch gathers requests from many intents and campaigns: one bad item (or a clash between two) must not
        # fail the others, so a failed batch is rendered again one request at a time, each failing on its own.
        futures = []
        for request in requests:
            try:
                futures.extend(await self._start([request]))
            except Exception as exc:
                failed: concurrent.futures.Future = concurrent.futures.Future()
                failed.set_exception(exc)
                futures.append(failed)
        return futures

    async def _start(self, requests: list[RenderRequest]) -> list[concurrent.futures.Future]:
        pending = await asyncio.to_thread(self.engine.start_render, requests)
        for call in pending.calls:
            metrics.observe(metrics.RENDER_BATCH_SIZE, call.batch_size)
            metrics.observe(metrics.RENDER_LATENCY, call.seconds)
            if call.seconds > 0:  # Ray's counters refuse 0
                metrics.inc(metrics.RENDERER_BUSY_SECONDS, call.seconds)
        return pending.futures

    def check_health(self) -> None:
        """Raises when the engine cannot render any more (Serve then replaces this replica)."""
        self.engine.check_health()

    async def shutdown(self) -> None:
        """Release the engine (its pipeline and accelerator memory). Idempotent."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)



class LLMDeployment(_StopsEngineOnReplicaStop):
    """The critic/rewriter model: an LLM engine (vLLM's async engine by default), which batches concurrent requests
    itself."""

    def __init__(self, engine_config: LLMEngineConfig, engine_cls: type | None = None):
        if engine_cls is None:
            from serving.engines import LLMEngine as engine_cls
        kwargs = {}
        if "stat_loggers" in inspect.signature(engine_cls).parameters:
            # vLLM's own engine metrics (tokens, queue, KV cache, latencies) through Ray's metrics agent: ray_vllm_*
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            kwargs["stat_loggers"] = [RayPrometheusStatLogger]
        self.engine = engine_cls(engine_config, **kwargs)

    async def chat(self, request: ChatRequest) -> ChatResult:
        result = await self.engine.chat(request)
        kind = request.purpose
        metrics.observe(metrics.LLM_LATENCY, result.seconds, kind=kind)
        metrics.inc(metrics.LLM_TOKENS, result.prompt_tokens, kind=kind, type="prompt")
        metrics.inc(metrics.LLM_TOKENS, result.completion_tokens, kind=kind, type="completion")
        return result

    async def check_health(self) -> None:
        """Raises when the engine is dead (e.g. vLLM's engine core process exited); Serve then replaces the replica."""
        await self.engine.check_health()

    async def shutdown(self) -> None:
        """Stop the engine (vLLM's engine core processes). Idempotent."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.shutdown()



# ---------------------------------------------------------------------------------------------------------------------
# Builders: module defaults, then the caller's options (a Serve config's `deployments:` entries override both)
# ---------------------------------------------------------------------------------------------------------------------

BATCHES_HELD = 4
"""A diffusion replica holds up to this many full batches (max_ongoing_requests = BATCHES_HELD x max_batch_size)."""


def merge_options(defaults: dict[str, Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """Serve deployment options: ``options`` over ``defaults``, one level deep for dict-valued options (so
    ``{"ray_actor_options": {"num_gpus": 1}}`` keeps the default ``num_cpus``)."""
    merged = copy.deepcopy(defaults)
    for key, value in (options or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def diffusion_options(engine: DiffusionEngineConfig, *, on_gpu: bool, batch_seconds: float) -> dict[str, Any]:
    """Default Serve options of the diffusion deployment for an engine config."""
    batching = default_batching(engine)
    batch = batching.max_batch_size
    return {
        "max_ongoing_requests": BATCHES_HELD * batch,
        "max_queued_requests": 4096,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1,
                               "target_ongoing_requests": 2 * batch, "upscale_delay_s": 5, "downscale_delay_s": 60},
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1 if on_gpu else 0},
        "user_config": batching.model_dump(),
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        # A stopping replica first finishes what it holds: up to BATCHES_HELD batches of the slowest kind.
        "graceful_shutdown_timeout_s": math.ceil(BATCHES_HELD * batch_seconds + 10),
    }


def llm_options(*, on_gpu: bool) -> dict[str, Any]:
    """Default Serve options of the LLM deployment (vLLM batches continuously: scale on sustained depth)."""
    return {
        "max_ongoing_requests": 64,
        "max_queued_requests": 4096,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1,
                               "target_ongoing_requests": 16, "upscale_delay_s": 5, "downscale_delay_s": 60},
        "ray_actor_options": {"num_cpus": 1, "num_gpus": 1 if on_gpu else 0},
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": 120,  # a critique or a proposal of up to a few thousand tokens finishes
    }


def build_diffusion_deployment(
    engine: DiffusionEngineConfig,
    engine_cls: type | None = None,
    *,
    on_gpu: bool = False,
    batch_seconds: float = 30.0,
    options: dict[str, Any] | None = None,
    name: str = "diffusion",
):
    opts = merge_options(diffusion_options(engine, on_gpu=on_gpu, batch_seconds=batch_seconds), options)
    return serve.deployment(DiffusionDeployment, name=name, **opts).bind(engine, engine_cls)


def build_llm_deployment(
    engine: LLMEngineConfig, engine_cls: type | None = None, *, on_gpu: bool = False,
    options: dict[str, Any] | None = None,
):
    opts = merge_options(llm_options(on_gpu=on_gpu), options)
    return serve.deployment(LLMDeployment, name="llm", **opts).bind(engine, engine_cls)
