"""/v1/jobs end to end on the emulators: sync and check jobs started over HTTP, watched while
they run, cancelled, refused, counted in /metrics and named on their log lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from google.cloud import storage
from pydantic import SecretStr

from app.config import Settings
from app.dev import emulators
from app.main import create_app
from tests.conftest import Buckets
from tests.faults import Fault, FaultProxy
from tests.service_process import REPLICATOR, running_service, service_settings

JOB_TIMEOUT = 60  # a safety net for a job that never ends; never asserted on
SLOW_KEYS = 40  # objects of a slow job: each GET held SLOW_GET seconds, two copies at once
SLOW_GET = 0.3


def wait_until(check: Any, what: str) -> Any:
    """Poll `check()` until it returns something truthy; fail the test at the safety net."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def ended(client: TestClient | httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it is no longer running."""

    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] != "running" else None

    return wait_until(check, f"job {job_id} to end")  # type: ignore[no-any-return]


def report_lines(client: TestClient, job_id: str) -> list[str]:
    response = client.get(f"/v1/jobs/{job_id}/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return sorted(response.text.splitlines())


def metric(client: TestClient, sample: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def counts(**nonzero: int) -> dict[str, int]:
    names = ("listed", "copied", "skipped", "gone", "deleted", "failed")
    names += ("identical", "missing", "extra", "different", "errors", "archived", "unverified")
    return {name: nonzero.get(name, 0) for name in names}


def job_body(kind: str, source: str, destination: str) -> dict[str, str]:
    """POST /v1/jobs's body for s3://`source` and gs://`destination`."""
    return {"kind": kind, "source": f"s3://{source}", "destination": f"gs://{destination}"}


@pytest.fixture
def other_bucket(gcs: storage.Client) -> str:
    """A destination bucket that is not the service's GCS_BUCKET_NAME."""
    name = f"job-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    return name


def test_a_sync_job_copies_below_the_prefixes_and_reports_each_key(
    client: TestClient, buckets: Buckets, other_bucket: str
) -> None:
    data = {
        "a.csv": buckets.put("reports/a.csv", b"alpha,1\n"),
        "b/c.csv": buckets.put_random("reports/b/c.csv", 300_000),
    }
    buckets.put("reports/tmp/scratch.csv", b"left out")
    buckets.put("elsewhere.txt", b"not below the prefix")
    samples = {
        "copied": 'replicator_job_objects_total{kind="sync",outcome="copied"}',
        "bytes": "replicator_job_bytes_total",
        "succeeded": 'replicator_jobs_finished_total{kind="sync",status="succeeded"}',
    }
    before = {name: metric(client, sample) for name, sample in samples.items()}

    job = job_body("sync", f"{buckets.source}/reports", f"{other_bucket}/archive")
    started = client.post("/v1/jobs", json={**job, "exclude": ["tmp/**"]})

    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.json()["status"] == "running"
    assert started.headers["location"] == f"/v1/jobs/{job_id}"
    job = ended(client, job_id)
    size = sum(len(d) for d in data.values())
    assert job["status"] == "succeeded", job
    assert job["counts"] == counts(listed=2, copied=2)
    assert (job["bytes"], job["errors"], job["error"]) == (size, [], None)
    assert job["source"] == f"s3://{buckets.source}/reports/"
    assert job["destination"] == f"gs://{other_bucket}/archive/"
    assert job["started_at"] <= job["finished_at"]
    held = {blob.name: blob.download_as_bytes() for blob in buckets.gcs.list_blobs(other_bucket)}
    assert held == {f"archive/{key}": body for key, body in data.items()}
    buckets.assert_nothing_written()  # GCS_BUCKET_NAME is only the other routes' default
    assert report_lines(client, job_id) == ["copied a.csv", "copied b/c.csv"]
    assert client.get("/v1/jobs").json()["jobs"][0] == job
    after = {name: metric(client, sample) for name, sample in samples.items()}
    assert {name: after[name] - before[name] for name in samples} == {
        "copied": 2,
        "bytes": size,
        "succeeded": 1,
    }
    assert metric(client, "replicator_jobs_running") == 0


def test_a_check_job_marks_each_key_as_rclone_does(
    client: TestClient, buckets: Buckets, other_bucket: str
) -> None:
    for key in ("same.txt", "changed.txt"):
        buckets.put(key, b"as copied")
        copy = {"s3_bucket": buckets.source, "s3_key": key, "gcs_bucket": other_bucket}
        assert client.post("/v1/replicate", json=copy).status_code == 200
    buckets.put("changed.txt", b"changed since the copy")
    buckets.put("missing.txt", b"never copied")
    buckets.gcs.bucket(other_bucket).blob("extra.txt").upload_from_string(b"only here")

    started = client.post("/v1/jobs", json=job_body("check", buckets.source, other_bucket))

    assert started.status_code == 202, started.text
    job = ended(client, started.json()["id"])
    assert job["status"] == "succeeded", job  # it compared every key; the marks say how
    assert job["counts"] == counts(listed=4, identical=1, missing=1, extra=1, different=1)
    assert report_lines(client, job["id"]) == [
        "* changed.txt",
        "+ extra.txt",
        "- missing.txt",
        "= same.txt",
    ]
    sample = 'replicator_job_objects_total{kind="check",outcome="missing"}'
    assert metric(client, sample) >= 1


@pytest.fixture
def slow_source(buckets: Buckets, s3_proxy: FaultProxy) -> Buckets:
    """SLOW_KEYS small objects whose every GET the proxy in front of S3 holds SLOW_GET s."""
    for n in range(SLOW_KEYS):
        buckets.put(f"slow-{n:03}.bin", f"object {n}".encode() * 100)
    s3_proxy.add(Fault("GET", f"/{buckets.source}/slow-", "delay", stall_for=SLOW_GET))
    return buckets


def slow_settings(settings: Settings, s3_proxy: FaultProxy, **update: Any) -> Settings:
    return settings.model_copy(
        update={"s3_endpoint_url": s3_proxy.url, "batch_concurrency": 2, **update}
    )


def sync_job(buckets: Buckets, prefix: str = "") -> dict[str, str]:
    """A sync of the whole source bucket to `prefix` in the service's destination bucket."""
    return job_body("sync", buckets.source, f"{buckets.dest}/{prefix}")


def test_a_running_job_shows_its_progress_and_cancels_whole(
    settings: Settings, s3_proxy: FaultProxy, slow_source: Buckets
) -> None:
    with TestClient(create_app(slow_settings(settings, s3_proxy))) as client:
        job_id = client.post("/v1/jobs", json=sync_job(slow_source)).json()["id"]

        def some_copied() -> dict[str, Any] | None:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            return job if job["counts"]["copied"] >= 2 else None

        running = wait_until(some_copied, "copies")
        cancel = client.delete(f"/v1/jobs/{job_id}")
        job = ended(client, job_id)
        again = client.delete(f"/v1/jobs/{job_id}")
        report = report_lines(client, job_id)

    assert running["status"] == "running"
    assert running["finished_at"] is None
    assert 2 <= running["counts"]["copied"] < SLOW_KEYS
    assert running["counts"]["listed"] >= running["counts"]["copied"]
    assert cancel.status_code == 202
    assert (again.status_code, again.json()) == (200, job)
    assert job["status"] == "cancelled"
    copied = job["counts"]["copied"]
    assert copied < SLOW_KEYS
    # Nothing partial: the copies in flight finished, whole, and no other object exists.
    held = {
        blob.name: blob.download_as_bytes()
        for blob in slow_source.gcs.list_blobs(settings.gcs_bucket_name)
    }
    assert len(held) == copied
    for key, body in held.items():
        assert body == slow_source.s3.get_object(Bucket=slow_source.source, Key=key)["Body"].read()
    assert report == sorted(f"copied {key}" for key in held)


def test_a_running_job_holds_its_source_and_destination(
    settings: Settings, s3_proxy: FaultProxy, slow_source: Buckets
) -> None:
    with TestClient(create_app(slow_settings(settings, s3_proxy, max_running_jobs=2))) as client:
        first = client.post("/v1/jobs", json=sync_job(slow_source)).json()["id"]
        same_pair = client.post("/v1/jobs", json=sync_job(slow_source))
        elsewhere = client.post("/v1/jobs", json=sync_job(slow_source, "copy-2"))
        one_too_many = client.post("/v1/jobs", json=sync_job(slow_source, "copy-3"))
        for job_id in (first, elsewhere.json()["id"]):
            client.delete(f"/v1/jobs/{job_id}")
            ended(client, job_id)
        after_the_first = client.post("/v1/jobs", json=sync_job(slow_source))
        client.delete(f"/v1/jobs/{after_the_first.json()['id']}")

    assert same_pair.status_code == 409
    assert same_pair.json()["error"] == "conflict"
    assert f"job {first} is running" in same_pair.json()["detail"]
    assert elsewhere.status_code == 202
    assert one_too_many.status_code == 429
    assert one_too_many.json()["error"] == "too_many_jobs"
    assert after_the_first.status_code == 202


NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    b"<Message>The specified key does not exist.</Message></Error>"
)


def test_a_sync_job_counts_keys_deleted_since_the_listing_as_gone(
    settings: Settings, s3_proxy: FaultProxy, buckets: Buckets
) -> None:
    buckets.put("kept.txt", b"kept")
    buckets.put("gone.txt", b"deleted at the source once listed")
    # S3's answer to a GET of a key deleted after the listing named it.
    s3_proxy.add(
        Fault("GET", f"/{buckets.source}/gone.txt", "status", status=404, body=NO_SUCH_KEY)
    )
    with TestClient(create_app(slow_settings(settings, s3_proxy))) as client:
        job = ended(client, client.post("/v1/jobs", json=sync_job(buckets)).json()["id"])

    assert job["status"] == "succeeded", job
    assert job["counts"] == counts(listed=2, copied=1, gone=1)
    assert job["errors"] == []
    assert {blob.name for blob in buckets.gcs.list_blobs(settings.gcs_bucket_name)} == {"kept.txt"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"source": "gs://wrong-scheme"}, "source: 'gs://wrong-scheme' is not a s3://"),
        ({"destination": "gs://Bad_Bucket"}, "destination: 'gs://Bad_Bucket'"),
        ({"kind": "copy"}, "kind:"),
        ({"overwrite": "always"}, "overwrite: not a field of this request (misspelled?)"),
        ({"include": ["ok/*", "[z-a]"]}, "include: '[z-a]' is not a glob"),
        ({"kind": "check", "delete": True}, "delete: not for a check job"),
        ({"kind": "check", "dry_run": True}, "dry_run: not for a check job"),
        ({"checksum": True}, "checksum: not for a sync job"),
        ({"max_delete": 5}, "max_delete: only with delete"),
        ({"delete": True, "max_delete": -1}, "max_delete: Input should be greater than"),
    ],
)
def test_bad_input_names_what_is_wrong_and_starts_nothing(
    client: TestClient, buckets: Buckets, change: dict[str, Any], named: str
) -> None:
    buckets.put("a.txt", b"would be copied")
    body = {**sync_job(buckets), **change}

    response = client.post("/v1/jobs", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["detail"]
    assert client.get("/v1/jobs").json() == {"jobs": []}
    buckets.assert_nothing_written()


def test_unknown_jobs_are_404(client: TestClient) -> None:
    for method, path in [
        ("GET", "/v1/jobs/0123456789abcdef"),
        ("GET", "/v1/jobs/0123456789abcdef/report"),
        ("DELETE", "/v1/jobs/0123456789abcdef"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "not_found"
        assert "'0123456789abcdef'" in response.json()["detail"]


def test_jobs_take_an_api_key_like_every_v1_route(settings: Settings, buckets: Buckets) -> None:
    key = "jobs-key-0123456789"
    with TestClient(create_app(settings.model_copy(update={"api_keys": SecretStr(key)}))) as client:
        refused = [
            client.post("/v1/jobs", json=sync_job(buckets)),
            client.get("/v1/jobs"),
            client.get("/v1/jobs/0123456789abcdef/report"),
        ]
        listed = client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})

    assert [r.status_code for r in refused] == [401, 401, 401]
    assert (listed.status_code, listed.json()) == (200, {"jobs": []})


@pytest.fixture
def service_log(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> Iterator[tuple[httpx.Client, Path]]:
    """A service process logging JSON lines, and its log file."""
    settings = service_settings(
        moto_server.url, gcs_server.url, buckets.dest, LOG_FORMAT="json", STARTUP_PROBE="0"
    )
    with running_service(tmp_path, settings) as service, httpx.Client(base_url=service.url) as http:
        yield http, service.log


def test_every_log_line_of_a_job_carries_its_id(
    service_log: tuple[httpx.Client, Path], buckets: Buckets
) -> None:
    http, log = service_log
    for key in ("one.txt", "two.txt"):
        buckets.put(key, key.encode())

    job_id = http.post("/v1/jobs", json=sync_job(buckets)).json()["id"]
    assert ended(http, job_id)["status"] == "succeeded"

    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    mine = [entry["message"] for entry in entries if entry.get("job_id") == job_id]
    assert mine[0] == f"job {job_id}: sync s3://{buckets.source}/ -> gs://{buckets.dest}/"
    copies = [m for m in mine if m.startswith("replicated s3://")]  # from the copy threads
    assert len(copies) == 2
    assert mine[-1] == f"job {job_id} succeeded: listed 2, copied 2, bytes 14"


def test_stopping_the_service_cancels_its_jobs(
    tmp_path: Path, s3_proxy: FaultProxy, gcs_server: emulators.Emulator, slow_source: Buckets
) -> None:
    settings = service_settings(
        s3_proxy.url,
        gcs_server.url,
        slow_source.dest,
        BATCH_CONCURRENCY="2",
        LOG_FORMAT="json",
        STARTUP_PROBE="0",
    )

    def serve(port: int) -> list[str]:  # `replicator serve` exits 0 on SIGTERM
        return [str(REPLICATOR), "serve", "--port", str(port)]

    service = running_service(tmp_path, settings, serve)
    with service as service, httpx.Client(base_url=service.url) as http:
        job_id = http.post("/v1/jobs", json=sync_job(slow_source)).json()["id"]
        wait_until(lambda: http.get(f"/v1/jobs/{job_id}").json()["counts"]["copied"], "a copy")
        service.process.terminate()
        assert service.process.wait(timeout=JOB_TIMEOUT) == 0

    entries = [
        json.loads(line) for line in service.log.read_text().splitlines() if line.startswith("{")
    ]
    last = [e["message"] for e in entries if e.get("job_id") == job_id][-1]
    assert last.startswith(f"job {job_id} cancelled: listed ")
    copied = int(last.split("copied ")[1].split(",")[0])
    held = {
        blob.name: blob.download_as_bytes() for blob in slow_source.gcs.list_blobs(slow_source.dest)
    }
    assert 1 <= len(held) == copied < SLOW_KEYS
    for key, body in held.items():
        assert body == slow_source.s3.get_object(Bucket=slow_source.source, Key=key)["Body"].read()
