"""`sync --inventory` and `check --inventory`: the source's keys from an S3 Inventory report.

Each test writes a real inventory into moto as AWS documents it (a `manifest.json` with its
`manifest.checksum`, gzip CSV files whose MD5s the manifest gives, the columns `fileSchema`
names, URL-encoded keys, rows in no order), then runs the command as a user would.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import uuid
from typing import Any
from urllib.parse import quote_plus

import pytest

from app.dev import emulators, plumbing
from app.events import parse
from tests.cli.test_enqueue import received
from tests.conftest import Buckets, client_for

SCHEMA = (
    "Bucket",
    "Key",
    "VersionId",
    "IsLatest",
    "IsDeleteMarker",
    "Size",
    "LastModifiedDate",
    "ETag",
)
AWKWARD = ["in/a b", "in/a+b", "in/100%", "in/ünï/cödé", "in/日本/語", "in/q?x=1&y", "in/tab\there"]


def write_inventory(
    buckets: Buckets, rows: list[dict[str, Any]], files: int = 2, file_format: str = "CSV"
) -> tuple[str, str]:
    """An inventory of the source bucket with `rows` (shuffled over `files` gzip CSV
    files); returns the manifest's s3:// URL and the inventory bucket."""
    s3 = buckets.s3
    inventory_bucket = f"inv-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=inventory_bucket)
    base = f"inventories/{buckets.source}/daily/2026-12-05T01-00Z"
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    described = []
    for n in range(files):
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in shuffled[n::files]:
            writer.writerow(
                [
                    buckets.source,
                    quote_plus(row["key"], safe=""),
                    row.get("version", ""),
                    row.get("latest", "true"),
                    row.get("marker", "false"),
                    "" if row.get("marker") == "true" else str(row["size"]),
                    row.get("modified", "2026-12-01T00:00:00.000Z"),
                    row.get("etag", ""),
                ]
            )
        data = gzip.compress(text.getvalue().encode())
        key = f"inventories/{buckets.source}/daily/data/{uuid.uuid4()}.csv.gz"
        s3.put_object(Bucket=inventory_bucket, Key=key, Body=data)
        described.append(
            {"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}
        )
    manifest = json.dumps(
        {
            "sourceBucket": buckets.source,
            "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
            "version": "2016-11-30",
            "creationTimestamp": "1764896400000",
            "fileFormat": file_format,
            "fileSchema": ", ".join(SCHEMA),
            "files": described,
        }
    ).encode()
    s3.put_object(Bucket=inventory_bucket, Key=f"{base}/manifest.json", Body=manifest)
    checksum = hashlib.md5(manifest).hexdigest().encode()
    s3.put_object(Bucket=inventory_bucket, Key=f"{base}/manifest.checksum", Body=checksum)
    return f"s3://{inventory_bucket}/{base}/manifest.json", inventory_bucket


def row_of(buckets: Buckets, key: str, **extra: str) -> dict[str, Any]:
    head = buckets.s3.head_object(Bucket=buckets.source, Key=key)
    return {"key": key, "size": head["ContentLength"], "etag": head["ETag"].strip('"'), **extra}


def dest_keys(buckets: Buckets) -> set[str]:
    return {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}


@pytest.fixture
def day_old(buckets: Buckets) -> tuple[list[dict[str, Any]], list[str]]:
    """An inventory's rows, a day old, and the keys a sync of in/ should leave at GCS."""
    keys = AWKWARD + [f"in/n/{n:03d}" for n in range(40)] + ["in/deleted", "in/changed", "out/x"]
    for key in keys:
        buckets.put(key, key.encode())
    rows = [row_of(buckets, key) for key in keys]
    rows.append(
        {"key": "in/old-version", "size": 3, "etag": "0" * 32, "version": "v1", "latest": "false"}
    )
    rows.append({"key": "in/marker", "size": 0, "version": "v2", "marker": "true"})
    buckets.s3.delete_object(Bucket=buckets.source, Key="in/deleted")
    buckets.put("in/changed", b"changed since the inventory")
    buckets.put("in/new", b"written since the inventory")  # not in it: not copied
    expected = [k for k in keys if k.startswith("in/") and k != "in/deleted"]
    return rows, expected


def test_sync_backfills_from_an_inventory(run: Any, buckets: Buckets, day_old: Any) -> None:
    rows, expected = day_old
    manifest, _ = write_inventory(buckets, rows)
    result = run(
        "sync",
        "--inventory",
        manifest,
        f"s3://{buckets.source}/in",
        f"gs://{buckets.dest}/in",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["copied"], summary["gone"], summary["failed"]) == (len(expected), 1, 0)
    assert dest_keys(buckets) == set(expected)
    assert buckets.destination_bytes("in/changed") == b"changed since the inventory"
    for key in AWKWARD:
        assert buckets.destination_bytes(key) == key.encode()

    checked = run(
        "check", "--inventory", manifest, f"s3://{buckets.source}/in", f"gs://{buckets.dest}/in"
    )
    lines = checked.stdout.splitlines()
    assert lines == sorted(lines, key=lambda line: line[2:])  # in key order
    assert "- deleted" in lines  # the inventory still names it; the destination has not got it
    assert "= a b" in lines
    assert "= 日本/語" in lines


def test_the_source_may_be_left_out_and_modified_since_filters(run: Any, buckets: Buckets) -> None:
    for key in ["old", "new"]:
        buckets.put(key, key.encode())
    rows = [
        row_of(buckets, "old", modified="2026-01-01T00:00:00.000Z"),
        row_of(buckets, "new", modified="2026-12-04T10:00:00.000Z"),
    ]
    manifest, _ = write_inventory(buckets, rows, files=1)
    result = run(
        "sync",
        "--inventory",
        manifest,
        f"gs://{buckets.dest}",
        "--modified-since",
        "2026-12-01",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert dest_keys(buckets) == {"new"}


def test_a_tampered_inventory_file_is_refused(run: Any, buckets: Buckets) -> None:
    buckets.put("k", b"k")
    manifest, inventory_bucket = write_inventory(buckets, [row_of(buckets, "k")], files=1)
    described = json.loads(
        buckets.s3.get_object(Bucket=inventory_bucket, Key=manifest.split("/", 3)[3])["Body"].read()
    )
    data_key = described["files"][0]["key"]
    tampered = gzip.compress(f'"{buckets.source}","other","","true","false","1","","x"\n'.encode())
    buckets.s3.put_object(Bucket=inventory_bucket, Key=data_key, Body=tampered)
    result = run("sync", "--inventory", manifest, f"gs://{buckets.dest}")
    assert result.returncode == 2
    assert "does not match the MD5checksum" in result.stderr
    assert data_key in result.stderr
    assert dest_keys(buckets) == set()


def test_a_changed_manifest_and_other_formats_are_refused(run: Any, buckets: Buckets) -> None:
    buckets.put("k", b"k")
    manifest, inventory_bucket = write_inventory(buckets, [row_of(buckets, "k")], files=1)
    key = manifest.split("/", 3)[3]
    body = buckets.s3.get_object(Bucket=inventory_bucket, Key=key)["Body"].read()
    buckets.s3.put_object(
        Bucket=inventory_bucket, Key=key, Body=body.replace(b"2016-11-30", b"2016-11-31")
    )
    changed = run("check", "--inventory", manifest, f"gs://{buckets.dest}")
    assert changed.returncode == 2
    assert "does not match its manifest.checksum" in changed.stderr

    parquet, _ = write_inventory(buckets, [row_of(buckets, "k")], files=1, file_format="Parquet")
    refused = run("sync", "--inventory", parquet, f"gs://{buckets.dest}")
    assert refused.returncode == 2
    assert "only CSV inventories are read" in refused.stderr
    assert dest_keys(buckets) == set()


def test_enqueue_queues_one_event_per_inventory_key_to_copy(
    run: Any, moto_server: emulators.Emulator, buckets: Buckets
) -> None:
    sqs = client_for("sqs", moto_server.url)
    queue = plumbing.queue_with_dead_letters(sqs, f"q-{uuid.uuid4().hex[:12]}")
    for key in AWKWARD:
        buckets.put(key, key.encode())
    manifest, _ = write_inventory(buckets, [row_of(buckets, key) for key in AWKWARD])
    result = run(
        "sync",
        "--inventory",
        manifest,
        f"gs://{buckets.dest}",
        "--enqueue",
        "--json",
        SQS_QUEUE_URL=queue.url,
        SQS_ENDPOINT_URL=moto_server.url,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["queued"] == len(AWKWARD)
    bodies = received(sqs, queue.url, len(AWKWARD))
    keys = {record.key for body in bodies for record in parse.parse(body).records}
    assert keys == set(AWKWARD)
    assert dest_keys(buckets) == set()  # queued, not copied


def test_an_inventory_of_a_few_thousand_keys_splits_into_fewer_ranges_than_asked(
    run: Any, buckets: Buckets
) -> None:
    """2,500 keys index 3 cut points, fewer than 16 ranges need: the ranges are what the
    index allows, and every key is compared once."""
    keys = [f"k/{n:05d}" for n in range(2_500)]
    rows = [{"key": key, "size": 1, "etag": "0" * 32} for key in keys]
    manifest, _ = write_inventory(buckets, rows, files=1)
    checked = run(
        "check", "--inventory", manifest, f"gs://{buckets.dest}", "--list-concurrency", "16"
    )
    assert checked.returncode == 1, checked.stderr  # every key is missing at the destination
    assert checked.stdout.splitlines() == [f"- {key}" for key in keys]
