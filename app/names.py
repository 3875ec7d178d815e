"""Naming rules for buckets and object keys, as S3 and GCS enforce them, and the name the
service gives itself.

Checked at the API edge so bad input is refused with a 422 naming the problem before
anything is read or written.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
import platform
import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_KEY_BYTES = 1024

PRODUCT = "cross-cloud-replicator"
try:
    VERSION = importlib.metadata.version(PRODUCT)
except importlib.metadata.PackageNotFoundError:  # run from a checkout that was not installed
    VERSION = "0+unknown"
# Every call to a cloud says who made it: operators read it in GCS's audit logs
# (callerSuppliedUserAgent) and CloudTrail's (userAgent). On S3 it is botocore's own, with
# this appended.
USER_AGENT = f"{PRODUCT}/{VERSION} python/{platform.python_version()}"

# The service's own temporary objects (the parts of parallel composite uploads) live under
# this prefix of the destination bucket: no copied object may be written there, and `sync` and
# `check` neither compare nor delete what is there.
TEMPORARY_PREFIX = "replicator-tmp/"

# The custom metadata in which a destination object records its source. S3 stores user metadata
# keys in lower case, so these capitalised keys can never collide with metadata copied from S3.
SOURCE_BUCKET = "Replicator-Source-Bucket"
SOURCE_KEY = "Replicator-Source-Key"
SOURCE_ETAG = "Replicator-Source-Etag"
SOURCE_VERSION = "Replicator-Source-Version-Id"
REPLICATED_AT = "Replicator-Replicated-At"
# S3's checksums the copy was verified against ("CRC64NVME:<base64>,CRC32:<base64>"), so that
# `check --checksum` can compare them with S3's later: GCS has no CRC64NVME of its own.
SOURCE_CHECKSUMS = "Replicator-Source-Checksums"
RESERVED_KEYS = (
    SOURCE_BUCKET,
    SOURCE_KEY,
    SOURCE_ETAG,
    SOURCE_VERSION,
    REPLICATED_AT,
    SOURCE_CHECKSUMS,
)

_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_s3_bucket(name: str) -> str:
    if not _S3_BUCKET.fullmatch(name):
        raise ValueError(
            "an S3 bucket name is 3-63 lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit"
        )
    if ".." in name or _is_ip(name) or name.startswith("xn--") or name.endswith("-s3alias"):
        raise ValueError("not a valid S3 bucket name (no '..', IP addresses or reserved affixes)")
    return name


def check_gcs_bucket(name: str) -> str:
    if not _GCS_BUCKET.fullmatch(name):
        raise ValueError(
            "a GCS bucket name is 3-63 lowercase letters, digits, dashes, underscores and dots "
            "(up to 222 with dots), starting and ending with a letter or digit"
        )
    if len(name) > 63 and "." not in name or any(len(p) > 63 for p in name.split(".")):
        raise ValueError("GCS bucket names over 63 characters need dots, at most 63 between them")
    if ".." in name or _is_ip(name) or name.startswith("goog") or "google" in name:
        raise ValueError("not a valid GCS bucket name (no '..', IP addresses, 'goog' or 'google')")
    return name


def check_key(key: str) -> str:
    """Any key S3 accepts: 1 to 1024 bytes of UTF-8, and (our rule) no NUL character."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("an object key must be valid UTF-8") from None
    if not 1 <= size <= MAX_KEY_BYTES:
        raise ValueError(f"an object key is 1 to {MAX_KEY_BYTES} bytes of UTF-8 (got {size})")
    if "\0" in key:
        raise ValueError("an object key cannot contain a NUL character")
    return key


def check_gcs_key(key: str) -> str:
    check_key(key)
    if "\r" in key or "\n" in key:
        raise ValueError("a GCS object name cannot contain carriage returns or line feeds")
    if key in (".", "..") or key.startswith(".well-known/acme-challenge/"):
        raise ValueError("GCS does not allow this object name")
    if key.startswith(TEMPORARY_PREFIX):
        raise ValueError(
            f"names under {TEMPORARY_PREFIX} are the replicator's own temporary objects"
        )
    return key


# The JSON Schema shows the shape of each rule; the checks above are the whole rule (a key's
# limit is 1024 bytes of UTF-8, which a schema's maxLength in characters cannot say).
S3Bucket = Annotated[
    str,
    AfterValidator(check_s3_bucket),
    Field(examples=["source-bucket"], pattern=f"^{_S3_BUCKET.pattern}$"),
]
GCSBucket = Annotated[
    str,
    AfterValidator(check_gcs_bucket),
    Field(examples=["destination-bucket"], pattern=f"^{_GCS_BUCKET.pattern}$"),
]
ObjectKey = Annotated[
    str,
    AfterValidator(check_key),
    Field(examples=["hello.txt"], min_length=1, max_length=MAX_KEY_BYTES),
]
GCSKey = Annotated[
    str,
    AfterValidator(check_gcs_key),
    Field(examples=["hello.txt"], min_length=1, max_length=MAX_KEY_BYTES),
]
