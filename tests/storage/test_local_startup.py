"""LOCAL_GCS_PATH at start-up, on the real server (`python -m uvicorn app.main:app`): the
directory is made for the user; a path where nothing can be written stops the server in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.dev import emulators
from app.main import create_app
from app.storage import local
from tests import http_calls
from tests.conftest import make_settings
from tests.service_process import running_service
from tests.test_startup import AWS_KEYS, assert_refused_naming, start_and_exit

BUCKET = "local-destination"


def local_settings(s3_url: str, path: Path) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": s3_url,
        "GCS_BUCKET_NAME": BUCKET,
        "LOCAL_GCS_PATH": str(path),
        **AWS_KEYS,
    }


def test_a_missing_directory_is_created_and_replicated_into(
    tmp_path: Path, moto_server: emulators.Emulator, s3: Any, source_bucket: str
) -> None:
    root = tmp_path / "not" / "yet" / "there"
    data = os.urandom(3000)
    s3.put_object(Bucket=source_bucket, Key="reports/q3.csv", Body=data)

    with running_service(tmp_path, local_settings(moto_server.url, root)) as service:
        response = http_calls.post(
            f"{service.url}/v1/replicate",
            json={"s3_bucket": source_bucket, "s3_key": "reports/q3.csv"},
        )

    assert response.status_code == 200, response.text
    assert response.json()["action"] == "replicated"
    assert local.object_paths(root, BUCKET, "reports/q3.csv").data.read_bytes() == data
    assert [p.name for p in (root / BUCKET).iterdir()] == ["reports"]  # the probe left nothing


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a directory")
    return path


def below_a_file(tmp_path: Path) -> Path:
    return a_file(tmp_path) / "root"


def read_only(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        # Root writes through permission bits; nobody can make a folder in procfs.
        return Path("/proc/self")
    path = tmp_path / "read-only"
    path.mkdir(mode=0o500)
    return path


@pytest.mark.parametrize("unwritable", [a_file, below_a_file, read_only])
def test_a_path_where_nothing_can_be_written_stops_the_server(
    tmp_path: Path, moto_server: emulators.Emulator, unwritable: Any
) -> None:
    path = unwritable(tmp_path)

    result = start_and_exit(tmp_path, **local_settings(moto_server.url, path))

    [line] = assert_refused_naming(result, "LOCAL_GCS_PATH", str(path))
    assert not (path / BUCKET).exists()


def test_without_the_probe_the_first_copy_still_finds_its_bucket(
    tmp_path: Path, moto_server: emulators.Emulator, s3: Any, source_bucket: str
) -> None:
    root = tmp_path / "fresh"
    data = os.urandom(2000)
    s3.put_object(Bucket=source_bucket, Key="first.bin", Body=data)
    settings = make_settings(
        moto_server.url, "unused", BUCKET, local_gcs_path=root, startup_probe=False
    )

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "first.bin"}
        )

    assert response.status_code == 200, response.text
    assert local.object_paths(root, BUCKET, "first.bin").data.read_bytes() == data
