"""Clients: the planner's ports (``agents.ports.Renderer`` / ``LanguageModel``) over in-process engines or over Ray
Serve deployment handles. The planner and the campaign runner are the same code for both.

Other backends implement the same port elsewhere (``serving/openai_client.py``: any OpenAI-compatible endpoint); the
campaign runner only sees the port.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from serving import metrics
from serving.retry import RetryPolicy, call_async

logger = logging.getLogger(__name__)


class RendererCapacity(BaseModel):
    """How many images a renderer works on at once: what a campaign must keep in flight to keep it busy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(ge=1, description="Images one pipeline call takes.")
    replicas: int = Field(ge=1, description="Renderer replicas it may run (autoscaling's max_replicas).")

    @property
    def images(self) -> int:
        return self.max_batch_size * self.replicas


# ---------------------------------------------------------------------------------------------------------------------
# In-process engines
# ---------------------------------------------------------------------------------------------------------------------


class LocalRenderer:
    """Renderer port over an in-process DiffusionEngine. The pipeline call runs in a worker thread so the event loop
    (and the LLM engine on it) keeps going; the engine's own lock keeps calls one at a time."""

    def __init__(self, engine):
        self.engine = engine

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        return await asyncio.to_thread(self.engine.render, requests)

    async def info(self) -> RendererInfo:
        return self.engine.info()

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    async def capacity(self) -> RendererCapacity:
        return RendererCapacity(max_batch_size=self.engine.config.max_batch_size, replicas=1)


class LocalLanguageModel:
    """LanguageModel port over an in-process LLMEngine."""

    def __init__(self, engine):
        self.engine = engine

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self.engine.chat(request)


class LocalEngines(AbstractAsyncContextManager):
    """A preset's engines in this process, and their clients; shut down on exit. Enter it inside the event loop that
    will use it (vLLM's AsyncLLM binds to the loop that starts it).

    ``async with LocalEngines(preset) as engines: engines.renderer, engines.llm``
    """

    def __init__(self, preset, diffusion_cls: type | None = None, llm_cls: type | None = None):
        self.preset = preset
        self.diffusion_cls, self.llm_cls = diffusion_cls, llm_cls
        self.renderer: LocalRenderer | None = None
        self.llm: LocalLanguageModel | None = None
        self.rewriter_llm: Any = None  # what the rewriter and the critic talk to: an endpoint client or `llm`
        self.critic_llm: Any = None
        self._engines: list[Any] = []
        self._endpoint_clients: list[Any] = []

    async def __aenter__(self) -> LocalEngines:
        from serving.engines import DiffusionEngine, LLMEngine

        try:
            diffusion = await asyncio.to_thread(self.diffusion_cls or DiffusionEngine, self.preset.diffusion)
            self._engines.append(diffusion)
            self.renderer = LocalRenderer(diffusion)
            if self.preset.needs_llm:
                llm = (self.llm_cls or LLMEngine)(self.preset.llm)
                self._engines.append(llm)
                self.llm = LocalLanguageModel(llm)
            self.rewriter_llm, self.critic_llm = open_role_models(self.preset.endpoints, self.llm)
            self._endpoint_clients = endpoint_clients(self.rewriter_llm, self.critic_llm)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        while self._endpoint_clients:
            await self._endpoint_clients.pop().aclose()
        while self._engines:
            self._engines.pop().shutdown()


def open_role_models(endpoints, served):
    """(rewriter's, critic's) language model: an OpenAI-compatible client for each role with an endpoint, else
    ``served`` (the project's own LLM, in-process or behind a Serve handle; None when there is none)."""
    from serving.openai_client import open_language_models

    rewriter, critic = open_language_models(endpoints)
    return rewriter or served, critic or served


def endpoint_clients(*models) -> list[Any]:
    """The distinct endpoint clients among ``models`` (what must be closed)."""
    from serving.openai_client import OpenAILanguageModel

    unique: list[Any] = []
    for m in models:
        if isinstance(m, OpenAILanguageModel) and all(m is not u for u in unique):
            unique.append(m)
    return unique


# ---------------------------------------------------------------------------------------------------------------------
# Ray Serve deployment handles
# ---------------------------------------------------------------------------------------------------------------------


TRANSIENT_ERRORS = frozenset({
    "RayActorError", "ActorDiedError", "ActorUnavailableError",  # the replica died or is restarting
    "BackPressureError", "DeploymentUnavailableError",  # Serve shed the request or has no replica yet
    "ConnectionError", "TimeoutError", "GetTimeoutError",
})
"""Infrastructure errors (by class name, so this module needs no Ray import): retried, since Serve routes the next
attempt to a live or replacement replica. Anything else (a bad request, an engine bug) fails at once."""


def is_transient(exc: BaseException) -> bool:
    return any(cls.__name__ in TRANSIENT_ERRORS for cls in type(exc).__mro__)


async def with_retries(call, policy: RetryPolicy, kind: str):
    """``await call()``, retrying transient errors per ``policy`` (:mod:`serving.retry`, the one retry policy); each
    retry is counted in metrics (``promptbeam_retries`` by kind and error). The last error propagates."""

    def count(exc: BaseException, attempt: int, delay: float) -> None:
        metrics.inc(metrics.RETRIES, kind=kind, error=type(exc).__name__)

    return await call_async(call, policy, retry_if=is_transient, on_retry=count, what=kind)


class ServeRenderer:
    """Renderer port over the diffusion deployment's handle. One call per image: the deployment's ``@serve.batch``
    gathers concurrent calls (from this round and from every other intent in flight) into pipeline batches. An image
    whose call hits an infrastructure error is retried alone (:class:`RetryPolicy`)."""

    def __init__(self, handle, retry: RetryPolicy | None = None):
        self.handle = handle
        self.retry = retry or RetryPolicy()

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        return list(await asyncio.gather(*(
            with_retries(lambda r=r: self.handle.render.remote(r), self.retry, "render") for r in requests
        )))

    async def info(self) -> RendererInfo:
        return await self.handle.info.remote()

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return await self.handle.count_tokens.remote(prompts)

    async def capacity(self) -> RendererCapacity:
        return await self.handle.capacity.remote()

    async def live_replicas(self) -> int:
        """Replicas of the diffusion deployment running now (Serve's controller, ``serve.status()``): what the
        autoscaler has started, between its min and max; at least 1."""
        return await asyncio.to_thread(running_replicas, self.handle.app_name, self.handle.deployment_name)


def running_replicas(app_name: str, deployment_name: str) -> int:
    """RUNNING replicas of one deployment, from ``serve.status()`` (a blocking controller call); at least 1."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    deployment = app.deployments.get(deployment_name) if app is not None else None
    if deployment is None:
        return 1
    return max(1, sum(n for state, n in deployment.replica_states.items() if str(getattr(state, "value", state))
                      == "RUNNING"))


class ServeLanguageModel:
    """LanguageModel port over the LLM deployment's handle; infrastructure errors are retried (:class:`RetryPolicy`)."""

    def __init__(self, handle, retry: RetryPolicy | None = None):
        self.handle = handle
        self.retry = retry or RetryPolicy()

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await with_retries(lambda: self.handle.chat.remote(request), self.retry, "chat")
