"""Per-route request rules, declared on each route as dependencies:

- who may call: `Depends(require_api_key)` takes an API key as `Authorization: Bearer <key>`
  or `X-API-Key: <key>`; `Depends(require_api_key_or_basic)` also takes it as the password of
  HTTP Basic authentication (any user name), which is what Amazon SNS and EventBridge API
  destinations can send. Without API_KEYS both let everyone in. Keys are compared in constant
  time, all of them every time. A refusal is a 401 whose `WWW-Authenticate` names the schemes
  the route accepts.
- what bodies a route takes: `Depends(accepts("application/json", "text/plain"))`; any other
  media type, or none, is a 415.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBase
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase

from app import errors
from app.dependencies import SettingsDep

REALM = "cross-cloud-replicator"

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <one of API_KEYS>")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of API_KEYS")


class BasicPassword(SecurityBase):
    """The password of `Authorization: Basic ...`, or None when no Basic credentials came.

    Unlike FastAPI's HTTPBasic, a malformed header is the service's own 401, not an
    HTTPException; the user name is not looked at."""

    def __init__(self) -> None:
        self.model = HTTPBase(
            scheme="basic", description="Any user name; one of API_KEYS as password"
        )
        self.scheme_name = "HTTPBasic"

    async def __call__(self, request: Request) -> str | None:
        scheme, _, param = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(param.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized(
                "the Basic credentials are not base64 of 'user:key'", True
            ) from None
        _, colon, password = decoded.partition(":")
        if not colon:
            raise _unauthorized("the Basic credentials have no ':' before the key", True)
        return password


basic_password = BasicPassword()


def matches_any(presented: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # no early exit: the time taken does not tell which key came close
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def _unauthorized(detail: str, basic: bool) -> errors.Unauthorized:
    error = errors.Unauthorized(detail)
    challenges = [f'Bearer realm="{REALM}"']
    if basic:
        challenges.append(f'Basic realm="{REALM}", charset="UTF-8"')
    error.headers = {"WWW-Authenticate": ", ".join(challenges)}
    return error


def _check_key(presented: str | None, keys: list[str], *, basic: bool) -> None:
    if not keys:
        return
    if not presented:
        how = "'Authorization: Bearer <key>'"
        if basic:
            how += " or HTTP Basic with the key as the password"
        raise _unauthorized(f"an API key is required: {how}", basic)
    if not matches_any(presented, keys):
        raise _unauthorized("the API key is not valid", basic)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
HeaderKeyDep = Annotated[str | None, Depends(api_key_header)]


async def require_api_key(
    settings: SettingsDep, credentials: BearerDep, header_key: HeaderKeyDep
) -> None:
    """With API_KEYS set: a key as `Authorization: Bearer` or `X-API-Key`, else 401."""
    presented = credentials.credentials if credentials is not None else header_key
    _check_key(presented, settings.api_key_list(), basic=False)


async def require_api_key_or_basic(
    settings: SettingsDep,
    credentials: BearerDep,
    header_key: HeaderKeyDep,
    password: Annotated[str | None, Depends(basic_password)],
) -> None:
    """With API_KEYS set: a key as `Authorization: Bearer`, `X-API-Key` or the password of
    HTTP Basic authentication, else 401."""
    presented = credentials.credentials if credentials is not None else header_key or password
    _check_key(presented, settings.api_key_list(), basic=True)


def accepts(*media_types: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency that admits request bodies of these media types only, else 415.

    Parameters such as `; charset=utf-8` are ignored; `application/json` also admits the
    `+json` types (`application/merge-patch+json`). A request without a Content-Type is
    refused too, whatever its body."""
    allowed = frozenset(media_type.lower() for media_type in media_types)
    takes_json = "application/json" in allowed
    wanted = " or ".join(f"'Content-Type: {media_type}'" for media_type in media_types)

    async def check_media_type(request: Request) -> None:
        given = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if given in allowed or (takes_json and _is_json_suffix(given)):
            return
        raise errors.UnsupportedMediaType(
            f"send the request body with {wanted} (got {given or 'none'})"
        )

    return check_media_type


def _is_json_suffix(media_type: str) -> bool:
    return media_type.startswith("application/") and media_type.endswith("+json")
