"""One pass through everything the product does, as a pod would run it with no key: the
HTTP service copying, `replicator sync --delete`, `replicator check`, `replicator sync
--enqueue`, and a worker settling S3's own events (from a versioned bucket) and the enqueued
ones. S3 and SQS are reached through a recording proxy, so every request made is kept."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.cloud import storage

from app.dev import emulators, plumbing
from tests import http_calls
from tests.conftest import client_for, destination_bytes
from tests.faults import FaultProxy, Seen
from tests.identity.conftest import TOKEN_TTL, Clouds, eks_settings, gke_settings
from tests.service_process import replicator, running_service
from tests.worker.test_worker import running_worker, wait_for


@dataclass
class Run:
    platform: str
    source: str
    dest: str
    wire: list[Seen]  # every S3 and SQS request, as the proxy received it
    expected: dict[str, bytes]  # what the destination must hold
    health: dict[str, Any]  # the service's /health
    ready: dict[str, Any]  # the service's /ready
    worker_health: dict[str, Any]
    answers: list[httpx.Response] = field(default_factory=list)
    commands: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)


def run_everything(
    platform: str,
    clouds: Clouds,
    workdir: Path,
    moto: emulators.Emulator,
    gcs: storage.Client,
) -> tuple[Run, dict[str, bytes]]:
    """Returns the run, and what the destination holds at its end."""
    s3 = client_for("s3", moto.url)
    sqs = client_for("sqs", moto.url)
    source, dest = f"src-{uuid.uuid4().hex[:12]}", f"dst-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=source)
    s3.put_bucket_versioning(Bucket=source, VersioningConfiguration={"Status": "Enabled"})
    gcs.create_bucket(dest)
    expected: dict[str, bytes] = {}

    def put(key: str, size: int) -> None:
        data = uuid.uuid4().bytes * (size // 16)
        s3.put_object(Bucket=source, Key=key, Body=data)
        expected[key] = data

    for n in range(2):
        put(f"http/{n}.bin", 4096 + n)
        put(f"sync/{n}.bin", 2048 + n)
        put(f"enqueued/{n}.bin", 1024 + n)
    gcs.bucket(dest).blob("sync/stale.bin").upload_from_string(b"not at the source")
    queue = plumbing.queue_with_dead_letters(sqs, f"q-{uuid.uuid4().hex[:12]}", max_receives=3)

    with FaultProxy(moto.url) as proxy:
        if platform == "eks":
            settings = eks_settings(clouds, workdir, proxy.url, dest)
        else:
            settings = gke_settings(clouds, proxy.url, dest)
        settings |= {
            "SQS_QUEUE_URL": queue.url,
            "SQS_ENDPOINT_URL": proxy.url,
            "SQS_WAIT_SECONDS": "1",
            "RETRY_DELAY": "0.01",
        }
        with running_service(workdir, settings) as service:
            health = http_calls.get(f"{service.url}/health").json()
            ready = http_calls.get(f"{service.url}/ready", timeout=30).json()
            answers = []
            for n in range(2):
                if n:
                    time.sleep(TOKEN_TTL + 0.5)  # every token issued so far has expired
                answers.append(
                    http_calls.post(
                        f"{service.url}/v1/replicate",
                        json={"s3_bucket": source, "s3_key": f"http/{n}.bin"},
                        timeout=30,
                    )
                )
        commands = {
            "sync": replicator(
                "sync",
                f"s3://{source}/sync/",
                f"gs://{dest}/sync/",
                "--delete",
                "--json",
                cwd=workdir,
                **settings,
            ),
            "check": replicator(
                "check",
                f"s3://{source}/sync/",
                f"gs://{dest}/sync/",
                "--json",
                cwd=workdir,
                **settings,
            ),
            "enqueue": replicator(
                "sync",
                f"s3://{source}/enqueued/",
                f"gs://{dest}/enqueued/",
                "--enqueue",
                cwd=workdir,
                **settings,
            ),
        }
        plumbing.notify_queue(s3, source, queue)
        with running_worker(workdir, settings) as worker:
            worker_health = http_calls.get(f"{worker.url}/health").json()
            for n in range(2):
                put(f"events/{n}.bin", 3072 + n)  # S3 tells the queue, with the version
            for key in expected:
                wait_for(lambda key=key: gcs.bucket(dest).get_blob(key), f"{key} at GCS")
            wait_for(lambda: _drained(sqs, queue.url), "the queue is drained")
        wire = list(proxy.requests)
    held = {blob.name: destination_bytes(gcs, dest, blob.name) for blob in gcs.list_blobs(dest)}
    run = Run(platform, source, dest, wire, expected, health, ready, worker_health, answers)
    run.commands = commands
    return run, held


def _drained(sqs: Any, url: str) -> bool:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return all(found[name] == "0" for name in names)


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed
