"""Scripted fakes of the planner's ports, for planner logic, the fast Serve tests (through ``tests/fake_engines.py``)
and the benchmarks that measure the runner rather than models (engines are tested through the real components)."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable

from agents.config import CriticConfig
from agents.critic import build_critique
from agents.messages import (
    Candidate,
    ChatRequest,
    ChatResult,
    Check,
    Critique,
    HumanAction,
    Intent,
    RendererInfo,
    RenderRequest,
    RenderResult,
    RewriteContext,
    RewriteReply,
)
from agents.steering import ReviewConfig


def origin(png: bytes) -> tuple[str, int]:
    """(prompt, seed) that FakeRenderer wrote into the PNG's text chunk, or the provenance stamp of a real engine."""
    from PIL import Image

    info = Image.open(io.BytesIO(png)).text
    if "prompt" not in info:  # a real engine's image, stamped by its output guard: its provenance record says
        from serving.safety.provenance import RECORD_KEY

        record = json.loads(info[RECORD_KEY])  # the record plus the stamp's own watermark note
        return record["prompt"], int(record["seed"])
    return info["prompt"], int(info["seed"])


class FakeRenderer:
    """Deterministic PNGs whose pixels depend on (prompt, seed), which are also written into the PNG's metadata so
    the scripted critic knows what it is looking at (no growing lookup table). ``size=64`` gives noise images of a
    realistic byte size (for the memory benchmark)."""

    def __init__(self, keep_calls: bool = True, size: int = 8):
        self.calls: list[list[RenderRequest]] = []
        self.keep_calls = keep_calls
        self.size = size
        self.fail_with: Exception | None = None
        self.fail_on: str | None = None  # raise on a call holding a request id containing this

    max_prompt_tokens = 77

    async def info(self) -> RendererInfo:
        return RendererInfo(model="fake", max_prompt_tokens=self.max_prompt_tokens, tokenizer="words+2")

    async def count_tokens(self, prompts: list[str]) -> list[int]:
        """One token per word plus start and end, like CLIP counts short words."""
        return [len(p.split()) + 2 for p in prompts]

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        import numpy as np
        from PIL import Image, PngImagePlugin

        if self.fail_with is not None:
            raise self.fail_with
        if self.fail_on and any(self.fail_on in r.request_id for r in requests):
            raise ConnectionError(f"renderer died (scripted, on a request matching {self.fail_on!r})")
        if self.keep_calls:
            self.calls.append(list(requests))
        out = []
        for r in requests:
            h = hashlib.sha256(f"{r.prompt}|{r.seed}".encode()).digest()
            if self.size <= 8:
                image = Image.new("RGB", (self.size, self.size), tuple(h[:3]))
            else:
                rng = np.random.default_rng(int.from_bytes(h[:8], "big"))
                image = Image.fromarray(rng.integers(0, 255, (self.size, self.size, 3), dtype=np.uint8))
            meta = PngImagePlugin.PngInfo()
            meta.add_text("prompt", r.prompt)
            meta.add_text("seed", str(r.seed))
            buf = io.BytesIO()
            image.save(buf, format="PNG", pnginfo=meta)
            png = buf.getvalue()
            out.append(
                RenderResult(
                    request_id=r.request_id,
                    png=png,
                    seed=r.seed,
                    model="fake",
                    width=r.width,
                    height=r.height,
                    steps=r.steps,
                    batch_size=len(requests),
                    render_seconds=0.0,
                )
            )
        return out


def _user_data(request: ChatRequest) -> dict:
    text = request.messages[-1].text()
    start = text.index("<user_data>") + len("<user_data>")
    return json.loads(text[start : text.index("</user_data>")])


ScoreFn = Callable[[str, int], tuple[int, int, bool | list[bool]]]
"""(prompt, seed) -> (alignment 0..10, quality 0..10, every check answered yes? or one answer per check in order)"""


