"""Google Cloud Storage as a replication destination, through google-cloud-storage.

The library provides the client (credentials, endpoint) and the simple calls: probe, list,
delete. The hot paths speak the JSON API on urllib3 with the client's credentials
(app.storage.http): the metadata read of every duplicate notification here, uploads in
gcs_upload. An upload that fails is cancelled, so
nothing partial is ever published; the final bytes only leave once the source has verified.

The library's own retries are off (`retry=None`); app.retry owns the policy.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import google.api_core.exceptions as gexc
import requests
import requests.adapters
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app import errors, retry
from app.retry import RetryPolicy
from app.storage.base import (
    Checksums,
    ContentHeaders,
    Listing,
    ObjectInfo,
    VerifiedStream,
    bucket_request,
    listing_range,
    read_exactly,
)
from app.storage.gcs_upload import (
    NETWORK_ERRORS,
    ResumableSession,
    compose,
    network_error,
    object_resource,
    retry_after,
    start_session,
    translate_response,
    upload_simple,
)
from app.storage.http import Http

log = logging.getLogger(__name__)
UPLOAD_GRANULARITY = 256 * 1024  # resumable chunks must be multiples of this
SIMPLE_UPLOAD_MAX = 8 * 1024 * 1024  # larger objects go up in resumable chunks
COMPOSE_MAX_SOURCES = 32  # per compose request
_NO_MINIMUM_DURATION = {"STANDARD", "MULTI_REGIONAL", "REGIONAL", "DURABLE_REDUCED_AVAILABILITY"}


def build_client(
    *, emulator_host: str | None, project: str | None, max_pool_connections: int
) -> storage.Client:
    # The library (3.x) otherwise looks up each bucket in the background for its telemetry,
    # with its own retries: a request outside this service's policy.
    os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
    if emulator_host:
        client = storage.Client(
            project=project or "local-emulator",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator_host},
        )
    else:
        client = storage.Client(project=project)  # Application Default Credentials
    session = client._http  # the library's transport session
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=max_pool_connections, pool_maxsize=max_pool_connections
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    _read_environment_once(session)
    return client


def _read_environment_once(session: requests.Session) -> None:
    """requests reads proxy variables, the CA bundle and ~/.netrc from the environment on
    every request (a sixth of the CPU of a duplicate notification). Without proxy variables,
    read the CA bundle once here and stop looking; with them, leave requests to honour them."""
    proxy_names = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    if any(os.environ.get(name) or os.environ.get(name.upper()) for name in proxy_names):
        return
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


def translate(exc: Exception, what: str) -> errors.ReplicatorError:
    if isinstance(exc, gexc.NotFound):
        return errors.ObjectNotFound(f"{what} does not exist")
    if isinstance(exc, gexc.PreconditionFailed):
        return errors.PreconditionFailed(f"{what} was changed by another writer")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return errors.AccessDenied(f"GCS denied access to {what}: {exc.message}")
    code = int(getattr(exc, "code", None) or 0)
    cause = retry.transient_cause(code)
    if isinstance(exc, gexc.GoogleAPICallError) and cause:
        return errors.TransientError(
            f"GCS answered {code} for {what}: {exc.message}",
            cause=cause,
            retry_after=retry_after(getattr(exc, "response", None)),
        )
    if isinstance(exc, gexc.BadRequest) and "checksum" in str(exc.message).lower():
        return errors.IntegrityError(f"GCS rejected the bytes of {what}: {exc.message}")
    if isinstance(exc, NETWORK_ERRORS):
        return network_error(exc, what)
    return errors.ReplicatorError(f"unexpected GCS failure for {what}: {exc!r}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (gexc.GoogleAPIError, *NETWORK_ERRORS) as exc:
        raise translate(exc, what) from exc


class GCSDestination:
    def __init__(
        self,
        client: storage.Client,
        retry: RetryPolicy,
        *,
        chunk_size: int,
        timeout: tuple[float, float],
        target: str = "REAL GCS",
        max_pool_connections: int = 16,
    ) -> None:
        if chunk_size % UPLOAD_GRANULARITY:
            raise ValueError(f"chunk_size must be a multiple of {UPLOAD_GRANULARITY}")
        self._client = client
        self._http = Http(
            client._credentials,
            client._connection.API_BASE_URL,
            max_pool_connections=max_pool_connections,
        )
        self._api = f"{client._connection.API_BASE_URL}/storage/v1"
        self._upload_api = f"{client._connection.API_BASE_URL}/upload/storage/v1"
        self._retry = retry
        self._chunk_size = chunk_size
        self._timeout = timeout
        self._composable: dict[str, bool] = {}
        self.target = target

    def probe(self, bucket: str) -> None:
        try:
            self._client.get_bucket(bucket, timeout=self._timeout, retry=None)
        except gexc.NotFound as exc:
            raise errors.StartupError(
                f"GCS bucket '{bucket}' does not exist at {self.target} (GCS_BUCKET_NAME)"
            ) from exc
        except (gexc.GoogleAPIError, *NETWORK_ERRORS) as exc:
            raise errors.StartupError(f"cannot reach GCS at {self.target}: {exc}") from exc

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """One JSON API GET on the client's authorised session: the hot path of every
        duplicate notification, so it skips the library's layers (a third of its cost)."""
        what = f"gs://{bucket}/{key}"
        url = f"{self._api}/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        try:
            response = self._http.request(
                "GET", url, params={"projection": "noAcl"}, timeout=self._timeout
            )
        except NETWORK_ERRORS as exc:
            raise network_error(exc, what) from exc
        if response.status_code == 404:
            # GCS: "The specified bucket does not exist." / "No such object: <bucket>/<key>".
            if "specified bucket does not exist" in response.text.lower():
                raise errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist")
            return None
        if response.status_code != 200:
            raise translate_response(response, what)
        return _object_info(bucket, key, response.json())

    def list(self, bucket: str, keys: Sequence[str], max_pages: int) -> Listing:
        prefix, first, last = listing_range(keys)
        seen: dict[str, ObjectInfo] = {}
        through = first
        with bucket_request("GCS", bucket), _translated(f"the listing of gs://{bucket}/{prefix}"):
            blobs = self._client.list_blobs(
                bucket,
                prefix=prefix,
                start_offset=first,
                page_size=1000,
                timeout=self._timeout,
                retry=None,
            )
            for number, page in enumerate(blobs.pages):
                for blob in page:
                    seen[blob.name] = _object_info(bucket, blob.name, blob._properties)
                    through = blob.name
                if number + 1 >= max_pages and blobs.next_page_token and through < last:
                    return Listing(seen, through)
                if through >= last:
                    break
        return Listing(seen, last)

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        with bucket_request("GCS", bucket), _translated(f"the listing of gs://{bucket}/{prefix}"):
            blobs = self._client.list_blobs(
                bucket,
                prefix=prefix,
                start_offset=start_after,
                page_size=1000,
                timeout=self._timeout,
                retry=None,
            )
            for page in blobs.pages:
                for blob in page:
                    if blob.name != start_after:
                        yield _object_info(bucket, blob.name, blob._properties)

    def delete(self, bucket: str, key: str, if_generation_match: int | None = None) -> None:
        with _translated(f"gs://{bucket}/{key}"):
            self._client.bucket(bucket).delete_blob(
                key, if_generation_match=if_generation_match, timeout=self._timeout, retry=None
            )

    def write(
        self,
        bucket: str,
        key: str,
        stream: VerifiedStream,
        size: int,
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        """Up to 8 MiB in one request, larger objects chunk by chunk (see gcs_upload)."""
        if size <= min(SIMPLE_UPLOAD_MAX, self._chunk_size):
            data = bytes(read_exactly(stream, size))  # raises before returning bad bytes
            if len(data) != size:
                raise errors.IntegrityError(
                    f"the source ended {size - len(data)} bytes early; nothing published"
                )
            resource = object_resource(key, headers, metadata, stream.checksums())
            written = self._retry.call(
                upload_simple,
                self._http,
                self._upload_api,
                bucket,
                resource,
                data,
                if_generation_match,
                self._timeout,
            )
            return _object_info(bucket, key, written)
        resource = object_resource(key, headers, metadata, None)
        url = self._retry.call(
            start_session,
            self._http,
            self._upload_api,
            bucket,
            resource,
            size,
            if_generation_match,
            self._timeout,
        )
        session = ResumableSession(self._http, url, size, f"gs://{bucket}/{key}")
        try:
            finished: dict[str, Any] | None = None
            while session.offset < size:
                chunk_start = session.offset
                chunk = stream.read(self._chunk_size)  # a block: no copy
                if not chunk:
                    raise errors.IntegrityError(
                        f"the source ended {size - chunk_start} bytes early; nothing published"
                    )
                if len(chunk) % UPLOAD_GRANULARITY and chunk_start + len(chunk) < size:
                    rest = read_exactly(
                        stream, UPLOAD_GRANULARITY - len(chunk) % UPLOAD_GRANULARITY
                    )
                    chunk = bytes(chunk) + bytes(rest)  # only the last chunk may be odd-sized
                sums = stream.checksums() if chunk_start + len(chunk) == size else None
                finished = self._retry.call(session.send, chunk, chunk_start, sums, self._timeout)
            if finished is None:
                raise errors.IntegrityError(f"GCS did not finish the upload of gs://{bucket}/{key}")
        except BaseException:
            session.cancel(self._timeout)
            raise
        return _object_info(bucket, key, finished)

    # --- parallel composite uploads (app.services.composite) ---------------------------------

    def composable(self, bucket: str) -> bool:
        """Whether parts may be uploaded and composed here. As gcloud does, not in a bucket
        whose deleted parts would be charged or kept: a storage class with a minimum storage
        duration (NEARLINE, COLDLINE, ARCHIVE) or a retention policy or default event-based
        hold (parts could not be deleted). Soft delete, where on, keeps deleted parts (billed)
        for its retention period; the README says so."""
        if bucket not in self._composable:
            try:
                found = self._client.get_bucket(bucket, timeout=self._timeout, retry=None)
                self._composable[bucket] = (
                    (found.storage_class or "STANDARD") in _NO_MINIMUM_DURATION
                    and not found.retention_period
                    and not found.default_event_based_hold
                )
            except (gexc.Forbidden, gexc.Unauthorized) as exc:
                log.warning(
                    "cannot read the settings of gs://%s (%s): large objects go up whole there",
                    bucket,
                    exc.message,
                )
                self._composable[bucket] = False
            except (gexc.GoogleAPIError, *NETWORK_ERRORS) as exc:
                raise translate(exc, f"gs://{bucket}") from exc
        return self._composable[bucket]

    def write_part(self, bucket: str, name: str, data: bytes | memoryview, crc32c: str) -> None:
        """One part, in one request; GCS refuses it unless its bytes match `crc32c`."""
        resource = object_resource(name, ContentHeaders(), {}, Checksums(crc32c=crc32c))
        try:
            upload_simple(self._http, self._upload_api, bucket, resource, data, 0, self._timeout)
        except errors.PreconditionFailed:
            pass  # an earlier attempt stored it (parts have names of their own), and GCS checked it

    def compose(
        self,
        bucket: str,
        key: str,
        parts: Sequence[str],
        headers: ContentHeaders,
        metadata: Mapping[str, str],
        if_generation_match: int,
    ) -> ObjectInfo:
        """`parts`, in order, as `key`. Beyond 32 parts, the first ones are composed into
        intermediate objects first (named after the part they end with, plus "+"), which are
        deleted afterwards."""
        plain = object_resource("", ContentHeaders(), {}, None)
        sources = list(parts)
        merged: list[str] = []
        try:
            while len(sources) > COMPOSE_MAX_SOURCES:
                batch, sources = sources[:COMPOSE_MAX_SOURCES], sources[COMPOSE_MAX_SOURCES:]
                merged.append(f"{batch[-1]}+")
                self._retry.call(
                    compose,
                    self._http,
                    self._api,
                    bucket,
                    merged[-1],
                    batch,
                    plain,
                    None,
                    self._timeout,
                )
                sources.insert(0, merged[-1])
            written = self._retry.call(
                compose,
                self._http,
                self._api,
                bucket,
                key,
                sources,
                object_resource(key, headers, metadata, None),
                if_generation_match,
                self._timeout,
            )
        finally:
            for name in merged:
                with contextlib.suppress(errors.ReplicatorError):
                    self.delete(bucket, name)
        return _object_info(bucket, key, written)


def _object_info(bucket: str, key: str, resource: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
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
    )
