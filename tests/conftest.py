"""Real emulators for the whole suite: moto's server as S3 and fake-gcs-server as GCS, each a
process on a free loopback port (never the `make dev` ports), reached over HTTP by the real SDKs;
SeaweedFS as a second, independent S3 for the source contract; and a real Redis (valkey-server)
for the shared ledger, started the same way.

Each test gets fresh, uniquely named buckets, so tests never see each other's objects.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import google_crc32c
import pytest
from fastapi.testclient import TestClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.config import Settings
from app.dev import emulators
from app.dev.valkey import RedisServer
from app.main import create_app
from tests.faults import FaultProxy


@pytest.fixture(scope="session")
def moto_server() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_moto()) as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[emulators.Emulator]:
    """`weed mini`, its data in a temporary directory; the access key is "test"."""
    data_dir = tmp_path_factory.mktemp("seaweedfs")
    with emulators.running(emulators.start_seaweedfs(data_dir)) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_fake_gcs()) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; tests keep apart by key prefix (or database number)."""
    server = RedisServer(emulators.free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_proxy(moto_server: emulators.Emulator) -> Iterator[FaultProxy]:
    """A proxy in front of moto that records every request and injects scripted faults."""
    with FaultProxy(moto_server.url) as proxy:
        yield proxy


@pytest.fixture
def gcs_proxy(gcs_server: emulators.Emulator) -> Iterator[FaultProxy]:
    """The same in front of fake-gcs-server, answering resumable status queries as GCS does."""
    with FaultProxy(gcs_server.url, resumable_status=True) as proxy:
        yield proxy


def client_for(service: str, url: str) -> Any:
    """A boto3 client of `service` ("s3", "sqs", "sns", "events") at the emulator at `url`."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def s3_client_for(url: str) -> Any:
    return client_for("s3", url)


@pytest.fixture(scope="session")
def s3(moto_server: emulators.Emulator) -> Any:
    return s3_client_for(moto_server.url)


@pytest.fixture(scope="session")
def gcs(gcs_server: emulators.Emulator) -> storage.Client:
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_server.url},
    )


@pytest.fixture
def source_bucket(s3: Any) -> str:
    name = f"src-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def dest_bucket(gcs: storage.Client) -> str:
    name = f"dst-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return name


def make_settings(moto_url: str, gcs_url: str, bucket: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "s3_endpoint_url": moto_url,
        "storage_emulator_host": gcs_url,
        "gcs_bucket_name": bucket,
        "max_retries": 2,
        "retry_delay": 0.01,
        "connect_timeout": 2,
        "read_timeout": 10,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(
    moto_server: emulators.Emulator, gcs_server: emulators.Emulator, dest_bucket: str
) -> Settings:
    return make_settings(moto_server.url, gcs_server.url, dest_bucket)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def digests(data: bytes) -> dict[str, str]:
    """MD5 and CRC32C as GCS reports them (base64)."""
    return {
        "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "crc32c": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
    }


def upload_in_parts(s3: Any, bucket: str, key: str, parts: list[bytes]) -> bytes:
    """A multipart upload of `parts` (all but the last at least 5 MiB, S3's smallest part);
    returns the object's bytes."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    etags = [
        s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=part
        )["ETag"]
        for number, part in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    return b"".join(parts)


def destination_bytes(gcs: storage.Client, bucket: str, key: str) -> bytes:
    return bytes(gcs.bucket(bucket).blob(key).download_as_bytes(raw_download=True))


@dataclass
class Buckets:
    """A test's source bucket at S3 and destination bucket at GCS, reached directly by the
    SDKs (never through a proxy), so what they show is what the emulators hold."""

    s3: Any
    gcs: storage.Client
    source: str
    dest: str

    def put(self, key: str, data: bytes) -> bytes:
        self.s3.put_object(Bucket=self.source, Key=key, Body=data)
        return data

    def put_random(self, key: str, size: int) -> bytes:
        return self.put(key, os.urandom(size))

    warm_up: bool = False  # see replicate()

    def replicate(self, settings: Settings, key: str) -> Any:
        """One replication of `key`, by a service started with `settings` for it alone. With
        `warm_up`, that service first copies (and the test then removes) another object of the
        source bucket, so the GETs of `key` take the direct path (app.storage.s3_direct)."""
        with TestClient(create_app(settings)) as client:
            self.warm(client)
            return client.post("/v1/replicate", json={"s3_bucket": self.source, "s3_key": key})

    def warm(self, client: TestClient) -> None:
        """With `warm_up`, copy another object of the source bucket, then remove its copy."""
        if self.warm_up:
            self.put("warm-up.bin", b"the first GET of a bucket goes through boto3")
            warm = client.post(
                "/v1/replicate", json={"s3_bucket": self.source, "s3_key": "warm-up.bin"}
            )
            assert warm.status_code == 200, warm.text
            self.gcs.bucket(self.dest).delete_blob("warm-up.bin")

    def destination_bytes(self, key: str) -> bytes:
        return destination_bytes(self.gcs, self.dest, key)

    def assert_replicated(self, response: Any, key: str, data: bytes) -> None:
        """200 "replicated", and the destination holds exactly `data`, with matching checksums."""
        assert response.status_code == 200, response.text
        assert response.json()["action"] == "replicated"
        assert {"md5": response.json()["md5"], "crc32c": response.json()["crc32c"]} == digests(data)
        assert self.destination_bytes(key) == data
        blob = self.gcs.bucket(self.dest).get_blob(key)
        assert blob is not None
        assert {"md5": blob.md5_hash, "crc32c": blob.crc32c} == digests(data)

    def assert_holds(self, key: str, data: bytes, generation: int) -> None:
        """The destination holds exactly `data` at `key`, as the given generation."""
        assert self.destination_bytes(key) == data
        blob = self.gcs.bucket(self.dest).get_blob(key)
        assert blob is not None
        assert blob.generation == generation

    def assert_nothing_written(self) -> None:
        assert [blob.name for blob in self.gcs.list_blobs(self.dest)] == []


@pytest.fixture
def buckets(s3: Any, gcs: storage.Client, source_bucket: str, dest_bucket: str) -> Buckets:
    return Buckets(s3, gcs, source_bucket, dest_bucket)
