"""HTTP routes. They translate between JSON and the replication flow, nothing more."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.convertors import Convertor, register_url_convertor

from app import errors
from app.api import schemas
from app.api.security import accepts, require_api_key
from app.dependencies import BatchDep, ObjectsDep, ProbeDep, ReplicatorDep, SettingsDep
from app.names import GCSBucket, GCSKey
from app.services.replicator import ReplicationRequest, ReplicationResult

# Each route declares who may call it and, when it takes a body, which media types (see
# app/api/security.py): a route without an API-key rule is open to anyone.
router = APIRouter()
service_router = APIRouter(tags=["service"])  # liveness and readiness: always open

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        404: "The source bucket or object (or the destination bucket) does not exist.",
        409: "Another writer changed the destination object during the copy.",
        422: "Invalid input: the detail names the field and the rule.",
        502: "A cloud refused our credentials, or the bytes did not verify.",
        503: "S3 or GCS could not be reached after the retries.",
    }.items()
}


def _response(result: ReplicationResult) -> schemas.ReplicationResponse:
    dest = result.destination
    return schemas.ReplicationResponse(
        action=result.action.value,
        s3_bucket=result.source.bucket,
        s3_key=result.source.key,
        gcs_bucket=dest.bucket,
        gcs_key=dest.key,
        size=dest.size,
        md5=dest.checksums.md5,
        crc32c=dest.checksums.crc32c,
        generation=dest.generation,
        message=f"{result.action}: {result.reason}",
    )


@router.post(
    "/v1/replicate",
    responses=_ERRORS,
    tags=["replication"],
    dependencies=[Depends(require_api_key), Depends(accepts("application/json"))],
)
def replicate(
    body: schemas.ReplicateRequest, replicator: ReplicatorDep, settings: SettingsDep
) -> schemas.ReplicationResponse:
    """Copy one S3 object to GCS, or skip it when the destination already holds it."""
    request = ReplicationRequest(
        s3_bucket=body.s3_bucket,
        s3_key=body.s3_key,
        gcs_bucket=body.gcs_bucket or settings.gcs_bucket_name,
        gcs_key=body.gcs_key or body.s3_key,
        overwrite=body.overwrite or settings.overwrite,
    )
    return _response(replicator.replicate(request))


@router.post(
    "/v1/replicate/batch",
    responses=_ERRORS,
    tags=["replication"],
    response_model_exclude_none=True,
    dependencies=[Depends(require_api_key), Depends(accepts("application/json"))],
)
def replicate_batch(
    body: schemas.BatchRequest, batch: BatchDep, settings: SettingsDep
) -> schemas.BatchResponse:
    """Copy up to 1000 keys of one bucket concurrently; one result per key, in request order."""

    requests = [
        ReplicationRequest(
            s3_bucket=body.s3_bucket,
            s3_key=key,
            gcs_bucket=body.gcs_bucket or settings.gcs_bucket_name,
            gcs_key=key,
            overwrite=body.overwrite or settings.overwrite,
        )
        for key in body.s3_keys
    ]
    results = [
        _batch_item(request.s3_key, outcome)
        for request, outcome in zip(
            requests,
            batch.run(requests),
            strict=True,
        )
    ]
    count = {
        outcome: sum(1 for r in results if (r.action or r.status) == outcome)
        for outcome in ("replicated", "skipped", "not_found", "error")
    }
    summary = schemas.BatchSummary(
        total=len(results),
        replicated=count["replicated"],
        skipped=count["skipped"],
        not_found=count["not_found"],
        failed=count["error"],
    )
    return schemas.BatchResponse(results=results, summary=summary)


def _batch_item(key: str, outcome: ReplicationResult | errors.ReplicatorError) -> schemas.BatchItem:
    if isinstance(outcome, errors.ObjectNotFound):
        return schemas.BatchItem(key=key, status="not_found", error=outcome.detail)
    if isinstance(outcome, errors.ReplicatorError):
        return schemas.BatchItem(key=key, status="error", error=f"{outcome.kind}: {outcome.detail}")
    result = _response(outcome)
    return schemas.BatchItem(
        key=key,
        status="success",
        action=result.action,
        size=result.size,
        md5=result.md5,
        crc32c=result.crc32c,
        generation=result.generation,
        message=result.message,
    )


class _AnyPath(Convertor[str]):
    """Like Starlette's `path`, but also across line breaks, so that a key GCS cannot hold
    reaches validation (422) instead of failing to match any route (404)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())

# A key is taken literally: `..` is part of the name, never a step up; `%2F` is a slash.
ObjectPath = Annotated[
    GCSKey, Path(description="Object name, taken literally; may contain slashes")
]


@router.get(
    "/v1/object/{bucket}/{key:anypath}",
    responses=_ERRORS,
    tags=["objects"],
    dependencies=[Depends(require_api_key)],
)
def get_object(
    bucket: Annotated[GCSBucket, Path()], key: ObjectPath, objects: ObjectsDep
) -> schemas.ObjectResponse:
    """The destination object's size, checksums, content headers and metadata."""
    info = objects.describe(bucket, key)
    return schemas.ObjectResponse(
        bucket=bucket,
        key=key,
        size=info.size,
        md5=info.checksums.md5,
        crc32c=info.checksums.crc32c,
        generation=info.generation,
        content_type=info.headers.content_type,
        content_encoding=info.headers.content_encoding,
        cache_control=info.headers.cache_control,
        content_disposition=info.headers.content_disposition,
        content_language=info.headers.content_language,
        metadata=dict(info.metadata),
    )


@router.delete(
    "/v1/object/{bucket}/{key:anypath}",
    status_code=204,
    responses=_ERRORS,
    tags=["objects"],
    dependencies=[Depends(require_api_key)],
)
def delete_object(
    bucket: Annotated[GCSBucket, Path()], key: ObjectPath, objects: ObjectsDep
) -> Response:
    """Delete the destination object."""
    objects.delete(bucket, key)
    return Response(status_code=204)


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    dependencies=[Depends(require_api_key)],
)
def metrics() -> Response:
    """Prometheus metrics: objects and bytes replicated, skips, failures, retries, durations."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@service_router.get("/health")
@service_router.get("/")
def health(settings: SettingsDep) -> schemas.HealthResponse:
    """Liveness, and where the service points; cheap, talks to no cloud. Never a secret."""
    return schemas.HealthResponse(current_config=settings.describe())


@service_router.get("/ready", responses={503: {"model": schemas.ErrorResponse}})
def ready(probe: ProbeDep) -> dict[str, str]:
    """200 only when S3 and GCS both answer now (short timeouts, no retries)."""
    try:
        probe.run()
    except errors.StartupError as exc:
        raise errors.NotReady(str(exc)) from exc
    return {"status": "ready"}
