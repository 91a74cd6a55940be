"""Engines with the real engines' interface and no model, for the fast Serve tier (Serve, the app and the campaign
layer are real; the models are the scripted fakes of ``pipelines/testing/fakes.py``).

Each instance registers itself in a state directory, given as the engine config's ``model``: ``<id>.alive`` when it
starts, ``<id>.shutdown`` when its ``shutdown`` runs. A test marks one dead from outside its replica by creating
``<id>.dead``; its ``check_health`` then raises, as a real engine's does when its process died.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
import uuid
import zlib
from concurrent.futures import Future
from pathlib import Path

from agents.messages import ChatRequest, ChatResult, RendererInfo, RenderRequest, RenderResult
from pipelines.testing.fakes import FakeRenderer, ScriptedLLM
from serving.config import DiffusionEngineConfig, LLMEngineConfig
from serving.engines.diffusion import PendingRender, PipelineCall


class _Registered:
    def __init__(self, state_dir: str):
        self.state_dir = Path(state_dir)
        self.instance = f"{type(self).__name__}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / f"{self.instance}.alive").touch()

    def _delay(self, kind: str) -> float:
        """Seconds each call takes, from ``<state>/<kind>_delay_s`` when a test wrote one (to kill a replica mid-run)."""
        path = self.state_dir / f"{kind}_delay_s"
        return float(path.read_text()) if path.exists() else 0.0

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


_REALISTIC: dict[tuple[int, int], bytes] = {}


def _with_text(png: bytes, **text: str) -> bytes:
    """``png`` with tEXt chunks spliced in before IEND (no re-encoding)."""
    chunks = b""
    for key, value in text.items():
        data = key.encode("latin-1") + b"\0" + value.encode("latin-1", "replace")
        chunks += struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunks + png[-12:]


def realistic(request: RenderRequest) -> tuple[bytes, bytes]:
    """(image, critic copy) as heavy as a real render's: a noise PNG of the requested size (encoded once per size,
    ~790 KB at 512²) and a 64² PNG critic copy, both carrying the request's prompt and seed as text chunks (what the
    scripted critic reads)."""
    import numpy as np
    from PIL import Image

    for size in ((request.width, request.height), (64, 64)):
        if size not in _REALISTIC:
            buf = io.BytesIO()
            rng = np.random.default_rng(size[0] * 10_000 + size[1])
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
            _REALISTIC[size] = buf.getvalue()
    meta = {"prompt": request.prompt, "seed": str(request.seed)}
    return _with_text(_REALISTIC[request.width, request.height], **meta), _with_text(_REALISTIC[64, 64], **meta)


class FakeDiffusionEngine(_Registered):
    def __init__(self, config: DiffusionEngineConfig):
        super().__init__(config.model)
        self.config = config
        self._renderer = FakeRenderer(keep_calls=False)
        self._renderer_batch_sizes: list[int] = []  # one entry per start_render call (tests read how batches formed)

    def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        self._raise_if_dead()
        time.sleep(self._delay("render"))
        ids = [(r.campaign, r.request_id) for r in requests]
        if len(set(ids)) != len(ids):  # as the real engine
            raise ValueError("request ids in one render call must be unique")
        results = asyncio.run(self._renderer.render(requests))  # the deployment calls this in a worker thread
        if (self.state_dir / "realistic_images").exists():  # a test asked for images as heavy as real ones
            results = [self._realistic(request, result) for request, result in zip(requests, results)]
        return results

    @staticmethod
    def _realistic(request: RenderRequest, result: RenderResult) -> RenderResult:
        """As the real engine returns it: written to ``image_uri`` where the request names one (the bytes then stay
        here; serving/images.py), with a small critic copy."""
        from serving.images import try_write_image

        png, critic = realistic(request)
        stored = try_write_image(request.image_uri, png)
        return result.model_copy(update={"png": b"" if stored is not None else png, "stored": stored,
                                         "critic_image": critic})

    def start_render(self, requests: list[RenderRequest]) -> PendingRender:
        """The real engine's two-stage interface: here every image is ready when the call returns."""
        self._renderer_batch_sizes.append(len(requests))
        t0 = time.perf_counter()
        results = self.render(requests)
        seconds = time.perf_counter() - t0
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
        await asyncio.sleep(self._delay("chat"))
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
