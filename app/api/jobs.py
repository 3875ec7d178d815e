"""/v1/jobs: sync and check jobs over HTTP, their request and response bodies, and routes that
translate between them and app.bulk.jobs."""

from __future__ import annotations

import datetime
import re
from typing import Literal, Self

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator, model_validator

from app.api import answers, schemas
from app.api.security import accepts, require_api_key
from app.bulk.check import CheckOptions
from app.bulk.compare import Location
from app.bulk.jobs import JobRequest, JobView, Kind
from app.bulk.patterns import KeyFilter, compile_glob
from app.bulk.sync import SyncOptions
from app.dependencies import JobsDep, SettingsDep

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])

SYNC_ONLY = ("dry_run", "delete", "max_delete")
CHECK_ONLY = ("checksum",)


class JobBody(schemas.RequestBody):
    kind: Literal["sync", "check"]
    source: str = Field(description="s3://bucket[/prefix]")
    destination: str = Field(description="gs://bucket[/prefix]; any bucket, not only the default")
    include: list[str] = Field([], description="Globs on the key below the prefix")
    exclude: list[str] = Field([], description="Globs on the key below the prefix; they win")
    dry_run: bool = Field(False, description="sync: count and report, copy and delete nothing")
    delete: bool = Field(False, description="sync: also remove what the source lacks")
    max_delete: int | None = Field(None, ge=0, description="sync, with delete: at most this many")
    checksum: bool = Field(False, description="check: also compare the checksums both expose")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "kind": "sync",
                    "source": "s3://source-bucket/reports",
                    "destination": "gs://destination-bucket/archive/reports",
                    "exclude": ["tmp/**"],
                },
                {"kind": "check", "source": "s3://source-bucket", "destination": "gs://backup"},
            ]
        },
    }

    @field_validator("source")
    @classmethod
    def _s3_location(cls, value: str) -> str:
        Location.parse(value, "s3")
        return value

    @field_validator("destination")
    @classmethod
    def _gs_location(cls, value: str) -> str:
        Location.parse(value, "gs")
        return value

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compile_glob(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a glob: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _fields_of_the_kind(self) -> Self:
        given = {name for name in self.model_fields_set if getattr(self, name) not in (False, None)}
        other = CHECK_ONLY if self.kind == "sync" else SYNC_ONLY
        if wrong := [name for name in other if name in given]:
            raise ValueError(f"{', '.join(wrong)}: not for a {self.kind} job")
        if self.max_delete is not None and not self.delete:
            raise ValueError("max_delete: only with delete")
        return self


class JobCounts(BaseModel):
    listed: int
    copied: int = Field(description="In a dry run: would be copied")
    skipped: int
    gone: int = Field(
        description="sync: listed, then deleted at the source before it could be copied "
        "(not a failure)"
    )
    deleted: int = Field(description="In a dry run: would be deleted")
    failed: int
    identical: int
    missing: int
    extra: int
    different: int
    errors: int = Field(description="Keys a check could not compare")
    archived: int = Field(0, description="Keys in an archive storage class: restore them first")
    unverified: int = Field(
        0,
        description="sync: copies S3 stated no checksum for; check --checksum: identical keys "
        "without a checksum both sides expose",
    )


class FailedKey(BaseModel):
    key: str = Field(description="Below the source prefix")
    reason: str


class JobResponse(BaseModel):
    id: str
    kind: Literal["sync", "check"]
    status: Literal["running", "succeeded", "failed", "cancelled"]
    source: str
    destination: str
    dry_run: bool
    counts: JobCounts
    bytes: int = Field(description="Bytes copied (in a dry run: that would be)")
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    errors: list[FailedKey] = Field(description="The first 100 keys that failed, with why")
    error: str | None = Field(description="Why the job stopped before the end, if on an error")


class JobList(BaseModel):
    jobs: list[JobResponse] = Field(description="Newest first")


def _response(job: JobView) -> JobResponse:
    request = job.request
    counts = {name: job.progress[name] for name in JobCounts.model_fields}
    return JobResponse(
        id=job.id,
        kind=request.kind.value,
        status=job.status.value,
        source=str(request.source),
        destination=str(request.destination),
        dry_run=isinstance(request.options, SyncOptions) and request.options.dry_run,
        counts=JobCounts(**counts),
        bytes=job.progress["bytes"],
        started_at=job.started_at,
        finished_at=job.finished_at,
        errors=[FailedKey(key=e.key, reason=e.reason) for e in job.errors],
        error=job.error,
    )


_NO_JOB = "No such job in this process (it keeps the last 100; a restart forgets them)."


@router.post(
    "/v1/jobs",
    status_code=202,
    responses=answers.responses(
        401,
        409,
        *answers.BODY,
        429,
        s409="A job runs already for this source and destination: the detail names it.",
        s422="Invalid input: the detail names each field (unknown ones too) and its rule. "
        "Nothing was started.",
        s429="MAX_RUNNING_JOBS jobs are running: start this one when one has ended.",
    ),
    dependencies=[Depends(accepts("application/json"))],
)
def start_job(
    body: JobBody, jobs: JobsDep, settings: SettingsDep, response: Response
) -> JobResponse:
    """Start a sync or check job on its own thread; watch it at /v1/jobs/{id}."""
    options: SyncOptions | CheckOptions
    keys = KeyFilter.from_globs(body.include, body.exclude)
    if body.kind == "sync":
        options = SyncOptions(
            keys=keys,
            overwrite=settings.overwrite,
            dry_run=body.dry_run,
            delete=body.delete,
            max_delete=body.max_delete,
            concurrency=settings.batch_concurrency,
            list_concurrency=settings.list_concurrency,
            list_split_min_keys=settings.list_split_min_keys,
        )
    else:
        options = CheckOptions(
            keys=keys,
            checksum=body.checksum,
            list_concurrency=settings.list_concurrency,
            list_split_min_keys=settings.list_split_min_keys,
        )
    request = JobRequest(
        Kind(body.kind),
        Location.parse(body.source, "s3"),
        Location.parse(body.destination, "gs"),
        options,
    )
    job = jobs.start(request)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return _response(job)


@router.get("/v1/jobs", responses=answers.responses(401))
def list_jobs(jobs: JobsDep) -> JobList:
    """The running jobs and the last 100 that ended, newest first."""
    return JobList(jobs=[_response(job) for job in jobs.recent()])


@router.get("/v1/jobs/{id}", responses=answers.responses(401, 404, s404=_NO_JOB))
def get_job(id: str, jobs: JobsDep) -> JobResponse:
    """A job's status, counts so far and first errors."""
    return _response(jobs.get(id))


@router.get(
    "/v1/jobs/{id}/report",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "One line per key settled so far: `<outcome> <key>` for sync, "
            "rclone's `--combined` marks for check.",
        },
        **answers.responses(401, 404, s404=_NO_JOB),
    },
)
def job_report(id: str, jobs: JobsDep) -> StreamingResponse:
    """The job's report so far, one line per key (read from a file: any size)."""
    return StreamingResponse(jobs.report(id), media_type="text/plain; charset=utf-8")


@router.delete(
    "/v1/jobs/{id}",
    response_model=JobResponse,
    responses={
        200: {"description": "The job had ended already"},
        **answers.responses(401, 404, s404=_NO_JOB),
    },
    status_code=202,
)
def cancel_job(id: str, jobs: JobsDep) -> JobResponse | JSONResponse:
    """Cancel a job: no copy starts any more; it is `cancelled` once those in flight finish."""
    job, stopping = jobs.cancel(id)
    body = _response(job)
    if stopping:
        return body
    return JSONResponse(body.model_dump(mode="json"), status_code=200)
