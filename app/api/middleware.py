"""The request edge: a request id for every request, the body size limit, a JSON answer for
unexpected failures, one log line per request, and its time in
`replicator_http_request_duration_seconds` by route template (never the path asked for: a
label of bounded values). Pure ASGI, so it sees requests before any
route does. What a route accepts (media types, credentials) is the route's own rule, declared
with it (app/api/security.py), so that routing answers 404 and 405 first."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from fastapi import routing
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors, metrics
from app.logging_config import request_id

log = logging.getLogger("app.requests")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestEdge:
    """Reads MAX_REQUEST_BYTES from the settings the lifespan put on app state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        rid = given if _VALID_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        response = _ResponseSeen()
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.started = True
                response.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                if response.status == 405:
                    message["headers"] = _with_full_allow(scope, message["headers"])
            await send(message)

        limit = scope["app"].state.settings.max_request_bytes
        try:
            problem = _check_length(headers, limit)
            if problem is None and scope["method"] in _BODY_METHODS:
                body, problem = await _read_body(receive, limit)
                receive = _replay(body, receive)
            if problem is not None:
                await _send_error(problem, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug, not a condition the service knows: logged with its traceback (and the
            # request id), answered in the same JSON shape as every other error.
            log.exception("%s %s failed unexpectedly", scope["method"], scope["path"])
            if response.started:
                raise
            detail = f"an unexpected error occurred (request id {rid}); see the logs"
            await _send_error(errors.ReplicatorError(detail), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "other"
            status = f"{response.status // 100}xx"
            metrics.HTTP_SECONDS.labels(scope["method"], route, status).observe(elapsed)
            log.info(
                "%s %s -> %d in %.1f ms",
                scope["method"],
                scope["path"],
                response.status,
                elapsed * 1000,
            )
            request_id.reset(token)


@dataclass
class _ResponseSeen:
    """What the edge saw of the answer: whether it started, and its status (500 until then)."""

    started: bool = False
    status: int = 500


def _check_length(headers: Headers, limit: int) -> errors.ReplicatorError | None:
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return errors.PayloadTooLarge(f"the request body is larger than {limit} bytes")
    return None


def _with_full_allow(scope: Scope, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`Allow` with the methods of every route at this path: the router names only the
    first route it matched (GET, where GET and DELETE share a path)."""
    methods: set[str] = set()
    for route in routing.iter_route_contexts(scope["app"].routes):
        if route.methods and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods
    if not methods:
        return headers
    allow = ", ".join(sorted(methods)).encode()
    return [(name, value) for name, value in headers if name.lower() != b"allow"] + [
        (b"allow", allow)
    ]


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, errors.ReplicatorError | None]:
    """The whole body (requests are small), or a 413 once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", errors.PayloadTooLarge(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_error(error: errors.ReplicatorError, send: Send) -> None:
    body = json.dumps({"error": error.kind, "detail": error.detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
