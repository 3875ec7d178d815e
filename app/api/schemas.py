"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from app.names import GCSBucket, GCSKey, ObjectKey, S3Bucket, check_gcs_key
from app.policy import Overwrite


class RequestBody(BaseModel):
    """A request schema. A field it does not have is refused (a 422 naming it), so a typo
    never sends data somewhere the caller did not mean; so is a field given under two of
    its names (`s3_bucket` and `src_bucket`)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_field(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for field in cls.model_fields.values():
                if isinstance(field.validation_alias, AliasChoices):
                    names = [n for n in field.validation_alias.choices if n in data]
                    if len(names) > 1:
                        raise ValueError(f"{' and '.join(map(str, names))} are one field: give one")
        return data


class ReplicateRequest(RequestBody):
    """Seed clients' `src_bucket`, `src_key`, `dest_bucket`, `dest_key` are accepted too."""

    s3_bucket: S3Bucket = Field(validation_alias=AliasChoices("s3_bucket", "src_bucket"))
    s3_key: ObjectKey = Field(validation_alias=AliasChoices("s3_key", "src_key"))
    gcs_bucket: GCSBucket | None = Field(
        None,
        validation_alias=AliasChoices("gcs_bucket", "dest_bucket"),
        description="Destination bucket; GCS_BUCKET_NAME when omitted.",
    )
    gcs_key: GCSKey | None = Field(
        None,
        validation_alias=AliasChoices("gcs_key", "dest_key"),
        description="Destination object name; the S3 key when omitted.",
    )
    overwrite: Overwrite | None = Field(
        None, description="Overrides the OVERWRITE setting for this request."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"s3_bucket": "source-bucket", "s3_key": "hello.txt"},
                {
                    "s3_bucket": "source-bucket",
                    "s3_key": "reports/2026/q3.csv",
                    "gcs_bucket": "destination-bucket",
                    "gcs_key": "archive/q3.csv",
                    "overwrite": "different",
                },
            ]
        }
    }

    @model_validator(mode="after")
    def _default_key_is_a_gcs_name(self) -> Self:
        if self.gcs_key is None:
            try:
                check_gcs_key(self.s3_key)
            except ValueError as exc:
                raise ValueError(f"s3_key cannot be used as the GCS object name: {exc}") from None
        return self


class ReplicationResponse(BaseModel):
    status: Literal["success"] = "success"
    action: Literal["replicated", "skipped"]
    s3_bucket: str
    s3_key: str
    gcs_bucket: str
    gcs_key: str
    size: int
    md5: str | None = Field(description="Base64 MD5 of the destination object, as GCS reports it")
    crc32c: str | None = Field(description="Base64 CRC32C of the destination object")
    generation: int | None
    message: str
    verified_against: list[str] = Field(
        [],
        description="A copy's bytes were checked, as they were read, against these (the ETag "
        "as an MD5, S3's CRC64NVME, CRC32, ... checksums); empty for a skip",
    )
    unverified: bool = Field(
        False,
        description="True when S3 stated nothing to check the bytes read against (an SSE-KMS "
        "object without an S3 checksum): GCS checked the upload, nothing checked the read",
    )


class BatchRequest(RequestBody):
    s3_bucket: S3Bucket = Field(validation_alias=AliasChoices("s3_bucket", "src_bucket"))
    s3_keys: list[ObjectKey] = Field(min_length=1, max_length=1000)
    gcs_bucket: GCSBucket | None = Field(
        None, validation_alias=AliasChoices("gcs_bucket", "dest_bucket")
    )
    overwrite: Overwrite | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"s3_bucket": "source-bucket", "s3_keys": ["hello.txt", "missing.txt"]},
            ]
        }
    }

    @model_validator(mode="after")
    def _keys_are_unique_gcs_names(self) -> Self:
        seen: set[str] = set()
        for key in self.s3_keys:
            if key in seen:
                raise ValueError(f"s3_keys lists {key!r} more than once")
            seen.add(key)
            try:
                check_gcs_key(key)
            except ValueError as exc:
                raise ValueError(f"s3_keys: {key!r} cannot be a GCS object name: {exc}") from None
        return self


