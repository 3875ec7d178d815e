"""SnsVerifier against a real HTTPS endpoint on 127.0.0.1 (see sns_server.py), with
messages these tests build and sign themselves, as SNS does."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app import errors
from app.events.parse import SNS_ENDPOINT_PATTERN
from app.events.sns import SnsVerifier
from tests.events.sns_server import SnsEndpoint, running_endpoint

TOPIC = "arn:aws:sns:us-east-1:123456789012:replicator-events"

# The string to sign, per "Verifying the signatures of Amazon SNS messages": these fields,
# in this order, each as "Name\nvalue\n"; Subject only when the message has one.
NOTIFICATION_FIELDS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_FIELDS = [
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnsEndpoint]:
    with running_endpoint(Path(tmp_path_factory.mktemp("sns-pki"))) as running:
        yield running


@pytest.fixture
def verifier(endpoint: SnsEndpoint) -> SnsVerifier:
    return SnsVerifier(
        f"^{re.escape(endpoint.origin)}$", frozenset(), 5.0, ca_certs=endpoint.ca_bundle
    )


def cert_url(endpoint: SnsEndpoint, folder: str = "certs") -> str:
    """A URL of its own per test, so request counts are the test's own."""
    return f"{endpoint.origin}/{folder}/SimpleNotificationService-{uuid.uuid4().hex}.pem"


def sign(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict[str, Any]:
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), digest)
    return {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
    }


def notification(endpoint: SnsEndpoint, *, subject: bool = True, **fields: Any) -> dict[str, Any]:
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": '{"Records": [{"s3": {"object": {"key": "caf%C3%A9+a%2Bb"}}}]}\n\u00e9',
        "Timestamp": "2024-05-02T00:54:06.655Z",
        "SigningCertURL": cert_url(endpoint),
        "UnsubscribeURL": f"{endpoint.origin}/?Action=Unsubscribe&SubscriptionArn={TOPIC}:1",
    }
    if subject:
        message["Subject"] = "Amazon S3 Notification"
    message.update(fields)
    return message


def confirmation(
    endpoint: SnsEndpoint, message_type: str = "SubscriptionConfirmation", **fields: Any
) -> dict[str, Any]:
    token = uuid.uuid4().hex
    message = {
        "Type": message_type,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm ...",
        "SubscribeURL": f"{endpoint.origin}/confirm/200?Action=ConfirmSubscription&Token={token}",
        "Timestamp": "2024-04-26T20:45:04.751Z",
        "SigningCertURL": cert_url(endpoint),
    }
    message.update(fields)
    return message


def refused(verifier: SnsVerifier, message: dict[str, Any], reason: str) -> None:
    with pytest.raises(errors.Forbidden, match=reason) as caught:
        verifier.verify(message)
    assert caught.value.status_code == 403
    assert caught.value.kind == "forbidden"
    assert caught.value.detail == "forbidden"  # what a client may see says nothing more


# Accepted


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [True, False])
def test_signed_notification_is_accepted(
    verifier: SnsVerifier, endpoint: SnsEndpoint, version: str, subject: bool
) -> None:
    verifier.verify(sign(notification(endpoint, subject=subject), endpoint.signing_key, version))


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("message_type", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_signed_confirmations_are_accepted(
    verifier: SnsVerifier, endpoint: SnsEndpoint, version: str, message_type: str
) -> None:
    verifier.verify(sign(confirmation(endpoint, message_type), endpoint.signing_key, version))


def test_topic_in_the_allow_list_is_accepted(endpoint: SnsEndpoint) -> None:
    verifier = SnsVerifier(
        f"^{re.escape(endpoint.origin)}$",
        frozenset({TOPIC, "arn:aws:sns:us-east-1:123456789012:other"}),
        5.0,
        ca_certs=endpoint.ca_bundle,
    )
    verifier.verify(sign(notification(endpoint), endpoint.signing_key))


# Refused: the message


def test_tampered_message_is_refused(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    message = sign(notification(endpoint), endpoint.signing_key)
    message["Message"] = message["Message"].replace("caf", "evil")
    refused(verifier, message, "does not verify")


@pytest.mark.parametrize("field", ["MessageId", "Timestamp", "TopicArn", "Subject"])
def test_every_signed_field_counts(
    verifier: SnsVerifier, endpoint: SnsEndpoint, field: str
) -> None:
    message = sign(notification(endpoint), endpoint.signing_key)
    message[field] += "x"
    refused(verifier, message, "does not verify")


def test_subject_added_after_signing_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint
) -> None:
    message = sign(notification(endpoint, subject=False), endpoint.signing_key)
    message["Subject"] = "added"
    refused(verifier, message, "does not verify")


def test_tampered_subscribe_url_is_refused(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    message = sign(confirmation(endpoint), endpoint.signing_key)
    message["SubscribeURL"] += "&more"
    refused(verifier, message, "does not verify")


def test_signature_by_another_key_is_refused(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    refused(verifier, sign(notification(endpoint), endpoint.other_key), "does not verify")


def test_v1_signature_claimed_as_v2_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint
) -> None:
    message = sign(notification(endpoint), endpoint.signing_key, "1")
    message["SignatureVersion"] = "2"
    refused(verifier, message, "does not verify")


@pytest.mark.parametrize("version", ["3", "", None, "02"])
def test_unknown_signature_version_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint, version: str | None
) -> None:
    message = sign(notification(endpoint), endpoint.signing_key)
    message["SignatureVersion"] = version
    refused(verifier, message, "SignatureVersion .* is not 1 or 2")


def test_signature_that_is_not_base64_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint
) -> None:
    message = sign(notification(endpoint), endpoint.signing_key)
    message["Signature"] = "not base64!"
    refused(verifier, message, "Signature is not base64")


