"""Bearer-token authentication of the campaign API.

The token comes from the environment (``PROMPTBEAM_API_TOKEN``) or a file (``PROMPTBEAM_API_TOKEN_FILE``, e.g. a
Kubernetes Secret mounted as a volume); there is no default token. With a token set, every ``/v1`` route requires
``Authorization: Bearer <token>``, compared in constant time. Without one, the ingress serves only on a loopback
address, unless ``PROMPTBEAM_ALLOW_UNAUTHENTICATED=true`` says the operator means it (e.g. behind an authenticating
gateway).

**Named tokens** say who acted (a person's pin, veto, added prompt or accept is recorded with the token's name,
``agents.steering``): ``PROMPTBEAM_API_TOKENS`` holds ``name:token`` pairs separated by commas, or
``PROMPTBEAM_API_TOKENS_FILE`` names a file of one ``name:token`` a line (blank lines and ``#`` comments skipped).
Names are safe names (letters, digits, ``_.-``); each token has at least 16 characters; names and tokens are unique.
They may be used beside the single token, which is then named ``api``. A request's token is compared with every
configured one in constant time. Without any token (loopback, or allowed unauthenticated) the name is ``anonymous``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from pathlib import Path

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_CHARS = 16
SINGLE_TOKEN_NAME = "api"
"""The name of ``PROMPTBEAM_API_TOKEN``'s token (who an action posted with it was made by)."""
ANONYMOUS = "anonymous"
"""Who acted when the server has no token."""
TOKEN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$"


class AuthSettings(BaseSettings):
    """Where the API token comes from (environment variables ``PROMPTBEAM_*``)."""

    model_config = SettingsConfigDict(env_prefix="PROMPTBEAM_", extra="ignore")

    api_token: SecretStr | None = Field(default=None, description="The bearer token clients send.")
    api_token_file: Path | None = Field(default=None, description="A file holding the token (surrounding whitespace "
                                                                  "ignored); exclusive with api_token.")
    allow_unauthenticated: bool = Field(default=False, description="Serve without a token on a non-loopback address.")
    api_tokens: SecretStr | None = Field(default=None, description="Named tokens: 'name:token,name:token'.")
    api_tokens_file: Path | None = Field(default=None, description="A file of named tokens, one 'name:token' a line; "
                                                                   "exclusive with api_tokens.")

    @model_validator(mode="after")
    def _one_source(self) -> AuthSettings:
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set PROMPTBEAM_API_TOKEN or PROMPTBEAM_API_TOKEN_FILE, not both")
        if self.api_tokens is not None and self.api_tokens_file is not None:
            raise ValueError("set PROMPTBEAM_API_TOKENS or PROMPTBEAM_API_TOKENS_FILE, not both")
        return self

    def named_tokens(self) -> dict[str, str]:
        """Token name -> token: the named tokens, and the single token as ``api``. Raises ValueError naming the
        problem (a malformed pair, an unsafe or repeated name, a short or repeated token); never the token itself."""
        if self.api_tokens_file is not None:
            try:
                text = self.api_tokens_file.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read PROMPTBEAM_API_TOKENS_FILE {str(self.api_tokens_file)!r}: "
                                 f"{exc}") from exc
            pairs = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        elif self.api_tokens is not None:
            pairs = [p.strip() for p in self.api_tokens.get_secret_value().split(",") if p.strip()]
        else:
            pairs = []
        out: dict[str, str] = {}
        single = self.token()
        if single is not None:
            out[SINGLE_TOKEN_NAME] = single
        for n, pair in enumerate(pairs, start=1):
            name, sep, token = pair.partition(":")
            name, token = name.strip(), token.strip()
            if not sep:  # no name: the whole pair may be a token, never echoed
                raise ValueError(f"named token {n} must be 'name:token'; it has no ':'")
            if re.fullmatch(TOKEN_NAME, name) is None:
                raise ValueError(f"named token {n} must be 'name:token' with a name of letters, digits and '_.-' (at "
                                 f"most 100 characters); its name is {name[:40]!r}")
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"the token named {name!r} has {len(token)} characters; use at least "
                                 f"{MIN_TOKEN_CHARS}")
            if name in out:
                raise ValueError(f"the token name {name!r} is given twice" + (
                    f" ({SINGLE_TOKEN_NAME!r} is PROMPTBEAM_API_TOKEN's)" if name == SINGLE_TOKEN_NAME else ""))
            if token in out.values():
                raise ValueError(f"the token named {name!r} is the same as another name's token")
            out[name] = token
        return out

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
    """401 unless the request carries the token or one of the named ``tokens`` (nothing is checked when there is none).
    Use it as a FastAPI dependency (``Depends(BearerAuth(token))``) or call :meth:`check` from one; both answer the
    name of the token the request carried (``api`` for ``token``, ``anonymous`` when none is configured)."""

    def __init__(self, token: str | None = None, tokens: dict[str, str] | None = None):
        self.token = token
        self.tokens = {**({SINGLE_TOKEN_NAME: token} if token is not None else {}), **(tokens or {})}

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        if not self.tokens:
            return ANONYMOUS
        given = (credentials.credentials.strip() if credentials is not None else "").encode()
        matched = None
        for name, token in self.tokens.items():  # every one compared: the time says nothing about which matched
            if hmac.compare_digest(given, token.encode()):
                matched = name
        if matched is None:
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        return matched

    def __call__(self, credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME)) -> str:
        return self.check(credentials)
