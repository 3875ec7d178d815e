"""GCS uploads over the JSON API, on the adapter's urllib3 transport (app.storage.http).

A small object goes up in one multipart request whose metadata carries its MD5 and CRC32C, so
GCS refuses bytes that do not match. A larger one goes up through a resumable session, one
chunk at a time: each chunk is retried on its own after asking GCS how much it kept, and the
final chunk carries an `X-Goog-Hash` header that GCS checks before it publishes the object.
Every upload is conditional (`ifGenerationMatch`), which makes retrying it safe.

Doing this here rather than through google-cloud-storage's Blob keeps control of chunking and
of the final chunk, and halves the client's CPU per small object.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests
import urllib3.exceptions

from app import errors, retry
from app.storage import http
from app.storage.base import Checksums, ContentHeaders
from app.storage.http import Http, Response, Timeout

# The library's calls (listing, deleting) go through requests; the hot paths through urllib3.
NETWORK_ERRORS = (*http.NETWORK_ERRORS, requests.ConnectionError, requests.Timeout)


def object_resource(
    key: str, headers: ContentHeaders, metadata: Mapping[str, str], sums: Checksums | None
) -> dict[str, Any]:
    """The JSON API object resource to create: name, content headers, custom metadata and,
    when known up front, the checksums GCS must find."""
    resource: dict[str, Any] = {
        "name": key,
        "contentType": headers.content_type or "application/octet-stream",
        "contentEncoding": headers.content_encoding,
        "cacheControl": headers.cache_control,
        "contentDisposition": headers.content_disposition,
        "contentLanguage": headers.content_language,
        "metadata": dict(metadata),
    }
    if sums is not None:
        resource.update(md5Hash=sums.md5, crc32c=sums.crc32c)
    return {name: value for name, value in resource.items() if value is not None}


def upload_simple(
    http: Http,
    upload_api: str,
    bucket: str,
    resource: Mapping[str, Any],
    data: bytes | memoryview,
    generation: int,
    timeout: Timeout,
) -> dict[str, Any]:
    """One multipart/related POST: the resource as JSON, then the bytes (sent as they are,
    not copied into one body)."""
    boundary = f"=============={secrets.token_hex(16)}=="
    body = (
        f"--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".encode(),
        json.dumps(resource).encode(),
        f"\r\n--{boundary}\r\ncontent-type: {resource['contentType']}\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--".encode(),
    )
    response = _send(
        http,
        f"gs://{bucket}/{resource['name']}",
        errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist"),
        f"{upload_api}/b/{quote(bucket, safe='')}/o",
        params={"uploadType": "multipart", "ifGenerationMatch": str(generation)},
        body=body,
        headers={
            "content-type": f'multipart/related; boundary="{boundary}"',
            "content-length": str(sum(len(piece) for piece in body)),
        },
        timeout=timeout,
    )
    result: dict[str, Any] = response.json()
    return result


def start_session(
    http: Http,
    upload_api: str,
    bucket: str,
    resource: Mapping[str, Any],
    size: int,
    generation: int,
    timeout: Timeout,
) -> str:
    """Open a resumable upload session for `size` bytes; returns its URL."""
    what = f"gs://{bucket}/{resource['name']}"
    response = _send(
        http,
        what,
        errors.BucketNotFound(f"GCS bucket '{bucket}' does not exist"),
        f"{upload_api}/b/{quote(bucket, safe='')}/o",
        params={"uploadType": "resumable", "ifGenerationMatch": str(generation)},
        json=resource,
        headers={
            "X-Upload-Content-Type": resource["contentType"],
            "X-Upload-Content-Length": str(size),
        },
        timeout=timeout,
    )
    if "Location" not in response.headers:
        raise errors.ReplicatorError(f"GCS opened no upload session for {what}")
    return response.headers["Location"]


def compose(
    http: Http,
    api: str,
    bucket: str,
    key: str,
    sources: list[str],
    resource: Mapping[str, Any],
    generation: int | None,
    timeout: Timeout,
) -> dict[str, Any]:
    """One compose request: `sources` (at most 32 objects of `bucket`) concatenated into
    `key`, described by `resource`, only if `key` is at `generation` (0: absent; None: any)."""
    what = f"gs://{bucket}/{key}"
    response = _send(
        http,
        what,
        errors.UploadSessionLost(f"a part of {what} is gone"),
        f"{api}/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}/compose",
        params={} if generation is None else {"ifGenerationMatch": str(generation)},
        json={
            "sourceObjects": [{"name": name} for name in sources],
            "destination": {name: value for name, value in resource.items() if name != "name"},
        },
        timeout=timeout,
    )
    result: dict[str, Any] = response.json()
    return result


def _send(
    http: Http, what: str, missing: errors.ReplicatorError, url: str, **request: Any
) -> Response:
    """One POST that must answer 200: a network failure or any other answer becomes the
    app.errors exception for it, and 404 becomes `missing`."""
    try:
        response = http.request("POST", url, **request)
    except NETWORK_ERRORS as exc:
        raise network_error(exc, what) from exc
    if response.status_code == 404:
        raise missing
    if response.status_code != 200:
        raise translate_response(response, what)
    return response


class ResumableSession:
    """One resumable upload session: send chunks in order, resume where GCS left off."""

    def __init__(self, http: Http, url: str, size: int, what: str) -> None:
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
            response = self._http.request(
                "PUT", self._url, body=body, headers=headers, timeout=timeout
            )
        except NETWORK_ERRORS as exc:
            self._offset_known = False
            raise network_error(exc, self._what) from exc
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
        raise translate_response(response, self._what)

    def _query(self, timeout: tuple[float, float]) -> dict[str, Any] | None:
        headers = {"Content-Range": f"bytes */{self._size}"}
        try:
            response = self._http.request(
                "PUT", self._url, body=b"", headers=headers, timeout=timeout
            )
        except NETWORK_ERRORS as exc:
            raise network_error(exc, self._what) from exc
        if response.status_code in (200, 201):
            self.offset = self._size
            resource: dict[str, Any] = response.json()
            return resource
        if response.status_code != 308:
            raise translate_response(response, self._what)
        self.offset = _persisted(response)
        self._offset_known = True
        return None

    def cancel(self, timeout: tuple[float, float]) -> None:
        """Abandon the session so GCS discards what it holds (it answers 499)."""
        with contextlib.suppress(Exception):
            self._http.request("DELETE", self._url, timeout=timeout)


def _persisted(response: Response) -> int:
    """The next offset GCS expects, from a 308's `Range: bytes=0-N` (absent: nothing kept)."""
    match = re.fullmatch(r"bytes=0-(\d+)", response.headers.get("Range", ""))
    return int(match.group(1)) + 1 if match else 0