def test_missing_signed_field_is_refused(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    message = sign(confirmation(endpoint), endpoint.signing_key)
    del message["Token"]
    refused(verifier, message, "field Token is missing")


def test_unknown_type_is_refused(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    refused(verifier, {**notification(endpoint), "Type": "Other"}, "Type 'Other'")


def test_topic_outside_the_allow_list_is_refused(endpoint: SnsEndpoint) -> None:
    verifier = SnsVerifier(
        f"^{re.escape(endpoint.origin)}$",
        frozenset({"arn:aws:sns:us-east-1:123456789012:other"}),
        5.0,
        ca_certs=endpoint.ca_bundle,
    )
    message = sign(notification(endpoint), endpoint.signing_key)
    refused(verifier, message, "not in the allowed topics")
    assert endpoint.count(message["SigningCertURL"].removeprefix(endpoint.origin)) == 0


# Refused: the certificate URL and what it serves


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/certs/a.pem",  # not https
        "https://127.0.0.1:1/certs/a.pem",  # another port
        "https://localhost:{port}/certs/a.pem",  # another host name
        "https://127.0.0.1:{port}@127.0.0.2:{port}/certs/a.pem",  # user info
        "https://127.0.0.1:{port}\\@127.0.0.2/certs/a.pem",
        "https://127.0.0.1:{port}.evil/certs/a.pem",
        "not a url",
        "",
    ],
)
def test_certificate_url_outside_the_pattern_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint, url: str
) -> None:
    port = endpoint.origin.rsplit(":", 1)[1]
    before = len(endpoint.requests)
    message = sign(
        notification(endpoint, SigningCertURL=url.format(port=port)), endpoint.signing_key
    )
    refused(verifier, message, "SigningCertURL .* (is not at an admitted|is not a URL)")
    assert len(endpoint.requests) == before


@pytest.mark.parametrize("path", ["/certs/a.pem.txt", "/certs/a", "/certs/a.pem/", "/certs/"])
def test_certificate_url_not_ending_in_pem_is_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint, path: str
) -> None:
    before = len(endpoint.requests)
    url = endpoint.origin + path
    refused(
        verifier, sign(notification(endpoint, SigningCertURL=url), endpoint.signing_key), ".pem"
    )
    assert len(endpoint.requests) == before


def test_redirect_is_not_followed(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    url = cert_url(endpoint, "redirect")
    message = sign(notification(endpoint, SigningCertURL=url), endpoint.signing_key)
    refused(verifier, message, "answered 302")
    assert endpoint.count("/certs/target.pem") == 0


@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("missing", "answered 404"),
        ("garbage", "is not a PEM certificate"),
        ("expired", "is not valid now"),
        ("other", "does not verify"),  # a good certificate, for another key
    ],
)
def test_bad_certificates_are_refused(
    verifier: SnsVerifier, endpoint: SnsEndpoint, folder: str, reason: str
) -> None:
    url = cert_url(endpoint, folder)
    refused(
        verifier, sign(notification(endpoint, SigningCertURL=url), endpoint.signing_key), reason
    )


def test_certificate_is_fetched_over_verified_tls(endpoint: SnsEndpoint) -> None:
    """Without the throw-away CA, the endpoint's TLS certificate is not trusted."""
    verifier = SnsVerifier(f"^{re.escape(endpoint.origin)}$", frozenset(), 5.0)
    message = sign(notification(endpoint), endpoint.signing_key)
    refused(verifier, message, "fetching .* failed")


# The certificate cache


def test_certificate_is_fetched_once_for_many_messages(
    verifier: SnsVerifier, endpoint: SnsEndpoint
) -> None:
    url = cert_url(endpoint)
    for version in ("1", "2") * 10:
        verifier.verify(
            sign(notification(endpoint, SigningCertURL=url), endpoint.signing_key, version)
        )
    verifier.verify(sign(confirmation(endpoint, SigningCertURL=url), endpoint.signing_key))
    assert endpoint.count(url.removeprefix(endpoint.origin)) == 1


