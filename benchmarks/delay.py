"""Distance on the wire: a TCP proxy that holds every byte for half a round trip in each
direction, so each request and its response take one round trip more, and each new
connection one more (its handshake), as tens of milliseconds to a real cloud region do.

Bytes keep their order and requests in flight overlap, as on a real link (netem's delay
does the same); bandwidth is not limited. Run as its own process, so the report shows its
CPU apart: `python -m benchmarks.delay RTT_MS LISTEN_PORT=UPSTREAM_PORT ...`; it prints
"ready" once every listener is up, and runs until terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
from collections.abc import Iterator, Mapping

from app.dev import emulators

PIECE = 256 * 1024  # one socket read at most (the streams' buffer limit)
QUEUED = 256  # pieces held per direction before reading stops (64 MiB at most): at 50 ms,
# 25 ms each way, even pieces of 64 KiB pass over 600 MB/s, more than the servers do


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each piece sent `delay` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED)

    async def receive() -> None:
        while data := await reader.read(PIECE):
            await held.put((loop.time() + delay, data))
        await held.put((loop.time() + delay, b""))

    async def send() -> None:
        while True:
            due, data = await held.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    receiving = asyncio.ensure_future(receive())
    try:
        await send()
    finally:
        receiving.cancel()


async def _connection(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: int,
    rtt: float,
) -> None:
    try:
        await asyncio.sleep(rtt)  # the TCP handshake to a distant server
        opened = asyncio.open_connection(emulators.HOST, upstream, limit=PIECE)
        server_reader, server_writer = await opened
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _pipe(client_reader, server_writer, rtt / 2),
            _pipe(server_reader, client_writer, rtt / 2),
        )
    except OSError:
        pass
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


async def _serve(rtt: float, routes: Mapping[int, int]) -> None:
    servers = [
        await asyncio.start_server(
            functools.partial(_connection, upstream=upstream, rtt=rtt),
            emulators.HOST,
            port,
            limit=PIECE,
        )
        for port, upstream in routes.items()
    ]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


@contextlib.contextmanager
def delaying(rtt_ms: float, routes: Mapping[int, int]) -> Iterator[subprocess.Popen[bytes]]:
    """The proxy process, listening on each key of `routes` for its value's upstream port,
    with `rtt_ms` per round trip; stopped when the block ends."""
    arguments = [f"{port}={upstream}" for port, upstream in routes.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.delay", str(rtt_ms), *arguments],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the delay proxy did not start (exit {process.poll()})")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: list[str]) -> None:
    rtt = float(argv[0]) / 1000
    routes = {int(a): int(b) for a, b in (argument.split("=") for argument in argv[1:])}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(rtt, routes))


if __name__ == "__main__":
    main(sys.argv[1:])
