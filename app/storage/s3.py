"""Amazon S3 as a replication source, through boto3.

boto3's own retries are off (`total_max_attempts=1`) and nothing here retries: app.retry owns
the policy, and the services retry whole calls. Every call goes through `_translated`, which
maps botocore (and urllib3) errors to app.errors once. Object GETs replay boto3's endpoint
without its per-call machinery (s3_direct), unless `direct_gets` is off.

What real S3 answers that emulators do not (docs/guarantees.md):
- an archived object (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier) answers
  GET with 403 InvalidObjectState until it is restored: errors.Archived, naming the class;
- an SSE-C object answers HEAD with a bare 400 and GET with 400 InvalidRequest unless the
  request carries the customer's key: errors.CustomerKeyEncrypted;
- an SSE-KMS object whose key policy does not let the role decrypt answers GET with 403
  AccessDenied: the error names `kms:Decrypt` on the key;
- a requester-pays bucket answers 403 AccessDenied to any request without
  `x-amz-request-payer: requester` (S3_REQUESTER_PAYS=true sends it on every call).
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bce
import botocore.session
import urllib3.exceptions

from app import errors, names, retry
from app.identity.aws import AwsIdentity, credential_error, new_session
from app.storage import s3_listing
from app.storage.base import KMS_ENCRYPTIONS, ContentHeaders, ObjectInfo, bucket_request
from app.storage.s3_direct import DirectGets, Moved

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
}
_CHANGED = {"PreconditionFailed", "412"}
_ARCHIVED = "InvalidObjectState"  # a GET of an object that must be restored first
MAX_KEYS = 1000  # the most objects S3 lists on one page
_NETWORK_ERRORS = (
    bce.ConnectionError,  # includes EndpointConnectionError, ConnectTimeoutError
    bce.HTTPClientError,  # includes ReadTimeoutError, ConnectionClosedError
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    urllib3.exceptions.HTTPError,  # the direct GETs' pool and bodies
)


def build_source(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    identity: AwsIdentity | None = None,
    connect_timeout: float,
    read_timeout: float,
    max_pool_connections: int,
    direct_gets: bool,
    list_page_size: int = MAX_KEYS,
    requester_pays: bool = False,
) -> S3Source:
    """The boto3 client, and the direct GETs beside it (see s3_direct) when `direct_gets` is
    on; off, every GET goes through boto3. Its credentials are `identity`'s (shared with the
    other AWS clients), else the keys given, else boto3's chain. Talks to no cloud."""
    identity = identity or AwsIdentity(
        region=region, access_key_id=access_key_id, secret_access_key=secret_access_key
    )
    config = botocore.config.Config(
        region_name=region,
        signature_version="s3v4",
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=names.USER_AGENT,
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if endpoint_url else {},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    core = new_session()
    # Timestamps are parsed only where used (LastModified, _modified): botocore's parser
    # costs a share of every HEAD.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    identity.install(core)
    session = boto3.session.Session(botocore_session=core)
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    s3_listing.read_contents_quickly(client)
    credentials = session.get_credentials()  # the provider chain's, refreshing; shared with boto3
    direct = None
    if direct_gets and DirectGets.usable(credentials):
        direct = DirectGets(
            client,
            credentials,
            max_pool_connections=max_pool_connections,
            timeout=(connect_timeout, read_timeout),
        )
    return S3Source(
        client,
        endpoint_url,
        direct,
        list_page_size=list_page_size,
        requester_pays=requester_pays,
    )


def translate(
    exc: Exception, what: str, bucket: str | None = None, *, requester_pays: bool = True
) -> errors.ReplicatorError:
    """Map a botocore exception to the project's vocabulary; `what` names the object and
    `bucket` its bucket, when known. `requester_pays` False: an AccessDenied says that a
    requester-pays bucket answers so too, and which setting fixes that."""
    if (refused := credential_error(exc)) is not None:
        return refused
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0)
        message = error.get("Message") or code
        if code in _NO_BUCKET:
            named = f"'{bucket}'" if bucket else f"of {what}"
            return errors.BucketNotFound(f"S3 bucket {named} does not exist")
        if code in _NOT_FOUND or status == 404:
            return errors.ObjectNotFound(f"{what} does not exist")
        if code == _ARCHIVED:
            return _archived(what, error)
        if _needs_customer_key(status, code, message):
            return errors.CustomerKeyEncrypted(
                f"encrypted with a customer-provided key (SSE-C): S3 serves {what} only to "
                "requests that carry that key, and the replicator has none"
            )
        if code in _DENIED or status == 403:
            if "kms" in message.lower():
                return kms_denied(what, None, message)
            hint = (
                ""
                if requester_pays
                else " (a requester-pays bucket answers so to requests that do not agree to "
                "pay: set S3_REQUESTER_PAYS=true for such a source)"
            )
            return errors.AccessDenied(f"S3 denied access to {what}: {message}{hint}")
        if code in _CHANGED or status == 412:
            return errors.PreconditionFailed(f"{what} changed while it was being copied")
        if cause := retry.transient_cause(status, code):
            retry_after = meta.get("HTTPHeaders", {}).get("retry-after")
            return errors.TransientError(
                f"S3 answered {status or code} for {what}: {message}",
                cause=cause,
                retry_after=_seconds(retry_after),
            )
        return errors.ReplicatorError(f"S3 error for {what}: {code} {message}")
    if isinstance(exc, _NETWORK_ERRORS):
        return errors.TransientError(
            f"S3 unreachable while reading {what}: {exc}", cause=_cause(exc)
        )
    if isinstance(exc, bce.NoCredentialsError):
        return errors.AccessDenied(
            "no AWS credentials found (set AWS_ACCESS_KEY_ID, or run with a role)"
        )
    return errors.ReplicatorError(f"unexpected S3 failure for {what}: {exc!r}")


