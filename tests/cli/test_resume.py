"""`replicator sync --checkpoint FILE` stopped (Ctrl-C, SIGTERM, SIGKILL) at a random point,
then `--resume`d: the destination ends as an uninterrupted run leaves it, and nothing the first
run copied is fetched again (every GET counted at a proxy in front of S3).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import pytest
from google.cloud import storage

from app.dev import emulators
from app.dev.valkey import RedisServer
from tests.conftest import Buckets, client_for, s3_client_for
from tests.faults import Fault, FaultProxy, Seen
from tests.service_process import REPLICATOR, replicator, service_env, service_settings

KEYS = [f"f/{n % 5}/{n:05d}" for n in range(1_100)]  # more than a page: several key ranges


@pytest.fixture(scope="module")
def source(moto_server: emulators.Emulator) -> str:
    """One source bucket for the module (filling it is the slow part), never written to."""
    s3 = s3_client_for(moto_server.url)
    name = f"src-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=name, Key=key, Body=key.encode()), KEYS))
    return name


def stopped(
    command: list[str],
    settings: dict[str, str],
    cwd: Path,
    how: signal.Signals,
    reached: Callable[[], bool],
) -> str:
    """Run `replicator *command`, send it `how` once `reached()`, and return its stdout once it
    ended as a run so stopped ends: 130, or killed."""
    first = subprocess.Popen(
        [str(REPLICATOR), *command],
        cwd=cwd,
        env=service_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # a safety net on a loaded machine, never a measure
    while not reached() and first.poll() is None:
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.01)
    first.send_signal(how)
    out, err = first.communicate(timeout=30)
    assert first.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 130), err
    if how != signal.SIGKILL:
        assert json.loads(out)["interrupted"] is True
    return out


def kept_in_ledger(url: str, destination: str) -> bool:
    """Whether a checkpoint of a run into gs://`destination` is in the ledger's Redis."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter("replicator:checkpoint:*"):
            if f"gs://{destination}/".encode() in (client.get(key) or b""):
                return True
        return False
    finally:
        client.close()


def object_get(request: Seen, bucket: str) -> str | None:
    """The key of an object GET in `bucket`, else None."""
    path, _, query = request.target.partition("?")
    if request.method == "GET" and path.startswith(f"/{bucket}/") and "list-type" not in query:
        return path[len(bucket) + 2 :]
    return None


def gets(proxy: FaultProxy, bucket: str) -> Counter[str]:
    """Object GETs the proxy saw, by key."""
    keys = (object_get(request, bucket) for request in proxy.requests)
    return Counter(key for key in keys if key is not None)


def gets_reach(proxy: FaultProxy, bucket: str, count: int) -> Callable[[], bool]:
    """Whether the proxy has seen `count` object GETs in `bucket`: counted as they come (the
    requests seen since the last call), not re-read from the first at every poll."""
    looked, fetched = 0, 0

    def reached() -> bool:
        nonlocal looked, fetched
        new = proxy.requests[looked:]
        looked += len(new)
        fetched += sum(object_get(request, bucket) is not None for request in new)
        return fetched >= count

    return reached


