"""/v1/object/{bucket}/{key}: keys are taken literally. `..` is part of a name, never a step
up a tree; `%2F` is a slash; what GCS cannot name (NUL, CR/LF) is a 422."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.cloud import storage

from app.config import Settings
from app.main import create_app


def test_dot_dot_is_part_of_the_name(
    client: TestClient, gcs: storage.Client, dest_bucket: str
) -> None:
    bucket = gcs.bucket(dest_bucket)
    bucket.blob("x/../y").upload_from_string(b"literal")
    bucket.blob("y").upload_from_string(b"elsewhere")

    # %2E%2E so that the client does not resolve the segment before sending it.
    found = client.get(f"/v1/object/{dest_bucket}/x/%2E%2E/y")
    assert found.status_code == 200
    assert (found.json()["key"], found.json()["size"]) == ("x/../y", len(b"literal"))

    assert client.delete(f"/v1/object/{dest_bucket}/x/%2E%2E/y").status_code == 204
    assert bucket.get_blob("x/../y") is None
    assert bucket.get_blob("y") is not None  # the name it "points at" is untouched


def test_encoded_slash_is_a_slash(
    client: TestClient, gcs: storage.Client, dest_bucket: str
) -> None:
    gcs.bucket(dest_bucket).blob("a/b.txt").upload_from_string(b"nested")
    response = client.get(f"/v1/object/{dest_bucket}/a%2Fb.txt")
    assert response.status_code == 200
    assert response.json()["key"] == "a/b.txt"


@pytest.mark.parametrize("key", ["a%00b", "a%0Ab", "a%0Db"])
def test_names_gcs_cannot_hold_are_422(client: TestClient, dest_bucket: str, key: str) -> None:
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/object/{dest_bucket}/{key}")
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"


def test_local_destination_refuses_keys_that_would_leave_its_root(
    settings: Settings, s3: Any, source_bucket: str, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    local = settings.model_copy(update={"local_gcs_path": root, "storage_emulator_host": None})
    s3.put_object(Bucket=source_bucket, Key="a.txt", Body=b"x")
    with TestClient(create_app(local)) as client:
        for key in ("../escape.txt", "a/../../escape.txt", "a/./b.txt"):
            response = client.post(
                "/v1/replicate",
                json={"s3_bucket": source_bucket, "s3_key": "a.txt", "gcs_key": key},
            )
            assert response.status_code == 422, (key, response.text)
            literal = "/".join("%2E" * len(p) if p in (".", "..") else p for p in key.split("/"))
            found = client.get(f"/v1/object/{settings.gcs_bucket_name}/{literal}")
            assert found.status_code == 422, (key, found.text)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(root in p.parents for p in written)
    assert not any("escape" in p.name for p in written)
