"""What operators see: request ids, JSON logs, Prometheus metrics, readiness, request limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.dev import emulators
from app.main import create_app
from tests.conftest import make_settings


def test_request_id_is_taken_from_the_caller_or_generated(client: TestClient) -> None:
    given = client.get("/health", headers={"X-Request-ID": "trace-42.a:b"})
    generated = client.get("/health")
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})

    assert given.headers["x-request-id"] == "trace-42.a:b"
    assert len(generated.headers["x-request-id"]) == 32
    assert unsafe.headers["x-request-id"] not in ("", "bad id\twith spaces")


def test_json_logs_carry_the_request_id_on_every_line(
    settings: Settings, s3: Any, source_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.put_object(Bucket=source_bucket, Key="logged.txt", Body=b"x")
    with TestClient(create_app(settings.model_copy(update={"log_format": "json"}))) as client:
        response = client.post(
            "/v1/replicate",
            json={"s3_bucket": source_bucket, "s3_key": "logged.txt"},
            headers={"X-Request-ID": "req-json-1"},
        )
    assert response.status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    mine = [entry for entry in lines if entry["request_id"] == "req-json-1"]
    messages = " | ".join(entry["message"] for entry in mine)
    assert "replicated s3://" in messages  # the copy's own line, logged from a worker thread
    assert "POST /v1/replicate -> 200" in messages
    assert {"time", "level", "logger", "message", "request_id"} <= set(mine[0])


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_copies_skips_failures_and_bytes(
    client: TestClient, s3: Any, source_bucket: str
) -> None:
    s3.put_object(Bucket=source_bucket, Key="m.bin", Body=b"z" * 1234)
    names = {
        "replicated": "replicator_objects_replicated_total",
        "bytes": "replicator_bytes_replicated_total",
        "skipped": "replicator_objects_skipped_total",
        "failed": 'replicator_objects_failed_total{reason="not_found"}',
        "copies": "replicator_copy_duration_seconds_count",
    }
    before = {k: _metric(client, v) for k, v in names.items()}

    for _ in range(2):
        client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "m.bin"})
    client.post("/v1/replicate", json={"s3_bucket": source_bucket, "s3_key": "absent"})

    after = {k: _metric(client, v) for k, v in names.items()}
    delta = {k: after[k] - before[k] for k in names}
    assert delta == {"replicated": 1, "bytes": 1234, "skipped": 1, "failed": 1, "copies": 1}
    text = client.get("/metrics").text
    assert "replicator_objects_in_flight 0.0" in text
    assert "# TYPE replicator_retries_total counter" in text


def test_ready_follows_the_clouds_while_health_stays_up(
    gcs_server: emulators.Emulator, dest_bucket: str
) -> None:
    moto = emulators.start_moto()
    settings = make_settings(moto.url, gcs_server.url, dest_bucket)
    try:
        with TestClient(create_app(settings)) as client:
            answer = client.get("/ready").json()
            assert (answer["status"], answer["ledger"]) == ("ready", "local")
            moto.stop()
            not_ready = client.get("/ready")
            assert not_ready.status_code == 503
            assert not_ready.json()["error"] == "not_ready"
            assert moto.url in not_ready.json()["detail"]
            assert client.get("/health").status_code == 200
    finally:
        moto.stop()


def test_oversized_bodies_are_413(settings: Settings) -> None:
    small = settings.model_copy(update={"max_request_bytes": 2048})
    keys = [f"key-{i}" for i in range(400)]
    with TestClient(create_app(small)) as client:
        declared = client.post(
            "/v1/replicate/batch", json={"s3_bucket": "source-bucket", "s3_keys": keys}
        )

        def chunks() -> Any:  # no Content-Length: the limit applies while reading
            yield json.dumps({"s3_bucket": "source-bucket", "s3_keys": keys}).encode()

        streamed = client.post(
            "/v1/replicate/batch", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        assert "2048" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_bodies_are_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(
        "/v1/replicate", content=b'{"s3_bucket": "a-b-c", "s3_key": "k"}', headers=headers
    )
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
