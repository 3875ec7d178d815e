"""Which source a destination object holds, and when to replace it.

The destination records its source in custom metadata. S3 stores user metadata keys in lower
case, so these capitalised keys can never collide with metadata copied from S3.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from app.names import (
    REPLICATED_AT,
    RESERVED_KEYS,
    SOURCE_BUCKET,
    SOURCE_CHECKSUMS,
    SOURCE_ETAG,
    SOURCE_KEY,
    SOURCE_VERSION,
)
from app.policy import Overwrite
from app.replication import digest
from app.storage.base import ObjectInfo


def holds(current: ObjectInfo, source: ObjectInfo) -> bool:
    """Whether `current` was copied from this version of `source`. The version id is compared
    when the source's is known (a listing does not tell it; the ETag then decides)."""
    recorded = current.metadata
    return (
        recorded.get(SOURCE_BUCKET) == source.bucket
        and recorded.get(SOURCE_KEY) == source.key
        and recorded.get(SOURCE_ETAG) == (source.etag or "")
        and (source.version_id is None or recorded.get(SOURCE_VERSION) == source.version_id)
    )


def reason_to_skip(current: ObjectInfo | None, source: ObjectInfo, overwrite: Overwrite) -> str:
    """Why the copy is not needed, or "" when it is."""
    if current is None or overwrite == Overwrite.ALWAYS:
        return ""
    if overwrite == Overwrite.NEVER:
        return "the destination exists and overwrite is 'never'"
    if holds(current, source):
        return "the destination already holds this version of the source"
    return ""


def destination_metadata(source: ObjectInfo) -> Mapping[str, str]:
    """The source's user metadata, plus the record of where the copy came from and of S3's
    checksums it is verified against (the write completes only once they verified)."""
    metadata = {k: v for k, v in source.metadata.items() if k not in RESERVED_KEYS}
    metadata.update(
        {
            SOURCE_BUCKET: source.bucket,
            SOURCE_KEY: source.key,
            SOURCE_ETAG: source.etag or "",
            SOURCE_VERSION: source.version_id or "",
            REPLICATED_AT: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    )
    if checked := digest.claims(source):
        metadata[SOURCE_CHECKSUMS] = ",".join(f"{a}:{v}" for a, v in sorted(checked.items()))
    return metadata


def recorded_checksums(copy: ObjectInfo) -> dict[str, str]:
    """S3's checksums a destination object was verified against when it was copied."""
    pairs = (item.partition(":") for item in copy.metadata.get(SOURCE_CHECKSUMS, "").split(","))
    return {algorithm: value for algorithm, _, value in pairs if algorithm and value}