def kms_denied(what: str, key: str | None, message: str) -> errors.AccessDenied:
    """S3 refused to read an SSE-KMS object because KMS refused to decrypt it for us."""
    named = f"key {key}" if key else "its KMS key"
    return errors.AccessDenied(
        f"S3 denied access to {what}, encrypted with SSE-KMS: the role needs kms:Decrypt on "
        f"{named} ({message})"
    )


def _archived(what: str, error: Mapping[str, Any]) -> errors.Archived:
    storage_class = str(error.get("StorageClass") or "an archive storage class")
    if tier := error.get("AccessTier"):
        storage_class = f"{storage_class} {tier}"
    return errors.Archived(
        f"{what} is archived ({storage_class}): restore it first (S3 RestoreObject, such as "
        "`aws s3api restore-object`); once restored it copies normally",
        storage_class=storage_class,
    )


def _needs_customer_key(status: int, code: str, message: str) -> bool:
    """An SSE-C object asked for without its key: GET answers 400 InvalidRequest about
    server-side encryption; HEAD, which has no body, a bare 400."""
    if status != 400:
        return False
    if code == "InvalidRequest":
        return "encryption" in message.lower()
    return code in ("400", "BadRequest", "Bad Request")


def _cause(exc: Exception) -> str:
    if isinstance(
        exc, bce.ReadTimeoutError | bce.ConnectTimeoutError | urllib3.exceptions.TimeoutError
    ):
        return "timeout"
    if isinstance(exc, bce.ResponseStreamingError | bce.IncompleteReadError):
        return "stream_broken"
    if isinstance(exc, urllib3.exceptions.ProtocolError) and "IncompleteRead" in str(exc):
        return "stream_broken"
    return "connection"


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


@contextlib.contextmanager
def _translated(
    what: str, bucket: str | None = None, *, requester_pays: bool = True
) -> Iterator[None]:
    try:
        yield
    except (bce.BotoCoreError, bce.ClientError, urllib3.exceptions.HTTPError) as exc:
        raise translate(exc, what, bucket, requester_pays=requester_pays) from exc


