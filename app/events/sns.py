"""Authenticating Amazon SNS deliveries by their signature, as AWS documents it.

An SNS message posted to an HTTP endpoint proves where it came from by its `Signature`: an
RSA signature (PKCS#1 v1.5; SHA-1 for SignatureVersion 1, SHA-256 for 2) over a string
built from some of its fields, each as "Name\\nvalue\\n", in this order:

- Notification: Message, MessageId, Subject (only when present), Timestamp, TopicArn, Type;
- SubscriptionConfirmation and UnsubscribeConfirmation: Message, MessageId, SubscribeURL,
  Timestamp, Token, TopicArn, Type.

The public key comes from the certificate at `SigningCertURL`, which the message names, so
it is trusted only from a URL whose `scheme://host[:port]` fully matches `endpoint_pattern`
(SNS's own hosts by default) and whose path ends in ".pem", fetched over verified TLS with
no redirects followed. Certificates are cached by URL (a bounded LRU), so a busy topic costs
one fetch per certificate, not one per message.

Every failure raises `errors.Forbidden`, whose reason is for the logs only.
Raw message delivery carries no signature: it cannot be authenticated here.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app import errors
from app.events.parse import SNS_ENDPOINT_PATTERN

_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
_OPTIONAL_FIELDS = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_MAX_CERTIFICATE_BYTES = 64 * 1024


class SnsVerifier:
    """Verifies SNS messages and confirms subscriptions; safe to share between threads.

    `topic_arns` empty admits any topic whose signature verifies. `ca_certs` is a CA bundle
    for fetching certificates (the system's by default); `pool` replaces the whole HTTP
    client. Nothing is retried: SNS redelivers a message it got no 2xx for.
    """

    def __init__(
        self,
        endpoint_pattern: str = SNS_ENDPOINT_PATTERN,
        topic_arns: frozenset[str] = frozenset(),
        timeout: float = 5.0,
        pool: urllib3.PoolManager | None = None,
        *,
        ca_certs: str | None = None,
        cache_size: int = 32,
    ) -> None:
        self._endpoint = re.compile(endpoint_pattern)
        self._topic_arns = topic_arns
        self._timeout = urllib3.Timeout(total=timeout)
        if pool is None:
            pool = urllib3.PoolManager(
                cert_reqs="CERT_REQUIRED", ca_certs=ca_certs, retries=False, maxsize=2
            )
        self._pool = pool
        self._cache_size = cache_size
        self._certificates: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any]) -> None:
        """Return if `message` (the decoded JSON body) is a genuine SNS message for an
        admitted topic; raise `errors.Forbidden` otherwise."""
        message_type = message.get("Type")
        if message_type not in SIGNED_FIELDS:
            raise errors.Forbidden(f"SNS message Type {message_type!r} is not one SNS signs")
        topic_arn = message.get("TopicArn")
        if self._topic_arns and topic_arn not in self._topic_arns:
            raise errors.Forbidden(f"topic {topic_arn!r} is not in the allowed topics")
        hash_type = _HASHES.get(str(message.get("SignatureVersion")))
        if hash_type is None:
            version = message.get("SignatureVersion")
            raise errors.Forbidden(f"SignatureVersion {version!r} is not 1 or 2")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except binascii.Error:
            raise errors.Forbidden("Signature is not base64") from None
        string_to_sign = _string_to_sign(message, SIGNED_FIELDS[message_type])
        public_key = self._certificate_key(str(message.get("SigningCertURL", "")))
        try:
            public_key.verify(signature, string_to_sign, padding.PKCS1v15(), hash_type())
        except InvalidSignature:
            raise errors.Forbidden(
                f"signature of SNS message {message.get('MessageId')!r} does not verify"
            ) from None

    def confirm_subscription(self, message: Mapping[str, Any]) -> None:
        """Verify a SubscriptionConfirmation, then GET its SubscribeURL to confirm it.

        Raises `errors.Forbidden` for a message that does not verify, is not a
        SubscriptionConfirmation, or whose SubscribeURL is not at an admitted endpoint;
        `errors.TransientError` when SNS cannot be reached or answers 5xx; and
        `errors.InvalidRequest` when it refuses (an expired token, say).
        """
        self.verify(message)
        if message.get("Type") != "SubscriptionConfirmation":
            raise errors.Forbidden(f"SNS message Type {message.get('Type')!r} confirms nothing")
        url = str(message.get("SubscribeURL", ""))
        self._check_endpoint(url, "SubscribeURL")
        try:
            response = self._pool.request(
                "GET", url, timeout=self._timeout, redirect=False, retries=False
            )
        except urllib3.exceptions.HTTPError as exc:
            raise errors.TransientError(
                f"confirming the SNS subscription failed: {exc}", cause="connection"
            ) from exc
        if response.status >= 500:
            raise errors.TransientError(f"SNS answered {response.status} to SubscribeURL")
        if response.status != 200:
            raise errors.InvalidRequest(
                f"SNS refused the subscription confirmation: {response.status}"
            )

    def _certificate_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            if url in self._certificates:
                self._certificates.move_to_end(url)
                return self._certificates[url]
        public_key = self._fetch_certificate_key(url)
        with self._lock:
            self._certificates[url] = public_key
            while len(self._certificates) > self._cache_size:
                self._certificates.popitem(last=False)
        return public_key

    def _fetch_certificate_key(self, url: str) -> rsa.RSAPublicKey:
        self._check_endpoint(url, "SigningCertURL")
        if not urlsplit(url).path.endswith(".pem"):
            raise errors.Forbidden(f"SigningCertURL {url!r} does not name a .pem file")
        try:
            response = self._pool.request(
                "GET",
                url,
                timeout=self._timeout,
                redirect=False,
                retries=False,
                preload_content=False,
            )
            try:
                pem = response.read(_MAX_CERTIFICATE_BYTES + 1)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise errors.Forbidden(f"fetching {url!r} failed: {exc}") from None
        if response.status != 200 or len(pem) > _MAX_CERTIFICATE_BYTES:
            raise errors.Forbidden(f"{url!r} answered {response.status}, not a certificate")
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise errors.Forbidden(f"{url!r} is not a PEM certificate") from None
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise errors.Forbidden(f"the certificate at {url!r} is not valid now")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise errors.Forbidden(f"the certificate at {url!r} does not hold an RSA key")
        return public_key

    def _check_endpoint(self, url: str, field: str) -> None:
        """`url`'s scheme://host[:port] must fully match the pattern; no user info. urllib3,
        which fetches it, must read the same host out of it as the standard library."""
        try:
            parts = urlsplit(url)
            port = parts.port
            fetched = urllib3.util.parse_url(url)
        except (ValueError, urllib3.exceptions.LocationParseError):
            raise errors.Forbidden(f"{field} {url!r} is not a URL") from None
        if (
            parts.username is not None
            or parts.password is not None
            or not parts.hostname
            or (fetched.scheme, fetched.host, fetched.port) != (parts.scheme, parts.hostname, port)
        ):
            raise errors.Forbidden(f"{field} {url!r} is not at an admitted SNS endpoint")
        origin = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port is not None else "")
        if not self._endpoint.fullmatch(origin):
            raise errors.Forbidden(f"{field} {url!r} is not at an admitted SNS endpoint")


def _string_to_sign(message: Mapping[str, Any], names: tuple[str, ...]) -> bytes:
    parts = []
    for name in names:
        value = message.get(name)
        if value is None and name in _OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise errors.Forbidden(f"SNS message field {name} is missing or not a string")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()