@pytest.mark.parametrize(
    ("how", "kept_in"),
    [
        (signal.SIGINT, "file"),
        (signal.SIGTERM, "file"),
        (signal.SIGKILL, "file"),
        (signal.SIGKILL, "ledger"),
    ],
)
def test_a_stopped_sync_resumes_exactly(
    how: signal.Signals,
    kept_in: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    source: str,
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    """With `--checkpoint ledger` the checkpoint is in the ledger's Redis, found again by the
    same command line; no file is written. (That one syncs a fifth of the keys, to stay cheap:
    still over the 4 ranges of them all.)"""
    checkpoint = "ledger" if kept_in == "ledger" else str(tmp_path / "sync.checkpoint")
    ledger, wanted, only = {}, KEYS, []
    if kept_in == "ledger":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        ledger["LEDGER_URL"] = redis_server.url()
        # The killed run's leases on the keys it was copying expire after this, not 30 s.
        ledger["LEDGER_LOCK_TTL"] = "1"
        wanted, only = [key for key in KEYS if key.startswith("f/0/")], ["--include", "f/0/**"]
    settings = service_settings(
        s3_proxy.url,
        gcs_server.url,
        buckets.dest,
        RETRY_DELAY="0.01",
        LIST_SPLIT_MIN_KEYS="1000",
        **ledger,
    )
    command = ["sync", f"s3://{source}", f"gs://{buckets.dest}", "--checkpoint", checkpoint, *only]
    common = ["--concurrency", "4", "--list-concurrency", "4", "--json"]
    s3_proxy.add(Fault(method="GET", path=f"/{source}/f/", action="delay", stall_for=0.01))
    # GETs before the signal: a random point
    stop_after = random.randrange(len(wanted) // 20, len(wanted) * 3 // 4)

    stopped(
        [*command, *common],
        settings,
        tmp_path,
        how,
        gets_reach(s3_proxy, source, stop_after),
    )
    before = gets(s3_proxy, source)
    there = {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)}
    assert there < set(wanted)  # stopped part of the way
    if how != signal.SIGKILL:
        assert set(before) == there  # what was fetched was finished and published
    if kept_in == "ledger":
        assert list(tmp_path.iterdir()) == []
        assert kept_in_ledger(ledger["LEDGER_URL"], buckets.dest)

    s3_proxy.faults.clear()
    s3_proxy.requests.clear()
    resumed = replicator(*command, "--resume", *common, cwd=tmp_path, timeout=300, **settings)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["failed"] == 0
    assert summary["copied"] == len(set(wanted) - there)

    after = gets(s3_proxy, source)
    assert not set(after) & there  # nothing the first run published is fetched again
    assert all(n == 1 for n in after.values())
    assert set(after) | there == set(wanted)
    assert summary["skipped"] < len(there) or len(there) < 50  # concluded keys are not listed
    assert {blob.name for blob in buckets.gcs.list_blobs(buckets.dest)} == set(wanted)
    for key in random.sample(wanted, 20):
        assert buckets.destination_bytes(key) == key.encode()


MISSING = [key for key in KEYS if key.startswith("f/4/")]  # left out of the copy
CHANGED = ["f/0/00000", "f/1/00551"]  # other bytes at the destination
EXTRAS = ["e/only-here", "f/2/00551x", "g/last"]  # only at the destination


@pytest.fixture(scope="module")
def copied(
    source: str,
    gcs: storage.Client,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
) -> str:
    """A destination bucket for the module holding the source but MISSING, CHANGED and EXTRAS:
    each of check's marks. Never written to after."""
    name = f"copy-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    settings = service_settings(moto_server.url, gcs_server.url, name)
    synced = replicator(
        "sync",
        f"s3://{source}",
        f"gs://{name}",
        "--exclude",
        "f/4/**",
        cwd=None,
        timeout=300,
        **settings,
    )
    assert synced.returncode == 0, synced.stderr
    for key in CHANGED + EXTRAS:
        gcs.bucket(name).blob(key).upload_from_string(b"other bytes")
    return name


def expected_check() -> tuple[list[str], dict[str, int]]:
    """An uninterrupted check's --combined lines, and its counts."""
    marks = dict.fromkeys(KEYS, "=") | dict.fromkeys(MISSING, "-") | dict.fromkeys(CHANGED, "*")
    marks |= dict.fromkeys(EXTRAS, "+")
    lines = [f"{mark} {key}" for key, mark in sorted(marks.items())]
    counts = Counter(marks.values())
    names = {"=": "identical", "-": "missing", "+": "extra", "*": "different", "!": "errors"}
    return lines, {name: counts[mark] for mark, name in names.items()}


def first_listed(proxy: FaultProxy, bucket: str) -> list[str | None]:
    """For each listing of `bucket` the proxy saw begin (a first page: no continuation
    token), the first source key it could return (None: none is left after its start)."""
    firsts: list[str | None] = []
    for request in list(proxy.requests):
        path, _, query = request.target.partition("?")
        params = parse_qs(query)
        if path != f"/{bucket}" or "list-type" not in params or "continuation-token" in params:
            continue
        start = params.get("start-after", [""])[0]
        firsts.append(next((key for key in sorted(KEYS) if key > start), None))
    return firsts


def concluded(checkpoint: Path) -> set[str]:
    """The keys a checkpoint says were concluded: in done ranges, or up to a range's mark."""
    state = json.loads(checkpoint.read_text())
    keys = set()
    for entry in state["ranges"]:
        top = entry["through"] if entry["done"] else entry["concluded"]
        if top is None and not entry["done"]:
            continue
        keys |= {
            key
            for key in KEYS + EXTRAS
            if (entry["after"] is None or key > entry["after"]) and (top is None or key <= top)
        }
    return keys


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_check_resumes_with_the_summary_and_file_of_one_never_stopped(
    how: signal.Signals,
    tmp_path: Path,
    source: str,
    copied: str,
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
) -> None:
    checkpoint, combined = tmp_path / "check.checkpoint", tmp_path / "combined.txt"
    settings = service_settings(
        s3_proxy.url, gcs_server.url, copied, RETRY_DELAY="0.01", LIST_SPLIT_MIN_KEYS="1000"
    )
    command = ["check", f"s3://{source}", f"gs://{copied}", "--download", "--json"]
    command += ["--combined", str(combined), "--checkpoint", str(checkpoint)]
    common = ["--concurrency", "4", "--list-concurrency", "4"]
    s3_proxy.add(Fault(method="GET", path=f"/{source}/f/", action="delay", stall_for=0.01))
    stop_after = random.randrange(50, 700)  # source GETs (--download) before the signal

    stopped(
        [*command, *common],
        settings,
        tmp_path,
        how,
        gets_reach(s3_proxy, source, stop_after),
    )
    done_before = concluded(checkpoint)
    read_before = set(gets(s3_proxy, source))
    assert done_before < set(KEYS + EXTRAS)  # stopped part of the way

    left = sum(1 for entry in json.loads(checkpoint.read_text())["ranges"] if not entry["done"])
    s3_proxy.faults.clear()
    s3_proxy.requests.clear()
    resumed = replicator(*command, *common, "--resume", cwd=tmp_path, timeout=300, **settings)

    lines, counts = expected_check()
    assert resumed.returncode == 1, resumed.stderr  # some keys differ
    summary = json.loads(resumed.stdout)
    assert {name: summary[name] for name in counts} == counts
    assert summary["interrupted"] is False
    assert combined.read_text().splitlines() == lines
    read_after = gets(s3_proxy, source)
    listings = first_listed(s3_proxy, source)
    assert len(listings) == left  # each range not done listed once, none of the done ones
    assert not set(listings) & done_before  # each from after its mark
    assert not set(read_after) & done_before  # nothing concluded is read again
    assert all(n == 1 for n in read_after.values())
    identical = {key for key in KEYS if key not in MISSING and key not in CHANGED}
    assert set(read_after) | read_before >= identical
    if how == signal.SIGINT:  # every key read was reported, but those cut short by the stop
        assert len(read_before - done_before) <= 4 * 4 * 2  # concurrency x ranges x 2
    assert not (tmp_path / "check.checkpoint.held").exists()


def sent(proxy: FaultProxy) -> Counter[str]:
    """The keys of the S3 events in every SendMessageBatch the proxy passed on to SQS."""
    keys: Counter[str] = Counter()
    for request in list(proxy.requests):
        if request.headers.get("x-amz-target", "").endswith(".SendMessageBatch"):
            for entry in json.loads(request.body)["Entries"]:
                [record] = json.loads(entry["MessageBody"])["Records"]
                keys[unquote_plus(record["s3"]["object"]["key"])] += 1
    return keys


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_enqueue_resumes_without_sending_a_key_twice(
    how: signal.Signals,
    tmp_path: Path,
    source: str,
    s3_proxy: FaultProxy,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> None:
    """SIGINT: every key once. SIGKILL: at most one batch (10 keys) twice, the one sent after
    the last save of the checkpoint (it is saved after every batch)."""
    sqs = client_for("sqs", moto_server.url)
    queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    settings = service_settings(
        moto_server.url,
        gcs_server.url,
        buckets.dest,
        SQS_QUEUE_URL=queue,
        SQS_ENDPOINT_URL=s3_proxy.url,  # the same moto, through the proxy that counts
        RETRY_DELAY="0.01",
        LIST_SPLIT_MIN_KEYS="1000",
    )
    checkpoint = tmp_path / "enqueue.checkpoint"
    command = ["sync", f"s3://{source}", f"gs://{buckets.dest}", "--enqueue", "--json"]
    command += ["--checkpoint", str(checkpoint), "--list-concurrency", "4"]
    command += ["--include", "f/0/**"]  # 220 keys, 22 batches, over the 4 ranges of them all
    s3_proxy.add(Fault(operation="SendMessageBatch", action="delay", stall_for=0.05))
    stop_after = random.randrange(2, 18)  # batches sent before the signal

    def batches() -> int:
        targets = (r.headers.get("x-amz-target", "") for r in list(s3_proxy.requests))
        return sum(1 for target in targets if target.endswith(".SendMessageBatch"))

    out = stopped(command, settings, tmp_path, how, lambda: batches() >= stop_after)
    sent_first = batches()

    s3_proxy.faults.clear()
    resumed = replicator(*command, "--resume", cwd=tmp_path, timeout=300, **settings)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["failed"] == 0

    queued = sent(s3_proxy)
    waiting = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert int(waiting) == sum(queued.values())  # what went through the proxy is on the queue
    wanted = {key for key in KEYS if key.startswith("f/0/")}
    assert set(queued) == wanted  # every key, sent by one run or the other
    twice = sorted(key for key, n in queued.items() if n > 1)
    assert max(queued.values()) <= 2
    assert len(twice) <= (10 if how == signal.SIGKILL else 0), twice
    assert sent_first < 22  # the first run stopped part of the way
    if how == signal.SIGINT:
        before = json.loads(out)
        assert before["queued"] + summary["queued"] == len(wanted)