def _describe(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


class S3Source:
    def __init__(
        self,
        client: Any,
        endpoint_url: str | None = None,
        direct: DirectGets | None = None,
        *,
        list_page_size: int = MAX_KEYS,
        requester_pays: bool = False,
    ) -> None:
        """`requester_pays`: every request says the requester pays (RequestPayer=requester),
        as a requester-pays bucket requires."""
        self._client = client
        self._direct = direct
        self._page_size = list_page_size
        self._requester_pays = requester_pays
        self._payer = {"RequestPayer": "requester"} if requester_pays else {}
        self.target = endpoint_url or "REAL AWS"

    def probe(self) -> None:
        try:
            self._client.list_buckets(MaxBuckets=1)
        except bce.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "AccessDenied":
                return  # reachable, and the signature was accepted; listing is just not allowed
            raise errors.StartupError(f"S3 at {self.target} rejected the request: {code}") from exc
        except (bce.BotoCoreError, ValueError) as exc:
            raise errors.StartupError(f"cannot reach S3 at {self.target}: {exc}") from exc

    def head(self, bucket: str, key: str) -> ObjectInfo:
        request = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED", **self._payer}
        return _object_info(bucket, key, self._head_object(_describe(bucket, key), request))

    def _head_object(self, what: str, request: dict[str, Any]) -> dict[str, Any]:
        """HeadObject. A HEAD answer has no body to say which is missing, so a 404 asks
        HeadBucket: BucketNotFound when the bucket is gone, else ObjectNotFound."""
        try:
            with self._translated(what):
                response: dict[str, Any] = self._client.head_object(**request)
        except errors.ObjectNotFound:
            self._raise_if_bucket_missing(request["Bucket"])
            raise
        return response

    def _raise_if_bucket_missing(self, bucket: str) -> None:
        try:
            self._client.head_bucket(Bucket=bucket, **self._payer)
        except bce.ClientError as exc:
            if translate(exc, bucket).status_code == 404:
                raise errors.BucketNotFound(f"S3 bucket '{bucket}' does not exist") from exc
        except bce.BotoCoreError:
            return  # the object lookup's own answer stands

    def part_size(self, obj: ObjectInfo, part_number: int) -> tuple[int, int]:
        """The size of part `part_number` of a multipart object, and how many parts it has."""
        # No If-Match here: emulators compare it with the part's ETag. A layout read from a
        # replaced object cannot pass the ETag check, and the GET itself is pinned.
        request: dict[str, Any] = {
            "Bucket": obj.bucket,
            "Key": obj.key,
            "PartNumber": part_number,
            **self._payer,
        }
        if obj.version_id:
            request["VersionId"] = obj.version_id
        what = f"part {part_number} of {_describe(obj.bucket, obj.key)}"
        response = self._head_object(what, request)
        return int(response["ContentLength"]), int(response.get("PartsCount") or 1)

    def iter_objects(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Every object under `prefix` whose key sorts strictly after `start_after`, in key
        order (S3 lists in UTF-8 byte order, which is Python's order for str), with its size
        and ETag. Reads one ListObjectsV2 page at a time, as the iteration reaches it, so
        memory does not grow with the bucket. Raises (when iterated) BucketNotFound,
        AccessDenied, TransientError; nothing is retried here, so a caller that retries
        resumes with `start_after` set to the last key it received."""
        request: dict[str, Any] = {"Prefix": prefix}
        if start_after:
            request["StartAfter"] = start_after
        for objects, _ in self._pages(bucket, request):
            yield from objects

    def first_key_after(self, bucket: str, prefix: str, start_after: str | None) -> str | None:
        """The first key under `prefix` strictly after `start_after`, or None: one
        ListObjectsV2 request of one key, to probe where keys are (app.bulk.ranges)."""
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1}
        if start_after:
            request["StartAfter"] = start_after
        what = f"the listing of s3://{bucket}/{prefix}"
        with bucket_request("S3", bucket), _translated(what, bucket):
            page = self._client.list_objects_v2(**request)
        contents = page.get("Contents") or ()
        return str(contents[0]["Key"]) if contents else None

    def _pages(
        self, bucket: str, request: dict[str, Any]
    ) -> Iterator[tuple[Sequence[ObjectInfo], bool]]:
        """ListObjectsV2 (`request` plus the bucket and page size), one page per step: its
        objects, and whether more pages follow. Each page is requested when the caller asks
        for it."""
        request = {**request, "Bucket": bucket, "MaxKeys": self._page_size, **self._payer}
        what = f"the listing of s3://{bucket}/{request.get('Prefix', '')}"
        while True:
            with bucket_request("S3", bucket), self._translated(what, bucket):
                page = self._client.list_objects_v2(**request)
            objects = [_listed(bucket, item) for item in page.get("Contents", [])]
            more = bool(page.get("IsTruncated"))
            yield objects, more
            if not more:
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def get(self, bucket: str, key: str, etag: str | None) -> tuple[ObjectInfo, S3Body]:
        request: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ChecksumMode": "ENABLED",
            **self._payer,
        }
        if etag:
            request["IfMatch"] = f'"{etag}"'
        response, body = self._get_object(request)
        return _object_info(bucket, key, response), body

    def open(self, obj: ObjectInfo, start: int = 0) -> S3Body:
        """If-Match on the ETag pins the bytes on real S3 too, encrypted or not: S3 compares
        the header with the ETag it returns for the object, whatever that ETag is made of
        (an MD5, or the opaque value of an SSE-KMS object)."""
        request: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, **self._payer}
        if obj.etag:
            request["IfMatch"] = f'"{obj.etag}"'
        if obj.version_id:
            request["VersionId"] = obj.version_id
        if start:
            request["Range"] = f"bytes={start}-"
        try:
            return self._get_object(request)[1]
        except errors.AccessDenied as exc:
            if obj.encryption in KMS_ENCRYPTIONS and "kms:Decrypt" not in exc.detail:
                what = _describe(obj.bucket, obj.key)
                raise kms_denied(what, obj.kms_key, exc.detail) from exc
            raise

    def _get_object(self, request: dict[str, Any]) -> tuple[dict[str, Any], S3Body]:
        """GetObject directly once boto3 has shown the bucket's endpoint, else through boto3."""
        what = _describe(request["Bucket"], request["Key"])
        with self._translated(what, request["Bucket"]):
            if self._direct is not None and self._direct.knows(request["Bucket"]):
                with contextlib.suppress(Moved):
                    fields, raw = self._direct.get(request)
                    return fields, S3Body(raw, what)
            response = self._client.get_object(**request)
            if self._direct is not None:
                self._direct.learn(request["Bucket"], request["Key"])
        return response, S3Body(response["Body"], what)

    def _translated(
        self, what: str, bucket: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return _translated(what, bucket, requester_pays=self._requester_pays)


class S3Body:
    """A GET response body whose errors are already translated."""

    def __init__(self, body: Any, what: str) -> None:
        self._body = body
        self._what = what

    def read(self, size: int, /) -> bytes:
        with _translated(self._what):
            data: bytes = self._body.read(size)
        return data

    def close(self) -> None:
        self._body.close()


def _listed(bucket: str, item: dict[str, Any]) -> ObjectInfo:
    """An object as a listing describes it: key, size, ETag and storage class."""
    return ObjectInfo(
        bucket=bucket,
        key=item["Key"],
        size=int(item["Size"]),
        etag=str(item["ETag"]).strip('"'),
        storage_class=item.get("StorageClass"),
    )


def _object_info(bucket: str, key: str, response: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(response["ContentLength"]),
        etag=str(response.get("ETag", "")).strip('"') or None,
        version_id=response.get("VersionId"),
        headers=ContentHeaders(
            content_type=response.get("ContentType"),
            content_encoding=response.get("ContentEncoding"),
            cache_control=response.get("CacheControl"),
            content_disposition=response.get("ContentDisposition"),
            content_language=response.get("ContentLanguage"),
        ),
        # S3 stores user metadata keys in lower case; normalise emulators that do not.
        metadata={k.lower(): v for k, v in (response.get("Metadata") or {}).items()},
        s3_checksums={
            name.removeprefix("Checksum"): str(value)
            for name, value in response.items()
            if name.startswith("Checksum") and name != "ChecksumType" and value
        },
        s3_checksum_type=response.get("ChecksumType"),
        modified=_modified(response.get("LastModified")),
        encryption=response.get("ServerSideEncryption"),
        kms_key=response.get("SSEKMSKeyId"),
        storage_class=response.get("StorageClass") or "STANDARD",
        archive_status=response.get("ArchiveStatus"),
        restore=response.get("Restore"),
    )


def _modified(value: object) -> datetime.datetime | None:
    """LastModified as botocore leaves it unparsed (the HTTP date of the header), or parsed."""
    if isinstance(value, datetime.datetime):
        return value
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