def test_cache_is_bounded(endpoint: SnsEndpoint) -> None:
    verifier = SnsVerifier(
        f"^{re.escape(endpoint.origin)}$",
        frozenset(),
        5.0,
        ca_certs=endpoint.ca_bundle,
        cache_size=2,
    )
    urls = [cert_url(endpoint) for _ in range(3)]
    for url in [*urls, urls[2], urls[0]]:  # the third evicts the first; the first comes back
        verifier.verify(sign(notification(endpoint, SigningCertURL=url), endpoint.signing_key))
    paths = [url.removeprefix(endpoint.origin) for url in urls]
    assert [endpoint.count(path) for path in paths] == [2, 1, 1]


# Confirming subscriptions


def test_confirm_subscription_gets_the_subscribe_url(
    verifier: SnsVerifier, endpoint: SnsEndpoint
) -> None:
    message = sign(confirmation(endpoint), endpoint.signing_key)
    verifier.confirm_subscription(message)
    assert endpoint.count(message["SubscribeURL"].removeprefix(endpoint.origin)) == 1


@pytest.mark.parametrize(
    "subscribe_url",
    [
        "https://127.0.0.2:{port}/confirm/200?Action=ConfirmSubscription",
        "http://127.0.0.1:{port}/confirm/200?Action=ConfirmSubscription",
        "https://127.0.0.1:{port}@evil.example/confirm/200",
    ],
)
def test_confirm_subscription_refuses_other_endpoints(
    verifier: SnsVerifier, endpoint: SnsEndpoint, subscribe_url: str
) -> None:
    port = endpoint.origin.rsplit(":", 1)[1]
    message = sign(
        confirmation(endpoint, SubscribeURL=subscribe_url.format(port=port)), endpoint.signing_key
    )
    verifier.verify(message)  # genuinely signed: only the URL is wrong
    before = len(endpoint.requests)
    with pytest.raises(errors.Forbidden, match="SubscribeURL .* is not at an admitted"):
        verifier.confirm_subscription(message)
    assert len(endpoint.requests) == before


def test_confirm_subscription_verifies_first(verifier: SnsVerifier, endpoint: SnsEndpoint) -> None:
    message = sign(confirmation(endpoint), endpoint.signing_key)
    message["Token"] = "forged"
    with pytest.raises(errors.Forbidden, match="does not verify"):
        verifier.confirm_subscription(message)
    assert endpoint.count(message["SubscribeURL"].removeprefix(endpoint.origin)) == 0


@pytest.mark.parametrize("message_type", ["UnsubscribeConfirmation", "Notification"])
def test_only_subscription_confirmations_are_confirmed(
    verifier: SnsVerifier, endpoint: SnsEndpoint, message_type: str
) -> None:
    if message_type == "Notification":
        message = sign(notification(endpoint), endpoint.signing_key)
    else:
        message = sign(confirmation(endpoint, message_type), endpoint.signing_key)
    with pytest.raises(errors.Forbidden, match="confirms nothing"):
        verifier.confirm_subscription(message)


@pytest.mark.parametrize(
    ("status", "error"), [(404, errors.InvalidRequest), (503, errors.TransientError)]
)
def test_confirm_subscription_reports_refusals(
    verifier: SnsVerifier, endpoint: SnsEndpoint, status: int, error: type[Exception]
) -> None:
    url = f"{endpoint.origin}/confirm/{status}?Action=ConfirmSubscription&Token=t"
    message = sign(confirmation(endpoint, SubscribeURL=url), endpoint.signing_key)
    with pytest.raises(error, match=str(status)):
        verifier.confirm_subscription(message)


# The default pattern


@pytest.mark.parametrize(
    ("origin", "admitted"),
    [
        ("https://sns.us-east-1.amazonaws.com", True),
        ("https://sns.cn-north-1.amazonaws.com.cn", True),
        ("https://sns.us-gov-west-1.amazonaws.com", True),
        ("http://sns.us-east-1.amazonaws.com", False),
        ("https://sns.us-east-1.amazonaws.com.evil.com", False),
        ("https://evil.com/sns.us-east-1.amazonaws.com", False),
        ("https://sns.us-east-1.amazonaws.com:444", False),
        ("https://snsXus-east-1.amazonaws.com", False),
        ("https://sqs.us-east-1.amazonaws.com", False),
    ],
)
def test_default_pattern(origin: str, admitted: bool) -> None:
    assert bool(re.fullmatch(SNS_ENDPOINT_PATTERN, origin)) is admitted


def test_default_pattern_refuses_lookalike_hosts_before_any_fetch() -> None:
    verifier = SnsVerifier()
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.com/a.pem",
        "https://sns.us-east-1.amazonaws.com@evil.com/a.pem",
        "https://evil.com/sns.us-east-1.amazonaws.com/a.pem",
        "http://sns.us-east-1.amazonaws.com/a.pem",
    ):
        message = {
            "Type": "Notification",
            "MessageId": "m",
            "TopicArn": TOPIC,
            "Message": "{}",
            "Timestamp": "t",
            "SignatureVersion": "2",
            "Signature": "AAAA",
            "SigningCertURL": url,
        }
        refused(verifier, message, "is not at an admitted SNS endpoint")
