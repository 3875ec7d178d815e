"""Reading an object's bytes back from GCS: one media GET of one generation, read in pieces.

The GET names the generation (`generation=`), so it returns exactly the bytes that were
listed or looked up, or 404 when that generation is gone; it asks for `Accept-Encoding: gzip`,
so an object stored with `Content-Encoding: gzip` comes back as stored, not decompressed by
GCS's transcoding. Nothing is retried here (see app.retry): a caller retries the whole read.
"""

from __future__ import annotations

import urllib3

from app import errors
from app.storage.base import ObjectInfo
from app.storage.gcs.errors import network_error, translate
from app.storage.gcs.resources import object_path
from app.storage.gcs.transport import NETWORK_ERRORS, Http, Response, Timeout


def open_media(http: Http, obj: ObjectInfo, timeout: Timeout) -> MediaBody:
    """The bytes of generation `obj.generation` (the live one when None). ObjectNotFound when
    that generation is gone; the rest as app.storage.gcs.errors.translate says."""
    what = f"gs://{obj.bucket}/{obj.key}"
    params = {"alt": "media"}
    missing = errors.ObjectNotFound(f"{what} does not exist")
    if obj.generation is not None:
        params["generation"] = str(obj.generation)
        missing = errors.ObjectNotFound(
            f"generation {obj.generation} of {what} is gone (replaced or deleted)"
        )
    url = f"{http.base_url}/download/storage/v1{object_path(obj.bucket, obj.key)}"
    try:
        answer = http.stream(
            url, timeout=timeout, params=params, headers={"Accept-Encoding": "gzip"}
        )
    except NETWORK_ERRORS as exc:
        raise translate(exc, what) from exc
    if answer.status == 200:
        return MediaBody(answer, what)
    try:
        failure = Response(answer.status, answer.headers, answer.read())
    except NETWORK_ERRORS as exc:
        raise translate(exc, what) from exc
    finally:
        answer.release_conn()
    raise translate(failure, what, missing=missing)


class MediaBody:
    """An open media download; network failures are raised as TransientError."""

    def __init__(self, answer: urllib3.BaseHTTPResponse, what: str) -> None:
        self._answer = answer
        self._what = what
        self._ended = False

    def read(self, size: int, /) -> bytes:
        try:
            data = self._answer.read(size, decode_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise network_error(exc, self._what) from exc
        if size and not data:
            self._ended = True
        return data

    def close(self) -> None:
        """Give the connection back to the pool when the body was read to its end; close it
        when not (what is left unread would be taken for the next answer)."""
        if not self._ended:
            self._answer.close()
        self._answer.release_conn()
