"""The ingress's HTTP edge: bounded body reading, spec parsing off the event loop, and errors as JSON.

Every error the API returns is ``{"detail": "<one line>", "errors": [{"field": ..., "reason": ...}]}`` (``errors`` for
validation failures only). Reasons never echo the submitted input: a 100k-intent body must not come back as a 24 MB
error, and text that JSON cannot encode (a lone surrogate) must not turn a 422 into a 500.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.records import CampaignSpec
from pipelines.wire import ErrorBody, FieldError

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
MAX_REASON_CHARS = 300
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class ApiError(HTTPException):
    """An HTTP error with the field-level reasons of a validation failure."""

    def __init__(self, status_code: int, detail: str, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status_code, detail, headers=headers)
        self.errors = errors


def field_errors(errors: list[dict[str, Any]]) -> list[FieldError]:
    """pydantic's errors as ``{field, reason}``, at most :data:`MAX_REPORTED_ERRORS`, without the offending input."""
    out = []
    for e in errors[:MAX_REPORTED_ERRORS]:
        field = ".".join(str(p) for p in e.get("loc", ())) or "body"
        reason = str(e.get("msg", "invalid"))
        # the reason is ours or pydantic's, but a custom validator may quote a value: keep it short and encodable
        reason = reason.encode("utf-8", "replace").decode("utf-8")[:MAX_REASON_CHARS]
        out.append(FieldError(field=field, reason=reason))
    return out


def validation_error(errors: list[dict[str, Any]], total: int | None = None) -> ApiError:
    fields = field_errors(errors)
    total = len(errors) if total is None else total
    more = f" (and {total - 1} more)" if total > 1 else ""
    return ApiError(422, f"{fields[0].field}: {fields[0].reason}{more}", fields)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 once it passes ``max_bytes`` (by its Content-Length before reading, or while
    streaming a body that declares none), so an oversized body never reaches the parser."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > max_bytes:
            raise ApiError(413, f"the body is {int(declared)} bytes; the limit is {max_bytes} (max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the body is over the limit of {max_bytes} bytes (max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_spec(body: bytes, content_type: str | None, max_intents: int) -> CampaignSpec:
    """Decode and validate a submission (blocking; the ingress runs it in a thread so /healthz stays responsive).
    400: not JSON, not UTF-8, or text no Unicode encoding can hold; 415: another content type; 422: a spec that
    does not validate (field and reason) or holds more than ``max_intents`` intents."""
    if content_type and content_type.split(";")[0].strip().lower() not in ("application/json", "text/json"):
        raise ApiError(415, f"send the campaign as application/json, not {content_type[:60]!r}")
    try:
        text = body.decode("utf-8")  # json.loads would guess UTF-16/32 from the first bytes; JSON over HTTP is UTF-8
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ApiError(400, "the body nests too deeply to be a campaign") from None
    if _SURROGATE_ESCAPE.search(body):
        try:  # an escaped surrogate pair is fine; a lone one is no character and cannot be stored or echoed
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "the body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no "
                                "Unicode character") from None
    if not isinstance(raw, dict):
        raise ApiError(422, f"the body must be a JSON object (a CampaignSpec), not {type(raw).__name__}",
                       [FieldError(field="body", reason="expected a JSON object")])
    intents = raw.get("intents")
    n = len(intents) if isinstance(intents, list) else 0
    if isinstance(raw.get("intents_jsonl"), str):
        n = max(n, sum(1 for line in raw["intents_jsonl"].splitlines() if line.strip()))
    if n > max_intents:
        reason = f"{n} intents; this endpoint takes at most {max_intents} per campaign (max_intents)"
        raise ApiError(422, f"intents: {reason}", [FieldError(field="intents", reason=reason)])
    try:
        return CampaignSpec.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_input=False), exc.error_count()) from None


def install_error_handlers(api: FastAPI) -> None:
    """Every error leaves as JSON with a reason: HTTP errors, validation errors of paths and queries (never echoing
    the input), and anything unexpected (500 with no stack trace; the trace goes to the replica log)."""

    def answer(status_code: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status_code, headers=headers)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = exc.errors if isinstance(exc, ApiError) else None
        return answer(exc.status_code, ErrorBody(detail=str(exc.detail), errors=errors), getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return answer(400, ErrorBody(detail="the body is not valid JSON"))
        err = validation_error(errors)
        return answer(422, ErrorBody(detail=err.detail, errors=err.errors))

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path[:200])
        return answer(500, ErrorBody(detail=f"internal error ({type(exc).__name__}); see the ingress log"))
