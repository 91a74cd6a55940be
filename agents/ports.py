"""The three things the planner needs from the outside world. Adapters implement them over in-process engines
(``pipelines.adapters``) or Ray Serve handles; the planner code is the same for both."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agents.messages import ChatRequest, ChatResult, Intent, RendererInfo, RenderRequest, RenderResult


@runtime_checkable
class Renderer(Protocol):
    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        """Draw every request; results in request order. Raises on infrastructure errors."""
        ...

    async def info(self) -> RendererInfo:
        """The model and its prompt limit (tokens its text encoder reads)."""
        ...

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        """How many tokens each prompt takes in the renderer's (limiting) text encoder, special tokens included."""
        ...


@runtime_checkable
class LanguageModel(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResult:
        """One chat completion (images allowed in user messages; JSON schema optional)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """An extra reward (e.g. a CLIP-like score on GPU). Returns named scores in 0..1."""

    name: str

    async def score(self, png: bytes, intent: Intent) -> dict[str, float]: ...
