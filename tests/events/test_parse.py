from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app import errors
from app.events.parse import (
    EventRecord,
    Parsed,
    SnsEnvelope,
    classify_eventbridge_event,
    classify_s3_event,
    is_sns_message,
    parse,
)
from tests.events.samples import (
    eventbridge_event,
    s3_notification,
    s3_record,
    s3_test_event,
    sns_confirmation,
    sns_notification,
)

TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"


def only_record(parsed: Parsed) -> EventRecord:
    assert parsed.kind == "records"
    (record,) = parsed.records
    return record


# S3 event notifications


def test_s3_notification_record_fields() -> None:
    record = only_record(parse(json.dumps(s3_notification())))
    assert record == EventRecord(
        bucket="source-bucket",
        key="photos/a b+c.jpg",
        key_as_sent="photos/a+b%2Bc.jpg",
        action="copy",
        event_name="ObjectCreated:Put",
        reason="ObjectCreated:Put: the object was written",
        origin="s3",
        sequencer="0055AED6DCD90281E5",
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko",
        etag="d41d8cd98f00b204e9800998ecf8427e",
        size=1024,
        event_time=datetime(1970, 1, 1, tzinfo=UTC),
        region="us-west-2",
    )
    assert record.key_candidates == ("photos/a b+c.jpg",)


@pytest.mark.parametrize(
    ("sent", "decoded"),
    [
        ("a+b%2Bc%2Fd", "a b+c/d"),
        ("a+b%2Bc/d", "a b+c/d"),  # "/" may or may not be encoded
        ("caf%C3%A9/%E6%97%A5%E6%9C%AC+%F0%9F%98%80.txt", "café/日本 😀.txt"),
        ("100%25+sure%3F%23.txt", "100% sure?#.txt"),
        ("plain/key.txt", "plain/key.txt"),
    ],
)
def test_s3_keys_are_form_decoded(sent: str, decoded: str) -> None:
    record = only_record(parse(s3_notification(s3_record(key=sent))))
    assert (record.key, record.key_as_sent) == (decoded, sent)


def test_s3_key_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(errors.UnrecognisedEvent, match=r"Records\[0\].s3.object.key .*UTF-8"):
        parse(s3_notification(s3_record(key="bad%C3")))


def test_deletion_without_size_or_etag() -> None:
    record = s3_record(event_name="ObjectRemoved:Delete")
    for name in ("size", "eTag", "versionId"):
        del record["s3"]["object"][name]
    parsed = only_record(parse(s3_notification(record)))
    assert (parsed.action, parsed.size, parsed.etag, parsed.version_id) == (
        "delete",
        None,
        None,
        None,
    )
    assert parsed.sequencer == "0055AED6DCD90281E5"


def test_several_records_and_unknown_fields_are_kept_in_order() -> None:
    first = s3_record(key="one", glacierEventData={"restoreEventData": {}})
    first["s3"]["object"]["newField"] = {"x": 1}
    first["futureField"] = True
    second = s3_record(key="two", event_name="ObjectRemoved:DeleteMarkerCreated")
    records = parse(s3_notification(first, second)).records
    assert [(r.key, r.action) for r in records] == [("one", "copy"), ("two", "delete")]


def test_bytes_str_and_mapping_bodies_agree() -> None:
    body = s3_notification()
    assert parse(body) == parse(json.dumps(body)) == parse(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["s3"]["bucket"].pop("name"), r"Records\[0\].s3.bucket.name is missing"),
        (lambda r: r["s3"]["object"].pop("key"), r"Records\[0\].s3.object.key is missing"),
        (lambda r: r["s3"]["object"].update(key=""), r"s3.object.key is an empty string"),
        (lambda r: r["s3"].pop("object"), r"Records\[0\].s3.object is missing"),
        (lambda r: r.pop("s3"), r"Records\[0\].s3 is missing or null, not a JSON object"),
        (lambda r: r.pop("eventName"), r"Records\[0\].eventName is missing"),
        (lambda r: r.update(eventVersion="3.0"), r"eventVersion is '3.0', not 2.x"),
        (lambda r: r.pop("eventVersion"), r"eventVersion is None, not 2.x"),
        (lambda r: r.update(eventSource="aws:sqs"), "eventSource is 'aws:sqs'"),
        (lambda r: r["s3"]["object"].update(size="12"), r"s3.object.size is '12'"),
        (lambda r: r["s3"]["object"].update(size=-1), r"s3.object.size is -1, not a byte count"),
        (lambda r: r["s3"]["object"].update(eTag=5), r"s3.object.eTag is 5, not a string"),
        (lambda r: r.update(eventTime="yesterday"), "eventTime 'yesterday' is not an ISO"),
    ],
)
def test_broken_records_are_unrecognised(change: Any, message: str) -> None:
    record = s3_record()
    change(record)
    with pytest.raises(errors.UnrecognisedEvent, match=message):
        parse(s3_notification(record))


