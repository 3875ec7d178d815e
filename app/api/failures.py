"""GET /v1/failures: what could not be replicated, and why (as `replicator failures`)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from app import errors
from app.api import schemas
from app.api.security import require_api_key
from app.events.dead_letters import DeadLetters

router = APIRouter(tags=["operations"])


class FailedKey(BaseModel):
    state: str = Field(
        examples=["dead_letter"],
        description="dead_letter: its message is in the dead-letter queue; retrying: still "
        "on the queue",
    )
    s3_bucket: str | None = Field(examples=["source-bucket"])
    s3_key: str | None = Field(examples=["reports/2026.csv"], description="null: no event")
    when: float = Field(description="the last failure (seconds since the epoch)")
    tries: int = Field(description="receives of its message")
    reason: str = Field(examples=["failed: access_denied: S3 denied GetObject"])
    message_id: str


class FailuresResponse(BaseModel):
    failures: list[FailedKey]


async def get_dead_letters(request: Request) -> DeadLetters:
    found: DeadLetters | None = request.app.state.services.dead_letters
    if found is None:
        raise errors.InvalidRequest("SQS_QUEUE_URL is not set: there is no queue to look at")
    return found


_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {
        "model": schemas.ErrorResponse,
        "description": "No queue (SQS_QUEUE_URL), or its redrive policy names no dead-letter "
        "queue.",
    },
    503: {"model": schemas.ErrorResponse, "description": "SQS could not be reached."},
}


@router.get("/v1/failures", responses=_RESPONSES, dependencies=[Depends(require_api_key)])
def list_failures(
    dead_letters: Annotated[DeadLetters, Depends(get_dead_letters)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> FailuresResponse:
    """Keys in the dead-letter queue and keys the worker noted failing: when, tries, reason."""
    found = dead_letters.failures(limit)
    return FailuresResponse(failures=[FailedKey(**dataclasses.asdict(f)) for f in found])
