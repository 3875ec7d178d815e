"""Amazon SQS, through boto3: the queue the worker drains and the event intake feeds.

Like the storage adapters, it speaks the SDK inside and plain values outside, translates
errors once (`translate`), and does not retry: boto3's retries are off and the caller's
`RetryPolicy` decides.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bce
import botocore.session

from app import errors, names, retry
from app.identity.aws import AwsIdentity, credential_error, new_session

LONG_POLL_SECONDS = 20  # SQS's maximum
MAX_MESSAGES = 10  # per receive, SQS's maximum
MAX_VISIBILITY = 12 * 60 * 60  # SQS's maximum visibility timeout, in seconds
# What an endpoint without message move tasks answers StartMessageMoveTask with (an action
# it does not know, in the query or the JSON protocol).
_NO_MOVE_TASKS = {"InvalidAction", "UnknownOperationException", "UnsupportedOperation"}


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: float | None  # seconds since the epoch, when SQS says


@dataclass(frozen=True)
class Depth:
    visible: int  # waiting to be received
    in_flight: int  # received, neither deleted nor visible again yet


@dataclass(frozen=True)
class QueueAttributes:
    visibility_timeout: int  # seconds a received message stays invisible
    redrive_policy: dict[str, Any] | None  # the dead-letter queue and maxReceiveCount


def build_queue(
    *,
    url: str,
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    identity: AwsIdentity | None = None,
    connect_timeout: float,
) -> SqsQueue:
    """The queue at `url`, with `identity`'s credentials (shared with the other AWS clients),
    else the keys given, else boto3's chain; talks to no cloud. The read timeout leaves room
    for long polls."""
    config = botocore.config.Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=LONG_POLL_SECONDS + 10,
        retries={"total_max_attempts": 1, "mode": "standard"},
        user_agent_extra=names.USER_AGENT,
    )
    identity = identity or AwsIdentity(
        region=region, access_key_id=access_key_id, secret_access_key=secret_access_key
    )
    core = new_session()
    identity.install(core)
    session = boto3.session.Session(botocore_session=core)
    return SqsQueue(session.client("sqs", endpoint_url=endpoint_url, config=config), url)


def translate(exc: Exception, what: str) -> errors.ReplicatorError:
    if (refused := credential_error(exc)) is not None:
        return refused
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = error.get("Message") or code
        if code.endswith("NonExistentQueue") or code == "QueueDoesNotExist":
            return errors.ObjectNotFound(f"the queue {what} does not exist")
        if status == 403 or "AccessDenied" in code or code.endswith("InvalidClientTokenId"):
            return errors.AccessDenied(f"SQS denied access to {what}: {message}")
        if cause := retry.transient_cause(status, code):
            return errors.TransientError(f"SQS answered {status or code} for {what}", cause=cause)
        return errors.ReplicatorError(f"SQS error for {what}: {code} {message}")
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
        return errors.TransientError(f"SQS unreachable for {what}: {exc}", cause="connection")
    if isinstance(exc, bce.NoCredentialsError):
        return errors.AccessDenied(
            "no AWS credentials found (set AWS_ACCESS_KEY_ID, or run with a role)"
        )
    return errors.ReplicatorError(f"unexpected SQS failure for {what}: {exc!r}")


class SqsQueue:
    def __init__(self, client: Any, url: str, *, arn: str | None = None) -> None:
        self._client = client
        self.url = url
        self._arn = arn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise translate(exc, self.url) from exc

    def probe(self) -> None:
        """Raise StartupError unless the queue answers with these credentials."""
        try:
            with self._translated():
                self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        except errors.ReplicatorError as exc:
            raise errors.StartupError(f"SQS_QUEUE_URL: {exc.detail}") from exc

    def attributes(self) -> QueueAttributes:
        with self._translated():
            answer = self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["VisibilityTimeout", "RedrivePolicy"]
            )
        found = answer.get("Attributes", {})
        policy = found.get("RedrivePolicy")
        return QueueAttributes(
            visibility_timeout=int(found.get("VisibilityTimeout", 30)),
            redrive_policy=json.loads(policy) if policy else None,
        )

    def depth(self) -> Depth:
        """The messages waiting and in flight, in one GetQueueAttributes (SQS's approximate
        counts, about a minute behind at most)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        with self._translated():
            answer = self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)
        found = answer.get("Attributes", {})
        return Depth(int(found.get(names[0], 0)), int(found.get(names[1], 0)))

    def dead_letter_queue(self, attributes: QueueAttributes | None = None) -> SqsQueue | None:
        """The dead-letter queue the redrive policy names (None without one), on the same
        client: its URL is asked of SQS by the name and account in the policy's ARN."""
        policy = (attributes or self.attributes()).redrive_policy or {}
        arn = str(policy.get("deadLetterTargetArn", ""))
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            return None
        with self._translated():
            answer = self._client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
        return SqsQueue(self._client, str(answer["QueueUrl"]), arn=arn)

    def arn(self) -> str:
        if self._arn is None:
            with self._translated():
                answer = self._client.get_queue_attributes(
                    QueueUrl=self.url, AttributeNames=["QueueArn"]
                )
            self._arn = str(answer["Attributes"]["QueueArn"])
        return self._arn

    def receive(
        self,
        max_messages: int = MAX_MESSAGES,
        wait: int = LONG_POLL_SECONDS,
        visibility: int | None = None,
    ) -> list[Message]:
        """Up to `max_messages`, waiting up to `wait` seconds for one; `visibility`: how long
        they stay invisible (None: the queue's visibility timeout)."""
        extra = {} if visibility is None else {"VisibilityTimeout": visibility}
        with self._translated():
            answer = self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                **extra,
            )
        return [_message(item) for item in answer.get("Messages", [])]

    def start_move_task(self, destination_arn: str) -> str | None:
        """Ask SQS to move every message of this (dead-letter) queue to `destination_arn`
        (StartMessageMoveTask); returns the task's handle, or None when the endpoint does not
        offer message move tasks (an emulator, an older endpoint)."""
        try:
            with self._translated():
                answer = self._client.start_message_move_task(
                    SourceArn=self.arn(), DestinationArn=destination_arn
                )
        except errors.ReplicatorError as exc:
            if isinstance(exc.__cause__, bce.ClientError):
                code = str(exc.__cause__.response.get("Error", {}).get("Code", ""))
                if code in _NO_MOVE_TASKS:
                    return None
            raise
        return str(answer.get("TaskHandle", ""))

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        """Delete `messages` (10 a request); returns those SQS did not delete."""
        failed: list[Message] = []
        for start in range(0, len(messages), MAX_MESSAGES):
            batch = {str(n): m for n, m in enumerate(messages[start : start + MAX_MESSAGES])}
            entries = [{"Id": n, "ReceiptHandle": m.receipt} for n, m in batch.items()]
            with self._translated():
                answer = self._client.delete_message_batch(QueueUrl=self.url, Entries=entries)
            failed += [batch[entry["Id"]] for entry in answer.get("Failed", [])]
        return failed

    def hide(self, message: Message, seconds: int) -> None:
        """Keep `message` invisible for `seconds` from now (0: visible again at once)."""
        with self._translated():
            self._client.change_message_visibility(
                QueueUrl=self.url,
                ReceiptHandle=message.receipt,
                VisibilityTimeout=max(0, min(seconds, MAX_VISIBILITY)),
            )

    def send(self, body: str) -> str:
        """Put `body` on the queue; returns the message id."""
        with self._translated():
            answer = self._client.send_message(QueueUrl=self.url, MessageBody=body)
        return str(answer["MessageId"])

    def send_batch(self, bodies: Sequence[str]) -> dict[int, str]:
        """Put `bodies` on the queue, 10 a request (SendMessageBatch); returns those SQS
        refused, by their index in `bodies`: why."""
        refused: dict[int, str] = {}
        for start in range(0, len(bodies), MAX_MESSAGES):
            entries = [
                {"Id": str(n), "MessageBody": body}
                for n, body in enumerate(bodies[start : start + MAX_MESSAGES], start)
            ]
            with self._translated():
                answer = self._client.send_message_batch(QueueUrl=self.url, Entries=entries)
            for entry in answer.get("Failed", []):
                refused[int(entry["Id"])] = f"{entry.get('Code')}: {entry.get('Message', '')}"
        return refused


def _message(item: dict[str, Any]) -> Message:
    attributes = item.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    return Message(
        id=item["MessageId"],
        receipt=item["ReceiptHandle"],
        body=item.get("Body", ""),
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sent_at=int(sent) / 1000 if sent else None,
    )
