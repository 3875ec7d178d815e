"""One parser for every body AWS sends about S3 objects, recognised by its shape.

The same `parse()` serves an HTTP route and an SQS worker, because the shapes overlap:

- an S3 event notification, `{"Records": [...]}` (eventVersion 2.x), as S3 sends it to SQS,
  and as SNS delivers it with raw message delivery on;
- S3's `s3:TestEvent`, sent once when a notification configuration is saved: acknowledged,
  nothing to do;
- an SNS message, as SNS delivers it to SQS and to HTTP endpoints: a `Notification` whose
  `Message` is one of the other shapes as a string, or a `SubscriptionConfirmation` /
  `UnsubscribeConfirmation` that the caller verifies (and confirms) with `events.sns`;
- an EventBridge event from `aws.s3` ("Object Created", "Object Deleted", ...).

Parsing checks shape only. It proves nothing about who sent the body: an SNS message that
came over HTTP must pass `SnsVerifier.verify(parsed.document)` before anyone acts on it.

Keys. S3 notifications carry keys URL-encoded in form style (`+` is a space, `%2B` a plus),
decoded here with `unquote_plus`. AWS does not document whether EventBridge encodes keys, so
an EventBridge record keeps the key as sent next to its decoded form; `key_candidates` lists
the names the object may have at the source, for the caller to look up.

Actions. `copy` for ObjectCreated:*; `delete` for ObjectRemoved:Delete,
ObjectRemoved:DeleteMarkerCreated, LifecycleExpiration:* and EventBridge "Object Deleted";
`ignore`, with a reason, for everything else. A `delete` says the object may be gone: in a
versioned bucket it may be an older version that went, so look at the source before
deleting anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from app import errors

# Where SNS signing certificates may come from unless SNS_ENDPOINT_PATTERN says otherwise:
# AWS's own SNS endpoints. Here rather than in app.events.sns so that reading the settings
# does not import cryptography (25 ms of every command's start-up).
SNS_ENDPOINT_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"

Action = Literal["copy", "delete", "ignore"]
Kind = Literal["records", "test_event", "subscription_confirmation", "unsubscribe_confirmation"]
SnsType = Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]


@dataclass(frozen=True)
class EventRecord:
    """What one event says about one object, whatever shape it came in.

    `key` is the decoded key; `key_as_sent` is the key exactly as it was in the body.
    `etag` is as the event gives it (S3 sends it without quotes). Fields an event does not
    carry are None: deletions have no size or ETag, unversioned buckets no version ID.
    """

    bucket: str
    key: str
    key_as_sent: str
    action: Action
    event_name: str
    reason: str
    origin: Literal["s3", "eventbridge"]
    sequencer: str | None = None
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    event_time: datetime | None = None
    region: str | None = None

    @property
    def key_candidates(self) -> tuple[str, ...]:
        """The names the object may have at the source, most likely first.

        One name for S3 notifications (whose encoding is documented); for EventBridge the
        decoded key, then the key as sent when the two differ.
        """
        if self.origin == "s3" or self.key == self.key_as_sent:
            return (self.key,)
        return (self.key, self.key_as_sent)


@dataclass(frozen=True)
class SnsEnvelope:
    """The SNS message a body came wrapped in. `subscribe_url` is set for confirmations."""

    type: SnsType
    topic_arn: str
    message_id: str
    subscribe_url: str | None = None


@dataclass(frozen=True)
class Parsed:
    """What a body was, and what it says.

    `records` is empty unless `kind` is "records". `sns` is set when the body was an SNS
    message (which must be verified when it came over HTTP). `document` is the decoded
    outer JSON object, the one `SnsVerifier.verify` takes.
    """

    kind: Kind
    records: tuple[EventRecord, ...] = ()
    sns: SnsEnvelope | None = None
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


_SNS_TYPES: dict[str, Kind] = {
    "Notification": "records",  # or "test_event": decided by the message inside
    "SubscriptionConfirmation": "subscription_confirmation",
    "UnsubscribeConfirmation": "unsubscribe_confirmation",
}

_IGNORED_S3_EVENTS = {
    "ObjectRestore": "a restore from an archive tier leaves the object's bytes as they were",
    "ObjectTagging": "tags are not replicated",
    "ObjectAcl": "ACLs are not replicated",
    "Replication": "S3 replication status says nothing new about the object",
    "LifecycleTransition": "a storage class transition leaves the object's bytes as they were",
    "IntelligentTiering": "an access tier change leaves the object's bytes as they were",
    "ReducedRedundancyLostObject": "a lost reduced-redundancy copy cannot be read to copy it",
}

_IGNORED_EVENTBRIDGE_PREFIXES = {
    "Object Restore": _IGNORED_S3_EVENTS["ObjectRestore"],
    "Object Tags": _IGNORED_S3_EVENTS["ObjectTagging"],
    "Object ACL": _IGNORED_S3_EVENTS["ObjectAcl"],
    "Object Storage Class": _IGNORED_S3_EVENTS["LifecycleTransition"],
    "Object Access Tier": _IGNORED_S3_EVENTS["IntelligentTiering"],
}


def parse(body: bytes | str | Mapping[str, Any]) -> Parsed:
    """Recognise `body` (raw JSON, or already decoded) and say what it is.

    Raises `errors.UnrecognisedEvent` (422), naming what is wrong, for a body that is not
    JSON or matches no shape AWS sends, and for an event missing its bucket or key.
    """
    document = body if isinstance(body, Mapping) else load(body)
    return _parse_document(document, inside_sns=False)


def classify_s3_event(event_name: str) -> tuple[Action, str]:
    """The action for an S3 notification's eventName (with or without "s3:"), and why."""
    name = event_name.removeprefix("s3:")
    category = name.partition(":")[0]
    if category == "ObjectCreated":
        return "copy", f"{name}: the object was written"
    if name in ("ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated"):
        return "delete", f"{name}: the object was deleted"
    if category == "LifecycleExpiration":
        return "delete", f"{name}: the object expired"
    reason = _IGNORED_S3_EVENTS.get(category, "not an event the replicator acts on")
    return "ignore", f"{name}: {reason}"


