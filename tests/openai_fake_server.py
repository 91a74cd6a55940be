"""An OpenAI-compatible chat server on loopback that answers with ``pipelines.testing.fakes.ScriptedLLM``: the wire
format is real (images as data URLs, ``response_format`` json_schema, seed, usage), the model is scripted. For tests
of the app and the CLI with external rewriter/critic endpoints, where a vLLM server would only add minutes
(tests/test_openai_client.py runs the client against vLLM's own server).

It reads each request back into a ``ChatRequest``, so a field the client failed to send shows up as a wrong answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading

from agents.messages import ChatMessage, ChatRequest, ImagePart, TextPart
from pipelines.testing.fakes import ScriptedLLM
from tests.http_helpers import LoopbackServer


def chat_request(body: dict, request_id: str) -> ChatRequest:
    """An OpenAI chat-completions body -> ChatRequest (the inverse of serving.openai_client's request_body)."""

    def part(p: dict):
        if p["type"] == "image_url":
            head, _, data = p["image_url"]["url"].partition(",")
            media_type, _, encoding = head.removeprefix("data:").partition(";")
            assert head.startswith("data:") and encoding == "base64", head
            return ImagePart(data=base64.b64decode(data), media_type=media_type)  # refused if the type is not the bytes'

        return TextPart(text=p["text"])

    messages = [ChatMessage(role=m["role"], content=m["content"] if isinstance(m["content"], str)
                            else [part(p) for p in m["content"]]) for m in body["messages"]]
    schema = (body.get("response_format") or {}).get("json_schema") or {}
    return ChatRequest(request_id=request_id, purpose=schema.get("name", "other"), messages=messages,
                       json_schema=schema.get("schema"), max_tokens=body.get("max_tokens", 256),
                       temperature=body.get("temperature", 0.7), seed=body.get("seed"))


class ScriptedOpenAIServer:
    """``POST /v1/chat/completions`` answered by a ScriptedLLM; records (model, purpose, images, seed, authorization) per
    request. Loopback: the Serve replicas of the local test cluster run on this machine."""

    def __init__(self, llm: ScriptedLLM | None = None):
        self.llm = llm or ScriptedLLM(keep_requests=False)
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._answer)
        self.url = self._server.url + "/v1"

    def _answer(self, method: str, path: str, headers: dict, raw: bytes) -> tuple[int, bytes, str]:
        body = json.loads(raw)
        with self._lock:
            n = len(self.calls)
            request = chat_request(body, f"srv-{n}")
            self.calls.append({"model": body["model"], "purpose": request.purpose, "seed": request.seed,
                               "images": sum(len(m.images()) for m in request.messages),
                               "authorization": headers.get("Authorization")})
            result = asyncio.run(self.llm.chat(request))
        return 200, json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": result.text}}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
        }).encode(), "application/json"

    def close(self) -> None:
        self._server.close()
