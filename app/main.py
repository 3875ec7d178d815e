"""The FastAPI application: settings and clients built once at start-up, then the routes.

Start-up fails fast: a bad setting or an unreachable cloud stops the process with one
readable line per problem, before it accepts a single request.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from app import errors
from app.api.middleware import RequestEdge
from app.api.routes import router, service_router
from app.config import Settings, load_settings
from app.dependencies import Probe
from app.logging_config import setup_logging
from app.retry import RetryPolicy
from app.services.composite import CompositePlan
from app.services.replicator import Replicator
from app.storage import gcs, local, s3
from app.storage.base import Destination

log = logging.getLogger("app")
REQUEST_THREADS = 40  # anyio's default pool, which runs the sync routes
LOOKUP_THREADS = 64


def build_replicator(settings: Settings) -> tuple[Replicator, s3.S3Source, Destination]:
    """The source, destination and replication flow for these settings. Creates clients only;
    talks to no cloud."""
    retry = RetryPolicy(settings.max_retries, settings.retry_delay, settings.retry_max_delay)
    # One connection per thread that may talk to a cloud at once (request threads, batch
    # workers, lookups), so no request waits for, or churns, a connection.
    pool_size = REQUEST_THREADS + settings.batch_concurrency + LOOKUP_THREADS
    # ... and the part uploads of composite copies (one per batch worker at most).
    pool_size += settings.parallel_composite_workers * settings.batch_concurrency
    source = s3.build_source(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        access_key_id=_secret(settings.aws_access_key_id),
        secret_access_key=_secret(settings.aws_secret_access_key),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=pool_size,
        direct_gets=settings.s3_direct_gets,
    )
    destination: Destination
    if settings.local_gcs_path is not None:
        destination = local.LocalDestination(settings.local_gcs_path)
    else:
        client = gcs.build_client(
            emulator_host=settings.storage_emulator_host,
            project=settings.gcp_project,
            max_pool_connections=pool_size,
        )
        destination = gcs.GCSDestination(
            client,
            retry,
            chunk_size=settings.upload_chunk_size,
            timeout=(settings.connect_timeout, settings.read_timeout),
            target=settings.describe()["gcs_target"],
            max_pool_connections=pool_size,
        )
    replicator = Replicator(
        source,
        destination,
        retry,
        block_size=settings.upload_chunk_size,
        lookup_threads=LOOKUP_THREADS,
        composite=CompositePlan(
            threshold=settings.parallel_composite_threshold,
            part_size=settings.parallel_composite_part_size,
            workers=settings.parallel_composite_workers,
        ),
    )
    return replicator, source, destination


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_probe(settings: Settings) -> Probe:
    quick = settings.model_copy(
        update={
            "connect_timeout": settings.probe_timeout,
            "read_timeout": settings.probe_timeout,
            "batch_concurrency": 1,
        }
    )
    _, source, destination = build_replicator(quick)
    return Probe(source, destination)


def run_probe(probe: Probe, bucket: str) -> None:
    """Reach S3 and GCS with short timeouts and no retries; StartupError on the first failure."""
    probe.source.probe()
    probe.destination.probe(bucket)


def create_app(settings: Settings | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging()
        try:
            config = app.state.settings = settings or load_settings()
            setup_logging(config.log_format, config.log_level)
            app.state.probe = build_probe(config)
            if config.startup_probe:
                await anyio.to_thread.run_sync(run_probe, app.state.probe, config.gcs_bucket_name)
        except errors.StartupError as exc:
            app.state.startup_error = exc
            raise
        replicator, _, destination = build_replicator(config)
        app.state.replicator = replicator
        app.state.destination = destination
        app.state.batch_pool = ThreadPoolExecutor(
            config.batch_concurrency, thread_name_prefix="batch"
        )
        if not config.api_key_list():
            log.warning("API_KEYS is not set: anyone who can reach this service can use its API")
        log.info("serving; replicating to %s", config.describe())
        try:
            yield
        finally:
            app.state.batch_pool.shutdown(wait=True, cancel_futures=True)
            replicator.close()

    app = FastAPI(
        title="cross-cloud-replicator",
        version="0.1.0",
        summary="Streams objects from Amazon S3 into Google Cloud Storage, verified, exactly once.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(service_router)
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
    if exc.status_code >= 500:
        log.error(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.kind,
            exc.detail,
        )
    return JSONResponse(
        {"error": exc.kind, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers or None,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "json_invalid":  # its location is a character offset, not a field
            reason = error.get("ctx", {}).get("error")
            where, message = "", f"the request body is not valid JSON ({reason})"
        problems.append(f"{where}: {message}" if where else message)
    return JSONResponse({"error": "invalid_request", "detail": "; ".join(problems)}, 422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": kind, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


app = create_app()
