"""The typed Python client of the campaign API: what ``promptbeam submit/status/watch/ls/cancel/results`` print from,
and the way to script campaigns from Python.

    from pipelines.client import CampaignClient
    from pipelines.records import CampaignSpec

    with CampaignClient("http://head:8000", token=...) as client:  # or CampaignClient.from_env()
        accepted = client.submit(CampaignSpec(name="apples", intents=[{"id": "a", "text": "a red apple"}]))
        for status in client.follow(accepted.id):        # typed CampaignStatus, until the campaign ends
            print(status.intents_finished, "/", status.intents_total)
        for outcome in client.results(accepted.id):      # typed IntentOutcome, in campaign order
            print(outcome.intent_id, outcome.improvement)

Every answer is a typed record: the API's own answers from :mod:`pipelines.wire` (status, pages, health), a
campaign's results from :mod:`pipelines.records`. Every error is a :class:`CampaignClientError`:
:class:`Unauthorized` (401), :class:`CampaignNotFound` (404), :class:`CampaignRejected` (another 4xx, with the
status, the reason and the fields at fault) or :class:`ServerUnavailable` (no answer, or 5xx, through every retry);
``on_retry`` sees the errors that are tried again, an answer as a :class:`RetryableAnswer`.

Retries use the project's one policy (:mod:`serving.retry`). Reads and cancels are idempotent and are retried on
connection errors, 429 and 5xx (honouring Retry-After). A submission is retried only when the server cannot have
started it: the connection was never made, or it answered 429 (over the running-campaign limit) or 503 (no ingress
replica yet); after a reset or a timeout mid-request it is not retried, since resubmitting a campaign that did start
answers 409 (ask its status instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from pydantic import Field, TypeAdapter
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.memory import LESSONS, Lesson
from agents.messages import ActionRequest, HumanAction
from pipelines.records import CampaignSpec, IntentOutcome
from pipelines.server.auth import AuthSettings
from pipelines.wire import (
    ABComparison,
    ABIntent,
    CampaignAccepted,
    CampaignPage,
    CampaignState,
    CampaignStatus,
    ErrorBody,
    FieldError,
    Health,
)
from pipelines.wire import ReviewListing
from serving.retry import RETRY_STATUS, RetryPolicy, call_sync, parse_retry_after

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
DEFAULT_RETRY = RetryPolicy(attempts=6, backoff_s=0.5, max_backoff_s=10.0)
"""Six tries over ~15 s of backoff (0.5, 1, 2, 4, 8 s): a restarting proxy or ingress should not end a long campaign's
watch."""
HUMAN_ACTIONS = TypeAdapter(list[HumanAction])
SUBMIT_RETRY_STATUS = RETRY_STATUS & {429, 503}
"""Answers to a submission that mean it was not started: over the running-campaign limit, no replica to take it. The
part of :data:`serving.retry.RETRY_STATUS` (what an idempotent call retries on) that is safe for a submission."""


class ClientSettings(BaseSettings):
    """Where the client connects (environment ``PROMPTBEAM_ENDPOINT``); the token comes from :class:`AuthSettings`."""

    model_config = SettingsConfigDict(env_prefix="PROMPTBEAM_", extra="ignore")

    endpoint: str = Field(default=DEFAULT_ENDPOINT, min_length=8, max_length=2048,
                          description="The campaign API's root URL (e.g. http://head:8000).")


class CampaignClientError(Exception):
    """Any error of :class:`CampaignClient`: ``status`` is the HTTP status (None when no answer came)."""

    def __init__(self, detail: str, status: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status


class Unauthorized(CampaignClientError):
    """401: the server has a token and the request carried none or another one."""


class CampaignNotFound(CampaignClientError):
    """404: no such campaign (or image) on this server."""


class CampaignRejected(CampaignClientError):
    """The server refused the request (a 4xx other than 401/404): ``reason`` and, for validation failures, the
    ``errors`` per field; ``retry_after_s`` when it said when to come back (429)."""

    def __init__(self, status: int, reason: str, errors: list[FieldError] | None = None,
                 retry_after_s: float | None = None):
        super().__init__(reason, status)
        self.reason = reason
        self.errors = errors or []
        self.retry_after_s = retry_after_s


class ServerUnavailable(CampaignClientError):
    """No answer (connection refused, reset, timed out) or a server error, through every retry."""


class RetryableAnswer(CampaignClientError):
    """An answer worth another try (429, or 5xx for an idempotent call): what ``on_retry`` is handed before the
    client asks again. It never reaches the caller: after the last try the answer becomes its own error
    (:class:`CampaignRejected`, :class:`ServerUnavailable`)."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}", response.status_code)
        self.response = response


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, RetryableAnswer):
        return parse_retry_after(exc.response.headers.get("retry-after"))
    return None


