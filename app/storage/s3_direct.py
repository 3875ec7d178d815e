"""Object GETs on the endpoint boto3 chose, without boto3's per-call machinery.

For small objects most of the service's CPU went into botocore around each GET (event hooks,
endpoint rules, request and response models): 1.5-1.9 ms a call against 0.7-0.9 ms for the
same signed request sent on urllib3 (measured in one process against moto, 4 KiB objects).

So the first GET of each bucket goes through boto3, which picks the endpoint (virtual-hosted or
path style, region, FIPS, access points) and follows a region redirect. That request is
recorded as botocore signs it (a `before-sign` event hook): the URL up to the key and the
region it is signed for. Later GETs of the bucket replay the same endpoint, signed by
botocore's own SigV4 signer with the session's (refreshing) credentials, on a urllib3 pool
with its retries off. An answer saying the bucket lives elsewhere (301/307, or a 400 naming
another region) forgets the endpoint and hands the call back to boto3. Errors are returned in
botocore's ClientError shape, so app.storage.s3.translate maps both paths with the same table.
With proxy variables set, or S3_DIRECT_GETS=false, every call stays on boto3.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import botocore.auth
import botocore.awsrequest
import botocore.exceptions as bce
import botocore.httpsession
import urllib3

from app import names

_ERROR_FIELD = re.compile(r"<(Code|Message|StorageClass|AccessTier)>([^<]*)</\1>")
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
# botocore's GetObject output names for the response headers the copy uses.
_FIELDS = {
    "content-length": "ContentLength",
    "etag": "ETag",
    "x-amz-version-id": "VersionId",
    "content-type": "ContentType",
    "content-encoding": "ContentEncoding",
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-language": "ContentLanguage",
    "x-amz-checksum-type": "ChecksumType",
    "last-modified": "LastModified",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-storage-class": "StorageClass",
    "x-amz-restore": "Restore",
    "x-amz-archive-status": "ArchiveStatus",
}
# Answers meaning the bucket is served from another region or endpoint (botocore's
# S3RegionRedirectorv2 follows these).
_MOVED_CODES = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}
# botocore's request parameter names, as headers.
_HEADERS = {
    "IfMatch": "If-Match",
    "Range": "Range",
    "ChecksumMode": "x-amz-checksum-mode",
    "RequestPayer": "x-amz-request-payer",
}


class Moved(Exception):
    """The bucket answered from another endpoint or region: ask boto3, which follows it."""


class DirectGets:
    def __init__(
        self,
        client: Any,
        credentials: Any,
        *,
        max_pool_connections: int,
        timeout: tuple[float, float],
    ) -> None:
        self._credentials = credentials
        self._endpoints: dict[str, tuple[str, str]] = {}  # bucket -> (URL before the key, region)
        self._seen = threading.local()
        self._pool = urllib3.PoolManager(
            maxsize=max_pool_connections,
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or botocore.httpsession.get_cert_path(True),
            retries=False,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
        )
        client.meta.events.register("before-sign.s3.GetObject", self._record)

    @classmethod
    def usable(cls, credentials: Any) -> bool:
        """Without credentials boto3 says so; through a proxy, boto3 knows the way."""
        proxied = any(os.environ.get(n) or os.environ.get(n.upper()) for n in _PROXY_VARIABLES)
        return credentials is not None and not proxied

    def _record(
        self, request: Any, region_name: str, signature_version: str, signing_name: str, **_: Any
    ) -> None:
        """Note the URL of the GetObject boto3 is about to sign on this thread, and the region
        it signs it for: the signing context's, which the endpoint rules and botocore's region
        redirector set, else the client's (as botocore's RequestSigner.sign chooses). Only a
        plain SigV4 signature for "s3" can be replayed (not SigV4a, S3 Express or unsigned).
        A redirected call is signed again, so the last record is the one that succeeded."""
        signing = request.context.get("signing", {})
        replayable = (
            signature_version == "s3v4" and (signing.get("signing_name") or signing_name) == "s3"
        )
        region = (signing.get("region") or region_name) if replayable else None
        self._seen.request = (request.url, region)

    def learn(self, bucket: str, key: str) -> None:
        """Keep the endpoint of the GetObject this thread just sent through boto3."""
        url, region = getattr(self._seen, "request", ("", None))
        self._seen.request = ("", None)
        parts = urlsplit(url)
        encoded = _encode(key)
        if region and parts.path.endswith(encoded):
            prefix = parts.path[: len(parts.path) - len(encoded)]  # the query is rebuilt per GET
            self._endpoints[bucket] = (
                urlunsplit((parts.scheme, parts.netloc, prefix, "", "")),
                region,
            )

    def knows(self, bucket: str) -> bool:
        return bucket in self._endpoints

    def get(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], urllib3.BaseHTTPResponse]:
        """GetObject with botocore's parameters (Bucket, Key, IfMatch, Range, VersionId,
        ChecksumMode, RequestPayer). Returns the output fields boto3 would and the open body; raises
        bce.ClientError for an error answer, Moved when boto3 must take the call, and
        urllib3 errors for the network."""
        bucket = params["Bucket"]
        endpoint = self._endpoints.get(bucket)
        if endpoint is None:  # forgotten by another thread since knows()
            raise Moved(f"s3://{bucket} has no known endpoint")
        base, region = endpoint
        url = base + _encode(params["Key"])
        if params.get("VersionId"):
            url += f"?versionId={quote(params['VersionId'], safe='')}"
        request = botocore.awsrequest.AWSRequest(
            method="GET",
            url=url,
            headers={
                "User-Agent": names.USER_AGENT,
                **{header: params[name] for name, header in _HEADERS.items() if name in params},
            },
        )
        botocore.auth.S3SigV4Auth(
            self._credentials.get_frozen_credentials(), "s3", region
        ).add_auth(request)
        # The connection pool's own urlopen takes the target as it is: the PoolManager's
        # would remove "." and ".." segments, which are part of an S3 key.
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        response = self._pool.connection_from_url(url).urlopen(
            "GET",
            target,
            headers=dict(request.headers.items()),
            preload_content=False,
            decode_content=False,  # Content-Encoding: gzip objects are copied as stored
        )
        if response.status in (200, 206):
            return _output(response.headers), response
        body = response.read(decode_content=False)  # a short error document
        response.release_conn()
        error = _client_error(response.status, response.headers, body)
        moved_to = response.headers.get("x-amz-bucket-region")
        if (
            response.status in (301, 302, 307)
            or error.response["Error"]["Code"] in _MOVED_CODES
            or (response.status == 400 and moved_to not in (None, region))
        ):
            self._endpoints.pop(bucket, None)
            raise Moved(f"s3://{bucket} answered {response.status} (region {moved_to})")
        raise error


def _encode(key: str) -> str:
    return quote(key, safe="/~")  # as botocore encodes a key in the path


def _output(headers: Mapping[str, str]) -> dict[str, Any]:
    output: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FIELDS:
            output[_FIELDS[lower]] = value
        elif lower.startswith("x-amz-meta-"):
            metadata[lower.removeprefix("x-amz-meta-")] = value
        elif lower.startswith("x-amz-checksum-") and lower != "x-amz-checksum-mode":
            output["Checksum" + lower.removeprefix("x-amz-checksum-").upper()] = value
    output["Metadata"] = metadata
    return output


def _client_error(status: int, headers: Mapping[str, str], body: bytes) -> bce.ClientError:
    fields = dict(_ERROR_FIELD.findall(body.decode("utf-8", "replace")))
    response: Any = {
        "Error": {
            **fields,
            "Code": fields.get("Code") or str(status),
            "Message": fields.get("Message", ""),
        },
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {name.lower(): value for name, value in headers.items()},
        },
    }
    return bce.ClientError(response, "GetObject")
