"""What the planner needs from the outside world, as protocols.

Models: a :class:`Renderer` and a :class:`LanguageModel`, implemented by adapters over in-process engines or Ray Serve
handles. Agents: a :class:`PromptRewriter` and an :class:`ImageCritic`; the LLM-backed ``agents.rewriter.Rewriter``
and ``agents.critic.Critic`` are one implementation each, and a rule-based rewriter or a critic whose answers come
from a programmatic judge plug in through the same interfaces (``agents.critic.build_critique`` is the shared score
formula). The planner code is the same for all of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agents.messages import (
    ChatRequest,
    ChatResult,
    Check,
    Critique,
    Intent,
    RendererInfo,
    RenderRequest,
    RenderResult,
    RewriteContext,
    RewriteReply,
)


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


class CriticError(Exception):
    """A model-caused failure to critique (unparseable reply, timeout): recorded on the candidate, the search goes on.
    ``result`` is the LLM reply that failed, if a call was made (its tokens are still counted)."""

    def __init__(self, message: str, result: ChatResult | None = None):
        super().__init__(message)
        self.result = result


@runtime_checkable
class PromptRewriter(Protocol):
    """Proposes new prompts for a branch. Model-caused failures go into ``RewriteReply.error``; infrastructure errors
    raise. The planner checks every returned prompt (renderer token limit, duplicates, output filter)."""

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        ...


@runtime_checkable
class ImageCritic(Protocol):
    """Turns an intent into yes/no checks once, then scores each image against the ORIGINAL intent.

    Both return the LLM reply they used (for cost accounting), or None when no LLM call was made (zero cost).
    ``critique`` raises :class:`CriticError` for model-caused failures."""

    async def decompose(self, intent: Intent, *, request_id: str, seed: int) -> tuple[list[Check], ChatResult | None]:
        ...

    async def critique(
        self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
    ) -> tuple[Critique, ChatResult | None]:
        ...
