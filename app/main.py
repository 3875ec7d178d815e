"""The FastAPI application: settings and clients built once at start-up, then the routes.

Start-up fails fast: a bad setting or an unreachable cloud stops the process with one
readable line per problem, before it accepts a single request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from app import errors, names, wiring
from app.api import answers, docs, failures, jobs
from app.api.middleware import RequestEdge
from app.api.routes import router, service_router
from app.config import Settings, load_settings
from app.logging_config import setup_logging

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging()
        try:
            config = app.state.settings = settings or load_settings()
            setup_logging(config.log_format, config.log_level)
            services = app.state.services = wiring.build(config)
            if config.startup_probe:
                await anyio.to_thread.run_sync(services.probe.run)
        except errors.StartupError as exc:
            app.state.startup_error = exc
            raise
        anyio.to_thread.current_default_thread_limiter().total_tokens = services.request_threads
        threading.Thread(target=services.keep_sweeping, name="sweep", daemon=True).start()
        if not config.api_key_list():
            log.warning("API_KEYS is not set: anyone who can reach this service can use its API")
        if not config.sns_verify_signatures:
            log.warning(
                "SNS_VERIFY_SIGNATURES is false: POST /v1/events takes SNS messages without "
                "checking their signatures (for emulators only)"
            )
        log.info("serving; replicating to %s", config.describe())
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="cross-cloud-replicator",
        version=names.VERSION,
        summary="Streams objects from Amazon S3 into Google Cloud Storage, verified, exactly once.",
        lifespan=lifespan,
        docs_url=None,  # app/api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.include_router(router)
    app.include_router(jobs.router)
    app.include_router(failures.router)
    app.include_router(service_router)
    docs.add_docs(app)
    app.openapi = lambda: answers.without_fastapis_422(FastAPI.openapi(app))  # type: ignore[method-assign]
    app.add_exception_handler(errors.ReplicatorError, _replicator_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(RequestEdge)
    app.add_middleware(StartupFailureReporter)
    return app


class StartupFailureReporter:
    """Report a StartupError as the server's one-line start-up failure, not a traceback.

    Starlette reports a failed lifespan with the formatted traceback; this replaces that
    message with the error's own lines, which uvicorn prints before exiting non-zero.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def report(message: Message) -> None:
            failure = getattr(scope["app"].state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and failure is not None:
                message = {**message, "message": str(failure)}
            await send(message)

        try:
            await self.app(scope, receive, report)
        except errors.StartupError:
            pass  # already reported through `report`


async def _replicator_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ReplicatorError)
    if isinstance(exc, errors.Forbidden):  # why is for the logs only
        log.warning("%s %s -> 403: %s", request.method, request.url.path, exc.reason)
    elif exc.status_code >= 500:
        log.error(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.kind,
            exc.detail,
        )
    return answers.error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "json_invalid":  # its location is a character offset, not a field
            reason = error.get("ctx", {}).get("error")
            where, message = "", f"the request body is not valid JSON ({reason})"
        elif error["type"] == "missing" and tuple(error["loc"]) == ("body",):
            message = "the request body is missing: send a JSON object"
        elif error["type"] == "extra_forbidden":
            message = "not a field of this request (misspelled?)"
        problems.append(f"{where}: {message}" if where else message)
    return answers.error_response(errors.InvalidRequest("; ".join(problems)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """What routing itself answers: 404 for a path no route has, 405 for a method."""
    assert isinstance(exc, HTTPException)
    error: errors.ReplicatorError
    if exc.status_code == 404:
        error = errors.NotFound(f"no route at {request.url.path}")
    elif exc.status_code == 405:
        error = errors.MethodNotAllowed(f"{request.method} is not allowed at {request.url.path}")
    else:
        error = errors.ReplicatorError(str(exc.detail))
        error.status_code = exc.status_code
        error.kind = "http_error"
    error.headers = dict(exc.headers or {})
    return answers.error_response(error)


app = create_app()