def translate_response(response: Response, what: str) -> errors.ReplicatorError:
    status = response.status_code
    text = response.text[:300]
    if status == 412:
        return errors.PreconditionFailed(f"{what} was changed by another writer")
    if status in (401, 403):
        return errors.AccessDenied(f"GCS denied access to {what}: {text}")
    if status in (404, 410):  # the stream cannot be rewound, so retrying cannot help
        return errors.UploadSessionLost(f"the upload session for {what} is gone ({status})")
    if cause := retry.transient_cause(status):
        return errors.TransientError(
            f"GCS answered {status} for {what}: {text}",
            cause=cause,
            retry_after=retry_after(response),
        )
    if status == 400 and ("checksum" in text.lower() or "hash" in text.lower()):
        return errors.IntegrityError(f"GCS rejected the bytes of {what}: {text}")
    return errors.ReplicatorError(f"GCS answered {status} for {what}: {text}")


def retry_after(response: Any) -> float | None:
    """Seconds from a response's Retry-After header (the delta-seconds form), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    return float(value) if value and value.isdigit() else None


def network_error(exc: Exception, what: str) -> errors.TransientError:
    timeout = isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError)
    cause = "timeout" if timeout else "connection"
    return errors.TransientError(f"GCS unreachable for {what}: {exc}", cause=cause)
