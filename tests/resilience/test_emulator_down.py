"""An emulator that goes away while the service runs: 503 `unavailable`, nothing new written.

Each test starts its own emulator (the suite's shared ones must outlive it), checks that a
copy works, stops the emulator, and asks again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.dev import emulators
from tests.conftest import destination_bytes, make_settings, s3_client_for
from tests.resilience.conftest import replicate, service


@pytest.fixture
def own_moto() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_moto()) as server:
        yield server


@pytest.fixture
def own_fake_gcs() -> Iterator[emulators.Emulator]:
    with emulators.running(emulators.start_fake_gcs()) as server:
        yield server


def test_s3_going_away_is_503_and_writes_nothing(
    own_moto: emulators.Emulator,
    gcs_server: emulators.Emulator,
    gcs: storage.Client,
    dest_bucket: str,
) -> None:
    s3 = s3_client_for(own_moto.url)
    s3.create_bucket(Bucket="doomed")
    data = os.urandom(50_000)
    for key in ("before.bin", "after.bin"):
        s3.put_object(Bucket="doomed", Key=key, Body=data)

    with service(make_settings(own_moto.url, gcs_server.url, dest_bucket)) as client:
        before = replicate(client, "doomed", "before.bin")
        own_moto.stop()
        after = replicate(client, "doomed", "after.bin")

    assert before.status_code == 200, before.text
    assert after.status_code == 503, after.text
    assert after.json()["error"] == "unavailable"
    assert [blob.name for blob in gcs.list_blobs(dest_bucket)] == ["before.bin"]
    assert destination_bytes(gcs, dest_bucket, "before.bin") == data


def test_gcs_going_away_is_503(
    own_fake_gcs: emulators.Emulator, moto_server: emulators.Emulator, s3: Any, source_bucket: str
) -> None:
    gcs = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": own_fake_gcs.url},
    )
    bucket = f"dst-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(bucket)
    s3.put_object(Bucket=source_bucket, Key="before.bin", Body=b"before")
    s3.put_object(Bucket=source_bucket, Key="after.bin", Body=b"after")

    with service(make_settings(moto_server.url, own_fake_gcs.url, bucket)) as client:
        before = replicate(client, source_bucket, "before.bin")
        assert destination_bytes(gcs, bucket, "before.bin") == b"before"
        own_fake_gcs.stop()
        after = replicate(client, source_bucket, "after.bin")

    assert before.status_code == 200, before.text
    assert after.status_code == 503, after.text
    assert after.json()["error"] == "unavailable"
