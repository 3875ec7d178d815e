"""The systems under test, each its own process on a free loopback port: moto as S3 (or
SeaweedFS, a second S3), fake-gcs-server as GCS, and the service under uvicorn (so its peak
RSS is its own)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import httpx
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.dev import emulators

REPO = Path(__file__).resolve().parent.parent
SOURCE_BUCKET = "bench-source"
DESTINATION_BUCKET = "bench-destination"
FAKE_GCS_MEMORY_LIMIT = "3GiB"  # GOMEMLIMIT: the largest objects are deleted after each run
CLIENT_POOL = 32  # the harness's own S3 connections: the 32 HEAD threads of the skip path
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


class NotCopied(RuntimeError):
    """A contender said it was done, but the destination does not hold the bytes."""


@dataclass
class Stack:
    moto: emulators.Emulator  # the S3 the contenders reach (its url), and its process
    gcs: emulators.Emulator  # the GCS the contenders reach, and its process
    s3: Any  # a boto3 S3 client for seeding and for the raw limits
    sqs: Any  # a boto3 SQS client (moto serves it on the same port) for event plumbing
    gcs_client: storage.Client  # straight to fake-gcs-server: checks, never timed
    workdir: Path
    s3_name: str = "moto"  # the S3 process's name in the CPU readings
    others: dict[str, int] = dataclasses.field(default_factory=dict)  # more processes to read

    def pids(self, service: Service | None = None) -> dict[str, int]:
        """The processes whose CPU time a run reports, by name."""
        pids = {self.s3_name: self.moto.process.pid, "fake-gcs": self.gcs.process.pid}
        pids.update(self.others)
        if service is not None:
            pids["service"] = service.process.pid
        return pids

    def expect_size(self, bucket: str, key: str, size: int) -> None:
        blob = self.gcs_client.bucket(bucket).get_blob(key)
        if blob is None:
            raise NotCopied(f"gs://{bucket}/{key} does not exist")
        if blob.size != size:
            raise NotCopied(f"gs://{bucket}/{key} holds {blob.size} bytes, expected {size}")

    def discard(self, bucket: str, key: str) -> None:
        """Free the emulator's memory; a missing object is fine (the run may have failed)."""
        with contextlib.suppress(Exception):
            self.gcs_client.bucket(bucket).delete_blob(key)


