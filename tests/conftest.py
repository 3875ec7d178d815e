"""Real emulators for the whole suite: moto's server as S3 and fake-gcs-server as GCS, each a
process on a free loopback port (never the `make dev` ports), reached over HTTP by the real SDKs.

Each test gets fresh, uniquely named buckets, so tests never see each other's objects.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import google_crc32c
import pytest
from fastapi.testclient import TestClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.config import Settings
from app.dev import emulators
from app.main import create_app


@pytest.fixture(scope="session")
def moto_server() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_moto()) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_fake_gcs()) as server:
        yield server


def s3_client_for(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


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


def destination_bytes(gcs: storage.Client, bucket: str, key: str) -> bytes:
    return bytes(gcs.bucket(bucket).blob(key).download_as_bytes(raw_download=True))
