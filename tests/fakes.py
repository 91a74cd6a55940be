"""Scripted fakes of the planner's ports, for planner logic only (engines are tested through the real components)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable

from agents.messages import ChatRequest, ChatResult, RenderRequest, RenderResult


class FakeRenderer:
    """Deterministic tiny PNGs whose pixels depend on (prompt, seed); remembers which image came from what."""

    def __init__(self):
        self.calls: list[list[RenderRequest]] = []
        self.origin: dict[bytes, tuple[str, int]] = {}  # png -> (prompt, seed)
        self.fail_with: Exception | None = None

    async def render(self, requests: list[RenderRequest]) -> list[RenderResult]:
        from PIL import Image

        if self.fail_with is not None:
            raise self.fail_with
        self.calls.append(list(requests))
        out = []
        for r in requests:
            h = hashlib.sha256(f"{r.prompt}|{r.seed}".encode()).digest()
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), tuple(h[:3])).save(buf, format="PNG")
            png = buf.getvalue()
            self.origin[png] = (r.prompt, r.seed)
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


ScoreFn = Callable[[str, int], tuple[int, int, bool]]
"""(prompt, seed) -> (alignment 0..10, quality 0..10, every check answered yes?)"""


class ScriptedLLM:
    """Plays decomposer, rewriter and critic by reading the JSON schema of each request.

    - decompose: two fixed questions;
    - rewrite: ``rewrite_fn(current_prompt, k, seed)`` prompts (default: numbered variations);
    - critique: ``score_fn(prompt, seed)`` of the image's origin, as recorded by the FakeRenderer.
    ``broken`` lists request-id substrings that get a non-JSON reply instead.
    """

    def __init__(
        self,
        renderer: FakeRenderer,
        score_fn: ScoreFn | None = None,
        rewrite_fn: Callable[[str, int, int], list[str]] | None = None,
        broken: tuple[str, ...] = (),
    ):
        self.renderer = renderer
        self.score_fn = score_fn or (lambda prompt, seed: (len(prompt) % 11, 5, True))
        self.rewrite_fn = rewrite_fn or (lambda prompt, k, seed: [f"{prompt}, variation {seed % 997}-{i}" for i in range(k)])
        self.broken = broken
        self.requests: list[ChatRequest] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
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
            prompt, seed = self.renderer.origin[png]
            alignment, quality, yes = self.score_fn(prompt, seed)
            ids = list(props["answers"]["properties"])
            reply = {"answers": {i: yes for i in ids}, "alignment": alignment, "quality": quality,
                     "feedback": f"more detail for {prompt[:20]}"}
        text = json.dumps(reply)
        return ChatResult(request_id=request.request_id, text=text, parsed=reply, prompt_tokens=20,
                          completion_tokens=len(text) // 4)
