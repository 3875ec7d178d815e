"""API keys: with API_KEYS set, callers present one as `Authorization: Bearer <key>` or
`X-API-Key: <key>`. Keys are compared in constant time, all of them every time."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app import errors
from app.dependencies import SettingsDep

bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <one of API_KEYS>")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of API_KEYS")


def matches_any(presented: str, keys: list[str]) -> bool:
    found = False
    for key in keys:  # no early exit: the time taken does not tell which key came close
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> None:
    keys = settings.api_key_list()
    if not keys:
        return
    presented = credentials.credentials if credentials is not None else header_key
    if not presented:
        raise errors.Unauthorized("an API key is required: 'Authorization: Bearer <key>'")
    if not matches_any(presented, keys):
        raise errors.Unauthorized("the API key is not valid")