class ScriptedLLM:
    """Plays decomposer, rewriter and critic by reading the JSON schema of each request.

    - decompose: two fixed questions;
    - rewrite: ``rewrite_fn(current_prompt, k, seed)`` prompts (default: numbered variations);
    - critique: ``score_fn(prompt, seed)`` of the image's origin, as the FakeRenderer wrote it into the PNG.
    ``broken`` lists request-id substrings that get a non-JSON reply instead.
    """

    def __init__(
        self,
        renderer: FakeRenderer | None = None,
        score_fn: ScoreFn | None = None,
        rewrite_fn: Callable[[str, int, int], list[str]] | None = None,
        broken: tuple[str, ...] = (),
        keep_requests: bool = True,
    ):
        self.keep_requests = keep_requests
        self.score_fn = score_fn or (lambda prompt, seed: (len(prompt) % 11, 5, True))
        self.rewrite_fn = rewrite_fn or (lambda prompt, k, seed: [f"{prompt}, variation {seed % 997}-{i}" for i in range(k)])
        self.broken = broken
        self.requests: list[ChatRequest] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def chat(self, request: ChatRequest) -> ChatResult:
        if self.keep_requests:
            self.requests.append(request)
        if any(b in request.request_id for b in self.broken):
            return ChatResult(request_id=request.request_id, text="{not json", parse_error="invalid JSON (scripted)",
                              prompt_tokens=10, completion_tokens=3)
        props = (request.json_schema or {}).get("properties", {})
        if "questions" in props:
            reply = {"questions": ["Is the main subject present?", "Is the style right?"]}
        elif "prompts" in props:
            data = _user_data(request)
            k = props["prompts"]["minItems"]
            reply = {"prompts": self.rewrite_fn(data["current_prompt"], k, request.seed or 0)}
        else:
            png = request.messages[-1].images()[0]
            prompt, seed = origin(png)
            alignment, quality, yes = self.score_fn(prompt, seed)
            ids = list(props["answers"]["properties"])
            answers = yes if isinstance(yes, list) else [yes] * len(ids)
            reply = {"answers": dict(zip(ids, answers)), "alignment": alignment, "quality": quality,
                     "feedback": f"more detail for {prompt[:20]}"}
        text = json.dumps(reply)
        result = ChatResult(request_id=request.request_id, text=text, parsed=reply, prompt_tokens=20,
                            completion_tokens=len(text) // 4)
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        return result


class DictSink:
    """An image sink that keeps PNGs in a dict by candidate id (the planner keeps no image bytes itself)."""

    def __init__(self):
        self.images: dict[str, bytes] = {}

    async def __call__(self, candidate: Candidate, png: bytes) -> str:
        self.images[candidate.id] = png
        return f"mem://{candidate.id}"


class ScriptedCritic:
    """A critic that calls no LLM (like a programmatic judge): two checks, answers and ratings from ``score_fn`` of the
    image's origin, scored with the shared formula (``agents.critic.build_critique``)."""

    CHECKS = [Check(id="q1", question="Is the main subject present?"), Check(id="q2", question="Is the style right?")]

    def __init__(self, score_fn: ScoreFn, config: CriticConfig | None = None):
        self.score_fn = score_fn
        self.config = config or CriticConfig()

    async def decompose(self, intent: Intent, *, request_id: str, seed: int) -> tuple[list[Check], None]:
        return list(self.CHECKS), None

    async def critique(self, png: bytes, intent: Intent, checks: list[Check], *, request_id: str, seed: int
                       ) -> tuple[Critique, None]:
        prompt, image_seed = origin(png)
        alignment, quality, yes = self.score_fn(prompt, image_seed)
        answers = yes if isinstance(yes, list) else [yes] * len(checks)
        critique = build_critique(self.config, checks, {c.id: a for c, a in zip(checks, answers)},
                                  alignment=alignment / 10, quality=quality / 10, feedback=f"judged {prompt[:20]}")
        return critique, None


class CountingRewriter:
    """A rewriter that calls no LLM: ``k`` new prompts numbered by round (every one usable); keeps each context."""

    def __init__(self):
        self.contexts: list[RewriteContext] = []

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        self.contexts.append(context)
        return RewriteReply(prompts=[f"{context.current_prompt} | r{context.round} {request_id[-2:]} v{i}"
                                     for i in range(context.k)])


# Campaign memory (tests/test_memory.py): a world where only the word "square" draws the box the user asked for.


def square_score(prompt: str, seed: int) -> tuple[float, float, bool]:
    """(alignment, quality, check passed): the box appears only when the prompt says 'square'."""
    yes = "square" in re.findall(r"[a-z]+", prompt.lower())
    return (10.0 if yes else 2.0), 5.0, yes


class OneFindRewriter:
    """A rewriter that finds the fix once: for the intent whose text is ``a box`` it proposes 'a square' (and a dud);
    for every other intent only duds, so without campaign memory they never find it."""

    async def propose(self, context: RewriteContext, *, request_id: str, seed: int, temperature: float) -> RewriteReply:
        duds = [f"{context.current_prompt} v{context.round}{i}" for i in range(context.k)]
        if context.intent.text == "a box" and context.round == 0:
            return RewriteReply(prompts=["a square"] + duds[: context.k - 1])
        return RewriteReply(prompts=duds)


def one_find_rewriter(llm, config):
    return OneFindRewriter()


def square_critic(llm, config):
    return ScriptedCritic(square_score, config)


class ScriptedSteering:
    """A :class:`agents.steering.Steering` for tests: ``released[r]`` are the actions a person has posted by round boundary ``r``
    (each boundary sees every action released at or before it); ``clock`` is the time :meth:`now` tells."""

    def __init__(self, released: dict[int, list[HumanAction]] | None = None, review: ReviewConfig | None = None,
                 clock: float = 0.0):
        self.released = released or {}
        self.review = review
        self.clock = clock
        self.calls: list[tuple[str, int]] = []

    async def actions(self, intent_id: str, round: int) -> list[HumanAction]:
        self.calls.append((intent_id, round))
        return [a for r in sorted(self.released) if r <= round for a in self.released[r] if a.intent_id == intent_id]

    def now(self) -> float:
        return self.clock
