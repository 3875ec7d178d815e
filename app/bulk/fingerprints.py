"""What two copies of an object can be compared by, short of their bytes, and their bytes.

Checksums both sides can expose for the same bytes:
- MD5: a single-part S3 object's ETag is the hex MD5 of its bytes, unless it is encrypted
  with SSE-KMS or DSSE-KMS (a listing does not say: a difference is looked at again with a
  HEAD, which does); GCS reports `md5Hash` for every object it did not compose. A multipart ETag
  (`<hex>-N`) is an MD5 of part MD5s, comparable with nothing GCS has.
- CRC32C: S3's additional checksum when it covers the full object (type FULL_OBJECT, or a
  single-part object's, without a `-N` suffix); GCS reports `crc32c` for every object. A
  COMPOSITE one (`-N`) is a checksum of part checksums, comparable with nothing GCS has.
- S3's own checksums (CRC64NVME, CRC32, ...; from a HEAD, not a listing), which have no
  counterpart at GCS, against those the copy recorded it was verified against when it was
  written (`Replicator-Source-Checksums`): the same value says S3 still describes the bytes
  the copy was verified to hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from app import errors
from app.replication import identity
from app.replication.digest import is_multipart_etag
from app.replication.stream import READ_PIECE
from app.storage.base import Body, ObjectInfo, etag_is_md5


@dataclass(frozen=True)
class Agreement:
    """Which checksums were compared, and the first that differs ("" when none does)."""

    compared: tuple[str, ...] = ()
    difference: str = ""


def compare_checksums(source: ObjectInfo, copy: ObjectInfo) -> Agreement:
    """Compare every checksum that `source` (an S3 listing or HEAD) and `copy` (a destination
    object) both expose for the same bytes."""
    pairs: list[tuple[str, str | None, str | None, Callable[[str], str]]] = [
        (
            "MD5",
            md5_of_etag(source.etag) if etag_is_md5(source) else None,
            copy.checksums.md5,
            _hex,
        ),
        ("CRC32C", full_object_crc32c(source), copy.checksums.crc32c, str),
    ]
    recorded = identity.recorded_checksums(copy)
    for algorithm, value in sorted(source.s3_checksums.items()):
        if algorithm in recorded:
            pairs.append((f"S3 {algorithm} (recorded at copy)", value, recorded[algorithm], str))
    compared: list[str] = []
    for name, ours, theirs, shown in pairs:
        if ours is None or theirs is None:
            continue
        compared.append(name)
        if ours != theirs:
            difference = f"{name} differs: source {shown(ours)}, destination {shown(theirs)}"
            return Agreement(tuple(compared), difference)
    return Agreement(tuple(compared))


def md5_of_etag(etag: str | None) -> str | None:
    """The base64 MD5 a single-part ETag spells in hex; None for any other ETag."""
    if not etag or is_multipart_etag(etag) or len(etag) != 32:
        return None
    try:
        return base64.b64encode(bytes.fromhex(etag)).decode()
    except ValueError:
        return None


def full_object_crc32c(source: ObjectInfo) -> str | None:
    """S3's CRC32C of the whole object (base64), when it has one: not a composite."""
    value = source.s3_checksums.get("CRC32C")
    if not value or "-" in value or source.s3_checksum_type == "COMPOSITE":
        return None
    return value


def _hex(md5: str) -> str:
    try:
        return base64.b64decode(md5, validate=True).hex()
    except binascii.Error:
        return md5


def read_digest(open_body: Callable[[], Body], size: int, what: str) -> str:
    """The SHA-256 (hex) of every byte of one object, opened by `open_body` and read in
    pieces, so memory does not grow with the object. One attempt: a read that breaks or ends
    other than at `size` raises TransientError, so the caller's retry reads it again whole."""
    hasher = hashlib.sha256()
    read = 0
    body = open_body()
    try:
        while piece := body.read(READ_PIECE):
            hasher.update(piece)
            read += len(piece)
    finally:
        body.close()
    if read != size:
        raise errors.TransientError(
            f"{what} gave {read} bytes, {size} listed", cause="stream_broken"
        )
    return hasher.hexdigest()