class BatchItem(BaseModel):
    key: str
    status: Literal["success", "not_found", "archived", "error"]
    action: Literal["replicated", "skipped"] | None = None
    size: int | None = None
    md5: str | None = None
    crc32c: str | None = None
    generation: int | None = None
    message: str | None = None
    unverified: bool | None = Field(None, description="As in the single replication's answer")
    error: str | None = Field(None, description="What went wrong, when status is not success")


class BatchSummary(BaseModel):
    total: int
    replicated: int
    skipped: int
    not_found: int
    archived: int | None = Field(
        None, description="Keys in an archive storage class (restore them first); absent: none"
    )
    failed: int


class BatchResponse(BaseModel):
    status: Literal["completed"] = "completed"
    results: list[BatchItem]
    summary: BatchSummary


class EventResult(BaseModel):
    """What became of one record of an event body."""

    s3_bucket: str
    s3_key: str = Field(description="The key as the source has it (decoded)")
    event: str = Field(examples=["ObjectCreated:Put", "Object Deleted"])
    status: Literal["success", "error"]
    action: Literal["replicated", "skipped", "deleted", "ignored"]
    reason: str | None = None
    error: str | None = Field(None, description="Why it failed for good, when status is error")


class EventSummary(BaseModel):
    total: int
    replicated: int
    skipped: int
    deleted: int
    ignored: int
    failed: int = Field(description="Records that failed for good (counted in skipped too)")


class EventsResponse(BaseModel):
    status: Literal["completed"] = "completed"
    results: list[EventResult] = Field(
        description="One per record, in order; none for a test event or an SNS confirmation"
    )
    summary: EventSummary


class QueuedResponse(BaseModel):
    status: Literal["queued"] = "queued"


class ObjectResponse(BaseModel):
    bucket: str
    key: str
    size: int
    md5: str | None
    crc32c: str | None
    generation: int | None
    content_type: str | None
    content_encoding: str | None
    cache_control: str | None
    content_disposition: str | None
    content_language: str | None
    metadata: dict[str, str]


IdentitiesField = Annotated[
    dict[str, dict[str, str]],
    Field(
        description="Which identity each side uses (never a secret): for aws, how the "
        "credentials are found, the role, and the caller's ARN once a probe asked STS; for "
        "gcs, the service account or the workload identity federation in use",
        examples=[
            {
                "aws": {
                    "credentials": "web identity token file /var/run/secrets/eks/token",
                    "role": "arn:aws:iam::123456789012:role/replicator",
                    "arn": "arn:aws:sts::123456789012:assumed-role/replicator/pod",
                },
                "gcs": {
                    "credentials": "workload identity federation from AWS",
                    "audience": "//iam.googleapis.com/projects/1/locations/global/"
                    "workloadIdentityPools/aws/providers/eks",
                },
            }
        ],
    ),
]


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    ledger: Literal["local", "up", "down"] = Field(
        description="local: in-process (no LEDGER_URL); up/down: whether the shared ledger "
        "answers (while down, every decision looks at both clouds)"
    )
    identities: IdentitiesField


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    message: str = "Welcome to the Cross-Cloud Replicator!"
    current_config: dict[str, str] = Field(
        examples=[
            {
                "s3_target": "http://127.0.0.1:9000",
                "gcs_target": "http://127.0.0.1:4443",
                "gcs_bucket": "destination-bucket",
            }
        ]
    )
    identities: IdentitiesField


class ErrorResponse(BaseModel):
    error: str = Field(examples=["not_found"])
    detail: str = Field(examples=["s3://source-bucket/missing.txt does not exist"])


class ForbiddenResponse(BaseModel):
    """A refusal that says nothing more: the reason is in the service's log."""

    error: Literal["forbidden"] = "forbidden"
