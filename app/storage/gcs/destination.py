"""Google Cloud Storage as a replication destination: the JSON API on one transport.

Every call is one or a few JSON-API requests on app.storage.gcs.transport, and every answer
other than the expected one goes through app.storage.gcs.errors.translate. Uploads (one
request, or a resumable session) and compose are in app.storage.gcs.upload, reading an
object's bytes back in app.storage.gcs.download. An upload that fails is cancelled, so
nothing partial is ever published; the final bytes only leave once the source has verified.

Who retries (app.retry): the services retry the whole calls `head`, `iter_objects`, `list`,
`open` (with the reading of its bytes), `delete`, `write_part` and `composable`, so these
make one attempt each. This adapter retries, with the policy it is handed, only the steps of
protocols it owns: a simple upload's one request and a resumable upload's session start and
chunks (`write`), and each round of `compose` with the deletes of its intermediate objects.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from app import errors
from app.retry import RetryPolicy
from app.storage.base import (
    Block,
    Checksums,
    ContentHeaders,
    ObjectInfo,
    VerifiedStream,
    read_exactly,
)
from app.storage.gcs import download, upload
from app.storage.gcs.errors import translate
from app.storage.gcs.resources import (
    Placement,
    allows_parts,
    bucket_path,
    object_info,
    object_path,
    object_resource,
)
from app.storage.gcs.transport import NETWORK_ERRORS, Http, Response, Timeout

log = logging.getLogger(__name__)
SIMPLE_UPLOAD_MAX = 8 * 1024 * 1024  # larger objects go up in resumable chunks
COMPOSE_MAX_SOURCES = 32  # per compose request
PAGE_SIZE = 1000  # objects per listing page: the most GCS returns


class GCSDestination:
    def __init__(
        self,
        http: Http,
        retry: RetryPolicy,
        *,
        chunk_size: int,
        timeout: Timeout,
        target: str = "REAL GCS",
        page_size: int = PAGE_SIZE,
        placement: Placement = Placement(),
    ) -> None:
        """`placement`: the storage class and KMS key of every object written (compose's
        destination too); the temporary parts of a composite upload take the bucket's
        default class, which `composable` requires to have no minimum storage duration, so
        deleting them right after the compose costs nothing."""
        if chunk_size % upload.UPLOAD_GRANULARITY:
            raise ValueError(f"chunk_size must be a multiple of {upload.UPLOAD_GRANULARITY}")
        self._http = http
        self._api = f"{http.base_url}/storage/v1"
        self._retry = retry
        self._chunk_size = chunk_size
        self._timeout = timeout
        self._page_size = page_size
        self._placement = placement
        self._composable: dict[str, bool] = {}
        self._buckets_seen: set[str] = set()  # buckets this process has seen exist
        self.target = target

    def probe(self, bucket: str) -> None:
        """One GET of the bucket; StartupError when it is missing or cannot be read."""
        try:
            self._bucket(bucket)
        except errors.BucketNotFound as exc:
            raise errors.StartupError(
                f"GCS bucket '{bucket}' does not exist at {self.target} (GCS_BUCKET_NAME)"
            ) from exc
        except errors.AccessDenied as exc:
            raise errors.StartupError(
                f"GCS bucket '{bucket}' at {self.target} refused our identity: {exc.detail}"
            ) from exc
        except errors.ReplicatorError as exc:
            raise errors.StartupError(f"cannot reach GCS at {self.target}: {exc}") from exc

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """One GET of the object's metadata: the hot path of every duplicate notification.
        A 404 is a missing object once the bucket is known to exist: GCS gives a missing
        bucket and a missing object the same status and reason ("notFound"), so the first
        404 in a bucket asks the bucket itself (once per process; a bucket deleted later is
        reported by the write that follows, whose upload names only the bucket)."""
        what = f"gs://{bucket}/{key}"
        url = f"{self._api}{object_path(bucket, key)}"
        response = self._send("GET", url, what, params={"projection": "noAcl"})
        if response.status_code == 200:
            return object_info(bucket, response.json())
        if response.status_code != 404:
            raise translate(response, what)
        if bucket not in self._buckets_seen:
            self._check_bucket(bucket)  # BucketNotFound when it is the bucket that is missing
        return None

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object under `prefix` whose key sorts strictly after `start_after`, in key
        order, one listing page (`page_size` objects) at a time. A failed page raises out of
        the iterator (not retried here): resume with `start_after` set to the last key seen."""
        for page, _ in self._pages(bucket, prefix, start_after or ""):
            for info in page:
                if start_after is None or info.key > start_after:
                    yield info

    def open(self, obj: ObjectInfo) -> download.MediaBody:
        """One media GET of generation `obj.generation` (app.storage.gcs.download)."""
        return download.open_media(self._http, obj, self._timeout)

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None:
        """One DELETE; ObjectNotFound when there is nothing to delete."""
        what = f"gs://{bucket}/{key}"
        params = (
            {} if if_generation_match is None else {"ifGenerationMatch": str(if_generation_match)}
        )
        response = self._send(
            "DELETE", f"{self._api}{object_path(bucket, key)}", what, params=params
        )
        if response.status_code not in (200, 204):
            raise translate(response, what)

    def write(
        self,
        bucket: str,
        key: str,
        stream: VerifiedStream,
        size: int,
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
        custom_time: datetime.datetime | None = None,
    ) -> ObjectInfo:
        """Up to 8 MiB in one request, larger objects chunk by chunk (app.storage.gcs.upload);
        each request is retried here, as the stream cannot be read twice."""
        placement = self._placement
        if size <= min(SIMPLE_UPLOAD_MAX, self._chunk_size):
            data = bytes(read_exactly(stream, size))  # raises before returning bad bytes
            if len(data) != size:
                raise errors.IntegrityError(
                    f"the source ended {size - len(data)} bytes early; nothing published"
                )
            sums = stream.checksums()
            resource = object_resource(key, headers, metadata, sums, placement, custom_time)
            written = self._retry.call(
                upload.upload_simple,
                self._http,
                bucket,
                resource,
                data,
                if_generation_match,
                self._timeout,
            )
        else:
            written = upload.upload_resumable(
                self._http,
                self._retry,
                bucket,
                object_resource(key, headers, metadata, None, placement, custom_time),
                stream,
                size,
                chunk_size=self._chunk_size,
                generation=if_generation_match,
                timeout=self._timeout,
            )
        return object_info(bucket, written)

    # --- parallel composite uploads (app.replication.composite) ---------------------------------

    def composable(self, bucket: str) -> bool:
        """Whether parts may be uploaded and composed here, from one GET of the bucket's
        settings, remembered per bucket. As gcloud does, not in a bucket whose deleted parts
        would be charged or kept (resources.allows_parts), nor where the bucket's settings may
        not be read. Soft delete, where on, keeps deleted parts (billed) for its retention
        period; the README says so."""
        if bucket not in self._composable:
            try:
                self._composable[bucket] = allows_parts(self._bucket(bucket))
            except errors.AccessDenied as exc:
                log.warning(
                    "cannot read the settings of gs://%s (%s): large objects go up whole there",
                    bucket,
                    exc,
                )
                self._composable[bucket] = False
        return self._composable[bucket]

    def write_part(
        self, bucket: str, name: str, data: bytes | memoryview | Block, crc32c: str | None
    ) -> str | None:
        """One part, in one request; returns the CRC32C GCS stored. With `crc32c`, GCS refuses
        bytes that do not match it; without (a Block sent as it arrives), the caller compares."""
        # The bucket's default class (see __init__), and the KMS key: every byte is under it.
        parts = Placement(kms_key=self._placement.kms_key)
        sums = None if crc32c is None else Checksums(crc32c=crc32c)
        resource = object_resource(name, ContentHeaders(), {}, sums, parts)
        try:
            stored = upload.upload_simple(self._http, bucket, resource, data, 0, self._timeout)
        except errors.PreconditionFailed:
            # An earlier attempt stored it (parts have names of their own): what did it store?
            info = self.head(bucket, name)
            if info is None:
                raise errors.TransientError(
                    f"gs://{bucket}/{name} was stored, then was gone"
                ) from None
            return info.checksums.crc32c
        return object_info(bucket, stored).checksums.crc32c

    def compose(
        self,
        bucket: str,
        key: str,
        parts: Sequence[str],
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
        custom_time: datetime.datetime | None = None,
    ) -> ObjectInfo:
        """`parts`, in order, as `key`, in the storage class and under the KMS key of every
        object written. Beyond 32 parts, the first ones are composed into
        intermediate objects first (named after the part they end with, plus "+"), which are
        deleted afterwards. Each round and each of those deletes is retried here."""
        plain = object_resource(
            "", ContentHeaders(), {}, None, Placement(kms_key=self._placement.kms_key)
        )
        sources = list(parts)
        merged: list[str] = []
        compose = upload.compose
        try:
            while len(sources) > COMPOSE_MAX_SOURCES:
                batch, sources = sources[:COMPOSE_MAX_SOURCES], sources[COMPOSE_MAX_SOURCES:]
                merged.append(f"{batch[-1]}+")
                self._retry.call(
                    compose, self._http, bucket, merged[-1], batch, plain, None, self._timeout
                )
                sources.insert(0, merged[-1])
            resource = object_resource(key, headers, metadata, None, self._placement, custom_time)
            written = self._retry.call(
                compose,
                self._http,
                bucket,
                key,
                sources,
                resource,
                if_generation_match,
                self._timeout,
            )
        finally:
            for name in merged:
                with contextlib.suppress(errors.ReplicatorError):
                    self._retry.call(self.delete, bucket, name)
        return object_info(bucket, written)

    # --- requests -----------------------------------------------------------------------------

    def _send(self, method: str, url: str, what: str, **request: Any) -> Response:
        """One request; a network failure raises as the app.errors exception for it."""
        try:
            return self._http.request(method, url, timeout=self._timeout, **request)
        except NETWORK_ERRORS as exc:
            raise translate(exc, what) from exc

    def _bucket(self, bucket: str) -> dict[str, Any]:
        """The bucket's resource (one GET); BucketNotFound when it does not exist."""
        what = f"gs://{bucket}"
        url = f"{self._api}{bucket_path(bucket)}"
        response = self._send("GET", url, what, params={"projection": "noAcl"})
        if response.status_code != 200:
            missing = errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist")
            raise translate(response, what, missing=missing)
        self._buckets_seen.add(bucket)
        resource: dict[str, Any] = response.json()
        return resource

    def _check_bucket(self, bucket: str) -> None:
        """BucketNotFound when `bucket` does not exist. Where its settings may not be read
        (no storage.buckets.get), a missing bucket is left for the next upload to report."""
        try:
            self._bucket(bucket)
        except errors.AccessDenied:
            self._buckets_seen.add(bucket)

    def _pages(
        self, bucket: str, prefix: str, start_offset: str
    ) -> Iterator[tuple[Sequence[ObjectInfo], bool]]:
        """The listing of the objects under `prefix` from `start_offset` (inclusive), one page
        at a time, with whether more pages follow. The bucket is named in every request, so a
        404 means the bucket is missing."""
        what = f"the listing of gs://{bucket}/{prefix}"
        url = f"{self._api}{bucket_path(bucket)}/o"
        query = {"projection": "noAcl", "maxResults": str(self._page_size)}
        if prefix:
            query["prefix"] = prefix
        if start_offset:
            query["startOffset"] = start_offset
        token = None
        while True:
            params = query if token is None else {**query, "pageToken": token}
            response = self._send("GET", url, what, params=params)
            if response.status_code != 200:
                missing = errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist")
                raise translate(response, what, missing=missing)
            page = response.json()
            token = page.get("nextPageToken")
            yield [object_info(bucket, item) for item in page.get("items", ())], bool(token)
            if not token:
                return
