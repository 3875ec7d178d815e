"""Bodies shaped as AWS documents them (S3 event message structure, SNS JSON formats,
S3 EventBridge events), built fresh for each test so tests can change them freely."""

from __future__ import annotations

import json
from typing import Any

from app import errors
from app.events.converge import Converger, EventOutcome
from app.events.parse import EventRecord


def converge(events: Converger, record: EventRecord) -> EventOutcome:
    """One record through `Converger.converge_all`, as the worker and the intake hand it
    over; a TransientError answered in place of its outcome is raised."""
    [outcome] = events.converge_all([record])
    if isinstance(outcome, errors.TransientError):
        raise outcome
    return outcome


def s3_record(
    key: str = "photos/a+b%2Bc.jpg",
    event_name: str = "ObjectCreated:Put",
    bucket: str = "source-bucket",
    **object_fields: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": key,
        "size": 1024,
        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
        "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
        "sequencer": "0055AED6DCD90281E5",
    }
    obj.update(object_fields)
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-west-2",
        "eventTime": "1970-01-01T00:00:00.000Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "testConfigRule",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def s3_notification(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records) or [s3_record()]}


def s3_test_event() -> dict[str, Any]:
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2014-10-13T15:57:02.089Z",
        "Bucket": "source-bucket",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }


def sns_notification(message: dict[str, Any] | str, **fields: Any) -> dict[str, Any]:
    body = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Subject": "Amazon S3 Notification",
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEw6JRN...",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96",
    }
    body.update(fields)
    return body


def sns_confirmation(message_type: str = "SubscriptionConfirmation") -> dict[str, Any]:
    return {
        "Type": message_type,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Message": (
            "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic."
            "\nTo confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
        "Timestamp": "2012-04-26T20:45:04.751Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQ=",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
    }


def eventbridge_event(
    detail_type: str = "Object Created", key: str = "example-key", **object_fields: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": key,
        "size": 5,
        "etag": "b1946ac92492d2347c6235b4d2611184",
        "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
        "sequencer": "00617F08299329D189",
    }
    obj.update(object_fields)
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2021-11-12T00:00:00Z",
        "region": "ca-central-1",
        "resources": ["arn:aws:s3:::example-bucket"],
        "detail": {
            "version": "0",
            "bucket": {"name": "example-bucket"},
            "object": obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }
