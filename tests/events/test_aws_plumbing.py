"""The parser against real AWS plumbing: moto's server (a process on loopback, reached by
boto3) configured with S3 -> SQS, S3 -> SNS -> SQS (raw and enveloped) and
S3 -> EventBridge -> SQS, fed puts and deletes of awkward keys. Every body is what the
queue really held.

The assertions state what AWS does. Where moto 5.2.5 differs (measured), an `if MOTO:`
branch states exactly what moto does instead, so a moto upgrade that changes it fails here
and the branch can go:
- S3 records carry no sequencer and, in versioned buckets, no versionId;
- `/` in S3 record keys is encoded as %2F (AWS leaves it; both decode the same);
- a multipart upload sends ObjectCreated:Put and ObjectCreated:CompleteMultipartUpload;
- in a versioned bucket, deletes send nothing (neither of a version nor a delete marker);
- EventBridge keys arrive unencoded, the ETag is spelled `eTag`, and every put also sends
  "Object Tags Added".
SQS standard queues do not keep order, so records are compared as sorted lists. moto delivers
before the S3 call returns, so the queues are read without long polling there.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from app.dev import emulators
from app.events.parse import EventRecord, Parsed, parse
from app.events.sequencer import is_newer
from tests.conftest import client_for

MOTO = True  # these tests run against moto's server; see the module docstring

KEYS = [
    "dir/a b+c.txt",
    "caf\u00e9/\u65e5\u672c \U0001f600.txt",
    "100% sure?#&=;.txt",
    "a//double/slash/",
    "plus+plus",
    "~!*'()$@,:[]",
]
CREATED_AND_REMOVED = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


@dataclass
class Aws:
    s3: Any
    sqs: Any
    sns: Any
    events: Any
    bucket: str

    def queue(self, **attributes: str) -> tuple[str, str]:
        url = self.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return url, arn["Attributes"]["QueueArn"]

    def received(self, queue_url: str) -> list[Parsed]:
        """Parse every message the queue holds, deleting it, until it is empty."""
        parsed = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0 if MOTO else 5
            )
            messages = answer.get("Messages", [])
            if not messages:
                return parsed
            for message in messages:
                parsed.append(parse(message["Body"]))
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def put_all(self) -> dict[str, dict[str, Any]]:
        """Put one object per awkward key; their HeadObject answers by key."""
        heads = {}
        for key in KEYS:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=key.encode() * 3)
            heads[key] = self.s3.head_object(Bucket=self.bucket, Key=key)
        return heads

    def delete_all(self) -> None:
        for key in KEYS:
            self.s3.delete_object(Bucket=self.bucket, Key=key)


@pytest.fixture
def aws(moto_server: emulators.Emulator) -> Aws:
    clients = {name: client_for(name, moto_server.url) for name in ("s3", "sqs", "sns", "events")}
    bucket = f"events-{uuid.uuid4().hex[:12]}"
    clients["s3"].create_bucket(Bucket=bucket)
    return Aws(bucket=bucket, **clients)


def records_of(parsed: list[Parsed]) -> list[EventRecord]:
    assert all(p.kind == "records" for p in parsed), [p.kind for p in parsed]
    return [record for p in parsed for record in p.records]


def summary(records: list[EventRecord]) -> list[tuple[str, str, str]]:
    return sorted((r.bucket, r.key, r.action) for r in records)


def expected(bucket: str, *actions: str) -> list[tuple[str, str, str]]:
    return sorted((bucket, key, action) for key in KEYS for action in actions)


def check_s3_records(aws: Aws, records: list[EventRecord], heads: dict[str, Any]) -> None:
    """Bucket, decoded key and action for every put then delete of KEYS, plus what each
    record says about the object."""
    assert summary(records) == expected(aws.bucket, "copy", "delete")
    for record in records:
        assert record.origin == "s3"
        assert " " not in record.key_as_sent  # form-encoded: spaces are "+"
        if record.action == "copy":
            assert record.event_name == "ObjectCreated:Put"
            assert record.etag == heads[record.key]["ETag"].strip('"')
            assert record.size == heads[record.key]["ContentLength"]
        else:
            assert record.event_name == "ObjectRemoved:Delete"
    if MOTO:
        assert all(r.sequencer is None for r in records)
        assert any("%2F" in r.key_as_sent for r in records)
    else:
        for key in KEYS:
            put, delete = sorted(
                (r for r in records if r.key == key), key=lambda r: r.action != "copy"
            )
            assert put.sequencer
            assert delete.sequencer
            assert is_newer(delete.sequencer, put.sequencer)


def test_s3_to_sqs(aws: Aws) -> None:
    queue_url, queue_arn = aws.queue()
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": CREATED_AND_REMOVED}]
        },
    )
    assert [p.kind for p in aws.received(queue_url)] == ["test_event"]

    heads = aws.put_all()
    aws.delete_all()

    parsed = aws.received(queue_url)
    assert all(p.sns is None for p in parsed)
    check_s3_records(aws, records_of(parsed), heads)


def test_s3_to_sns_to_sqs_enveloped_and_raw(aws: Aws) -> None:
    topic_arn = aws.sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    enveloped_url, enveloped_arn = aws.queue()
    raw_url, raw_arn = aws.queue()
    aws.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=enveloped_arn)
    aws.sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=raw_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic_arn, "Events": CREATED_AND_REMOVED}]
        },
    )
    enveloped_test, raw_test = aws.received(enveloped_url), aws.received(raw_url)
    assert [(p.kind, p.sns and p.sns.topic_arn) for p in enveloped_test] == [
        ("test_event", topic_arn)
    ]
    assert [(p.kind, p.sns) for p in raw_test] == [("test_event", None)]

    heads = aws.put_all()
    aws.delete_all()

    enveloped, raw = aws.received(enveloped_url), aws.received(raw_url)
    for parsed in enveloped:
        assert parsed.sns is not None
        assert (parsed.sns.type, parsed.sns.topic_arn) == ("Notification", topic_arn)
        assert parsed.document["Type"] == "Notification"
    assert len({p.sns.message_id for p in enveloped if p.sns}) == len(enveloped)
    assert all(p.sns is None and "Records" in p.document for p in raw)
    check_s3_records(aws, records_of(enveloped), heads)
    check_s3_records(aws, records_of(raw), heads)
    assert sorted(map(repr, records_of(enveloped))) == sorted(map(repr, records_of(raw)))


def test_s3_to_eventbridge_to_sqs(aws: Aws) -> None:
    queue_url, queue_arn = aws.queue()
    rule = f"r-{uuid.uuid4().hex[:12]}"
    aws.events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {"source": ["aws.s3"], "detail": {"bucket": {"name": [aws.bucket]}}}
        ),
    )
    aws.events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue_arn}])
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )

    heads = aws.put_all()
    aws.delete_all()

    records = records_of(aws.received(queue_url))
    assert all(r.origin == "eventbridge" and r.bucket == aws.bucket for r in records)
    if MOTO:
        tags = [r for r in records if r.event_name == "Object Tags Added"]
        assert sorted(r.key_as_sent for r in tags) == sorted(KEYS)
        assert all(r.action == "ignore" and "tags" in r.reason for r in tags)
        records = [r for r in records if r not in tags]
    # Whether AWS encodes EventBridge keys is undocumented: the key must be a candidate.
    found = sorted(
        (next(k for k in r.key_candidates if k in KEYS), r.event_name, r.action) for r in records
    )
    assert found == sorted(
        [(key, "Object Created", "copy") for key in KEYS]
        + [(key, "Object Deleted", "delete") for key in KEYS]
    )
    for record in records:
        if MOTO:
            assert record.key_as_sent in KEYS  # sent unencoded
        if record.action == "copy":
            key = record.key_as_sent if MOTO else record.key
            assert record.etag == heads[key]["ETag"].strip('"')
            assert record.size == heads[key]["ContentLength"]


def test_multipart_upload_and_copy(aws: Aws) -> None:
    queue_url, queue_arn = aws.queue()
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    aws.received(queue_url)  # the test event
    key = "big files/part+1.bin"
    upload = aws.s3.create_multipart_upload(Bucket=aws.bucket, Key=key)
    parts = [
        aws.s3.upload_part(
            Bucket=aws.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=bytes([number]) * (5 * 1024 * 1024 if number == 1 else 10),
        )
        for number in (1, 2)
    ]
    aws.s3.complete_multipart_upload(
        Bucket=aws.bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": p["ETag"]} for n, p in enumerate(parts, 1)]
        },
    )
    aws.s3.copy_object(
        Bucket=aws.bucket, Key="copy of/it", CopySource={"Bucket": aws.bucket, "Key": key}
    )

    records = records_of(aws.received(queue_url))
    multipart_names = ["ObjectCreated:CompleteMultipartUpload"]
    if MOTO:
        multipart_names = ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Put"]
    assert sorted(r.event_name for r in records if r.key == key) == multipart_names
    assert [r.event_name for r in records if r.key == "copy of/it"] == ["ObjectCreated:Copy"]
    assert all(r.action == "copy" for r in records)
    etag = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"].strip('"')
    assert etag.endswith("-2")
    assert {r.etag for r in records if r.key == key} == {etag}


def test_versioned_bucket_deletes(aws: Aws) -> None:
    aws.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    queue_url, queue_arn = aws.queue()
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": CREATED_AND_REMOVED}]
        },
    )
    aws.received(queue_url)  # the test event
    key = "versioned/a b+c"
    first = aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"one")["VersionId"]
    second = aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=b"two")["VersionId"]
    aws.s3.delete_object(Bucket=aws.bucket, Key=key, VersionId=first)  # a version goes
    marker = aws.s3.delete_object(Bucket=aws.bucket, Key=key)["VersionId"]  # a delete marker

    records = records_of(aws.received(queue_url))
    assert all((r.bucket, r.key) == (aws.bucket, key) for r in records)
    got = sorted((r.event_name, r.action, r.version_id) for r in records)
    if MOTO:  # no version IDs, and nothing for either delete
        assert got == [
            ("ObjectCreated:Put", "copy", None),
            ("ObjectCreated:Put", "copy", None),
        ]
    else:
        assert got == [
            ("ObjectCreated:Put", "copy", first),
            ("ObjectCreated:Put", "copy", second),
            ("ObjectRemoved:Delete", "delete", first),
            ("ObjectRemoved:DeleteMarkerCreated", "delete", marker),
        ]