def classify_eventbridge_event(detail_type: str) -> tuple[Action, str]:
    """The action for an EventBridge S3 event's detail-type, and why."""
    if detail_type == "Object Created":
        return "copy", f"{detail_type}: the object was written"
    if detail_type == "Object Deleted":
        return "delete", f"{detail_type}: the object was deleted or expired"
    reason = next(
        (
            why
            for prefix, why in _IGNORED_EVENTBRIDGE_PREFIXES.items()
            if detail_type.startswith(prefix)
        ),
        "not an event the replicator acts on",
    )
    return "ignore", f"{detail_type}: {reason}"


def load(body: bytes | str) -> Mapping[str, Any]:
    """The body's outer JSON object, parsed no further; `errors.UnrecognisedEvent` (422)
    when it is not JSON or not an object."""
    return _load(body, "the body")


def is_sns_message(document: Mapping[str, Any]) -> bool:
    """Whether `parse` takes this decoded body as an SNS message. One that came over HTTP
    must pass `SnsVerifier.verify(document)` before `parse` reads the Message inside it."""
    return _shape(document, inside_sns=False) == "sns"


Shape = Literal["s3", "test_event", "eventbridge", "sns"]


def _shape(document: Mapping[str, Any], *, inside_sns: bool) -> Shape | None:
    """Which shape `document` has, by the fields that tell the shapes apart, in this order."""
    if "Records" in document:
        return "s3"
    if document.get("Event") == "s3:TestEvent":
        return "test_event"
    if "detail-type" in document:
        return "eventbridge"
    if "Type" in document and "TopicArn" in document and not inside_sns:
        return "sns"
    return None


def _parse_document(document: Mapping[str, Any], *, inside_sns: bool) -> Parsed:
    shape = _shape(document, inside_sns=inside_sns)
    if shape == "s3":
        return Parsed("records", _s3_records(document["Records"]), document=document)
    if shape == "test_event":
        return Parsed("test_event", document=document)
    if shape == "eventbridge":
        return Parsed("records", (_eventbridge_record(document),), document=document)
    if shape == "sns":
        return _sns_message(document)
    fields = ", ".join(sorted(str(name) for name in document)[:12]) or "none"
    where = "the SNS Message" if inside_sns else "the body"
    raise errors.UnrecognisedEvent(
        f"{where} is not an S3 event notification, S3 test event, SNS message or EventBridge "
        f"event (its fields: {fields})"
    )


def _sns_message(document: Mapping[str, Any]) -> Parsed:
    sns_type = document["Type"]
    if sns_type not in _SNS_TYPES:
        raise errors.UnrecognisedEvent(f"SNS message Type {sns_type!r} is not one SNS sends")
    envelope = SnsEnvelope(
        type=sns_type,
        topic_arn=_required_str(document, "TopicArn", "SNS message"),
        message_id=_required_str(document, "MessageId", "SNS message"),
        subscribe_url=None
        if sns_type == "Notification"
        else _required_str(document, "SubscribeURL", "SNS message"),
    )
    if sns_type != "Notification":
        return Parsed(_SNS_TYPES[sns_type], sns=envelope, document=document)
    message = _load(_required_str(document, "Message", "SNS message"), "the SNS Message")
    inner = _parse_document(message, inside_sns=True)
    return replace(inner, sns=envelope, document=document)


def _s3_records(entries: Any) -> tuple[EventRecord, ...]:
    if not isinstance(entries, list) or not entries:
        raise errors.UnrecognisedEvent("Records is not a non-empty list")
    return tuple(_s3_record(entry, f"Records[{index}]") for index, entry in enumerate(entries))


