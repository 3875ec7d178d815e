"""The soak's load: random creates, overwrites and deletes through S3 (so S3's notifications
flow to the queue), some as multipart uploads, with awkward names; and beside them, copies of
events sent again (duplicates), old events sent late (reordered: a create announced after its
key was deleted, a delete after its key came back) and events posted straight to the
service's POST /v1/events. Events are hints: whatever arrives, the destination must end up as
the source is."""

from __future__ import annotations

import datetime
import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import httpx

MiB = 1024 * 1024
LARGEST = 40 * MiB
PART = 8 * MiB  # multipart parts (S3's smallest is 5 MiB, but for the last)
NAMES = (
    "plain/{n}.bin",
    "with space/{n} file.txt",
    "plus+and%25percent/{n}+x.bin",
    "unicode/é-ü-日本-{n}.dat",
    "deep/a/b/c/d/e/f/{n}",
    "odd/#hash?query&amp;{n}",
    "dots/..{n}../.x",
    "long/" + "x" * 180 + "-{n}",
)


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    bytes_put: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n


@dataclass
class Load:
    s3: Any  # boto3 S3 client, straight at moto
    sqs: Any
    bucket: str
    queue_url: str
    service_url: str
    keys: int = 240  # distinct names in play
    seed: int = 21
    tally: Tally = field(default_factory=Tally)
    _etags: dict[str, str] = field(default_factory=dict)  # last ETag put, by key
    _old_events: list[tuple[str, str, str | None]] = field(default_factory=list)

    def run(self, stop: threading.Event, threads: int = 3) -> None:
        """Until `stop`: `threads` writers, each on its own share of the names."""
        workers = [
            threading.Thread(target=self._writer, args=(stop, n, threads), name=f"load-{n}")
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _writer(self, stop: threading.Event, share: int, shares: int) -> None:
        rng = random.Random(self.seed + share)
        http = httpx.Client(base_url=self.service_url, timeout=120)
        names = [self._name(n) for n in range(share, self.keys, shares)]
        while not stop.is_set():
            key = rng.choice(names)
            try:
                self._one(rng, http, key)
            except Exception as exc:  # noqa: BLE001 - a load step that failed is counted, not fatal
                self.tally.add("load_errors")
                if len(self.tally.errors) < 20:
                    self.tally.errors.append(f"{key}: {exc!r}"[:300])
            stop.wait(rng.uniform(0.05, 0.4))
        http.close()

    def _one(self, rng: random.Random, http: httpx.Client, key: str) -> None:
        roll = rng.random()
        if roll < 0.55:
            self._put(rng, key)
        elif roll < 0.75:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
            self._etags.pop(key, None)
            self._old_events.append((key, "ObjectRemoved:Delete", None))
            self.tally.add("deletes")
        elif roll < 0.87:
            self._send_again(rng)
        else:
            self._post_direct(rng, http, key)

    def _put(self, rng: random.Random, key: str) -> None:
        size = self._size(rng)
        data = rng.randbytes(size)
        if size > 2 * PART and rng.random() < 0.7:
            etag = self._multipart(key, data)
            self.tally.add("multipart_puts")
        else:
            etag = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)["ETag"]
            self.tally.add("puts")
        etag = etag.strip('"')
        self._etags[key] = etag
        self._old_events.append((key, "ObjectCreated:Put", etag))
        del self._old_events[:-500]
        self.tally.bytes_put += size

    def _size(self, rng: random.Random) -> int:
        """0 bytes to 40 MiB: mostly small (log-uniform up to 1 MiB), some empty, 5% large."""
        roll = rng.random()
        if roll < 0.05:
            return 0
        if roll < 0.10:
            return rng.randint(16 * MiB, LARGEST)
        return int(2 ** rng.uniform(0, 20))

    def _multipart(self, key: str, data: bytes) -> str:
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        parts = []
        for number, start in enumerate(range(0, len(data), PART), start=1):
            answer = self.s3.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data[start : start + PART],
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})
        answer = self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
        return str(answer["ETag"])

    def _send_again(self, rng: random.Random) -> None:
        """An event sent before, sent again: now and then (a duplicate), or one of the older
        ones (reordered: its key has moved on since)."""
        if not self._old_events:
            return
        recent = rng.random() < 0.5
        key, name, etag = self._old_events[-1] if recent else rng.choice(self._old_events)
        copies = rng.randint(1, 3)
        body = json.dumps(notification(self.bucket, key, name, etag))
        for _ in range(copies):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        self.tally.add("duplicates_sent" if recent else "reordered_sent", copies)

    def _post_direct(self, rng: random.Random, http: httpx.Client, key: str) -> None:
        """The event for `key` as it is now, posted to the service (it settles it at once)."""
        etag = self._etags.get(key)
        name = "ObjectCreated:Put" if etag else "ObjectRemoved:Delete"
        answer = http.post("/v1/events", json=notification(self.bucket, key, name, etag))
        self.tally.add(f"direct_posts_{answer.status_code}")

    @staticmethod
    def _name(n: int) -> str:
        return NAMES[n % len(NAMES)].format(n=n)


def notification(bucket: str, key: str, event_name: str, etag: str | None) -> dict[str, Any]:
    """An S3 event notification for `key` as S3 sends it (the key form-encoded), dated now. No
    sequencer or version: those would have to be S3's own."""
    obj: dict[str, Any] = {"key": quote_plus(key)}
    if etag:
        obj["eTag"] = etag
    now = datetime.datetime.now(datetime.UTC)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "eventName": event_name,
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
            }
        ]
    }
