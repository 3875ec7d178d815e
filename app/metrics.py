"""Prometheus metrics of the replication flow, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from app import errors

OBJECTS_REPLICATED = Counter("replicator_objects_replicated", "Objects copied to the destination")
BYTES_REPLICATED = Counter("replicator_bytes_replicated", "Bytes copied to the destination")
OBJECTS_SKIPPED = Counter("replicator_objects_skipped", "Requests answered without copying")
OBJECTS_FAILED = Counter(
    "replicator_objects_failed",
    "Requests that ended in an error, by reason: the `kind` of app.errors (every one is "
    "exported from the start, at 0, so a rate of failures is 0 rather than absent)",
    ["reason"],
)
UNVERIFIED_REASONS = ("sse_kms", "no_checksum")  # why a copy was unverified (the copier's)
OBJECTS_UNVERIFIED = Counter(
    "replicator_objects_unverified",
    "Objects copied without anything S3 stated to check the bytes read against (an SSE-KMS "
    "object without an S3 checksum): GCS checked the upload, nothing checked the read",
    ["reason"],
)
RETRIES = Counter(
    "replicator_retries", "Retried operations, by the fault that caused them", ["cause"]
)
for _cause in errors.TRANSIENT_CAUSES:
    RETRIES.labels(_cause)
COPY_SECONDS = Histogram(
    "replicator_copy_duration_seconds",
    "Time to copy one object, verification included",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
PART_LAYOUT_LOOKUPS = Counter(
    "replicator_part_layout_lookups",
    "Multipart sources not cut in equal parts: copied again with every part's size looked up",
)
IN_FLIGHT = Gauge("replicator_objects_in_flight", "Objects being copied now")
LOOKUPS_SHARED = Counter(
    "replicator_lookups_shared", "Lookups answered by a call made for a concurrent request"
)

MESSAGES_RECEIVED = Counter("replicator_messages_received", "Queue messages received")
MESSAGES_DELETED = Counter("replicator_messages_deleted", "Queue messages settled and deleted")
MESSAGES_RETRIED = Counter(
    "replicator_messages_retried", "Queue messages left for redelivery after a failure"
)
MESSAGES_PUT_BACK = Counter(
    "replicator_messages_put_back",
    "Queue messages put back for a moment: their key was being settled by another replica",
)
MESSAGES_UNREPLICABLE = Counter(
    "replicator_messages_unreplicable",
    "Queue messages for a key that cannot be copied as things stand (archived, sse_c, "
    "retained), left for the dead-letter queue without retries, by reason",
    ["reason"],
)
# Every reason exported from the start, at 0, so that a rate is 0 rather than absent.
for _kind in errors.failure_kinds():
    OBJECTS_FAILED.labels(_kind)
for _reason in UNVERIFIED_REASONS:
    OBJECTS_UNVERIFIED.labels(_reason)
for _kind in sorted(errors.UNREPLICABLE_KINDS):
    MESSAGES_UNREPLICABLE.labels(_kind)
MESSAGES_POISONED = Counter(
    "replicator_messages_poisoned", "Queue messages that can never be settled (left for the DLQ)"
)
EVENT_LAG_SECONDS = Histogram(
    "replicator_event_lag_seconds",
    "From the event's time at S3 to the copy or delete being settled, by route: the "
    "destination bucket the rules send the key to (a configured name, never user input)",
    ["route"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
QUEUE_MESSAGES = Gauge(
    "replicator_queue_messages",
    'Operations pending: messages of the queue (queue="main") and of its dead-letter queue '
    '(queue="dead_letter"), visible or in flight (received, not yet deleted), as SQS '
    "reported them at the worker's last look (QUEUE_STATS_SECONDS)",
    ["queue", "state"],
)
QUEUE_STATS_AGE = Gauge(
    "replicator_queue_stats_timestamp_seconds",
    "When the worker last read the queue's depth (seconds since the epoch)",
)

LEDGER_UP = Gauge(
    "replicator_ledger_up",
    "1 while the ledger answers (always, for the in-process one); 0 while decisions fall back "
    "to looking at both clouds",
)
LEDGER_FALLBACKS = Counter(
    "replicator_ledger_fallbacks",
    "Ledger operations done without the shared ledger because it did not answer",
)
LEDGER_SETTLED = Counter(
    "replicator_ledger_settled", "Events settled from the ledger alone, with no cloud request"
)

HTTP_SECONDS = Histogram(
    "replicator_http_request_duration_seconds",
    'Time to answer an HTTP request, by method, route template ("other" for no route) '
    "and status class (2xx, 4xx, 5xx)",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

JOBS_RUNNING = Gauge("replicator_jobs_running", "Sync and check jobs over HTTP running now")
JOBS_FINISHED = Counter(
    "replicator_jobs_finished", "Jobs over HTTP that ended, by kind and status", ["kind", "status"]
)
JOB_OBJECTS = Counter(
    "replicator_job_objects",
    "Keys settled by jobs over HTTP, by job kind and outcome (sync: copied, skipped, deleted, "
    "failed, would_copy, would_delete; check: identical, missing, extra, different, error)",
    ["kind", "outcome"],
)
JOB_BYTES = Counter("replicator_job_bytes", "Bytes copied by sync jobs over HTTP")

DELETE_EVENTS = Counter(
    "replicator_delete_events",
    "Source deletes settled, by what was done to the copy: deleted (DELETE_POLICY=propagate), "
    "kept (DELETE_POLICY=ignore), gone (no copy to delete), not_ours (the destination object "
    "was not written by the replicator), recreated (the source has the key again: copied)",
    ["outcome"],
)
