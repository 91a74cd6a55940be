"""The planner's ``LanguageModel`` port over any OpenAI-compatible chat-completions endpoint, through the ``openai``
SDK.

Points the rewriter or the critic at a server the user already runs: their own ``vllm serve``, Ray Serve LLM's
OpenAI app, or a hosted vision-language model. Each role gets its own :class:`OpenAIEndpointConfig` (URL, model,
API key from an environment variable, timeouts, retries), so the two can use different endpoints and models.

What crosses the wire (``POST {base_url}/chat/completions``):

- images as ``image_url`` parts holding ``data:<media type>;base64,...`` URLs (``ImagePart``'s bytes under their own
  media type: the critic's JPEG variant as ``image/jpeg``, a PNG as ``image/png``);
- a JSON schema as ``response_format: {"type": "json_schema", ...}``. vLLM (0.32 here) turns that into its own
  structured-output request (``structured_outputs.json``), so no vLLM-specific body is needed; servers that want
  extra parameters get them from ``extra_body``;
- ``seed``, ``temperature``, ``top_p`` and the token limit; ``usage`` comes back as the token counts.

Errors come in the two kinds the planner knows (see ``agents/critic.py``):

- the server refused the request for its content (400/413/422, e.g. a prompt longer than the context):
  ``ChatResult.error``, which callers record on the candidate before moving on — never retried;
- infrastructure (connection refused or reset, timeouts, 429, 5xx: :data:`serving.retry.RETRY_STATUS`): retried by the
  one retry policy (:mod:`serving.retry`: capped exponential backoff with full jitter, honouring ``Retry-After``); when
  the attempts run out, :class:`LanguageModelUnavailable` is raised.
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
from serving.retry import RETRY_STATUS, RetryPolicy, call_async, parse_retry_after

logger = logging.getLogger(__name__)

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
    """Chat messages -> OpenAI chat format; images become base64 data URLs of their own media type."""
    return [
        {"role": m.role, "content": m.content if isinstance(m.content, str) else [_openai_part(p) for p in m.content]}
        for m in messages
    ]


def _openai_part(part: TextPart | ImagePart) -> dict:
    if isinstance(part, ImagePart):
        url = f"data:{part.media_type};base64," + base64.b64encode(part.data).decode("ascii")
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
    """``LanguageModel`` over an OpenAI-compatible endpoint, through the ``openai`` SDK (one pooled client).

    The SDK's own retries are off: infrastructure failures are retried by the project's one policy
    (:mod:`serving.retry`), and the SDK's errors are mapped to the two kinds the planner knows (module docstring).
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
        import openai

        self.config = config
        self.policy = RetryPolicy(attempts=1 + config.max_retries, backoff_s=config.backoff_initial_s,
                                  max_backoff_s=config.backoff_max_s, jitter=True)
        limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
        key = config.api_key()
        self._client = openai.AsyncOpenAI(
            # No key (a local server): no Authorization header at all; the SDK insists on some key, and would
            # otherwise read OPENAI_API_KEY, which belongs to no endpoint configured here.
            api_key=key or "no-key",
            base_url=config.base_url,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        self._headers = None if key else {"Authorization": openai.omit}  # per request: the SDK's way to send none
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
        await self._client.close()

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body for one request (public so tests and logs can see exactly what is sent)."""
        return chat_completion_body(request, self.config.model, max_tokens_field=self.config.max_tokens_field,
                                    strict_schema=self.config.strict_schema, extra_body=self.config.extra_body)

    def backoff_s(self, retry: int, retry_after: str | None = None) -> float:
        """Wait before retry number ``retry`` (0-based), per this endpoint's :class:`RetryPolicy`: the server's
        Retry-After (seconds) if it sent one, else uniform in [0, initial * 2**retry] (full jitter); both capped at
        ``backoff_max_s``."""
        return self.policy.wait_s(retry, parse_retry_after(retry_after), self._rng)

    async def chat(self, request: ChatRequest) -> ChatResult:
        import openai

        body = chat_completion_body(request, self.config.model, max_tokens_field=self.config.max_tokens_field,
                                    strict_schema=self.config.strict_schema)
        t0 = time.perf_counter()
        try:
            completion = await call_async(
                lambda: self._client.chat.completions.create(**body, extra_body=self.config.extra_body or None,
                                                            extra_headers=self._headers),
                self.policy, retry_if=_retryable, retry_after=_retry_after, sleep=self._sleep, rng=self._rng,
                what=f"chat {request.request_id} to {self.config.base_url}",
            )
        except openai.APIStatusError as exc:
            message = _error_message(exc.response)
            status = exc.status_code
            if status in CONTENT_REFUSED_STATUS:
                return ChatResult(request_id=request.request_id, text="", error=f"HTTP {status}: {message}"[:500],
                                  seconds=time.perf_counter() - t0)
            if status in RETRY_STATUS:
                raise self._unavailable(request, f"HTTP {status}: {message}") from exc
            raise LanguageModelError(
                f"{self.config.base_url} answered HTTP {status} for model {self.config.model!r}: {message}"[:1000]
            ) from exc
        except openai.APIConnectionError as exc:  # refused, reset, timed out (APITimeoutError is one)
            cause = exc.__cause__ or exc
            raise self._unavailable(request, f"{type(cause).__name__}: {cause}") from exc
        except (ValueError, openai.APIResponseValidationError) as exc:  # 200 whose body is not JSON
            raise LanguageModelError(
                f"{self.config.base_url} returned 200 but not a chat completion ({exc!r})"[:1000]
            ) from exc
        return self._result(request, completion, time.perf_counter() - t0)

    def _unavailable(self, request: ChatRequest, failure: str) -> LanguageModelUnavailable:
        return LanguageModelUnavailable(
            f"{self.config.base_url} (model {self.config.model!r}) failed {self.policy.attempts} attempt(s) for "
            f"request {request.request_id!r}; last: {failure}"[:1000]
        )

    def _result(self, request: ChatRequest, completion: Any, seconds: float) -> ChatResult:
        try:
            choice = completion.choices[0]
            message = choice.message
            text = message.content or ""
        except (AttributeError, IndexError, TypeError, KeyError) as exc:
            raise LanguageModelError(
                f"{self.config.base_url} returned 200 but not a chat completion ({exc!r}): {str(completion)[:300]!r}"
            ) from exc
        usage = getattr(completion, "usage", None)
        finish_reason = choice.finish_reason
        result = ChatResult(
            request_id=request.request_id,
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=finish_reason,
            seconds=seconds,
        )
        refusal = getattr(message, "refusal", None)
        if refusal:  # hosted models may decline; the request's content is the cause
            result.error = f"refused: {refusal}"[:500]
        elif request.json_schema is not None:
            result.parsed, result.parse_error = parse_json_reply(result.text, finish_reason)
        return result


def _retryable(exc: BaseException) -> bool:
    """Infrastructure: no answer (refused, reset, timed out), rate limited, or the server (or a proxy) failed."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS
    return isinstance(exc, openai.APIConnectionError)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    return parse_retry_after(response.headers.get("Retry-After")) if response is not None else None


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
