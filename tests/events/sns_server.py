"""A throw-away PKI and a real HTTPS server on 127.0.0.1 standing in for SNS's endpoint.

The server serves the signing certificate under /certs/<anything>.pem, answers
/confirm/<status>?... with that status (as SNS answers a SubscribeURL), and records every
request's path, so tests can count what the verifier fetched.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(
    subject_key: rsa.RSAPrivateKey,
    name: str,
    *,
    issuer: tuple[rsa.RSAPrivateKey, x509.Certificate] | None = None,
    ca: bool = False,
    ip: str | None = None,
    valid_from: datetime.datetime = NOW - datetime.timedelta(days=1),
    valid_to: datetime.datetime = NOW + datetime.timedelta(days=1),
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signing_key, issuer_name = (
        (subject_key, subject) if issuer is None else (issuer[0], issuer[1].subject)
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[0].public_key()),
            critical=False,
        )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class SnsEndpoint:
    """What the tests need: the origin, the CA bundle, the signing key and the log."""

    origin: str
    ca_bundle: str
    signing_key: rsa.RSAPrivateKey
    other_key: rsa.RSAPrivateKey
    requests: list[str] = field(default_factory=list)

    def count(self, path: str) -> int:
        return self.requests.count(path)


@contextmanager
def running_endpoint(directory: Path) -> Iterator[SnsEndpoint]:
    ca_key, server_key, signing_key, other_key = new_key(), new_key(), new_key(), new_key()
    ca = certificate(ca_key, "throw-away test CA", ca=True)
    server = certificate(server_key, "127.0.0.1", issuer=(ca_key, ca), ip="127.0.0.1")
    bodies = {
        "certs": pem(certificate(signing_key, "sns.test")),
        "other": pem(certificate(other_key, "someone else")),
        "expired": pem(
            certificate(
                signing_key,
                "sns.test",
                valid_from=NOW - datetime.timedelta(days=10),
                valid_to=NOW - datetime.timedelta(days=1),
            )
        ),
        "garbage": b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    }
    (directory / "ca.pem").write_bytes(pem(ca))
    (directory / "server.pem").write_bytes(pem(server))
    (directory / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    log: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            log.append(self.path)
            top = self.path.split("/")[1]
            if top == "redirect":
                self.send_response(302)
                self.send_header("Location", "/certs/target.pem")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif top in bodies:
                self.answer(200, bodies[top])
            elif top == "confirm":
                status = int(self.path.split("/")[2].split("?")[0])
                self.answer(status, b"<ConfirmSubscriptionResponse/>")
            else:
                self.answer(404, b"not here")

        def answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield SnsEndpoint(
            origin=f"https://127.0.0.1:{httpd.server_address[1]}",
            ca_bundle=str(directory / "ca.pem"),
            signing_key=signing_key,
            other_key=other_key,
            requests=log,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
