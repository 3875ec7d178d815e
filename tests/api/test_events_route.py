"""POST /v1/events against moto and fake-gcs-server, with SNS messages signed by a throw-away
certificate served on 127.0.0.1 (tests/events/sns_server.py), and faults injected on the
wire (tests/faults.py)."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.dev import emulators
from app.main import create_app
from tests.conftest import Buckets, make_settings
from tests.events import samples
from tests.events.sns_server import SnsEndpoint, running_endpoint
from tests.events.test_sns import TOPIC, cert_url, confirmation, notification, sign
from tests.faults import Fault, FaultProxy

FORBIDDEN = {"error": "forbidden"}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnsEndpoint]:
    with running_endpoint(Path(tmp_path_factory.mktemp("sns-pki"))) as running:
        yield running


@pytest.fixture
def trusted(endpoint: SnsEndpoint, monkeypatch: pytest.MonkeyPatch) -> SnsEndpoint:
    """The throw-away CA trusted for TLS (as SSL_CERT_FILE does for any deployment)."""
    monkeypatch.setenv("SSL_CERT_FILE", endpoint.ca_bundle)
    return endpoint


@pytest.fixture
def serve(moto_server: emulators.Emulator, gcs_server: emulators.Emulator, buckets: Buckets) -> Any:
    """`serve(**settings)`: a TestClient of a service replicating into the test's buckets."""

    @contextmanager
    def running(s3_url: str = moto_server.url, **overrides: Any) -> Iterator[TestClient]:
        settings = make_settings(s3_url, gcs_server.url, buckets.dest, **overrides)
        with TestClient(create_app(settings)) as client:
            yield client

    return running


def s3_event(buckets: Buckets, key: str, event_name: str = "ObjectCreated:Put") -> dict[str, Any]:
    record = samples.s3_record(quote_plus(key), event_name, buckets.source)
    return samples.s3_notification(record)


def post(
    client: TestClient,
    body: dict[str, Any] | str,
    content_type: str = "application/json",
    **headers: str,
) -> Response:
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(
        "/v1/events", content=text.encode(), headers={"Content-Type": content_type, **headers}
    )


