"""HTTP routes. They translate between JSON and the replication flow, nothing more."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.convertors import Convertor, register_url_convertor

from app import errors
from app.api import answers, schemas
from app.api.security import accepts, require_api_key, require_api_key_or_basic
from app.dependencies import (
    BatchDep,
    IdentitiesDep,
    IntakeDep,
    LedgerDep,
    ObjectsDep,
    ProbeDep,
    ReplicatorDep,
    SettingsDep,
)
from app.events import intake
from app.events.converge import EventAction, EventOutcome
from app.names import GCSBucket, GCSKey
from app.replication.replicator import ReplicationRequest, ReplicationResult

# Each route declares who may call it and, when it takes a body, which media types (see
# app/api/security.py): a route without an API-key rule is open to anyone.
router = APIRouter()
service_router = APIRouter(tags=["service"])  # liveness and readiness: always open

_COPY_ANSWERS = answers.responses(401, 404, 409, *answers.BODY, 502, 503)
_OBJECT_ANSWERS = answers.responses(
    401,
    404,
    422,
    502,
    503,
    s404="The destination bucket or object does not exist.",
    s422="The bucket or object name is not one GCS accepts: the detail says why.",
)


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
        verified_against=list(result.checked),
        unverified=result.unverified,
    )


@router.post(
    "/v1/replicate",
    responses=_COPY_ANSWERS,
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
    responses=answers.responses(401, *answers.BODY),
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
        for outcome in ("replicated", "skipped", "not_found", "archived", "error")
    }
    summary = schemas.BatchSummary(
        total=len(results),
        replicated=count["replicated"],
        skipped=count["skipped"],
        not_found=count["not_found"],
        archived=count["archived"] or None,
        failed=count["error"],
    )
    return schemas.BatchResponse(results=results, summary=summary)


def _batch_item(key: str, outcome: ReplicationResult | errors.ReplicatorError) -> schemas.BatchItem:
    if isinstance(outcome, errors.Archived):
        return schemas.BatchItem(key=key, status="archived", error=outcome.detail)
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
        unverified=result.unverified or None,
    )


_EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": schemas.QueuedResponse,
        "description": "With SQS_QUEUE_URL set: the body is on the queue, as it came.",
    },
    **answers.responses(
        401,
        403,
        *answers.BODY,
        503,
        s403="An SNS message whose signature, certificate URL or topic is refused; "
        "nothing was read or written.",
        s422="The body matches no shape AWS sends (or SNS refused a subscription "
        "confirmation); nothing was read or written.",
        s503="A record could not be settled now, or the queue refused the body: "
        "deliver it again (records already settled are then skipped).",
    ),
}

_EVENT_EXAMPLES = {
    "s3": {
        "summary": "S3 event notification",
        "value": {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": "source-bucket"},
                        "object": {"key": "hello.txt", "size": 69},
                    },
                }
            ]
        },
    },
    "eventbridge": {
        "summary": "EventBridge event from aws.s3",
        "value": {
            "detail-type": "Object Created",
            "source": "aws.s3",
            "detail": {"bucket": {"name": "source-bucket"}, "object": {"key": "hello.txt"}},
        },
    },
}

# What SNS posts (as text/plain): a Notification carrying an S3 event, signed.
_SNS_EXAMPLE = json.dumps(
    {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:replicator-events",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(_EVENT_EXAMPLES["s3"]["value"]),
        "Timestamp": "2026-05-02T00:54:06.655Z",
        "SignatureVersion": "2",
        "Signature": "EXAMPLEw6JRN...",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-example.pem",
    },
    indent=2,
)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


@router.post(
    "/v1/events",
    response_model=schemas.EventsResponse,
    response_model_exclude_none=True,
    responses=_EVENT_RESPONSES,
    tags=["events"],
    dependencies=[
        Depends(require_api_key_or_basic),
        Depends(accepts("application/json", "text/plain")),
    ],
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An S3 event notification, S3 test event, SNS message (signed) or "
            "EventBridge event, as AWS sends it; SNS posts it as `text/plain`.",
            "content": {
                "application/json": {"schema": {"type": "object"}, "examples": _EVENT_EXAMPLES},
                "text/plain": {"schema": {"type": "string"}, "example": _SNS_EXAMPLE},
            },
        }
    },
)
def take_events(
    body: Annotated[bytes, Depends(_raw_body)], events: IntakeDep
) -> schemas.EventsResponse | JSONResponse:
    """Settle (or queue) every record of an S3, SNS or EventBridge event body."""
    taken = events.take(body)
    if isinstance(taken, intake.Queued):
        return JSONResponse(schemas.QueuedResponse().model_dump(), status_code=202)
    results = [_event_result(outcome) for outcome in taken.outcomes]
    count = {action: sum(1 for r in results if r.action == action) for action in EventAction}
    summary = schemas.EventSummary(
        total=len(results),
        replicated=count[EventAction.REPLICATED],
        skipped=count[EventAction.SKIPPED],
        deleted=count[EventAction.DELETED],
        ignored=count[EventAction.IGNORED],
        failed=sum(1 for r in results if r.status == "error"),
    )
    return schemas.EventsResponse(results=results, summary=summary)


def _event_result(outcome: EventOutcome) -> schemas.EventResult:
    return schemas.EventResult(
        s3_bucket=outcome.s3_bucket,
        s3_key=outcome.s3_key,
        event=outcome.event,
        status="error" if outcome.error is not None else "success",
        action=outcome.action.value,
        reason=outcome.reason,
        error=outcome.error,
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
    responses=_OBJECT_ANSWERS,
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
    responses=_OBJECT_ANSWERS,
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
    responses=answers.responses(401),
    dependencies=[Depends(require_api_key)],
)
def metrics() -> Response:
    """Prometheus metrics: objects and bytes replicated, skips, failures, retries, durations."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@service_router.get("/health", responses=answers.responses())
@service_router.get("/", responses=answers.responses())
async def health(settings: SettingsDep, identities: IdentitiesDep) -> schemas.HealthResponse:
    """Liveness, where the service points and as whom; cheap, talks to no cloud. Never a
    secret. Served on the event loop, not the request threads, so a liveness probe is
    answered even while every request thread is busy copying."""
    return schemas.HealthResponse(
        current_config=settings.describe(), identities=identities.describe()
    )


@service_router.get(
    "/ready",
    responses=answers.responses(503, s503="S3 or GCS does not answer now: the detail says which."),
)
def ready(probe: ProbeDep, ledger: LedgerDep, identities: IdentitiesDep) -> schemas.ReadyResponse:
    """200 only when S3 and GCS both answer now (short timeouts, no retries); the ledger's
    state is reported but never makes it fail (the ledger is an optimisation)."""
    try:
        probe.run()
    except errors.StartupError as exc:
        raise errors.NotReady(str(exc)) from exc
    return schemas.ReadyResponse(ledger=ledger.state, identities=identities.describe())
