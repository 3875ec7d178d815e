"""Scenario 3: duplicate notifications. `POST /v1/replicate` for an object the destination
already holds, from 32 keep-alive clients, vs bare `head_object` calls from 32 threads straight
to moto: the least a correct skip needs."""

from __future__ import annotations

import functools
import http.client
import json
import os
import threading
import time
from collections.abc import Callable

from benchmarks.measure import Comparison, Contender, alternate, attempt
from benchmarks.stack import SOURCE_BUCKET, Service, ServiceError, Stack

KEY = "skip/object.bin"
CLIENTS = 32
MAX_REQUESTS_PER_CLIENT = 20_000  # a bound besides the duration, should a side be very fast


class CallFailed(RuntimeError):
    """At least one of the concurrent clients got an error or a wrong answer."""


def seed(stack: Stack, service: Service) -> None:
    """The object, replicated once, so every later request for it is a skip."""
    stack.s3.put_object(Bucket=SOURCE_BUCKET, Key=KEY, Body=os.urandom(4096))
    service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=KEY)


def run(stack: Stack, service: Service, repeat: int, duration: float) -> Comparison:
    seed(stack, service)
    comparison = Comparison(
        f"skip path, {CLIENTS} clients",
        "requests/s",
        {
            "service": Contender("service (POST /v1/replicate, replicated object)"),
            "head": Contender(f"head_object to moto, {CLIENTS} threads"),
        },
    )
    body = json.dumps({"s3_bucket": SOURCE_BUCKET, "s3_key": KEY}).encode()

    def service_client() -> Callable[[], None]:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        headers = {**service.auth, "Content-Type": "application/json"}

        def skip() -> None:
            connection.request("POST", "/v1/replicate", body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or json.loads(answer)["action"] != "skipped":
                raise ServiceError(f"{response.status}: {answer[:200]!r}")

        return skip

    def head_client() -> Callable[[], None]:
        return lambda: stack.s3.head_object(Bucket=SOURCE_BUCKET, Key=KEY)

    clients = {"service": service_client, "head": head_client}
    for make_client in clients.values():  # warm up: connections, caches, first imports
        hammer(make_client, CLIENTS, duration=0.3)
    for repetition in range(repeat):
        for name in alternate(list(clients), repetition):
            attempt(
                comparison.contenders[name],
                stack.pids(service),
                functools.partial(hammer, clients[name], CLIENTS, duration),
            )
    return comparison


def hammer(make_client: Callable[[], Callable[[], None]], threads: int, duration: float) -> int:
    """Call as fast as answers come, from `threads` threads, each with its own client from
    `make_client`, for `duration` seconds. Returns how many calls succeeded; raises if any
    failed, so a failing side is reported as failing, not as fast."""
    start = threading.Barrier(threads)
    lock = threading.Lock()
    succeeded = 0
    failures: list[str] = []

    def client() -> None:
        nonlocal succeeded
        call = make_client()
        ok = 0
        start.wait()
        deadline = time.monotonic() + duration
        try:
            while ok < MAX_REQUESTS_PER_CLIENT and time.monotonic() < deadline:
                call()
                ok += 1
        except Exception as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {exc}")
        with lock:
            succeeded += ok

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise CallFailed(f"{len(failures)} of {threads} clients failed; first: {failures[0]}")
    return succeeded
