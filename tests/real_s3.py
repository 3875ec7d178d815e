"""moto behind a proxy that answers as real S3 does where moto does not.

AWS documents behaviours that moto's server does not show, and the product must code for:
- an object encrypted with SSE-KMS (or DSSE-KMS) has an ETag that is not the MD5 of its
  bytes, single part or multipart; moto gives it one. The proxy shows, for every object whose
  PUT (or HEAD, GET) moto answered with `x-amz-server-side-encryption: aws:kms`, another
  ETag of the same shape: on HEAD, GET, PUT and in listings. S3 compares an `If-Match` with
  the ETag it shows, so the proxy hands moto its own ETag for the one it showed;
- an object stored with a customer-provided key (SSE-C) is refused to any HEAD or GET that
  does not carry the key: HEAD with a bare 400, GET with 400 InvalidRequest; moto serves it;
- a requester-pays bucket answers 403 AccessDenied to a request without
  `x-amz-request-payer: requester`; moto serves it;
- an SSE-KMS object whose key the role may not use for kms:Decrypt answers GET with 403
  AccessDenied (`kms_denied`).

moto itself stores S3's additional checksums (CRC64NVME, CRC32, ... with ChecksumType) when
the client sends them, and answers a GET of an archived object (GLACIER, DEEP_ARCHIVE) with
403 InvalidObjectState until it is restored, then with `x-amz-restore` on HEAD.
"""

from __future__ import annotations

import hashlib
import re
import threading
from urllib.parse import unquote, urlsplit

from tests.faults import FaultProxy, Message

SSE_C_REFUSED = (
    b"<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of Server "
    b"Side Encryption. The correct parameters must be provided to retrieve the object."
    b"</Message></Error>"
)
ACCESS_DENIED = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
_CONTENTS = re.compile(rb"<Contents>(.*?)</Contents>", re.DOTALL)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_ETAG = re.compile(rb"<ETag>(.*?)</ETag>", re.DOTALL)
_CUSTOMER_KEY = "x-amz-server-side-encryption-customer-algorithm"


def kms_etag(real: str) -> str:
    """The opaque ETag S3 shows for an SSE-KMS object whose MD5 ETag (moto's) is `real`."""
    bare = real.strip('"')
    digest, dash, parts = bare.partition("-")
    return '"' + hashlib.md5(f"kms:{digest}".encode()).hexdigest() + dash + parts + '"'


class RealS3Proxy(FaultProxy):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.kms: set[tuple[str, str]] = set()  # (bucket, key) of SSE-KMS objects
        self.sse_c: set[tuple[str, str]] = set()
        self.requester_pays: set[str] = set()  # buckets
        self.kms_denied: set[tuple[str, str]] = set()  # GETs refused by the key's policy
        self._moto_etags: dict[str, str] = {}  # the ETag shown -> moto's
        self._guard = threading.Lock()

    def intercept(self, method: str, request: Message) -> Message | None:
        bucket, key, query = _target(request)
        if bucket in self.requester_pays and request.header("x-amz-request-payer") != "requester":
            return _answer(403, ACCESS_DENIED)
        if method in ("PUT", "POST") and key and request.header(_CUSTOMER_KEY):
            self.sse_c.add((bucket, key))
        encryption = request.header("x-amz-server-side-encryption") or ""
        if method in ("PUT", "POST") and key and encryption.startswith("aws:kms"):
            self.kms.add((bucket, key))
        if method in ("GET", "HEAD") and (bucket, key) in self.sse_c and "partNumber" not in query:
            if not request.header(_CUSTOMER_KEY):
                return _answer(400, SSE_C_REFUSED)
        if method == "GET" and (bucket, key) in self.kms_denied:
            return _answer(403, ACCESS_DENIED)
        shown = request.header("if-match")
        with self._guard:
            moto = self._moto_etags.get(shown or "")
        if moto is not None:
            request.headers = [
                (n, moto if n.lower() == "if-match" else v) for n, v in request.headers
            ]
        return None

    def rewrite(self, method: str, request: Message, response: Message) -> Message:
        bucket, key, query = _target(request)
        if key and (response.header("x-amz-server-side-encryption") or "").startswith("aws:kms"):
            self.kms.add((bucket, key))
        if (
            key
            and (bucket, key) in self.kms
            and response.header("etag")
            and "uploadId" not in query
        ):
            response.headers = [
                (n, self._shown(v) if n.lower() == "etag" else v) for n, v in response.headers
            ]
        elif not key and method == "GET" and "list-type=2" in query:
            response.body = _CONTENTS.sub(lambda m: self._listed(bucket, m), response.body)
        return response

    def _shown(self, moto: str) -> str:
        shown = kms_etag(moto)
        with self._guard:
            self._moto_etags[shown] = moto
        return shown

    def _listed(self, bucket: str, entry: re.Match[bytes]) -> bytes:
        inner = entry.group(1)
        key = _KEY.search(inner)
        if key is None or (bucket, unquote(key.group(1).decode())) not in self.kms:
            return entry.group(0)
        etag = _ETAG.search(inner)
        if etag is None:
            return entry.group(0)
        moto = etag.group(1).decode().replace("&#34;", '"').replace("&quot;", '"')
        shown = self._shown(moto).replace('"', "&quot;").encode()
        return (
            b"<Contents>"
            + inner.replace(etag.group(0), b"<ETag>" + shown + b"</ETag>")
            + (b"</Contents>")
        )


def _target(request: Message) -> tuple[str, str, str]:
    """The bucket, key (decoded; "" for a bucket request) and query of a path-style request."""
    parts = urlsplit(request.start.split(" ")[1])
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return bucket, key, parts.query


def _answer(status: int, body: bytes) -> Message:
    reason = {400: "Bad Request", 403: "Forbidden"}[status]
    return Message(f"HTTP/1.1 {status} {reason}", [("Content-Type", "application/xml")], body)
