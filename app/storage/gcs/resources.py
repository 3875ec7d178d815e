"""JSON-API resources to and from the storage vocabulary (app.storage.base): the object resource
an upload sends, the ObjectInfo an answer describes, and what a bucket's settings allow."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.storage.base import Checksums, ContentHeaders, ObjectInfo

# Storage classes without a minimum storage duration: deleting a part early costs nothing.
_NO_MINIMUM_DURATION = {"STANDARD", "MULTI_REGIONAL", "REGIONAL", "DURABLE_REDUCED_AVAILABILITY"}


def bucket_path(bucket: str) -> str:
    return f"/b/{quote(bucket, safe='')}"


def object_path(bucket: str, key: str) -> str:
    return f"/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"


@dataclass(frozen=True)
class Placement:
    """How every object written is stored: its storage class (None: the bucket's default)
    and the Cloud KMS key that encrypts it (None: the bucket's default encryption)."""

    storage_class: str | None = None
    kms_key: str | None = None


def object_resource(
    key: str,
    headers: ContentHeaders,
    metadata: Mapping[str, str],
    sums: Checksums | None,
    placement: Placement = Placement(),
    custom_time: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The object resource to create: name, content headers, custom metadata, storage class,
    KMS key, `customTime` and, when known up front, the checksums GCS must find."""
    resource: dict[str, Any] = {
        "name": key,
        "contentType": headers.content_type or "application/octet-stream",
        "contentEncoding": headers.content_encoding,
        "cacheControl": headers.cache_control,
        "contentDisposition": headers.content_disposition,
        "contentLanguage": headers.content_language,
        "metadata": dict(metadata),
        "storageClass": placement.storage_class,
        "kmsKeyName": placement.kms_key,
        "customTime": _rfc3339(custom_time) if custom_time else None,
    }
    if sums is not None:
        resource.update(md5Hash=sums.md5, crc32c=sums.crc32c)
    return {name: value for name, value in resource.items() if value is not None}


def object_info(bucket: str, resource: Mapping[str, Any]) -> ObjectInfo:
    """The ObjectInfo an object resource describes (a metadata read, a listing's item, the
    answer to an upload or a compose)."""
    return ObjectInfo(
        bucket=bucket,
        key=resource["name"],
        size=int(resource.get("size", 0)),
        generation=int(resource["generation"]) if resource.get("generation") else None,
        checksums=Checksums(md5=resource.get("md5Hash"), crc32c=resource.get("crc32c")),
        headers=ContentHeaders(
            content_type=resource.get("contentType"),
            content_encoding=resource.get("contentEncoding"),
            cache_control=resource.get("cacheControl"),
            content_disposition=resource.get("contentDisposition"),
            content_language=resource.get("contentLanguage"),
        ),
        metadata=dict(resource.get("metadata") or {}),
        updated=_timestamp(resource.get("updated")),
        modified=_timestamp(resource.get("customTime")),
        storage_class=resource.get("storageClass"),
    )


def allows_parts(bucket: Mapping[str, Any]) -> bool:
    """Whether temporary parts may be written and deleted in a bucket with these settings (the
    bucket resource): not where a minimum storage duration would charge for deleted parts,
    nor where a retention policy or a default event-based hold would keep them."""
    retention = int((bucket.get("retentionPolicy") or {}).get("retentionPeriod") or 0)
    storage_class = bucket.get("storageClass") or "STANDARD"
    return (
        storage_class in _NO_MINIMUM_DURATION
        and not retention
        and not bucket.get("defaultEventBasedHold")
    )


def kms_params(resource: Mapping[str, Any]) -> dict[str, str]:
    """The `kmsKeyName` query parameter an insert or compose takes for the resource's key."""
    return {"kmsKeyName": resource["kmsKeyName"]} if resource.get("kmsKeyName") else {}


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(value: str | None) -> datetime.datetime | None:
    """An RFC 3339 time as GCS writes it ("2026-01-02T03:04:05.678Z"), timezone-aware."""
    return datetime.datetime.fromisoformat(value) if value else None