def _error(response: httpx.Response) -> CampaignClientError:
    """The client error for a 4xx/5xx answer, with the server's reason (its ErrorBody) when it sent one."""
    status = response.status_code
    try:
        body = ErrorBody.model_validate_json(response.content)
        detail, errors = body.detail, body.errors
    except ValueError:  # a proxy's page, not the API's error body
        detail, errors = (response.text[:300].strip() or response.reason_phrase), None
    if status == 401:
        return Unauthorized(detail, status)
    if status == 404:
        return CampaignNotFound(detail, status)
    if 400 <= status < 500:
        return CampaignRejected(status, detail, errors, parse_retry_after(response.headers.get("retry-after")))
    return ServerUnavailable(f"HTTP {status}: {detail}", status)


class CampaignClient:
    """A typed client of one campaign endpoint. Thread-compatible like ``httpx.Client``; close it (or use ``with``).

    ``retry`` defaults to :data:`DEFAULT_RETRY`; ``on_retry(what, error, attempt, delay_s)`` is called before each
    retry (the CLI prints it); ``sleep`` (default ``time.sleep``) is the clock of the backoff and of :meth:`follow`; ``http`` replaces the HTTP client
    (e.g. FastAPI's ``TestClient``, whose base URL then applies)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        token: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 60.0,
        on_retry: Callable[[str, BaseException, int, float], None] | None = None,
        sleep: Callable[[float], None] | None = None,
        http: httpx.Client | None = None,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.retry = retry or DEFAULT_RETRY
        self._on_retry = on_retry
        self._sleep = sleep or time.sleep
        self._http = http or httpx.Client(base_url=self.endpoint, timeout=httpx.Timeout(timeout_s, read=300.0))
        if token:
            self._http.headers["authorization"] = f"Bearer {token}"

    @classmethod
    def from_env(cls, endpoint: str | None = None, **kwargs: Any) -> CampaignClient:
        """A client for ``endpoint`` (default: ``PROMPTBEAM_ENDPOINT``, else :data:`DEFAULT_ENDPOINT`) with the token
        of ``PROMPTBEAM_API_TOKEN`` or ``PROMPTBEAM_API_TOKEN_FILE`` (the settings the server reads). Raises
        ValueError for a token that is too short, unreadable or set twice."""
        return cls(endpoint or ClientSettings().endpoint, AuthSettings().token(), **kwargs)

    def __enter__(self) -> CampaignClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the calls -----------------------------------------------------------------------------------------------

    def submit(self, spec: CampaignSpec) -> CampaignAccepted:
        """Start (or resume: same name, same spec) a campaign. :class:`CampaignRejected` with the reason for a spec
        the server refuses (422 naming the field, 409 for a running or different campaign of that name, 413, 429)."""
        response = self._send("POST", "/v1/campaigns", idempotent=False,
                              content=spec.model_dump_json(exclude_none=True),
                              headers={"content-type": "application/json"})
        return CampaignAccepted.model_validate_json(response.content)

    def status(self, campaign_id: str) -> CampaignStatus:
        """The campaign's progress and statistics."""
        return CampaignStatus.model_validate_json(self._send("GET", f"/v1/campaigns/{campaign_id}").content)

    def follow(self, campaign_id: str, interval_s: float = 1.0) -> Iterator[CampaignStatus]:
        """Its status every ``interval_s`` while it runs; the last one yielded is the final (state not running).
        Stopping the iteration (or Ctrl-C) only stops watching: the campaign keeps running on the server."""
        return self._poll(lambda: self.status(campaign_id), interval_s)

    def _poll(self, fetch: Callable[[], Any], interval_s: float) -> Iterator[Any]:
        """``fetch()`` every ``interval_s`` until its answer's state is not running (that answer is yielded last)."""
        while True:
            answer = fetch()
            yield answer
            if answer.state != CampaignState.running:
                return
            self._sleep(interval_s)

    def wait(self, campaign_id: str, interval_s: float = 1.0) -> CampaignStatus:
        """:meth:`follow` to the end: the campaign's final status (done, failed or cancelled)."""
        for status in self.follow(campaign_id, interval_s):
            pass
        return status

    def cancel(self, campaign_id: str) -> CampaignStatus:
        """Cancel a running campaign (finished intents stay; submitting it again resumes it)."""
        return CampaignStatus.model_validate_json(self._send("DELETE", f"/v1/campaigns/{campaign_id}").content)

    def results(self, campaign_id: str, offset: int = 0, limit: int | None = None) -> Iterator[IntentOutcome]:
        """Its finished intents in campaign order, streamed (partial while it runs). Opening the stream is retried;
        a stream cut midway raises :class:`ServerUnavailable` (ask again with ``offset`` = the outcomes received)."""
        for line in self.results_lines(campaign_id, offset, limit):
            yield IntentOutcome.model_validate_json(line)

    def results_lines(self, campaign_id: str, offset: int = 0, limit: int | None = None) -> Iterator[str]:
        """:meth:`results` as the server's JSON lines, unparsed (what ``promptbeam results`` writes out)."""
        params: dict[str, int] = {"offset": offset, **({"limit": limit} if limit is not None else {})}
        return self._lines(f"/v1/campaigns/{campaign_id}/results", campaign_id, params)

    def _lines(self, path: str, campaign_id: str, params: dict[str, int] | None = None) -> Iterator[str]:
        """An NDJSON stream's lines; opening it is retried, a stream cut midway raises :class:`ServerUnavailable`."""
        response = self._send("GET", path, params=params or {}, stream=True)
        try:
            for line in response.iter_lines():
                if line:
                    yield line
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"the results stream of {campaign_id!r} broke: {type(exc).__name__}: {exc}") \
                from exc
        finally:
            response.close()

    def ab(self, campaign_id: str) -> ABComparison:
        """A model A/B's comparison: both variants side by side and the paired difference (pipelines/ab.py)."""
        return ABComparison.model_validate_json(self._send("GET", f"/v1/campaigns/{campaign_id}/ab").content)

    def follow_ab(self, campaign_id: str, interval_s: float = 1.0) -> Iterator[ABComparison]:
        """:meth:`ab` every ``interval_s`` while either variant runs; the last one yielded is the final."""
        return self._poll(lambda: self.ab(campaign_id), interval_s)

    def ab_results(self, campaign_id: str) -> Iterator[ABIntent]:
        """A model A/B's intents in campaign order, each with every variant's outcome (None while unfinished)."""
        for line in self._lines(f"/v1/campaigns/{campaign_id}/ab/results", campaign_id):
            yield ABIntent.model_validate_json(line)

    def lessons(self, campaign_id: str) -> list[Lesson]:
        """The campaign's memory: lessons with their evidence, supported first ([] when memory is off)."""
        return LESSONS.validate_json(self._send("GET", f"/v1/campaigns/{campaign_id}/lessons").content)

    def list(self, limit: int = 50, cursor: str | None = None) -> CampaignPage:
        """One page of the server's campaigns in id order; pass the page's ``next_cursor`` to get the next one."""
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return CampaignPage.model_validate_json(self._send("GET", "/v1/campaigns", params=params).content)

    def image(self, campaign_id: str, name: str) -> bytes:
        """One stored image (PNG bytes), by the name a result or lineage record gives (``images/<name>``)."""
        return self._send("GET", f"/v1/campaigns/{campaign_id}/images/{name}").content

    def health(self) -> Health:
        """Liveness and the models served (needs no token)."""
        return Health.model_validate_json(self._send("GET", "/healthz").content)

    # -- a human in the loop (agents.steering) ---------------------------------------------------------------------

    def act(self, campaign_id: str, action: ActionRequest) -> HumanAction:
        """Post a person's action (pin, veto, add_prompt, accept) on one of the campaign's intents; the stored action,
        with who (this client's token's name) and when. Retried like a read: its ``id`` makes it idempotent (the same id
        and body answer the stored action; another body with that id is :class:`CampaignRejected` 409)."""
        response = self._send("POST", f"/v1/campaigns/{campaign_id}/actions",
                              content=action.model_dump_json(exclude_none=True),
                              headers={"content-type": "application/json"})
        return HumanAction.model_validate_json(response.content)

    def actions(self, campaign_id: str, intent: str | None = None) -> list[HumanAction]:
        """The people's actions on the campaign (or one intent), in the order they were posted per intent."""
        params = {"intent": intent} if intent else {}
        response = self._send("GET", f"/v1/campaigns/{campaign_id}/actions", params=params)
        return HUMAN_ACTIONS.validate_json(response.content)

    def review(self, campaign_id: str) -> ReviewListing:
        """The intents waiting for a person (their best score stayed under the campaign's review threshold)."""
        return ReviewListing.model_validate_json(self._send("GET", f"/v1/campaigns/{campaign_id}/review").content)

    # -- transport -----------------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, idempotent: bool = True, stream: bool = False,
              **kwargs: Any) -> httpx.Response:
        """One call through the retry policy; a 2xx response, or the client error for the answer."""
        retry_status = RETRY_STATUS if idempotent else SUBMIT_RETRY_STATUS

        def attempt() -> httpx.Response:
            response = self._http.send(self._http.build_request(method, path, **kwargs), stream=stream)
            if response.status_code >= 400:
                response.read()  # the reason, also of a streamed answer
                response.close()
                if response.status_code in retry_status:
                    raise RetryableAnswer(response)
            return response

        def retry_if(exc: BaseException) -> bool:
            if isinstance(exc, RetryableAnswer):
                return True
            # a submission whose connection was made may have started the campaign: never sent twice
            return isinstance(exc, httpx.ConnectError if not idempotent else httpx.TransportError)

        def on_retry(exc: BaseException, attempt_number: int, delay: float) -> None:
            if self._on_retry is not None:
                self._on_retry(f"{method} {path}", exc, attempt_number, delay)

        try:
            response = call_sync(attempt, self.retry, retry_if=retry_if, retry_after=_retry_after,
                                 on_retry=on_retry, sleep=self._sleep, what=f"{method} {path}")
        except RetryableAnswer as exc:  # still refused after every try
            response = exc.response
        except httpx.TransportError as exc:
            tries = f"after {self.retry.attempts} tries" if retry_if(exc) else "not retried: the server may have " \
                "started it; ask its status"
            raise ServerUnavailable(f"{method} {self.endpoint}{path}: {type(exc).__name__}: {exc} ({tries})") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response
