"""The planner's ``LanguageModel`` port over any OpenAI-compatible chat-completions endpoint.

Points the rewriter or the critic at a server the user already runs: their own ``vllm serve``, Ray Serve LLM's
OpenAI app, or a hosted vision-language model. Each role gets its own :class:`OpenAIEndpointConfig` (URL, model,
API key from an environment variable, timeouts, retries), so the two can use different endpoints and models.

What crosses the wire (``POST {base_url}/chat/completions``):

- images as ``image_url`` parts holding ``data:image/png;base64,...`` URLs (the PNG bytes of ``ImagePart``);
- a JSON schema as ``response_format: {"type": "json_schema", ...}``. vLLM (0.32 here) turns that into its own
  structured-output request (``structured_outputs.json``), so no vLLM-specific body is needed; servers that want
  extra parameters get them from ``extra_body``;
- ``seed``, ``temperature``, ``top_p`` and the token limit; ``usage`` comes back as the token counts.

Errors come in the two kinds the planner knows (see ``agents/critic.py``):

- the server refused the request for its content (400/413/422, e.g. a prompt longer than the context):
  ``ChatResult.error``, which callers record on the candidate before moving on — never retried;
- infrastructure (connection refused or reset, timeouts, 429, 5xx): retried with capped exponential backoff and
  full jitter, honouring ``Retry-After``; when the attempts run out, :class:`LanguageModelUnavailable` is raised.
  Any other 4xx (401 bad key, 404 unknown model) is a configuration error: :class:`LanguageModelError` at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.messages import ChatMessage, ChatRequest, ChatResult, ImagePart, TextPart

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
"""Status codes worth another attempt: rate limited, or the server (or a proxy before it) failed."""
CONTENT_REFUSED_STATUS = frozenset({400, 413, 422})
"""The server refused this request's content (too long, too many images, ...): a model-side failure."""
_BODY_KEYS = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed",
                        "response_format", "stream", "n"})


class LanguageModelError(RuntimeError):
    """The endpoint cannot serve this client: bad key, unknown model, a reply that is not a chat completion."""


class LanguageModelUnavailable(LanguageModelError):
    """The endpoint stayed unreachable or overloaded through every retry (an infrastructure failure)."""


class OpenAIEndpointConfig(BaseModel):
    """One OpenAI-compatible chat endpoint and how to talk to it. Holds no secret: the API key is read from the
    environment variable named by ``api_key_env`` when the client starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        min_length=8, max_length=2048,
        description="The API root, ending in /v1 for most servers (e.g. 'http://vllm.default.svc:8000/v1'); the "
        "client posts to {base_url}/chat/completions.",
    )
    model: str = Field(min_length=1, max_length=512, description="The model name the server knows ('model' field).")
    api_key_env: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Name of the environment variable holding the API key (sent as 'Authorization: Bearer'). None: "
        "no key (a local server). The key itself never appears in a config file.",
    )
    timeout_s: float = Field(default=120.0, gt=0, le=3600, description="Longest wait for one attempt's reply.")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Longest wait to open a connection.")
    max_retries: int = Field(default=3, ge=0, le=10, description="Extra attempts after an infrastructure failure.")
    backoff_initial_s: float = Field(default=0.5, gt=0, le=60, description="Backoff cap before the first retry; "
                                     "doubles per retry, and each wait is drawn uniformly below the cap (jitter).")
    backoff_max_s: float = Field(default=30.0, gt=0, le=600, description="Largest wait between attempts, also for "
                                 "a server's Retry-After.")
    max_connections: int = Field(default=64, ge=1, le=1024, description="Connection pool size (concurrent requests).")
    max_tokens_field: str = Field(
        default="max_tokens", pattern=r"^(max_tokens|max_completion_tokens)$",
        description="Which body field carries the token limit: 'max_tokens' (vLLM, most servers) or "
        "'max_completion_tokens' (required by some hosted APIs).",
    )
    strict_schema: bool = Field(default=True, description="Send json_schema.strict (hosted APIs enforce it).")
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra request fields for this server (e.g. {'top_k': 20} or "
        "{'chat_template_kwargs': {'enable_thinking': false}}); may not override the fields the client sets.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("extra_body")
    @classmethod
    def _no_override(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_BODY_KEYS & set(value))
        if clash:
            raise ValueError(f"extra_body may not set {clash}: the client sets them from each request")
        return value

    def api_key(self) -> str | None:
        """The key from the environment; a clear error if the named variable is missing or empty."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise LanguageModelError(
                f"environment variable {self.api_key_env!r} (api_key_env for model {self.model!r} at "
                f"{self.base_url}) is not set"
            )
        return key