def test_records_that_are_not_a_list_of_objects() -> None:
    with pytest.raises(errors.UnrecognisedEvent, match="Records is not a non-empty list"):
        parse({"Records": []})
    with pytest.raises(errors.UnrecognisedEvent, match="Records is not a non-empty list"):
        parse({"Records": {"a": 1}})
    with pytest.raises(errors.UnrecognisedEvent, match=r"Records\[1\] is 'x', not a JSON obj"):
        parse({"Records": [s3_record(), "x"]})


def test_unrecognised_event_is_an_invalid_request() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        parse("{}")
    assert caught.value.status_code == 422
    assert isinstance(caught.value, errors.UnrecognisedEvent)


# Event names


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("ObjectCreated:Put", "copy"),
        ("ObjectCreated:Post", "copy"),
        ("ObjectCreated:Copy", "copy"),
        ("ObjectCreated:CompleteMultipartUpload", "copy"),
        ("s3:ObjectCreated:Put", "copy"),
        ("ObjectRemoved:Delete", "delete"),
        ("ObjectRemoved:DeleteMarkerCreated", "delete"),
        ("LifecycleExpiration:Delete", "delete"),
        ("LifecycleExpiration:DeleteMarkerCreated", "delete"),
        ("ObjectRestore:Post", "ignore"),
        ("ObjectRestore:Completed", "ignore"),
        ("ObjectRestore:Delete", "ignore"),
        ("ObjectTagging:Put", "ignore"),
        ("ObjectTagging:Delete", "ignore"),
        ("ObjectAcl:Put", "ignore"),
        ("Replication:OperationFailedReplication", "ignore"),
        ("LifecycleTransition", "ignore"),
        ("IntelligentTiering", "ignore"),
        ("ReducedRedundancyLostObject", "ignore"),
        ("SomethingNew:Happened", "ignore"),
    ],
)
def test_s3_event_names(name: str, action: str) -> None:
    assert classify_s3_event(name)[0] == action
    assert only_record(parse(s3_notification(s3_record(event_name=name)))).action == action


def test_ignored_events_say_why() -> None:
    assert classify_s3_event("ObjectTagging:Put") == (
        "ignore",
        "ObjectTagging:Put: tags are not replicated",
    )
    assert classify_s3_event("SomethingNew:Happened")[1] == (
        "SomethingNew:Happened: not an event the replicator acts on"
    )
    assert classify_eventbridge_event("Object Tags Added") == (
        "ignore",
        "Object Tags Added: tags are not replicated",
    )


@pytest.mark.parametrize(
    ("detail_type", "action"),
    [
        ("Object Created", "copy"),
        ("Object Deleted", "delete"),
        ("Object Restore Initiated", "ignore"),
        ("Object Restore Completed", "ignore"),
        ("Object Restore Expired", "ignore"),
        ("Object Tags Added", "ignore"),
        ("Object Tags Deleted", "ignore"),
        ("Object ACL Updated", "ignore"),
        ("Object Storage Class Changed", "ignore"),
        ("Object Access Tier Changed", "ignore"),
    ],
)
def test_eventbridge_detail_types(detail_type: str, action: str) -> None:
    assert only_record(parse(eventbridge_event(detail_type))).action == action


# S3 test event


def test_s3_test_event_is_acknowledged() -> None:
    parsed = parse(json.dumps(s3_test_event()))
    assert (parsed.kind, parsed.records, parsed.sns) == ("test_event", (), None)


# SNS


def test_sns_notification_carrying_s3_records() -> None:
    inner = s3_notification(s3_record(key="a+b%2Bc%2Fd"))
    parsed = parse(json.dumps(sns_notification(inner)))
    assert parsed.sns == SnsEnvelope("Notification", TOPIC, "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324")
    assert only_record(parsed).key == "a b+c/d"
    assert parsed.document["Type"] == "Notification"  # the envelope, for SnsVerifier


def test_sns_notification_carrying_the_test_event() -> None:
    parsed = parse(sns_notification(s3_test_event()))
    assert parsed.kind == "test_event"
    assert parsed.sns is not None
    assert parsed.sns.topic_arn == TOPIC


def test_sns_notification_carrying_an_eventbridge_event() -> None:
    parsed = parse(sns_notification(eventbridge_event()))
    assert only_record(parsed).origin == "eventbridge"
    assert parsed.sns is not None