def _s3_record(entry: Any, where: str) -> EventRecord:
    entry = _object(entry, where)
    version = entry.get("eventVersion")
    if not isinstance(version, str) or not version.startswith("2."):
        raise errors.UnrecognisedEvent(f"{where}.eventVersion is {version!r}, not 2.x")
    source = entry.get("eventSource", "aws:s3")
    if source != "aws:s3":
        raise errors.UnrecognisedEvent(f"{where}.eventSource is {source!r}, not 'aws:s3'")
    event_name = _required_str(entry, "eventName", where)
    s3 = _object(entry.get("s3"), f"{where}.s3")
    bucket = _object(s3.get("bucket"), f"{where}.s3.bucket")
    obj = _object(s3.get("object"), f"{where}.s3.object")
    key_as_sent = _required_str(obj, "key", f"{where}.s3.object")
    try:
        key = unquote_plus(key_as_sent, errors="strict")
    except UnicodeDecodeError:
        raise errors.UnrecognisedEvent(
            f"{where}.s3.object.key {key_as_sent!r} does not decode to UTF-8"
        ) from None
    action, reason = classify_s3_event(event_name)
    return EventRecord(
        bucket=_required_str(bucket, "name", f"{where}.s3.bucket"),
        key=key,
        key_as_sent=key_as_sent,
        action=action,
        event_name=event_name,
        reason=reason,
        origin="s3",
        sequencer=_optional_str(obj, "sequencer", f"{where}.s3.object"),
        version_id=_optional_str(obj, "versionId", f"{where}.s3.object"),
        etag=_optional_str(obj, "eTag", f"{where}.s3.object"),
        size=_optional_size(obj, f"{where}.s3.object"),
        event_time=_optional_time(entry, "eventTime", where),
        region=_optional_str(entry, "awsRegion", where),
    )


def _eventbridge_record(document: Mapping[str, Any]) -> EventRecord:
    source = document.get("source")
    if source != "aws.s3":
        raise errors.UnrecognisedEvent(f"EventBridge event source is {source!r}, not 'aws.s3'")
    detail_type = _required_str(document, "detail-type", "EventBridge event")
    detail = _object(document.get("detail"), "detail")
    bucket = _object(detail.get("bucket"), "detail.bucket")
    obj = _object(detail.get("object"), "detail.object")
    key_as_sent = _required_str(obj, "key", "detail.object")
    try:
        key = unquote_plus(key_as_sent, errors="strict")
    except UnicodeDecodeError:
        key = key_as_sent  # not percent-encoded UTF-8, so it can only be the key as it is
    # AWS documents `etag`; moto sends `eTag`, as S3 notifications spell it.
    etag_field = "etag" if "etag" in obj else "eTag"
    action, reason = classify_eventbridge_event(detail_type)
    return EventRecord(
        bucket=_required_str(bucket, "name", "detail.bucket"),
        key=key,
        key_as_sent=key_as_sent,
        action=action,
        event_name=detail_type,
        reason=reason,
        origin="eventbridge",
        sequencer=_optional_str(obj, "sequencer", "detail.object"),
        version_id=_optional_str(obj, "version-id", "detail.object"),
        etag=_optional_str(obj, etag_field, "detail.object"),
        size=_optional_size(obj, "detail.object"),
        event_time=_optional_time(document, "time", "EventBridge event"),
        region=_optional_str(document, "region", "EventBridge event"),
    )


def _load(text: bytes | str, what: str) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.UnrecognisedEvent(f"{what} is not JSON: {exc}") from None
    return _object(document, what)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise errors.UnrecognisedEvent(f"{where} is {_describe(value)}, not a JSON object")
    return value


def _required_str(mapping: Mapping[str, Any], name: str, where: str) -> str:
    value = mapping.get(name)
    if not isinstance(value, str) or not value:
        raise errors.UnrecognisedEvent(f"{where}.{name} is {_describe(value)}, not a string")
    return value


def _optional_str(mapping: Mapping[str, Any], name: str, where: str) -> str | None:
    value = mapping.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.UnrecognisedEvent(f"{where}.{name} is {_describe(value)}, not a string")
    return value


def _optional_size(mapping: Mapping[str, Any], where: str) -> int | None:
    value = mapping.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.UnrecognisedEvent(f"{where}.size is {_describe(value)}, not a byte count")
    return value


def _optional_time(mapping: Mapping[str, Any], name: str, where: str) -> datetime | None:
    text = _optional_str(mapping, name, where)
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise errors.UnrecognisedEvent(f"{where}.{name} {text!r} is not an ISO 8601 time") from None


def _describe(value: Any) -> str:
    if value is None:
        return "missing or null"
    if isinstance(value, str):
        return "an empty string" if not value else f"{value[:80]!r}"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    return json.dumps(value)
