"""AWS's own event plumbing, set up on moto with boto3: an SQS queue with a dead-letter queue,
and a bucket's notifications sent to it directly, through SNS (raw or enveloped) or through
EventBridge. Used by `make dev` and the tests; the README shows the same with the AWS CLI
for real accounts (where the queue also needs a policy letting S3 or SNS send to it)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

OBJECT_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str
    dead_letter_url: str


def queue_with_dead_letters(
    sqs: Any, name: str, *, visibility_timeout: int = 30, max_receives: int = 5
) -> Queue:
    """A queue whose messages move to `<name>-dlq` after `max_receives` receives."""
    dead = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dead_arn = _arn(sqs, dead)
    redrive = {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(max_receives)}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return Queue(url, _arn(sqs, url), dead)


def notify_queue(s3: Any, bucket: str, queue: Queue) -> None:
    """S3 -> SQS: the bucket's object events straight to the queue."""
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue.arn, "Events": OBJECT_EVENTS}]
        },
    )


def notify_topic(s3: Any, sns: Any, bucket: str, queue: Queue, *, raw: bool) -> str:
    """S3 -> SNS -> SQS, with raw message delivery or SNS's envelope; returns the topic."""
    topic = sns.create_topic(Name=f"{bucket}-events-{uuid.uuid4().hex[:6]}")["TopicArn"]
    attributes = {"RawMessageDelivery": "true"} if raw else {}
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue.arn, Attributes=attributes)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic, "Events": OBJECT_EVENTS}]
        },
    )
    return topic


def notify_eventbridge(s3: Any, events: Any, bucket: str, queue: Queue) -> str:
    """S3 -> EventBridge -> SQS: a rule on the default bus for the bucket's objects."""
    rule = f"{bucket}-objects"
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": [bucket]}},
    }
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": queue.arn}])
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    return rule


def _arn(sqs: Any, url: str) -> str:
    answer = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(answer["Attributes"]["QueueArn"])