@pytest.mark.parametrize(
    ("message_type", "kind"),
    [
        ("SubscriptionConfirmation", "subscription_confirmation"),
        ("UnsubscribeConfirmation", "unsubscribe_confirmation"),
    ],
)
def test_sns_confirmations(message_type: str, kind: str) -> None:
    body = sns_confirmation(message_type)
    parsed = parse(json.dumps(body))
    assert parsed.kind == kind
    assert parsed.records == ()
    assert parsed.sns == SnsEnvelope(
        message_type, TOPIC, "165545c9-2a5c-472c-8df2-7ff2be2b3b1b", body["SubscribeURL"]
    )
    assert parsed.document == body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sns_notification("not json"), "the SNS Message is not JSON"),
        (sns_notification({"hello": 1}), "the SNS Message is not an S3 event .*fields: hello"),
        (sns_notification(sns_notification(s3_notification())), "the SNS Message is not an S3"),
        (sns_notification(s3_notification(), Type="Bogus"), "Type 'Bogus' is not one SNS sends"),
        (sns_notification(s3_notification(), MessageId=None), "MessageId is missing"),
        ({**sns_confirmation(), "SubscribeURL": None}, "SNS message.SubscribeURL is missing"),
    ],
)
def test_broken_sns_messages(body: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.UnrecognisedEvent, match=message):
        parse(body)


# EventBridge


def test_eventbridge_record_fields() -> None:
    record = only_record(parse(json.dumps(eventbridge_event(key="dir/my+file%2B1 x"))))
    assert record == EventRecord(
        bucket="example-bucket",
        key="dir/my file+1 x",
        key_as_sent="dir/my+file%2B1 x",
        action="copy",
        event_name="Object Created",
        reason="Object Created: the object was written",
        origin="eventbridge",
        sequencer="00617F08299329D189",
        version_id="IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        etag="b1946ac92492d2347c6235b4d2611184",
        size=5,
        event_time=datetime(2021, 11, 12, tzinfo=UTC),
        region="ca-central-1",
    )
    assert record.key_candidates == ("dir/my file+1 x", "dir/my+file%2B1 x")


def test_eventbridge_plain_key_has_one_candidate() -> None:
    record = only_record(parse(eventbridge_event(key="dir/file.txt")))
    assert record.key_candidates == ("dir/file.txt",)


def test_eventbridge_key_that_cannot_be_decoded_is_taken_as_sent() -> None:
    record = only_record(parse(eventbridge_event(key="50%C3 off")))
    assert record.key == record.key_as_sent == "50%C3 off"


def test_eventbridge_etag_spelled_as_moto_does() -> None:
    event = eventbridge_event()
    event["detail"]["object"]["eTag"] = event["detail"]["object"].pop("etag")
    assert only_record(parse(event)).etag == "b1946ac92492d2347c6235b4d2611184"


def test_eventbridge_deletion() -> None:
    event = eventbridge_event("Object Deleted")
    for name in ("size", "etag"):
        del event["detail"]["object"][name]
    event["detail"]["deletion-type"] = "Delete Marker Created"
    record = only_record(parse(event))
    assert (record.action, record.size, record.etag) == ("delete", None, None)


def test_eventbridge_from_another_source() -> None:
    event = eventbridge_event()
    event["source"] = "aws.ec2"
    with pytest.raises(errors.UnrecognisedEvent, match="source is 'aws.ec2', not 'aws.s3'"):
        parse(event)


def test_eventbridge_without_key() -> None:
    event = eventbridge_event()
    del event["detail"]["object"]["key"]
    with pytest.raises(errors.UnrecognisedEvent, match="detail.object.key is missing"):
        parse(event)


# Bodies that are nothing AWS sends


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is not JSON"),
        (b"\xff\xfe{", "the body is not JSON"),
        ("{not json", "the body is not JSON"),
        ("[1, 2]", "the body is a JSON array, not a JSON object"),
        ('"text"', "the body is 'text', not a JSON object"),
        ("null", "the body is missing or null, not a JSON object"),
        ('{"foo": 1, "bar": 2}', r"the body is not an S3 event .*\(its fields: bar, foo\)"),
        ("{}", r"its fields: none"),
        ('{"Event": "s3:Other"}', r"its fields: Event"),
    ],
)
def test_unrecognised_bodies(body: bytes | str, message: str) -> None:
    with pytest.raises(errors.UnrecognisedEvent, match=message):
        parse(body)


@pytest.mark.parametrize(
    ("document", "sns"),
    [
        (sns_notification(s3_notification()), True),
        (sns_notification("not JSON inside"), True),  # the Message is not read
        (sns_confirmation("UnsubscribeConfirmation"), True),
        ({**s3_notification(), "Type": "Notification", "TopicArn": "t"}, False),
        (eventbridge_event(), False),
        (s3_test_event(), False),
    ],
)
def test_is_sns_message_says_what_parse_takes_as_sns(document: dict[str, Any], sns: bool) -> None:
    assert is_sns_message(document) is sns
