"""A fault-injecting HTTP/1.1 proxy: the test bench for the resilience tests.

`FaultProxy` listens on a free loopback port and forwards every request to one upstream
emulator, keeping the client's connections alive, until a test scripts a `Fault`:

    with FaultProxy(moto_server.url) as proxy:
        proxy.add(Fault(method="GET", path="/bucket/key", action="truncate", at=50_000, times=1))
        settings = make_settings(proxy.url, gcs_server.url, bucket)

Each message is read whole before it is passed on (the tests move a few MiB), so faults act
on exact body offsets; bodies are re-framed with Content-Length, whatever framing (length,
chunked, until-close) the sender used. Every request is recorded in `proxy.requests`, so a
test can count attempts and measure the gaps between them.

A subclass may answer as a real cloud does where an emulator does not: `intercept` answers a
request itself (None: forward it), `rewrite` changes the upstream's answer (tests/real_s3.py).
"""

from __future__ import annotations

import collections
import contextlib
import http
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO
from urllib.parse import urlsplit

ACTIONS = (
    "reset",
    "status",
    "stall",
    "delay",
    "truncate",
    "flip",
    "flip_request",
    "reset_after_upload",
)
SEEN_BODY = 1024 * 1024  # request bodies up to this size are kept in `proxy.requests`
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}
S3_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    """One scripted misbehaviour.

    Matches requests by `method` (None: any), a substring of the request target (path and
    query) and, with `operation`, the AWS JSON protocol's action (the end of
    `X-Amz-Target`: "ReceiveMessage"). Fires on the `nth` match only, else on the first
    `times` matches, else with `chance` (0 to 1) on each match, else on every match.
    Actions:
      reset               close the client connection (RST) without forwarding or answering;
                          with `at`, once `at` bytes of the request body arrived (mid-upload)
      status              answer `status` with `body` and `headers` without forwarding
      stall               hold the client without an answer for `stall_for` seconds (or until it
                          gives up); with `at`, forward and send the head and `at` body bytes first
      delay               hold the request `stall_for` seconds, then forward it and answer in full
      truncate            forward, then send only `at` bytes of the response body and close
      flip                forward, then invert the response body's byte at offset `at`
      flip_request        invert the request body's byte at offset `at`, then forward it
      reset_after_upload  forward (the upstream acts on the request), then reset the client
    """

    method: str | None = None
    path: str = ""
    action: str = "reset"
    at: int | None = None
    times: int | None = None
    nth: int | None = None
    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stall_for: float = 30.0
    operation: str | None = None
    chance: float | None = None
    matched: int = 0  # requests that matched, whether the fault fired or not
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; one of {ACTIONS}")
        if self.action in ("truncate", "flip", "flip_request") and self.at is None:
            raise ValueError(f"{self.action} needs `at`, a body offset")

    def claims(self, method: str, target: str, amz_target: str = "") -> bool:
        if (self.method and method != self.method.upper()) or self.path not in target:
            return False
        if self.operation and not amz_target.endswith(f".{self.operation}"):
            return False
        self.matched += 1
        if self.nth is not None:
            fire = self.matched == self.nth
        elif self.times is not None:
            fire = self.matched <= self.times
        else:
            fire = self.chance is None or _dice.random() < self.chance
        self.fired += fire
        return fire


_dice = random.Random(20)  # the faults that fire by chance: the same run, the same faults


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    method: str
    target: str
    headers: dict[str, str]  # names in lower case
    at: float  # time.monotonic() when its head arrived
    fault: str | None  # the action applied to it, if any
    body: bytes = b""  # the request's body, when it is at most SEEN_BODY bytes


def s3_sender(request: Seen) -> str:
    """Who sent an S3 request: "boto3" (its user agent names botocore) or "direct" (the
    urllib3 pool of app.storage.s3_direct)."""
    return "boto3" if "Botocore/" in request.headers.get("user-agent", "") else "direct"


def s3_error(code: str, **fields: str) -> bytes:
    """An S3 error document with `code`, a message, and any further fields (Region=...)."""
    more = "".join(f"<{name}>{value}</{name}>" for name, value in fields.items())
    return (
        f"<Error><Code>{code}</Code><Message>{code}, as S3 says it</Message>{more}</Error>".encode()
    )


