"""The one retry policy for calls that cross a process boundary.

Four callers retry infrastructure failures, and they all do it here, through tenacity:

- the Serve-handle clients (``serving/clients.py``): a replica died or Serve shed the request;
- the OpenAI-compatible endpoint client (``serving/openai_client.py``): connection refused, timeout, 429, 5xx;
- the campaign API client (``pipelines/client.py``): a restarting proxy or ingress;
- every write to a campaign's store (``serving/storage.py``): the campaign's records and the renderer's images, while
  the object store answers 5xx, refuses connections or times out.

Each caller says *what* is worth another try (``retry_if``) and, for HTTP, what wait the server asked for
(``retry_after``); the HTTP answers worth another try are written once, here (:data:`RETRY_STATUS`), for both HTTP
clients. *How* to wait (exponential backoff, capped, optionally with full jitter, a server's Retry-After honoured up
to the cap) and *how many times* is this module's :class:`RetryPolicy`. The last error propagates unchanged, so each
caller keeps its own exception types.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP answers worth another try: rate limited (429), or the server (or a proxy before it) failed (500, 502, 503,
504). The OpenAI-compatible endpoint client retries a chat on these; the campaign API client its idempotent calls (a
submission only on the part of it that means "not started", ``pipelines.client.SUBMIT_RETRY_STATUS``)."""


class RetryPolicy(BaseModel):
    """How many tries, and how long to wait between them: ``backoff_s * 2**retry``, capped at ``max_backoff_s``.
    With ``jitter`` each wait is drawn uniformly below that cap ("full jitter", so many clients that failed together
    do not retry in lockstep). A server's Retry-After replaces the computed wait, still capped at ``max_backoff_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=10, ge=1, le=50, description="Tries per call, the first included.")
    backoff_s: float = Field(default=1.0, ge=0.0, le=60.0, description="Wait before the first retry; doubles.")
    max_backoff_s: float = Field(default=30.0, ge=0.0, le=600.0,
                                 description="Longest wait between two tries (also caps a server's Retry-After).")
    jitter: bool = Field(default=False, description="Draw each wait uniformly in [0, the doubling cap].")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry`` (0-based) when the server named none."""
        cap = min(self.max_backoff_s, self.backoff_s * 2**retry)
        return (rng or random).uniform(0.0, cap) if self.jitter else cap

    def wait_s(self, retry: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Wait before retry number ``retry``: the server's Retry-After (capped) if it sent one, else :meth:`delay`."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff_s)
        return self.delay(retry, rng)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; None when absent or an HTTP date (the policy's own schedule applies then)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _retrying_kwargs(
    policy: RetryPolicy,
    retry_if: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] | None,
    on_retry: Callable[[BaseException, int, float], None] | None,
    what: str,
    rng: random.Random | None,
    log_retries: bool,
) -> dict[str, Any]:
    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after(exc) if (retry_after and exc is not None) else None
        return policy.wait_s(state.attempt_number - 1, after, rng)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception()
        delay = state.next_action.sleep if state.next_action else 0.0
        if log_retries:
            logger.warning("%s failed (%s: %s); retry %d of %d in %.2fs", what, type(exc).__name__, str(exc)[:200],
                           state.attempt_number, policy.attempts - 1, delay)
        if on_retry is not None:
            on_retry(exc, state.attempt_number, delay)

    return {
        "stop": tenacity.stop_after_attempt(policy.attempts),
        "wait": wait,
        "retry": tenacity.retry_if_exception(retry_if),
        "before_sleep": before_sleep,
        "reraise": True,  # the caller's own exception, not tenacity.RetryError
    }


async def call_async(
    call: Callable[[], Awaitable[Any]],
    policy: RetryPolicy,
    *,
    retry_if: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    what: str = "call",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    log_retries: bool = True,
) -> Any:
    """``await call()``, retried per ``policy`` while ``retry_if(error)``; the last error propagates.
    ``on_retry(error, attempt, delay)`` runs before each wait (metrics, progress); ``sleep`` and ``rng`` are the
    backoff's clock and dice (tests pass recording ones). Each retry is logged unless ``log_retries`` is False (a
    caller that retries one call per image reports an outage its own way, not with a line per image)."""
    retrying = tenacity.AsyncRetrying(sleep=sleep, **_retrying_kwargs(policy, retry_if, retry_after, on_retry,
                                                                      what, rng, log_retries))

    async def attempt() -> Any:  # ``call`` may return any awaitable (a Serve DeploymentResponse), not a coroutine
        return await call()

    return await retrying(attempt)


def call_sync(
    call: Callable[[], Any],
    policy: RetryPolicy,
    *,
    retry_if: Callable[[BaseException], bool],
    retry_after: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    what: str = "call",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    log_retries: bool = True,
) -> Any:
    """:func:`call_async` for blocking code (the campaign API client, the renderer's image writes)."""
    retrying = tenacity.Retrying(sleep=sleep, **_retrying_kwargs(policy, retry_if, retry_after, on_retry, what, rng,
                                                                 log_retries))
    return retrying(call)