@contextlib.contextmanager
def emulators_running(workdir: Path) -> Iterator[Stack]:
    with contextlib.ExitStack() as cleanup:
        moto = cleanup.enter_context(emulators.running(emulators.start_moto()))
        gcs = cleanup.enter_context(
            emulators.running(emulators.start_fake_gcs(memory_limit=FAKE_GCS_MEMORY_LIMIT))
        )
        moto_client = functools.partial(
            boto3.client,
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        s3 = s3_client(moto.url)
        sqs = moto_client("sqs", config=botocore.config.Config(max_pool_connections=CLIENT_POOL))
        gcs_client = gcs_client_for(gcs.url)
        s3.create_bucket(Bucket=SOURCE_BUCKET)
        gcs_client.create_bucket(DESTINATION_BUCKET)
        yield Stack(moto, gcs, s3, sqs, gcs_client, workdir)


@contextlib.contextmanager
def seaweedfs_running(base: Stack) -> Iterator[Stack]:
    """`base` with SeaweedFS (`weed mini`, data in the workdir) as its S3, holding an empty
    SOURCE_BUCKET; the same fake-gcs-server."""
    data_dir = base.workdir / f"seaweedfs-{emulators.free_port()}"
    data_dir.mkdir()
    with emulators.running(emulators.start_seaweedfs(data_dir)) as weed:
        stack = dataclasses.replace(base, moto=weed, s3=s3_client(weed.url), s3_name="seaweedfs")
        stack.s3.create_bucket(Bucket=SOURCE_BUCKET)
        yield stack


def s3_client(url: str, pool: int = CLIENT_POOL) -> Any:
    """A boto3 S3 client of the harness's, at the S3 server at `url`, with `pool` connections."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(
            max_pool_connections=pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def gcs_client_for(url: str) -> storage.Client:
    return storage.Client(
        project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": url}
    )


class ServiceError(RuntimeError):
    """The service answered something other than the success the run expected."""


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    http: httpx.Client
    auth: dict[str, str]  # the API key header, when API_KEYS is set

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        if response.status_code != 200:
            raise ServiceError(f"{path} answered {response.status_code}: {response.text[:300]}")
        answer: dict[str, Any] = response.json()
        return answer

    def replicate(self, **body: str) -> dict[str, Any]:
        """POST /v1/replicate, expecting a fresh copy (every timed run writes a new key)."""
        answer = self.post("/v1/replicate", body)
        if answer["action"] != "replicated":
            raise ServiceError(f"expected a copy, the service answered: {answer['message']}")
        return answer

    def peak_rss_mib(self) -> float:
        """VmHWM: the most resident memory the process has had since it started."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024  # kB

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def service_env(stack: Stack) -> dict[str, str]:
    """The environment of a service process on this stack: the harness's own (service
    settings such as UPLOAD_CHUNK_SIZE, BATCH_CONCURRENCY, LOG_FORMAT, API_KEYS reach it from
    there, not from a .env file), pointed at the emulators."""
    env = {
        **os.environ,
        **CREDENTIALS,
        "S3_ENDPOINT_URL": stack.moto.url,
        "STORAGE_EMULATOR_HOST": stack.gcs.url,
        "GCS_BUCKET_NAME": DESTINATION_BUCKET,
        "API_KEYS": os.environ.get("API_KEYS", ""),
    }
    env.pop("LOCAL_GCS_PATH", None)
    return env


@contextlib.contextmanager
def service_running(stack: Stack, name: str) -> Iterator[Service]:
    """`python -m uvicorn app.main:app` against this stack, with `service_env`; the first of
    API_KEYS is sent."""
    port = emulators.free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    key = os.environ.get("API_KEYS", "").split(",")[0].strip()
    with _running(stack, name, command, service_env(stack), port, key) as service:
        yield service


@contextlib.contextmanager
def worker_running(
    stack: Stack, name: str, queue_url: str, bucket: str, extra: Mapping[str, str] | None = None
) -> Iterator[Service]:
    """`replicator worker` (`python -m app.cli worker`) draining `queue_url` into `bucket`,
    with `service_env` and `extra` settings over it; `http` reaches its /health and /metrics
    on WORKER_PORT. SIGTERM when the block ends: it stops after its long polls return (up to
    20 s without messages)."""
    port = emulators.free_port()
    env = {
        **service_env(stack),
        "SQS_QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": stack.moto.url,
        "GCS_BUCKET_NAME": bucket,
        "WORKER_PORT": str(port),
        **(extra or {}),
    }
    command = [sys.executable, "-m", "app.cli", "worker"]
    with _running(stack, name, command, env, port, "", stop_timeout=25.0) as worker:
        yield worker


@contextlib.contextmanager
def _running(
    stack: Stack,
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    api_key: str,
    stop_timeout: float = 10.0,
) -> Iterator[Service]:
    """`command` as a process logging to the workdir, once its /health answers on `port`;
    SIGTERM when the block ends, SIGKILL `stop_timeout` seconds later."""
    log_path = stack.workdir / f"service-{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    auth = {"X-API-Key": api_key} if api_key else {}
    http = httpx.Client(base_url=f"http://{emulators.HOST}:{port}", headers=auth, timeout=600)
    service = Service(process, port, log_path, http, auth)
    try:
        _wait_until_serving(service)
        yield service
    finally:
        http.close()
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(service: Service, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceError(f"the service exited at start-up:\n{service.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if service.http.get("/health", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise ServiceError(f"the service did not answer within {timeout:.0f}s:\n{service.log_tail()}")
