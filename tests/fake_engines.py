"""Engines with the real engines' interface and no model, for the fast Serve tier (Serve, the app and the campaign
layer are real; the models are the scripted fakes of ``tests/fakes.py``).

Each instance registers itself in a state directory, given as the engine config's ``model``: ``<id>.alive`` when it
starts, ``<id>.shutdown`` when its ``shutdown`` runs. A test marks one dead from outside its replica by creating
``<id>.dead``; its ``check_health`` then raises, as a real engine's does when its process died.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from serving.config import DiffusionEngineConfig, LLMEngineConfig
from tests.fakes import FakeRenderer, ScriptedLLM


class _Registered:
    def __init__(self, state_dir: str):
        self.state_dir = Path(state_dir)
        self.instance = f"{type(self).__name__}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{self.instance}.alive").touch()

    def _raise_if_dead(self) -> None:
        if (self.state_dir / f"{self.instance}.dead").exists():
            raise RuntimeError(f"fake engine {self.instance} was marked dead")

    def shutdown(self) -> None:
        (self.state_dir / f"{self.instance}.shutdown").touch()


def instances(state_dir: Path, kind: str, suffix: str = "alive") -> set[str]:
    """Instance ids of ``kind`` ('FakeDiffusionEngine' or 'FakeLLMEngine') that wrote ``<id>.<suffix>``."""
    return {p.name[: -len(suffix) - 1] for p in Path(state_dir).glob(f"{kind}-*.{suffix}")}


def mark_dead(state_dir: Path, instance: str) -> None:
    (Path(state_dir) / f"{instance}.dead").touch()


class FakeDiffusionEngine(_Registered):
    def __init__(self, config: DiffusionEngineConfig):
        super().__init__(config.model)
        self.config = config
        self._renderer = FakeRenderer(keep_calls=False)

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        self._raise_if_dead()
        return asyncio.run(self._renderer.render(requests))  # the deployment calls this in a worker thread

    def start_render(self, requests: list[RenderRequest]):
        """The real engine's two-stage interface: one pipeline call's record and already-completed futures."""
        import time
        from concurrent.futures import Future

        from serving.engines.diffusion import PendingRender, PipelineCall

        t0 = time.perf_counter()
        results = self.render(requests)
        futures = []
        for result in results:
            future: Future = Future()
            future.set_result(result)
            futures.append(future)
        call = PipelineCall(batch_size=len(requests), padded_size=len(requests), seconds=time.perf_counter() - t0)
        return PendingRender(futures=futures, calls=[call] if requests else [])

    def info(self) -> RendererInfo:
        return RendererInfo(model=self.config.model, max_prompt_tokens=77, tokenizer="words+2")

    def count_tokens(self, prompts: list[str]) -> list[int]:
        return [len(p.split()) + 2 for p in prompts]

    def check_health(self) -> None:
        self._raise_if_dead()


class FakeLLMEngine(_Registered):
    def __init__(self, config: LLMEngineConfig):
        super().__init__(config.model)
        self.config = config
        self._llm = ScriptedLLM(keep_requests=False)

    async def chat(self, request: ChatRequest) -> ChatResult:
        self._raise_if_dead()
        return await self._llm.chat(request)

    async def check_health(self) -> None:
        self._raise_if_dead()


# Agent factories for presets whose rewriter/critic need no served LLM (``rewriter: tests.fake_engines:...``): they
# bring their own scripted model, as a rule-based rewriter or a programmatic judge would.


def scripted_rewriter(llm, config):
    from agents.rewriter import Rewriter

    assert llm is None, "a preset without an llm hands its agent factories None"
    return Rewriter(ScriptedLLM(keep_requests=False), config)


def scripted_critic(llm, config):
    from agents.critic import Critic

    assert llm is None, "a preset without an llm hands its agent factories None"
    return Critic(ScriptedLLM(keep_requests=False), config)
