"""Google Cloud Storage as a replication destination, through google-cloud-storage.

Objects up to 8 MiB go up in one multipart request that carries their MD5 and CRC32C, so
GCS rejects damaged bytes. Larger objects use a resumable upload driven here chunk by chunk:
each chunk is retried on its own (after asking GCS how much it kept), and the final chunk is
only sent once the source has verified, with an `X-Goog-Hash` header GCS checks. An upload
that fails is cancelled, so nothing partial is ever published. Every write carries an
`ifGenerationMatch` precondition, which makes retrying it safe.

The library's own retries are off (`retry=None`); app.services.retry owns the policy.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
import requests.adapters
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app import errors
from app.services.retry import RetryPolicy
from app.storage.base import (
    Checksums,
    ContentHeaders,
    Listing,
    ObjectInfo,
    VerifiedStream,
    listing_range,
    read_exactly,
)

UPLOAD_GRANULARITY = 256 * 1024  # resumable chunks must be multiples of this
SIMPLE_UPLOAD_MAX = 8 * 1024 * 1024  # larger objects go up in resumable chunks
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    google.auth.exceptions.TransportError,
)


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
    if isinstance(exc, gexc.GoogleAPICallError) and (code in (408, 429) or code >= 500):
        return errors.TransientError(
            f"GCS answered {code} for {what}: {exc.message}",
            cause=_status_cause(code),
            retry_after=_retry_after(getattr(exc, "response", None)),
        )
    if isinstance(exc, gexc.BadRequest) and "checksum" in str(exc.message).lower():
        return errors.IntegrityError(f"GCS rejected the bytes of {what}: {exc.message}")
    if isinstance(exc, _NETWORK_ERRORS):
        return _network_error(exc, what)
    return errors.ReplicatorError(f"unexpected GCS failure for {what}: {exc!r}")


def _retry_after(response: Any) -> float | None:
    """Seconds from a response's Retry-After header (the delta-seconds form), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    return float(value) if value and value.isdigit() else None


def _status_cause(status: int) -> str:
    return {408: "timeout", 429: "throttled", 503: "throttled"}.get(status, "server_error")


def _network_error(exc: Exception, what: str) -> errors.TransientError:
    cause = "timeout" if isinstance(exc, requests.Timeout) else "connection"
    return errors.TransientError(f"GCS unreachable for {what}: {exc}", cause=cause)