class LanguageModelEndpoints(BaseModel):
    """Where the rewriter and the critic send chat requests. None for a role: the project's own LLM deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rewriter: OpenAIEndpointConfig | None = Field(default=None, description="The rewriter's endpoint.")
    critic: OpenAIEndpointConfig | None = Field(
        default=None, description="The critic's endpoint (a vision-language model: it is sent the images)."
    )


def open_language_models(
    endpoints: LanguageModelEndpoints,
) -> tuple[OpenAILanguageModel | None, OpenAILanguageModel | None]:
    """(rewriter, critic) clients for the configured roles; one shared client (one pool) when both are equal."""
    rewriter = OpenAILanguageModel(endpoints.rewriter) if endpoints.rewriter else None
    if endpoints.critic is None:
        return rewriter, None
    if rewriter is not None and endpoints.critic == endpoints.rewriter:
        return rewriter, rewriter
    return rewriter, OpenAILanguageModel(endpoints.critic)


def openai_messages(messages: list[ChatMessage]) -> list[dict]:
    """Chat messages -> OpenAI chat format; images become base64 PNG data URLs."""
    return [
        {"role": m.role, "content": m.content if isinstance(m.content, str) else [_openai_part(p) for p in m.content]}
        for m in messages
    ]


def _openai_part(part: TextPart | ImagePart) -> dict:
    if isinstance(part, ImagePart):
        url = "data:image/png;base64," + base64.b64encode(part.png).decode("ascii")
        return {"type": "image_url", "image_url": {"url": url}}
    return {"type": "text", "text": part.text}


def chat_completion_body(request: ChatRequest, model: str, *, max_tokens_field: str = "max_tokens",
                         strict_schema: bool = True, extra_body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``ChatRequest`` as an OpenAI chat-completions body (also what ``ray.serve.llm``'s ``LLMServer.chat`` takes)."""
    body: dict[str, Any] = {
        **(extra_body or {}),
        "model": model,
        "messages": openai_messages(request.messages),
        max_tokens_field: request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": request.purpose, "schema": request.json_schema, "strict": strict_schema},
        }
    return body


def parse_json_reply(text: str, finish_reason: str | None) -> tuple[Any, str | None]:
    """(parsed, parse_error) for a reply that should be JSON. strict=False: models emit raw tabs or newlines inside
    strings, which JSON forbids but which mean no harm."""
    try:
        return json.loads(text, strict=False), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at char {exc.pos}, finish_reason={finish_reason})"


class OpenAILanguageModel:
    """``LanguageModel`` over an OpenAI-compatible endpoint, with one pooled ``httpx.AsyncClient``.

    Use it from one event loop (the pool belongs to it) and ``await aclose()`` when done, or ``async with``.
    ``sleep`` and ``rng`` are the backoff's clock and dice (tests pass recording ones).
    """

    def __init__(
        self,
        config: OpenAIEndpointConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        self.config = config
        headers = {"Accept": "application/json"}
        key = config.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=config.max_connections),
        )
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def model_name(self) -> str:
        return self.config.model

    async def __aenter__(self) -> OpenAILanguageModel:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body for one request (public so tests and logs can see exactly what is sent)."""
        return chat_completion_body(request, self.config.model, max_tokens_field=self.config.max_tokens_field,
                                    strict_schema=self.config.strict_schema, extra_body=self.config.extra_body)

    def backoff_s(self, retry: int, retry_after: str | None = None) -> float:
        """Wait before retry number ``retry`` (0-based): the server's Retry-After (seconds) if it sent one, else
        uniform in [0, initial * 2**retry] ("full jitter", so many clients do not retry in lockstep); both capped
        at ``backoff_max_s``."""
        cap = self.config.backoff_max_s
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), cap)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return self._rng.uniform(0.0, min(cap, self.config.backoff_initial_s * 2**retry))

    async def chat(self, request: ChatRequest) -> ChatResult:
        body = self.request_body(request)
        t0 = time.perf_counter()
        attempts = 1 + self.config.max_retries
        for attempt in range(attempts):
            retry_after = None
            try:
                response = await self._client.post("/chat/completions", json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: the server's side
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._result(request, response, time.perf_counter() - t0)
                message = _error_message(response)
                if response.status_code in CONTENT_REFUSED_STATUS:
                    return ChatResult(request_id=request.request_id, text="",
                                      error=f"HTTP {response.status_code}: {message}"[:500],
                                      seconds=time.perf_counter() - t0)
                if response.status_code not in RETRYABLE_STATUS:
                    raise LanguageModelError(
                        f"{self.config.base_url} answered HTTP {response.status_code} for model "
                        f"{self.config.model!r}: {message}"[:1000]
                    )
                failure = f"HTTP {response.status_code}: {message}"
                retry_after = response.headers.get("Retry-After")
            if attempt + 1 < attempts:
                delay = self.backoff_s(attempt, retry_after)
                logger.warning("chat %s to %s failed (%s); retry %d/%d in %.2fs", request.request_id,
                               self.config.base_url, failure[:200], attempt + 1, self.config.max_retries, delay)
                await self._sleep(delay)
        raise LanguageModelUnavailable(
            f"{self.config.base_url} (model {self.config.model!r}) failed {attempts} attempt(s) for request "
            f"{request.request_id!r}; last: {failure}"[:1000]
        )

    def _result(self, request: ChatRequest, response: httpx.Response, seconds: float) -> ChatResult:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LanguageModelError(
                f"{self.config.base_url} returned 200 but not a chat completion ({exc!r}): {response.text[:300]!r}"
            ) from exc
        usage = payload.get("usage") or {}
        finish_reason = choice.get("finish_reason")
        result = ChatResult(
            request_id=request.request_id,
            text=message.get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish_reason,
            seconds=seconds,
        )
        if message.get("refusal"):  # hosted models may decline; the request's content is the cause
            result.error = f"refused: {message['refusal']}"[:500]
        elif request.json_schema is not None:
            result.parsed, result.parse_error = parse_json_reply(result.text, finish_reason)
        return result


def _error_message(response: httpx.Response) -> str:
    """The server's reason: OpenAI-style {"error": {"message": ...}}, else the start of the body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    if isinstance(error, str):
        return error[:500]
    return json.dumps(payload)[:300]
