"""The fault proxy itself, against a tiny upstream that answers in chunked encoding."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.faults import Fault, FaultProxy

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


class ChunkedEcho(http.server.BaseHTTPRequestHandler):
    """GET: PAYLOAD in chunks of 1000 bytes; PUT/POST: the request body back, Content-Length."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(PAYLOAD), 1000):
            piece = PAYLOAD[start : start + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ChunkedEcho)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as fault_proxy:
            yield fault_proxy
    finally:
        upstream.shutdown()
        upstream.server_close()


def connect(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(proxy.url.removeprefix("http://"), timeout=5)


def get(connection: http.client.HTTPConnection, path: str = "/obj") -> bytes:
    connection.request("GET", path)
    return connection.getresponse().read()


def test_forwards_chunked_bodies_on_one_kept_alive_connection(proxy: FaultProxy) -> None:
    connection = connect(proxy)
    assert get(connection) == PAYLOAD
    kept_alive = connection.sock
    assert [get(connection) for _ in range(2)] == [PAYLOAD] * 2
    connection.request("PUT", "/obj", body=iter([b"abc", b"def"]), encode_chunked=True)
    assert connection.getresponse().read() == b"abcdef"
    assert [(r.method, r.fault) for r in proxy.seen(path="/obj")] == [("GET", None)] * 3 + [
        ("PUT", None)
    ]
    assert connection.sock is kept_alive  # one client connection carried all four


def test_truncate_flip_and_status(proxy: FaultProxy) -> None:
    proxy.add(Fault("GET", "/cut", "truncate", at=5000))
    proxy.add(Fault("GET", "/flip", "flip", at=7))
    proxy.add(Fault("GET", "/busy", "status", status=503, headers={"Retry-After": "2"}))

    with pytest.raises(http.client.IncompleteRead) as cut:
        get(connect(proxy), "/cut")
    assert cut.value.partial == PAYLOAD[:5000]
    flipped = get(connect(proxy), "/flip")
    assert [i for i, (a, b) in enumerate(zip(flipped, PAYLOAD, strict=True)) if a != b] == [7]
    connection = connect(proxy)
    connection.request("GET", "/busy")
    busy = connection.getresponse()
    assert (busy.status, busy.getheader("Retry-After")) == (503, "2")


def test_reset_fires_on_the_chosen_requests_only(proxy: FaultProxy) -> None:
    fault = proxy.add(Fault("GET", "/obj", "reset", nth=2))
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(get(connect(proxy)) == PAYLOAD)
        except ConnectionResetError:
            outcomes.append(False)
    assert outcomes == [True, False, True]
    assert (fault.matched, fault.fired) == (3, 1)
    assert [r.fault for r in proxy.seen("GET")] == [None, "reset", None]


def test_delay_holds_the_request_then_answers_in_full(proxy: FaultProxy) -> None:
    proxy.add(Fault("GET", "/slow", "delay", stall_for=0.5, times=1))
    connection = connect(proxy)
    assert get(connection, "/slow") == PAYLOAD
    assert get(connection, "/slow") == PAYLOAD  # the connection is kept alive
    first, second = proxy.seen("GET", "/slow")
    assert (first.fault, second.fault) == ("delay", None)
    # the second request could only arrive once the first was answered, after the delay
    assert second.at - first.at >= 0.5
