"""Every error answer, built in one place: the JSON response of an app.errors error (the
exception handlers and the request edge send nothing else), and the `responses=` each route
declares, so that /docs shows every status a route can answer with and the body it has."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from app import errors
from app.api import schemas

# What each error status means on any route; a route says more where it knows more.
MEANINGS: dict[int, str] = {
    401: "API_KEYS is set and no valid key came: the `WWW-Authenticate` header names the "
    "schemes the route takes.",
    403: "Refused; the reason is in the service's log only.",
    404: "The source bucket or object (or the destination bucket) does not exist.",
    409: "Another writer changed the destination object during the copy, or the object "
    "cannot be copied as it stands (`archived`: restore it first; `sse_c`: encrypted with a "
    "customer-provided key; `retained`: the destination is under a retention policy or hold).",
    413: "The request body is larger than MAX_REQUEST_BYTES; nothing was read or written.",
    415: "The request body's Content-Type is not one the route takes (or is missing).",
    422: "Invalid input: the detail names each field (unknown ones too) and its rule. "
    "Nothing was read or written.",
    429: "Too many at once: try again when one has ended.",
    500: "An unexpected failure (a bug): the detail gives the request id to look for in the "
    "service's log.",
    502: "A cloud refused the service's credentials, or the bytes did not verify.",
    503: "S3 or GCS could not be reached after the retries.",
}

# What every route that takes a body may answer besides its own statuses.
BODY = (413, 415, 422)


def responses(*codes: int, **meanings: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that can answer with these error statuses (500 is always
    added): the error body's schema and MEANINGS' description, or the route's own given as
    `s404="..."`."""
    declared: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 500}):
        model = schemas.ForbiddenResponse if code == 403 else schemas.ErrorResponse
        description = meanings.pop(f"s{code}", MEANINGS[code])
        declared[code] = {"model": model, "description": description}
    if meanings:
        raise TypeError(f"responses(): {', '.join(meanings)} not among the statuses given")
    return declared


def without_fastapis_422(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema without the 422 FastAPI adds to every route that has a parameter,
    even one that cannot be invalid (a header, a job id), and with a body (HTTPValidationError)
    that is not the service's: a route that can answer 422 declares it with `responses`.
    Changes `schema` in place (it is FastAPI's cached copy) and returns it."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            body = answer.get("content", {}).get("application/json", {}).get("schema", {})
            if body.get("$ref", "").endswith("/HTTPValidationError"):
                del operation["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)
    return schema


def error_response(error: errors.ReplicatorError) -> JSONResponse:
    """The HTTP answer to an error: its status, its headers, and its JSON body."""
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers or None)
