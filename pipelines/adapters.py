"""Adapters from the planner's ports to in-process engines (the Serve adapters live beside the Serve app)."""

from __future__ import annotations

import asyncio

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult


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


class LocalLanguageModel:
    """LanguageModel port over an in-process LLMEngine."""

    def __init__(self, engine):
        self.engine = engine

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self.engine.chat(request)


class ServeRenderer:
    """Renderer port over the diffusion deployment's handle. One call per image: the deployment's ``@serve.batch``
    gathers concurrent calls (from this round and from every other intent in flight) into pipeline batches."""

    def __init__(self, handle):
        self.handle = handle

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        return list(await asyncio.gather(*(self.handle.render.remote(r) for r in requests)))

    async def info(self) -> RendererInfo:
        return await self.handle.info.remote()

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        return await self.handle.count_tokens.remote(prompts)


class ServeLanguageModel:
    """LanguageModel port over the LLM deployment's handle."""

    def __init__(self, handle):
        self.handle = handle

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self.handle.chat.remote(request)