def _translate_response(response: requests.Response, what: str) -> errors.ReplicatorError:
    status = response.status_code
    text = response.text[:300]
    if status == 412:
        return errors.PreconditionFailed(f"{what} was changed by another writer")
    if status in (401, 403):
        return errors.AccessDenied(f"GCS denied access to {what}: {text}")
    if status in (404, 410):  # the stream cannot be rewound, so retrying cannot help
        return errors.UploadSessionLost(f"the upload session for {what} is gone ({status})")
    if status in (408, 429) or status >= 500:
        return errors.TransientError(
            f"GCS answered {status} for {what}: {text}",
            cause=_status_cause(status),
            retry_after=_retry_after(response),
        )
    if status == 400 and ("checksum" in text.lower() or "hash" in text.lower()):
        return errors.IntegrityError(f"GCS rejected the bytes of {what}: {text}")
    return errors.ReplicatorError(f"GCS answered {status} for {what}: {text}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (gexc.GoogleAPIError, *_NETWORK_ERRORS) as exc:
        raise translate(exc, what) from exc


@contextlib.contextmanager
def _bucket_must_exist(bucket: str) -> Iterator[None]:
    """For requests that name the bucket only (listing, upload): a 404 means no bucket."""
    try:
        yield
    except errors.ObjectNotFound as exc:
        raise errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist") from exc


class GCSDestination:
    def __init__(
        self,
        client: storage.Client,
        retry: RetryPolicy,
        *,
        chunk_size: int,
        timeout: tuple[float, float],
        target: str = "REAL GCS",
    ) -> None:
        if chunk_size % UPLOAD_GRANULARITY:
            raise ValueError(f"chunk_size must be a multiple of {UPLOAD_GRANULARITY}")
        self._client = client
        self._http = client._http
        self._api = f"{client._connection.API_BASE_URL}/storage/v1"
        self._retry = retry
        self._chunk_size = chunk_size
        self._timeout = timeout
        self.target = target

    def probe(self, bucket: str) -> None:
        try:
            self._client.get_bucket(bucket, timeout=self._timeout, retry=None)
        except gexc.NotFound as exc:
            raise errors.StartupError(
                f"GCS bucket '{bucket}' does not exist at {self.target} (GCS_BUCKET_NAME)"
            ) from exc
        except (gexc.GoogleAPIError, *_NETWORK_ERRORS) as exc:
            raise errors.StartupError(f"cannot reach GCS at {self.target}: {exc}") from exc

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """One JSON API GET on the client's authorised session: the hot path of every
        duplicate notification, so it skips the library's layers (a third of its cost)."""
        what = f"gs://{bucket}/{key}"
        url = f"{self._api}/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"
        try:
            response = self._http.get(url, params={"projection": "noAcl"}, timeout=self._timeout)
        except _NETWORK_ERRORS as exc:
            raise _network_error(exc, what) from exc
        if response.status_code == 404:
            if "bucket" in response.text.lower():  # "The specified bucket does not exist."
                raise errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist")
            return None
        if response.status_code != 200:
            raise _translate_response(response, what)
        return _object_info(bucket, key, response.json())

    def list(self, bucket: str, keys: Sequence[str], max_pages: int) -> Listing:
        prefix, first, last = listing_range(keys)
        seen: dict[str, ObjectInfo] = {}
        through = first
        with _bucket_must_exist(bucket), _translated(f"the listing of gs://{bucket}/{prefix}"):
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
        blob = self._client.bucket(bucket).blob(key)
        blob.content_type = headers.content_type or "application/octet-stream"
        blob.content_encoding = headers.content_encoding
        blob.cache_control = headers.cache_control
        blob.content_disposition = headers.content_disposition
        blob.content_language = headers.content_language
        blob.metadata = dict(metadata)
        what = f"gs://{bucket}/{key}"
        if size <= min(SIMPLE_UPLOAD_MAX, self._chunk_size):
            return self._write_simple(blob, stream, size, if_generation_match, what)
        return self._write_resumable(blob, stream, size, if_generation_match, what)

    def _write_simple(
        self, blob: storage.Blob, stream: VerifiedStream, size: int, generation: int, what: str
    ) -> ObjectInfo:
        data = bytes(read_exactly(stream, size))
        sums = stream.checksums()
        blob.md5_hash, blob.crc32c = sums.md5, sums.crc32c  # GCS validates both on upload

        def upload() -> None:
            with _bucket_must_exist(blob.bucket.name), _translated(what):
                blob.upload_from_string(
                    data,
                    content_type=blob.content_type,
                    if_generation_match=generation,
                    checksum=None,
                    timeout=self._timeout,
                    retry=None,
                )

        self._retry.call(upload)
        return _object_info(blob.bucket.name, blob.name, blob._properties)

    def _write_resumable(
        self, blob: storage.Blob, stream: VerifiedStream, size: int, generation: int, what: str
    ) -> ObjectInfo:
        def start() -> str:
            with _bucket_must_exist(blob.bucket.name), _translated(what):
                url: str = blob.create_resumable_upload_session(
                    content_type=blob.content_type,
                    size=size,
                    if_generation_match=generation,
                    checksum=None,
                    timeout=self._timeout,
                    retry=None,
                )
            return url

        session = ResumableSession(self._http, self._retry.call(start), size, what)
        try:
            resource: dict[str, Any] | None = None
            while session.offset < size:
                chunk_start = session.offset
                chunk = read_exactly(stream, min(self._chunk_size, size - chunk_start))
                sums = stream.checksums() if chunk_start + len(chunk) == size else None
                resource = self._retry.call(session.send, chunk, chunk_start, sums, self._timeout)
            if resource is None:
                raise errors.IntegrityError(f"GCS did not finish the upload of {what}")
        except BaseException:
            session.cancel(self._timeout)
            raise
        return _object_info(blob.bucket.name, blob.name, resource)


class ResumableSession:
    """One resumable upload session: send chunks in order, resume where GCS left off."""

    def __init__(self, http: Any, url: str, size: int, what: str) -> None:
        self._http = http
        self._url = url
        self._size = size
        self._what = what
        self.offset = 0  # bytes GCS has persisted
        self._offset_known = True

    def send(
        self,
        chunk: bytes | memoryview,
        chunk_start: int,
        sums: Checksums | None,
        timeout: tuple[float, float],
    ) -> dict[str, Any] | None:
        """Send what GCS has not kept yet of `chunk`, the bytes from `chunk_start`.
        Returns the object resource once the upload is complete, else None."""
        if not self._offset_known:
            done = self._query(timeout)
            if done is not None:
                return done
        skip = self.offset - chunk_start
        if not 0 <= skip <= len(chunk):
            raise errors.ReplicatorError(
                f"GCS resumed the upload of {self._what} at byte {self.offset}, "
                f"outside the chunk being sent ({chunk_start}+{len(chunk)})"
            )
        body = memoryview(chunk)[skip:]
        if not body:
            return None  # GCS already holds this whole chunk: only its answer was lost
        end = self.offset + len(body) - 1
        headers = {"Content-Range": f"bytes {self.offset}-{end}/{self._size}"}
        if sums is not None:
            hashes = {"crc32c": sums.crc32c, "md5": sums.md5}
            headers["X-Goog-Hash"] = ",".join(f"{k}={v}" for k, v in hashes.items() if v)
        try:
            response = self._http.put(self._url, data=body, headers=headers, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            self._offset_known = False
            raise _network_error(exc, self._what) from exc
        if response.status_code in (200, 201):
            self.offset = self._size
            resource: dict[str, Any] = response.json()
            return resource
        if response.status_code == 308:
            self.offset = _persisted(response)
            if self.offset < end + 1:
                self._offset_known = True
                raise errors.TransientError(
                    f"GCS kept only {self.offset} bytes of {self._what}", cause="stream_broken"
                )
            return None
        self._offset_known = False
        raise _translate_response(response, self._what)

    def _query(self, timeout: tuple[float, float]) -> dict[str, Any] | None:
        headers = {"Content-Range": f"bytes */{self._size}"}
        try:
            response = self._http.put(self._url, data=b"", headers=headers, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            raise _network_error(exc, self._what) from exc
        if response.status_code in (200, 201):
            self.offset = self._size
            resource: dict[str, Any] = response.json()
            return resource
        if response.status_code != 308:
            raise _translate_response(response, self._what)
        self.offset = _persisted(response)
        self._offset_known = True
        return None

    def cancel(self, timeout: tuple[float, float]) -> None:
        """Abandon the session so GCS discards what it holds (it answers 499)."""
        with contextlib.suppress(Exception):
            self._http.delete(self._url, timeout=timeout)


def _persisted(response: requests.Response) -> int:
    """The next offset GCS expects, from a 308's `Range: bytes=0-N` (absent: nothing kept)."""
    match = re.fullmatch(r"bytes=0-(\d+)", response.headers.get("Range", ""))
    return int(match.group(1)) + 1 if match else 0


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
