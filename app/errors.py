"""The error vocabulary. Adapters raise these; one handler in main.py turns them into JSON.

Each class carries its HTTP status and the `error` word clients see, and `body()` is the one
JSON body every error answer has (the service's, its request edge's and the worker's health
server's), so the mapping to HTTP lives here and nowhere else.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    status_code = 500
    kind = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def body(self) -> dict[str, str]:
        """The JSON body of the HTTP answer: `{"error": kind, "detail": detail}`."""
        return {"error": self.kind, "detail": self.detail}


class InvalidRequest(ReplicatorError):
    status_code = 422
    kind = "invalid_request"


class UnrecognisedEvent(InvalidRequest):
    """A notification body matches none of the shapes AWS sends (S3 event, SNS, EventBridge)."""


class Unauthorized(ReplicatorError):
    status_code = 401
    kind = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="cross-cloud-replicator"'}


class Forbidden(ReplicatorError):
    """A request failed authentication by signature (an SNS delivery, say).

    Why is for the logs only: `str(exc)` and `reason` say it, while `detail`, what a client
    could be shown, is always just "forbidden", so a forger learns nothing from the answer.
    """

    status_code = 403
    kind = "forbidden"

    def __init__(self, reason: str) -> None:
        super().__init__("forbidden")
        self.args = (reason,)
        self.reason = reason

    def body(self) -> dict[str, str]:
        return {"error": self.kind}


class NotFound(ReplicatorError):
    """No route at this path (an object or a job that is missing is ObjectNotFound)."""

    status_code = 404
    kind = "not_found"


class MethodNotAllowed(ReplicatorError):
    status_code = 405
    kind = "method_not_allowed"


class PayloadTooLarge(ReplicatorError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaType(ReplicatorError):
    status_code = 415
    kind = "unsupported_media_type"


class NotReady(ReplicatorError):
    """A cloud does not answer right now (GET /ready)."""

    status_code = 503
    kind = "not_ready"


class ObjectNotFound(ReplicatorError):
    status_code = 404
    kind = "not_found"


class BucketNotFound(ObjectNotFound):
    """The bucket itself is missing: same status and kind as a missing object."""


class AccessDenied(ReplicatorError):
    """The cloud refused our credentials: the service is misconfigured, not the caller."""

    status_code = 502
    kind = "access_denied"


class PreconditionFailed(ReplicatorError):
    """A generation or ETag precondition did not hold: someone else changed the object."""

    status_code = 409
    kind = "conflict"


class Unreplicable(ReplicatorError):
    """The object cannot be copied as things stand, whoever asks and however often: retrying
    cannot help until someone acts (restores it, supplies its key, lifts a hold). `kind` names
    the reason; each subclass is one reason, counted apart."""

    status_code = 409
    kind = "unreplicable"


class Archived(Unreplicable):
    """The source object is in an archive storage class (GLACIER, DEEP_ARCHIVE, an
    Intelligent-Tiering archive tier) and must be restored before it can be read."""

    kind = "archived"

    def __init__(self, detail: str, *, storage_class: str) -> None:
        super().__init__(detail)
        self.storage_class = storage_class


class CustomerKeyEncrypted(Unreplicable):
    """The source object is encrypted with a customer-provided key (SSE-C): S3 serves it only
    to requests that carry that key, which the replicator does not have."""

    kind = "sse_c"


class DestinationRetained(Unreplicable):
    """The destination object is under a retention policy or a hold: it cannot be replaced
    until that ends."""

    kind = "retained"


UNREPLICABLE_KINDS = frozenset(
    {Unreplicable.kind, Archived.kind, CustomerKeyEncrypted.kind, DestinationRetained.kind}
)  # the `reason` label of replicator_messages_unreplicable


class IntegrityError(ReplicatorError):
    """The bytes did not verify. Nothing damaged was published."""

    status_code = 502
    kind = "integrity_error"


# The causes of a TransientError: a bounded set, the `cause` label of `replicator_retries`.
TRANSIENT_CAUSES = (
    "connection",
    "timeout",
    "throttled",
    "server_error",
    "stream_broken",
    "leased",
)


class TransientError(ReplicatorError):
    """A fault worth retrying: connection trouble, timeouts, 408/429/5xx, S3 SlowDown.

    `cause` is one of TRANSIENT_CAUSES (a bounded set, used as a metrics label);
    `retry_after` is the server's hint in seconds.
    """

    status_code = 503
    kind = "unavailable"

    def __init__(
        self, detail: str, *, cause: str = "server_error", retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.cause = cause
        self.retry_after = retry_after


class KeyLeased(TransientError):
    """Another replica holds the destination key's lease: settle the event again shortly."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, cause="leased")


class UploadSessionLost(ReplicatorError):
    """GCS forgot a resumable upload half way; the source stream cannot be rewound to redo it."""

    status_code = 503
    kind = "unavailable"


def failure_kinds() -> list[str]:
    """Every `kind` a failure may have, from the classes above (and any defined since): the
    values of the `reason` label of `replicator_objects_failed`."""
    kinds, classes = {ReplicatorError.kind}, [ReplicatorError]
    while classes:
        for subclass in classes.pop().__subclasses__():
            kinds.add(subclass.kind)
            classes.append(subclass)
    return sorted(kinds)


class StartupError(Exception):
    """The service cannot start; the message is one readable line per problem."""
