"""Scenario `listing`: a bucket of many keys behind the page latency of a real cloud.

Real S3 answers a ListObjectsV2 page of 1,000 keys in tens to hundreds of milliseconds, so
one stream lists about 10,000 keys a second; the emulators answer in a few milliseconds, so
a proxy (`Delayed`, below) holds every request `latency` seconds before passing it on, on both
sides. Against that, alternating runs of:

- `replicator check` and a no-change `replicator sync`, one stream (`--list-concurrency 1`)
  against N streams, and `rclone check` / `rclone sync` with their own concurrency flags;
- the peak RSS of `check` at `count` keys and at SMALL keys (memory must not grow with keys);
- `sync --inventory` against the listing path, into an empty destination: the time to the
  first object at the destination, then stopped there; and a no-change sync's total.

The S3 side is filled with PUTs into moto; the GCS side is a fake-gcs-server of the scenario's
own, loaded at start from a folder of files (`seed`): its objects record no source, so the
syncs run with OVERWRITE=never and check marks every key `*`, after the same listing.

`.venv/bin/python -m benchmarks --only listing`, or on its own with its knobs:
`.venv/bin/python -m benchmarks.listing --keys 20000 --latency 0.05 --repeat 3`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlsplit

from app.dev import emulators
from benchmarks.bulk_sync import Exited, launch
from benchmarks.stack import (
    CREDENTIALS,
    FAKE_GCS_MEMORY_LIMIT,
    Stack,
    emulators_running,
    gcs_client_for,
)

SMALL = 2_000
KEYS = 20_000  # fake-gcs-server loads 20,000 from a folder in ~100 s (see `seed`), not 100,000
QUICK_KEYS = 5_000
LATENCY = 0.05  # seconds per request: a ListObjectsV2 page of real S3, from outside AWS
STREAMS = 16
REPLICATOR = str(Path(sys.executable).parent / "replicator")
RCLONE = str(Path(sys.executable).parent / "rclone")
RCLONE_FLAGS = ("--checkers", str(STREAMS), "--transfers", str(STREAMS))
PREFIX = "keys/"


class Delayed:
    """A TCP relay on a free loopback port that holds each request `latency` seconds (the
    first bytes a client sends after an answer) before passing it on: a page's round trip
    to a far cloud, without the CPU cost of parsing HTTP."""

    def __init__(self, upstream: str, latency: float) -> None:
        split = urlsplit(upstream)
        self._upstream = (split.hostname or "127.0.0.1", split.port or 80)
        self._latency = latency
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._upstream)
        answered = True  # the next client bytes start a request
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [])
                if client in ready:
                    data = client.recv(1 << 16)
                    if not data:
                        return
                    if answered:
                        self.requests += 1
                        time.sleep(self._latency)
                        answered = False
                    upstream.sendall(data)
                if upstream in ready:
                    data = upstream.recv(1 << 16)
                    if not data:
                        return
                    client.sendall(data)
                    answered = True
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._listener.close()


def fill(stack: Stack, bucket: str, count: int) -> None:
    """`count` one-byte objects under PREFIX, spread over 16 "directories". 16 PUTs at once:
    moto is CPU-bound, and 64 at once were no faster (2,000 PUTs: 4.55 s and 5.04 s with 16,
    4.83 s and 5.07 s with 64, alternating, load average 11 on 2 cores)."""
    stack.s3.create_bucket(Bucket=bucket)

    def one(i: int) -> None:
        stack.s3.put_object(Bucket=bucket, Key=_key(i), Body=b"x")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def seed(folder: Path, buckets: dict[str, int]) -> Path:
    """A fake-gcs-server data folder: for each bucket, that many one-byte files named as
    `fill` names the keys (0 files: an empty bucket). The GCS side is loaded from it at start
    instead of copied by a sync (at 5,000 keys that copy took 287 s of the setup on a loaded
    machine). Its objects record no source, so the sync runs below use OVERWRITE=never (an
    object there is left alone without a look, as a no-change sync leaves one it holds) and
    check marks them `*`, after the same listing and merge.

    fake-gcs-server's load grows faster than the number of files: 5,000 ready in 8.1 s,
    10,000 in 19.3 s, 20,000 in 101 s, and 100,000 not within 300 s (load average 8 on 2
    cores). That, not moto, bounds KEYS."""
    for bucket, count in buckets.items():
        (folder / bucket).mkdir(parents=True)
        for directory in range(16):
            (folder / bucket / PREFIX / f"{directory:x}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / bucket / _key(i)).write_bytes(b"x")
    return folder


def _key(i: int) -> str:
    return f"{PREFIX}{i % 16:x}/{i:09d}"


def inventory(stack: Stack, bucket: str, count: int) -> str:
    """An S3 Inventory (CSV, as AWS documents it) of `bucket`'s keys; its manifest URL."""
    etag = hashlib.md5(b"x").hexdigest()
    files = []
    per_file = 100_000
    for start in range(0, count, per_file):
        text = io.StringIO()
        writer = csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for i in range(start, min(count, start + per_file)):
            writer.writerow([bucket, quote_plus(_key(i), safe=""), "1", etag])
        data = gzip.compress(text.getvalue().encode(), compresslevel=1)
        key = f"inventory/{bucket}/data/{start}.csv.gz"
        stack.s3.put_object(Bucket="bench-inventory", Key=key, Body=data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = json.dumps(
        {
            "sourceBucket": bucket,
            "destinationBucket": "arn:aws:s3:::bench-inventory",
            "version": "2016-11-30",
            "fileFormat": "CSV",
            "fileSchema": "Bucket, Key, Size, ETag",
            "files": files,
        }
    ).encode()
    base = f"inventory/{bucket}/2026-12-06T00-00Z"
    stack.s3.put_object(Bucket="bench-inventory", Key=f"{base}/manifest.json", Body=manifest)
    checksum = hashlib.md5(manifest).hexdigest().encode()
    stack.s3.put_object(Bucket="bench-inventory", Key=f"{base}/manifest.checksum", Body=checksum)
    return f"s3://bench-inventory/{base}/manifest.json"


def _env(s3_url: str, gcs_url: str) -> dict[str, str]:
    env = {
        **os.environ,
        **CREDENTIALS,
        "S3_ENDPOINT_URL": s3_url,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "GCS_BUCKET_NAME": "unused",
    }
    env.pop("AWS_CA_BUNDLE", None)
    return env


def _rclone_config(workdir: Path, s3_url: str, gcs_url: str) -> Path:
    config = workdir / "rclone-listing.conf"
    config.write_text(
        f"[s3]\ntype = s3\nprovider = Other\naccess_key_id = test\nsecret_access_key = test\n"
        f"endpoint = {s3_url}\nforce_path_style = true\n\n"
        f"[gcs]\ntype = google cloud storage\nanonymous = true\n"
        f"endpoint = {gcs_url}/storage/v1/\nbucket_policy_only = true\n"
    )
    return config


def first_copy(command: list[str], env: dict[str, str], stack: Stack, bucket: str) -> float:
    """Seconds from launch to the first object at gs://`bucket` (emptied first, looked at
    without the delay), then SIGINT: copies in flight finish, nothing more starts. A run that
    ends before any object appears is an error naming its exit status and stderr: that is
    how a crash of the inventory path once showed up here as NaN."""
    for blob in stack.gcs_client.list_blobs(bucket):
        blob.delete()
    errors = stack.workdir / "first-copy.stderr"
    started = time.perf_counter()
    with open(errors, "wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        seconds = None
        while process.poll() is None:
            if next(iter(stack.gcs_client.list_blobs(bucket, max_results=1)), None) is not None:
                seconds = time.perf_counter() - started
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if seconds is None:
        tail = errors.read_text(errors="replace")[-500:]
        raise RuntimeError(f"{command}: exit {process.returncode} before a copy: {tail}")
    return seconds


@contextmanager
def delayed(stack: Stack, latency: float) -> Iterator[tuple[Delayed, Delayed]]:
    s3, gcs = Delayed(stack.moto.url, latency), Delayed(stack.gcs.url, latency)
    try:
        yield s3, gcs
    finally:
        s3.close()
        gcs.close()


def run(stack: Stack, count: int, latency: float, repeat: int) -> dict[str, Any]:
    """The figures of the scenario (see the module's docstring), as a dict for the log. The
    GCS side is a fake-gcs-server of its own, loaded at start from a data folder (`seed`)."""
    figures: dict[str, Any] = {"keys": count, "latency_s": latency, "streams": STREAMS}
    started = time.monotonic()
    for bucket, n in (("bench-list-large", count), ("bench-list-small", SMALL)):
        fill(stack, bucket, n)
    stack.s3.create_bucket(Bucket="bench-inventory")
    manifest = inventory(stack, "bench-list-large", count)
    figures["fill_s3_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    sizes = {"bench-list-large": count, "bench-list-small": SMALL, "bench-list-empty": 0}
    data = seed(stack.workdir / f"gcs-seed-{os.getpid()}", sizes)
    gcs = emulators.start_fake_gcs(memory_limit=FAKE_GCS_MEMORY_LIMIT, data=data)
    try:
        seeded = dataclasses.replace(stack, gcs=gcs, gcs_client=gcs_client_for(gcs.url))
        figures["fill_gcs_s"] = round(time.monotonic() - started, 1)
        return _measure(seeded, figures, manifest, latency, repeat)
    finally:
        gcs.stop()
        shutil.rmtree(data, ignore_errors=True)


def _measure(
    stack: Stack, figures: dict[str, Any], manifest: str, latency: float, repeat: int
) -> dict[str, Any]:
    runs: dict[str, list[Exited]] = {}
    with delayed(stack, latency) as (s3, gcs):
        env = _env(s3.url, gcs.url)
        leave_alone = {**env, "OVERWRITE": "never"}  # the seeded objects record no source
        config = str(_rclone_config(stack.workdir, s3.url, gcs.url))

        def ours(verb: str, streams: int, bucket: str, *more: str) -> list[str]:
            return [
                REPLICATOR,
                verb,
                f"s3://{bucket}",
                f"gs://{bucket}",
                "--list-concurrency",
                str(streams),
                "--json",
                *more,
            ]

        def theirs(verb: str, bucket: str) -> list[str]:
            flags = (*RCLONE_FLAGS, "--size-only") if verb == "sync" else RCLONE_FLAGS[:2]
            return [RCLONE, "--config", config, verb, *flags, f"s3:{bucket}", f"gcs:{bucket}"]

        contenders = {
            "check, 1 stream": ours("check", 1, "bench-list-large"),
            f"check, {STREAMS} streams": ours("check", STREAMS, "bench-list-large"),
            "rclone check": theirs("check", "bench-list-large"),
            "sync no change, 1 stream": ours("sync", 1, "bench-list-large"),
            f"sync no change, {STREAMS} streams": ours("sync", STREAMS, "bench-list-large"),
            "sync no change, inventory": [
                *ours("sync", STREAMS, "bench-list-large"),
                "--inventory",
                manifest,
            ],
            "rclone sync": theirs("sync", "bench-list-large"),
            f"check of {SMALL:,}, {STREAMS} streams": ours("check", STREAMS, "bench-list-small"),
            f"check of {SMALL:,}, 1 stream": ours("check", 1, "bench-list-small"),
        }
        for repetition in range(repeat):
            names = list(contenders)
            if repetition % 2:
                names.reverse()
            for name in names:
                done = launch(contenders[name], leave_alone, stack.workdir)
                # check exits 1 when something differs (here: every key, `*`); sync, never
                allowed = (0, 1) if "check" in name else (0,)
                if done.status not in allowed:
                    raise RuntimeError(f"{name}: exit {done.status}: {done.stderr[-300:]}")
                runs.setdefault(name, []).append(done)
        figures["runs"] = {
            name: {
                "median_seconds": round(statistics.median(r.seconds for r in done), 2),
                "seconds": [round(r.seconds, 2) for r in done],
                "peak_rss_mib": round(max(r.peak_rss_mib for r in done), 1),
                "cpu_seconds": round(statistics.median(r.cpu_seconds for r in done), 2),
            }
            for name, done in runs.items()
        }
        figures["first_copy_s"] = {}
        for _ in range(repeat):
            for how in ("listing", "inventory"):
                command = [REPLICATOR, "sync", "s3://bench-list-large", "gs://bench-list-empty"]
                if how == "inventory":
                    command += ["--inventory", manifest]
                seconds = first_copy(command, env, stack, "bench-list-empty")
                figures["first_copy_s"].setdefault(how, []).append(round(seconds, 2))
        figures["requests_through_proxies"] = {"s3": s3.requests, "gcs": gcs.requests}
    figures["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.listing", description=__doc__)
    parser.add_argument("--keys", type=int, default=KEYS)
    parser.add_argument("--latency", type=float, default=LATENCY, help="seconds per request")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        with emulators_running(Path(workdir)) as stack:
            figures = run(stack, args.keys, args.latency, args.repeat)
    figures["load_average_before"] = load
    figures["nproc"] = os.cpu_count()
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