def only_result(response: Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    [result] = response.json()["results"]
    return dict(result)


def signed(endpoint: SnsEndpoint, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
    """A Notification carrying `message`, as SNS signs it."""
    return sign(notification(endpoint, Message=json.dumps(message)), endpoint.signing_key, version)


def sns_settings(endpoint: SnsEndpoint) -> dict[str, Any]:
    return {"sns_endpoint_pattern": f"^{re.escape(endpoint.origin)}$"}


# S3 notifications, EventBridge events, and the body rules


def test_notification_replicates_then_skips(client: TestClient, buckets: Buckets) -> None:
    data = buckets.put("reports/q3 (final).csv", b"a,b\n1,2\n")
    body = s3_event(buckets, "reports/q3 (final).csv")

    first = post(client, body)
    assert only_result(first) == {
        "s3_bucket": buckets.source,
        "s3_key": "reports/q3 (final).csv",
        "event": "ObjectCreated:Put",
        "status": "success",
        "action": "replicated",
        "reason": "copied",
    }
    assert first.json()["summary"] == {
        "total": 1,
        "replicated": 1,
        "skipped": 0,
        "deleted": 0,
        "ignored": 0,
        "failed": 0,
    }
    assert buckets.destination_bytes("reports/q3 (final).csv") == data

    again = only_result(post(client, body))
    assert again["action"] == "skipped"
    assert again["status"] == "success"


def test_delete_event_removes_the_copy_with_propagate(serve: Any, buckets: Buckets) -> None:
    buckets.put("gone.txt", b"soon gone")
    with serve(delete_policy="propagate") as client:
        assert only_result(post(client, s3_event(buckets, "gone.txt")))["action"] == "replicated"
        buckets.s3.delete_object(Bucket=buckets.source, Key="gone.txt")
        deleted = post(client, s3_event(buckets, "gone.txt", "ObjectRemoved:Delete"))
    assert only_result(deleted)["action"] == "deleted"
    assert deleted.json()["summary"]["deleted"] == 1
    buckets.assert_nothing_written()


def test_s3_test_event_is_acknowledged(client: TestClient, buckets: Buckets) -> None:
    response = post(client, samples.s3_test_event())
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert response.json()["summary"]["total"] == 0


def test_tagging_event_is_ignored_with_its_reason(client: TestClient, buckets: Buckets) -> None:
    buckets.put("tagged.txt", b"tags are not replicated")
    result = only_result(post(client, s3_event(buckets, "tagged.txt", "ObjectTagging:Put")))
    assert result["action"] == "ignored"
    assert result["reason"] == "ObjectTagging:Put: tags are not replicated"
    buckets.assert_nothing_written()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ('{"Records": [{"eventVersion": "2.1"', "the body is not JSON"),
        ('{"hello": "world"}', "its fields: hello"),
        ("[1, 2]", "the body is a JSON array"),
        (json.dumps(samples.s3_notification(samples.s3_record(key=""))), "key"),
    ],
)
def test_a_body_of_no_known_shape_is_a_422(
    serve: Any, s3_proxy: FaultProxy, buckets: Buckets, body: str, detail: str
) -> None:
    with serve(s3_proxy.url) as client:
        before = len(s3_proxy.requests)
        response = post(client, body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert detail in response.json()["detail"]
    assert len(s3_proxy.requests) == before
    buckets.assert_nothing_written()


def test_eventbridge_event_replicates(client: TestClient, buckets: Buckets) -> None:
    data = buckets.put("from eventbridge.bin", b"\x00\x01eventbridge")
    event = samples.eventbridge_event(key="from eventbridge.bin")
    event["detail"]["bucket"]["name"] = buckets.source
    result = only_result(post(client, event))
    assert (result["action"], result["event"]) == ("replicated", "Object Created")
    assert buckets.destination_bytes("from eventbridge.bin") == data


def test_text_plain_is_taken_as_sns_sends_it(client: TestClient, buckets: Buckets) -> None:
    data = buckets.put("plain.txt", b"posted as text/plain")
    response = post(client, s3_event(buckets, "plain.txt"), "text/plain; charset=UTF-8")
    assert only_result(response)["action"] == "replicated"
    assert buckets.destination_bytes("plain.txt") == data


@pytest.mark.parametrize("content_type", ["application/xml", "application/x-www-form-urlencoded"])
def test_other_media_types_are_a_415(
    client: TestClient, buckets: Buckets, content_type: str
) -> None:
    buckets.put("a.txt", b"a")
    response = post(client, s3_event(buckets, "a.txt"), content_type)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    buckets.assert_nothing_written()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_with_api_keys_a_basic_password_is_a_key(serve: Any, buckets: Buckets) -> None:
    data = buckets.put("keyed.txt", b"keyed")
    body = s3_event(buckets, "keyed.txt")
    with serve(api_keys="first-key-0123456789,second-key-9876543210") as client:
        nobody = post(client, body)
        wrong = post(client, body, Authorization=basic("sns", "first-key-01234567890"))
        assert buckets.gcs.bucket(buckets.dest).get_blob("keyed.txt") is None
        right = post(client, body, Authorization=basic("sns", "second-key-9876543210"))
    for refused in (nobody, wrong):
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert 'Basic realm="cross-cloud-replicator"' in refused.headers["www-authenticate"]
    assert wrong.json()["detail"] == "the API key is not valid"
    assert only_result(right)["action"] == "replicated"
    assert buckets.destination_bytes("keyed.txt") == data


# SNS messages over HTTP


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_sns_notification_replicates(
    serve: Any, trusted: SnsEndpoint, buckets: Buckets, version: str
) -> None:
    data = buckets.put(f"via sns v{version}.txt", b"signed")
    body = signed(trusted, s3_event(buckets, f"via sns v{version}.txt"), version)
    with serve(**sns_settings(trusted), sns_topic_arns=f"{TOPIC}, arn:aws:sns:x:1:other") as client:
        response = post(client, body, "text/plain; charset=UTF-8")
    assert only_result(response)["action"] == "replicated"
    assert buckets.destination_bytes(f"via sns v{version}.txt") == data


def _tampered(endpoint: SnsEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    message = signed(endpoint, body)
    message["Message"] = message["Message"].replace("ObjectCreated:Put", "ObjectCreated:Copy")
    return message


def _cert_elsewhere(endpoint: SnsEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    port = endpoint.origin.rsplit(":", 1)[1]
    url = f"https://localhost:{port}/certs/{uuid.uuid4().hex}.pem"
    message = notification(endpoint, Message=json.dumps(body), SigningCertURL=url)
    return sign(message, endpoint.signing_key)


def _cert_not_pem(endpoint: SnsEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    url = cert_url(endpoint).removesuffix(".pem") + ".txt"
    message = notification(endpoint, Message=json.dumps(body), SigningCertURL=url)
    return sign(message, endpoint.signing_key)


def _other_topic(endpoint: SnsEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    other = "arn:aws:sns:us-east-1:123456789012:someone-elses"
    return sign(
        notification(endpoint, Message=json.dumps(body), TopicArn=other), endpoint.signing_key
    )


def _unsigned(endpoint: SnsEndpoint, body: dict[str, Any]) -> dict[str, Any]:
    message = samples.sns_notification(body, TopicArn=TOPIC)
    del message["Signature"], message["SignatureVersion"]
    return message


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_tampered, "does not verify"),
        (_cert_elsewhere, "is not at an admitted SNS endpoint"),
        (_cert_not_pem, "does not name a .pem file"),
        (_other_topic, "is not in the allowed topics"),
        (_unsigned, "SignatureVersion None is not 1 or 2"),
    ],
)
def test_sns_message_that_does_not_verify_is_a_403_and_touches_nothing(
    serve: Any,
    s3_proxy: FaultProxy,
    trusted: SnsEndpoint,
    buckets: Buckets,
    caplog: pytest.LogCaptureFixture,
    forge: Any,
    reason: str,
) -> None:
    buckets.put("target.txt", b"must not be copied")
    body = forge(trusted, s3_event(buckets, "target.txt"))
    with serve(s3_proxy.url, **sns_settings(trusted), sns_topic_arns=TOPIC) as client:
        caplog.set_level(logging.WARNING)
        before = len(s3_proxy.requests)
        response = post(client, body, "text/plain; charset=UTF-8")
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert len(s3_proxy.requests) == before  # not even a HEAD at S3
    buckets.assert_nothing_written()
    assert any(reason in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_forged_sns_message_with_a_bad_inner_message_is_a_403_not_a_422(
    serve: Any, trusted: SnsEndpoint
) -> None:
    """The envelope is verified before the Message inside it is read."""
    message = notification(trusted, Message="not JSON at all")
    message = sign(message, trusted.other_key)
    with serve(**sns_settings(trusted)) as client:
        response = post(client, message, "text/plain; charset=UTF-8")
    assert (response.status_code, response.json()) == (403, FORBIDDEN)


def test_subscription_confirmation_is_confirmed(serve: Any, trusted: SnsEndpoint) -> None:
    message = sign(confirmation(trusted), trusted.signing_key)
    path = message["SubscribeURL"].removeprefix(trusted.origin)
    with serve(**sns_settings(trusted), sns_topic_arns=TOPIC) as client:
        response = post(client, message, "text/plain; charset=UTF-8")
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert trusted.count(path) == 1


def test_forged_subscription_confirmation_is_not_confirmed(
    serve: Any, trusted: SnsEndpoint
) -> None:
    message = sign(confirmation(trusted), trusted.other_key)
    path = message["SubscribeURL"].removeprefix(trusted.origin)
    with serve(**sns_settings(trusted)) as client:
        response = post(client, message, "text/plain; charset=UTF-8")
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert trusted.count(path) == 0


def test_unsubscribe_confirmation_is_acknowledged_and_nothing_done(
    serve: Any, s3_proxy: FaultProxy, trusted: SnsEndpoint, buckets: Buckets
) -> None:
    message = sign(confirmation(trusted, "UnsubscribeConfirmation"), trusted.signing_key)
    path = message["SubscribeURL"].removeprefix(trusted.origin)
    with serve(s3_proxy.url, **sns_settings(trusted)) as client:
        before = len(s3_proxy.requests)
        response = post(client, message, "text/plain; charset=UTF-8")
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert trusted.count(path) == 0
    assert len(s3_proxy.requests) == before
    buckets.assert_nothing_written()


def test_without_signature_checks_an_unsigned_envelope_is_taken_and_start_up_warns(
    serve: Any, buckets: Buckets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    data = buckets.put("emulated.txt", b"from an SNS emulator")
    body = samples.sns_notification(s3_event(buckets, "emulated.txt"))
    with serve(sns_verify_signatures=False) as client:
        response = post(client, body, "text/plain; charset=UTF-8")
    assert only_result(response)["action"] == "replicated"
    assert buckets.destination_bytes("emulated.txt") == data
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("SNS_VERIFY_SIGNATURES is false" in w for w in warnings) == 1


# Transient failures


def test_a_transient_failure_is_a_503_and_the_same_body_later_converges(
    serve: Any, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    data = buckets.put("flaky.txt", b"S3 is busy")
    body = s3_event(buckets, "flaky.txt")
    with serve(s3_proxy.url, max_retries=0) as client:
        fault = s3_proxy.add(Fault(path=f"/{buckets.source}/flaky.txt", action="status"))
        unavailable = post(client, body)
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.json()["error"] == "unavailable"
        assert "deliver the event again" in unavailable.json()["detail"]
        assert fault.fired >= 1
        buckets.assert_nothing_written()

        s3_proxy.faults.remove(fault)
        assert only_result(post(client, body))["action"] == "replicated"
    assert buckets.destination_bytes("flaky.txt") == data


# With SQS_QUEUE_URL: the intake queues


@pytest.fixture
def sqs(moto_server: emulators.Emulator) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return str(sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:12]}")["QueueUrl"])


def queued_bodies(sqs: Any, url: str) -> list[str]:
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [message["Body"] for message in answer.get("Messages", [])]


def test_with_a_queue_the_body_is_queued_as_it_came(
    serve: Any, moto_server: emulators.Emulator, sqs: Any, queue_url: str, buckets: Buckets
) -> None:
    buckets.put("queued.txt", b"for the worker")
    text = json.dumps(s3_event(buckets, "queued.txt"), indent=1) + "\n"
    with serve(sqs_queue_url=queue_url, sqs_endpoint_url=moto_server.url) as client:
        response = post(client, text, "text/plain; charset=UTF-8")
        refused = post(client, '{"not": "an event"}')
    assert (response.status_code, response.json()) == (202, {"status": "queued"})
    assert refused.status_code == 422
    assert queued_bodies(sqs, queue_url) == [text]
    buckets.assert_nothing_written()


def test_with_a_queue_a_subscription_is_confirmed_not_queued(
    serve: Any, moto_server: emulators.Emulator, sqs: Any, queue_url: str, trusted: SnsEndpoint
) -> None:
    message = sign(confirmation(trusted), trusted.signing_key)
    path = message["SubscribeURL"].removeprefix(trusted.origin)
    settings = {"sqs_queue_url": queue_url, "sqs_endpoint_url": moto_server.url}
    with serve(**settings, **sns_settings(trusted)) as client:
        response = post(client, message, "text/plain; charset=UTF-8")
    assert response.status_code == 200
    assert trusted.count(path) == 1
    assert queued_bodies(sqs, queue_url) == []


def test_when_the_queue_refuses_the_body_it_is_a_503(
    serve: Any, s3_proxy: FaultProxy, sqs: Any, queue_url: str, buckets: Buckets
) -> None:
    """s3_proxy stands in front of moto, which is SQS too."""
    buckets.put("unqueued.txt", b"SQS is down")
    s3_proxy.add(Fault(method="POST", action="status", status=500))
    with serve(sqs_queue_url=queue_url, sqs_endpoint_url=s3_proxy.url, max_retries=1) as client:
        response = post(client, s3_event(buckets, "unqueued.txt"))
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert len(s3_proxy.seen("POST")) == 2  # the first attempt and one retry
    assert queued_bodies(sqs, queue_url) == []
    buckets.assert_nothing_written()
