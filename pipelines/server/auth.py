"""Bearer-token authentication of the campaign API.

The token comes from the environment (``PROMPTBEAM_API_TOKEN``) or a file (``PROMPTBEAM_API_TOKEN_FILE``, e.g. a
Kubernetes Secret mounted as a volume); there is no default token. With a token set, every ``/v1`` route requires
``Authorization: Bearer <token>``, compared in constant time. Without one, the ingress serves only on a loopback
address, unless ``PROMPTBEAM_ALLOW_UNAUTHENTICATED=true`` says the operator means it (e.g. behind an authenticating
gateway).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_CHARS = 16


class AuthSettings(BaseSettings):
    """Where the API token comes from (environment variables ``PROMPTBEAM_*``)."""

    model_config = SettingsConfigDict(env_prefix="PROMPTBEAM_", extra="ignore")

    api_token: SecretStr | None = Field(default=None, description="The bearer token clients send.")
    api_token_file: Path | None = Field(default=None, description="A file holding the token (surrounding whitespace "
                                                                  "ignored); exclusive with api_token.")
    allow_unauthenticated: bool = Field(default=False, description="Serve without a token on a non-loopback address.")

    @model_validator(mode="after")
    def _one_source(self) -> AuthSettings:
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE, not both")
        return self

    def token(self) -> str | None:
        """The configured token, read from its file if one is named; raises ValueError for a short or empty one."""
        if self.api_token_file is not None:
            try:
                value = self.api_token_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read PROMPTBEAM_API_TOKEN_FILE {str(self.api_token_file)!r}: {exc}") from exc
        elif self.api_token is not None:
            value = self.api_token.get_secret_value()
        else:
            return None
        if len(value) < MIN_TOKEN_CHARS:
            raise ValueError(f"the API token has {len(value)} characters; use at least {MIN_TOKEN_CHARS}")
        return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, settings: AuthSettings) -> None:
    """Refuse (ValueError naming the fix) to serve on a non-loopback address without a token, unless allowed."""
    if token is None and not is_loopback(host) and not settings.allow_unauthenticated:
        raise ValueError(
            f"the API would listen on {host!r} with no authentication: set PROMPTBEAM_API_TOKEN (or "
            "PROMPTBEAM_API_TOKEN_FILE), bind 127.0.0.1, or set PROMPTBEAM_ALLOW_UNAUTHENTICATED=true"
        )


BEARER_SCHEME = HTTPBearer(
    auto_error=False,  # a missing or malformed header is our 401 (with the project's error body), not FastAPI's 403
    scheme_name="bearerAuth",
    description="The API token (PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE on the server) as "
    "`Authorization: Bearer <token>`; needed on every /v1 route when the server has a token.",
)
"""FastAPI's bearer scheme: it parses the header and puts the security scheme into the OpenAPI document."""


class BearerAuth:
    """401 unless the request carries the token (nothing is checked when there is none). Use it as a FastAPI
    dependency (``Depends(BearerAuth(token))``) or call :meth:`check` from one."""

    def __init__(self, token: str | None = None):
        self.token = token

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if self.token is None:
            return
        given = credentials.credentials.strip() if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def __call__(self, credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME)) -> None:
        self.check(credentials)
