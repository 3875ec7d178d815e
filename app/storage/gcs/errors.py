"""GCS's answers in the service's vocabulary: one function for every JSON-API call.

`translate` takes what a call produced (an answer other than the one expected, or the network
exception raised instead of one) and returns the app.errors exception to raise:

    404, 410      `missing`: what "not found" means for that request (the caller says: the
                  object, the bucket of a bucket-level request, a lost upload session)
    409, 412      PreconditionFailed (a generation precondition or a concurrent change)
    403 retention DestinationRetained: the object is under a retention policy or a hold
    401, 403      AccessDenied
    408, 429, 5xx TransientError, with the server's Retry-After (app.retry.transient_cause)
    400 checksum  IntegrityError: GCS refused bytes that do not match the hashes sent
    network       TransientError "connection" or "timeout"
    anything else ReplicatorError

GCS says that bytes did not match their hashes only in the message of a 400 ("Provided MD5
hash ... doesn't match calculated MD5 hash ..."; its reason is "invalid", as for any bad
request), so that one case reads the text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import urllib3.exceptions

from app import errors, retry
from app.storage.gcs.transport import Response

_CHECKSUM_WORDS = ("checksum", "hash", "crc32c", "md5")
# GCS's 403 for an object it must keep: "... is subject to bucket's retention policy or object
# retention and cannot be deleted or overwritten ...", "... is under active Event-Based hold
# ...", "... Temporary hold ...", reason retentionPolicyNotMet.
_RETENTION = re.compile(r"retention|\bhold\b", re.IGNORECASE)


def translate(
    failure: Response | Exception, what: str, *, missing: errors.ReplicatorError | None = None
) -> errors.ReplicatorError:
    """The app.errors exception for `failure`, a call about `what` ("gs://bucket/key")."""
    if isinstance(failure, Exception):
        return network_error(failure, what)
    status = failure.status_code
    message = _message(failure)
    if status in (404, 410):
        return missing or errors.ObjectNotFound(f"{what} does not exist")
    if status == 412:
        return errors.PreconditionFailed(f"{what} was changed by another writer")
    if status == 409:
        return errors.PreconditionFailed(f"{what} was changed by a conflicting request")
    if status == 403 and _RETENTION.search(message):
        return errors.DestinationRetained(
            f"{what} is under a retention policy or hold at GCS and cannot be replaced until "
            f"it ends: {message}"
        )
    if status in (401, 403):
        return errors.AccessDenied(f"GCS denied access to {what}: {message}")
    if cause := retry.transient_cause(status):
        return errors.TransientError(
            f"GCS answered {status} for {what}: {message}",
            cause=cause,
            retry_after=retry_after(failure),
        )
    if status == 400 and any(word in message.lower() for word in _CHECKSUM_WORDS):
        return errors.IntegrityError(f"GCS rejected the bytes of {what}: {message}")
    return errors.ReplicatorError(f"GCS answered {status} for {what}: {message}")


def network_error(exc: Exception, what: str) -> errors.TransientError:
    timeout = isinstance(exc, urllib3.exceptions.TimeoutError)
    cause = "timeout" if timeout else "connection"
    return errors.TransientError(f"GCS unreachable for {what}: {exc}", cause=cause)


def retry_after(response: Response) -> float | None:
    """Seconds from a response's Retry-After header (the delta-seconds form), if any."""
    value = response.headers.get("Retry-After")
    return float(value) if value and value.isdigit() else None


def _message(response: Response) -> str:
    """The JSON error's `message` (GCS's shape: {"error": {"code", "message", "errors"}}), or
    the start of the body when it is not one."""
    try:
        body: Any = json.loads(response.content)
        message = body["error"]["message"]
    except (ValueError, TypeError, KeyError):
        return response.text[:300]
    return str(message)[:300]
