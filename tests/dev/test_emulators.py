"""The free-port check `make dev` runs before starting anything: it must agree with the servers."""

from __future__ import annotations

import errno
import socket

import pytest

from app.dev import emulators


def leave_time_wait() -> int:
    """A port where a real server accepted a connection and closed it first (so the server's
    side of it is in TIME_WAIT), then stopped listening. Nothing listens there afterwards."""
    with socket.create_server((emulators.HOST, 0)) as server:
        port = int(server.getsockname()[1])
        with socket.create_connection((emulators.HOST, port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its end goes to TIME_WAIT
            assert client.recv(1) == b""  # the client sees the close, then closes too
    return port


def test_a_port_left_in_time_wait_is_free() -> None:
    port = leave_time_wait()
    # The state `make dev` used to refuse: a bind without SO_REUSEADDR fails here.
    with socket.socket() as naive, pytest.raises(OSError, match="in use") as refused:
        naive.bind((emulators.HOST, port))
    assert refused.value.errno == errno.EADDRINUSE

    emulators.ensure_port_free(port, "the GCS emulator")

    # ... and a real server binds there, as the check said it would.
    with emulators.running(emulators.start_fake_gcs(port)) as gcs:
        assert gcs.process.poll() is None


def test_a_port_with_a_listener_is_in_use() -> None:
    with socket.create_server((emulators.HOST, 0)) as listener:
        port = int(listener.getsockname()[1])

        with pytest.raises(emulators.PortInUse, match=f"port {port} .* the API"):
            emulators.ensure_port_free(port, "the API")