@dataclass
class Message:
    start: str  # the request line or the status line
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def head(self, *, body_length: int | None) -> bytes:
        """Start line and end-to-end headers; Content-Length is replaced unless None."""
        lines = [self.start]
        for name, value in self.headers:
            if name.lower() in HOP_BY_HOP or (
                body_length is not None and name.lower() == "content-length"
            ):
                continue
            lines.append(f"{name}: {value}")
        if body_length is not None:
            lines.append(f"Content-Length: {body_length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def wire(self, body: bytes | None = None) -> bytes:
        body = self.body if body is None else body
        return self.head(body_length=len(body)) + body


class FaultProxy:
    """Forward to `upstream` (an http:// URL) on 127.0.0.1:<free port>, breaking what `add`
    scripts.

    `resumable_status=True` answers GCS resumable-upload status queries (an empty PUT with
    `Content-Range: bytes */N`) the way real GCS does, from the upstream's own answers to the
    session's chunks: 308 with the Range it kept, or the final 200 again once it is complete.
    fake-gcs-server would finalise an incomplete upload with whatever it holds, and forgets a
    complete one (404); real GCS does neither.

    `keep_host=True` passes the client's Host header on unchanged, for an upstream that checks
    SigV4 signatures (which cover the Host the client signed); otherwise it names the upstream.
    """

    def __init__(
        self, upstream: str, *, resumable_status: bool = False, keep_host: bool = False
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream = f"http://{parts.netloc}"
        self._upstream_address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._resumable_status = resumable_status
        self._keep_host = keep_host
        self._sessions: dict[str, int | Message] = {}  # session -> bytes kept, or its final answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.faults: list[Fault] = []
        self.requests: list[Seen] = []
        self.body_bytes: collections.Counter[str] = collections.Counter()  # sent, by method
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, name="fault-proxy", daemon=True)]
        self._threads[0].start()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def seen(self, method: str | None = None, path: str = "") -> list[Seen]:
        """The recorded requests with this method (None: any) whose target contains `path`."""
        with self._lock:
            return [r for r in self.requests if (method in (None, r.method)) and path in r.target]

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)  # wakes its thread
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._clients.add(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        """One client connection: requests in turn until either side closes or a fault ends it."""
        reader = client.makefile("rb")
        try:
            while not self._closing.is_set():
                request = _read_head(reader)
                if request is None:
                    return
                arrived = time.monotonic()
                if (request.header("expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                method, target = request.start.split(" ")[:2]
                with self._lock:
                    operation = request.header("x-amz-target") or ""
                    fault = next(
                        (f for f in self.faults if f.claims(method, target, operation)), None
                    )
                if fault and fault.action == "reset" and fault.at is not None:
                    length = int(request.header("content-length") or 0)
                    request.body = reader.read(min(fault.at, length))  # the rest still on its way
                else:
                    request.body = _read_body(reader, request, bodyless=False)
                with self._lock:
                    headers = {k.lower(): v for k, v in request.headers}
                    action = fault.action if fault else None
                    body = request.body if len(request.body) <= SEEN_BODY else b""
                    self.requests.append(Seen(method, target, headers, arrived, action, body))
                short = len(request.body) < int(request.header("content-length") or 0)
                if short and action != "reset":
                    return  # the client gave up mid-body: nothing to send on
                if not self._respond(client, request, method, fault):
                    return
                if (request.header("connection") or "").lower() == "close":
                    return
        except OSError:
            return  # either side went away; the client sees that as the fault it is
        finally:
            with self._lock:
                self._clients.discard(client)
            reader.close()
            client.close()

    def _respond(
        self, client: socket.socket, request: Message, method: str, fault: Fault | None
    ) -> bool:
        """Answer one request; False when the client connection must end."""
        action = fault.action if fault else None
        if action == "reset":
            _reset(client)
            return False
        if fault and action == "status":
            answer = Message(f"HTTP/1.1 {fault.status} {http.HTTPStatus(fault.status).phrase}", [])
            answer.headers = list(fault.headers.items())
            body = b"" if method == "HEAD" else fault.body
            client.sendall(answer.head(body_length=len(fault.body)) + body)
            return True
        if fault and action == "stall" and fault.at is None:
            self._hold(client, fault.stall_for)
            return False
        if fault and action == "delay":
            self._hold(client, fault.stall_for)
        if fault and action == "flip_request" and fault.at is not None:
            body = request.body
            request.body = body[: fault.at] + bytes([body[fault.at] ^ 0xFF]) + body[fault.at + 1 :]
        if self._resumable_status and _is_status_query(method, request):
            client.sendall(self._session_status(request))
            return True
        own = self.intercept(method, request)
        if own is not None and fault is None:
            body = b"" if method == "HEAD" else own.body
            client.sendall(own.head(body_length=len(own.body)) + body)
            return True
        response = self.rewrite(method, request, self._forward(request, method))
        if action == "reset_after_upload":
            _reset(client)
            return False
        body = b"" if method == "HEAD" else response.body
        head = response.head(body_length=None if method == "HEAD" else len(body))
        if fault and action in ("stall", "truncate"):
            self._count(method, len(body[: fault.at]))
            client.sendall(head + body[: fault.at])
            if action == "stall":
                self._hold(client, fault.stall_for)
            return False
        if fault and action == "flip" and fault.at is not None and fault.at < len(body):
            body = body[: fault.at] + bytes([body[fault.at] ^ 0xFF]) + body[fault.at + 1 :]
        self._count(method, len(body))
        client.sendall(head + body)
        return True

    def intercept(self, method: str, request: Message) -> Message | None:
        """An answer of the proxy's own instead of the upstream's (and the request may be
        changed before it is forwarded); None: forward it. Subclasses say."""
        return None

    def rewrite(self, method: str, request: Message, response: Message) -> Message:
        """The upstream's answer as the client sees it. Subclasses say."""
        return response

    def _count(self, method: str, sent: int) -> None:
        with self._lock:
            self.body_bytes[method] += sent

    def _session_status(self, request: Message) -> bytes:
        """What real GCS answers a status query: 308 with what it kept, or the finished object."""
        with self._lock:
            kept = self._sessions.get(request.start.split(" ")[1], 0)
        if isinstance(kept, Message):
            return kept.wire()
        ranged = [("Range", f"bytes=0-{kept - 1}")] if kept else []
        return Message("HTTP/1.1 308 Resume Incomplete", ranged).wire(b"")

    def _forward(self, request: Message, method: str) -> Message:
        """Send `request` upstream on a fresh connection; the whole response, Location rewritten.
        An upstream that refuses or drops the connection raises OSError: the client's
        connection is closed, as a gateway whose backend died would."""
        host, port = self._upstream_address
        if self._keep_host:
            headers = list(request.headers) + [("Connection", "close")]
        else:
            headers = [(k, v) for k, v in request.headers if k.lower() != "host"]
            headers += [("Host", f"{host}:{port}"), ("Connection", "close")]
        with socket.create_connection(self._upstream_address, timeout=30) as upstream:
            upstream.sendall(Message(request.start, headers, request.body).wire())
            with upstream.makefile("rb") as reader:
                response = _read_head(reader)
                if response is None:
                    raise ConnectionError(f"{self.upstream} closed without answering")
                status = int(response.start.split(" ")[1])
                bodyless = method == "HEAD" or status in (204, 304) or status < 200
                response.body = _read_body(reader, response, bodyless=bodyless)
        response.headers = [
            (k, v.replace(self.upstream, self.url) if k.lower() == "location" else v)
            for k, v in response.headers
        ]
        session = request.start.split(" ")[1]
        with self._lock:  # a resumable upload's progress, for _session_status
            if method == "PUT" and status == 308:
                last = (response.header("range") or "bytes=0--1").rsplit("-", 1)[1]
                self._sessions[session] = int(last) + 1
            elif method == "PUT" and status in (200, 201):
                self._sessions[session] = response
        return response

    def _hold(self, client: socket.socket, seconds: float) -> None:
        """Say nothing until `seconds` pass, the client hangs up, or the proxy closes."""
        deadline = time.monotonic() + seconds
        while not self._closing.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([client], [], [], 0.05)
            if readable and not client.recv(65536):
                return


def _is_status_query(method: str, request: Message) -> bool:
    content_range = request.header("content-range") or ""
    return method == "PUT" and content_range.startswith("bytes */") and not request.body


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a crashed peer or a middlebox dropping the connection would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # the connection's thread closes its reader too, which sends the RST


def _read_head(reader: BinaryIO) -> Message | None:
    """The start line and headers, or None if the peer closed before sending any."""
    start = reader.readline()
    while start in (b"\r\n", b"\n"):  # tolerated between messages (RFC 9112, 2.2)
        start = reader.readline()
    if not start:
        return None
    headers = []
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return Message(start.decode("latin-1").rstrip("\r\n"), headers)


def _read_body(reader: BinaryIO, message: Message, *, bodyless: bool) -> bytes:
    if bodyless:
        return b""
    if "chunked" in (message.header("transfer-encoding") or "").lower():
        chunks = []
        while size := int(reader.readline().split(b";")[0], 16):
            chunks.append(reader.read(size))
            reader.readline()
        while reader.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)
    if (length := message.header("content-length")) is not None:
        return reader.read(int(length))
    is_request = not message.start.startswith("HTTP/")
    return b"" if is_request else reader.read()  # a response without length ends at close
