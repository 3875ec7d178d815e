"""Converging on S3 events on the real emulators: whatever the order, duplication or lateness of
the events, the destination ends up as the source is now.

Every test calls the service `app.wiring.build` makes, with records `app.events.parse` made
from S3-shaped bodies, and checks what a user would: the bytes and the recorded source ETag at
the destination, its generation, or its absence.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
from google.cloud import storage
from prometheus_client import REGISTRY

from app import errors
from app.config import Settings
from app.dev import emulators
from app.events.converge import LOOKS, EventAction
from app.events.parse import EventRecord, parse
from app.replication import identity
from app.replication.replicator import ReplicationRequest
from app.rules import parse_rules
from app.wiring import Services, build
from tests.conftest import Buckets, destination_bytes, make_settings
from tests.events.samples import converge, eventbridge_event, s3_notification, s3_record
from tests.faults import S3_SLOW_DOWN, Fault, FaultProxy

CREATED = "ObjectCreated:Put"
REMOVED = "ObjectRemoved:Delete"

Build = Callable[..., Services]


@pytest.fixture
def services(settings: Settings) -> Iterator[Build]:
    """`build(settings)`, with overrides; every service built is closed at the end."""
    built: list[Services] = []

    def make(base: Settings = settings, **overrides: Any) -> Services:
        built.append(build(base.model_copy(update=overrides)))
        return built[-1]

    yield make
    for service in built:
        service.close()


def s3_event(bucket: str, key: str, name: str = CREATED, sequencer: str = "01") -> EventRecord:
    """One record parsed from an S3 notification body (keys are form-encoded, as S3 sends)."""
    body = s3_notification(s3_record(quote_plus(key), name, bucket, sequencer=sequencer))
    [record] = parse(json.dumps(body)).records
    return record


def eventbridge(bucket: str, key_as_sent: str, detail_type: str) -> EventRecord:
    body = eventbridge_event(detail_type, key_as_sent)
    body["detail"]["bucket"]["name"] = bucket
    [record] = parse(json.dumps(body)).records
    return record


def blob(buckets: Buckets, key: str, bucket: str | None = None) -> storage.Blob | None:
    return buckets.gcs.bucket(bucket or buckets.dest).get_blob(key)


def source_etag(buckets: Buckets, key: str) -> str | None:
    try:
        head = buckets.s3.head_object(Bucket=buckets.source, Key=key)
    except buckets.s3.exceptions.ClientError:
        return None
    return str(head["ETag"]).strip('"')


def assert_matches_source(buckets: Buckets, key: str) -> None:
    """The destination holds the source's bytes and records its ETag, or, when the source
    has no such key, holds nothing under it."""
    etag = source_etag(buckets, key)
    copy = blob(buckets, key)
    if etag is None:
        assert copy is None, f"{key}: the source has no object, the destination still does"
        return
    assert copy is not None, f"{key}: missing at the destination"
    source = buckets.s3.get_object(Bucket=buckets.source, Key=key)["Body"].read()
    assert buckets.destination_bytes(key) == source
    assert copy.metadata[identity.SOURCE_ETAG] == etag


def test_a_create_is_copied_once_and_its_duplicate_skipped(
    buckets: Buckets, services: Build
) -> None:
    events = services().events
    data = buckets.put("a.txt", b"first version")

    first = converge(events, s3_event(buckets.source, "a.txt"))
    written = blob(buckets, "a.txt")
    duplicate = converge(events, s3_event(buckets.source, "a.txt"))

    assert (first.action, first.s3_bucket, first.s3_key) == ("replicated", buckets.source, "a.txt")
    assert first.event == CREATED
    assert duplicate.action == EventAction.SKIPPED
    assert written is not None
    buckets.assert_holds("a.txt", data, written.generation)
    assert_matches_source(buckets, "a.txt")


EVENTS = [
    ("v1", CREATED, "10"),
    (None, REMOVED, "20"),
    ("v2", CREATED, "30"),
    (None, REMOVED, "40"),
]


@pytest.mark.parametrize("policy", ["propagate", "ignore"])
@pytest.mark.parametrize("final", ["present", "absent"])
def test_every_order_of_events_ends_with_the_source_as_it_is(
    buckets: Buckets, services: Build, policy: str, final: str
) -> None:
    """Each of the 24 orders of create v1, delete, create v2, delete, for a key whose
    destination holds a copy of v1 and whose source was then set to its final state."""
    events = services(delete_policy=policy).events
    for number, order in enumerate(itertools.permutations(EVENTS)):
        key = f"k{number:02}"
        buckets.put(key, b"v1 of " + key.encode())
        assert converge(events, s3_event(buckets.source, key)).action == "replicated"
        if final == "present":
            buckets.put(key, b"v2, the current one, of " + key.encode())
        else:
            buckets.s3.delete_object(Bucket=buckets.source, Key=key)
        copied = blob(buckets, key)
        assert copied is not None

        for _, name, sequencer in order:
            converge(events, s3_event(buckets.source, key, name, sequencer))

        if final == "absent" and policy == "ignore":  # never deletes: the v1 copy stays
            kept = blob(buckets, key)
            assert kept is not None
            assert kept.generation == copied.generation
        else:
            assert_matches_source(buckets, key)


def test_a_late_delete_after_a_re_create_keeps_the_new_copy(
    buckets: Buckets, services: Build
) -> None:
    events = services(delete_policy="propagate").events
    buckets.put("a.txt", b"old")
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")
    buckets.put("a.txt", b"re-created")
    assert converge(events, s3_event(buckets.source, "a.txt", CREATED, "30")).action == "replicated"
    copied = blob(buckets, "a.txt")
    assert copied is not None

    late = converge(events, s3_event(buckets.source, "a.txt", REMOVED, "20"))

    assert late.action == EventAction.SKIPPED
    assert "re-created" in late.reason
    buckets.assert_holds("a.txt", b"re-created", copied.generation)


def test_a_delete_for_a_re_created_object_the_destination_lacks_copies_it(
    buckets: Buckets, services: Build
) -> None:
    events = services(delete_policy="propagate").events
    buckets.put("a.txt", b"re-created")

    outcome = converge(events, s3_event(buckets.source, "a.txt", REMOVED))

    assert outcome.action == EventAction.REPLICATED
    assert_matches_source(buckets, "a.txt")


def test_a_delete_removes_the_copy_once_the_source_has_no_object(
    buckets: Buckets, services: Build
) -> None:
    events = services(delete_policy="propagate").events
    buckets.put("a.txt", b"short-lived")
    converge(events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")

    deleted = converge(events, s3_event(buckets.source, "a.txt", REMOVED))
    again = converge(events, s3_event(buckets.source, "a.txt", REMOVED))

    assert (deleted.action, deleted.reason) == ("deleted", "no longer at the source")
    assert (again.action, again.reason) == ("skipped", "already gone")
    assert blob(buckets, "a.txt") is None


def test_a_create_event_for_an_object_since_deleted(buckets: Buckets, services: Build) -> None:
    """Late create: skipped with DELETE_POLICY=ignore, taken as the delete with propagate."""
    buckets.put("a.txt", b"short-lived")
    converge(services().events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")

    kept = converge(services().events, s3_event(buckets.source, "a.txt"))
    assert (kept.action, kept.reason) == ("skipped", "no longer at the source")
    assert blob(buckets, "a.txt") is not None

    removed = converge(
        services(delete_policy="propagate").events, s3_event(buckets.source, "a.txt")
    )
    assert removed.action == EventAction.DELETED
    assert blob(buckets, "a.txt") is None


@pytest.mark.parametrize(
    "metadata",
    [
        None,  # written by someone else entirely
        {identity.SOURCE_BUCKET: "another-bucket", identity.SOURCE_KEY: "a.txt"},
        {identity.SOURCE_BUCKET: "SOURCE", identity.SOURCE_KEY: "another-key"},
    ],
    ids=["no-record", "other-bucket", "other-key"],
)
def test_an_object_the_service_did_not_copy_from_that_key_survives_a_delete(
    buckets: Buckets, services: Build, metadata: dict[str, str] | None
) -> None:
    theirs = buckets.gcs.bucket(buckets.dest).blob("a.txt")
    if metadata:
        theirs.metadata = {k: v.replace("SOURCE", buckets.source) for k, v in metadata.items()}
    theirs.upload_from_string(b"not ours")

    outcome = converge(
        services(delete_policy="propagate").events, s3_event(buckets.source, "a.txt", REMOVED)
    )

    assert (outcome.action, outcome.reason) == ("skipped", "not written by the replicator")
    assert buckets.destination_bytes("a.txt") == b"not ours"


def test_delete_policy_ignore_never_deletes(buckets: Buckets, services: Build) -> None:
    events = services().events  # the default
    buckets.put("a.txt", b"kept")
    converge(events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")

    for name in (REMOVED, "ObjectRemoved:DeleteMarkerCreated", "LifecycleExpiration:Delete"):
        outcome = converge(events, s3_event(buckets.source, "a.txt", name))
        assert outcome.action == EventAction.SKIPPED
        assert "DELETE_POLICY is ignore" in outcome.reason
    assert buckets.destination_bytes("a.txt") == b"kept"


def test_an_event_the_parser_ignores_is_ignored_with_its_reason(
    buckets: Buckets, services: Build
) -> None:
    buckets.put("a.txt", b"tagged")

    outcome = converge(services().events, s3_event(buckets.source, "a.txt", "ObjectTagging:Put"))

    assert outcome.action == EventAction.IGNORED
    assert outcome.reason == "ObjectTagging:Put: tags are not replicated"
    buckets.assert_nothing_written()


def test_rules_route_by_the_longest_source_prefix(
    buckets: Buckets, services: Build, gcs: storage.Client
) -> None:
    logs_bucket = f"{buckets.dest}-logs"
    gcs.create_bucket(logs_bucket)
    rules = json.dumps(
        [
            {"source": f"s3://{buckets.source}", "destination": f"gs://{buckets.dest}/all/"},
            {"source": f"s3://{buckets.source}/logs/", "destination": f"gs://{logs_bucket}"},
            {"source": f"s3://{buckets.source}/logs/app/", "destination": f"gs://{logs_bucket}/a/"},
        ]
    )
    events = services(replication_rules=parse_rules(rules)).events
    keys = ("logs/app/x.log", "logs/y.log", "z.txt")
    for key in keys:
        buckets.put(key, key.encode())

    outcomes = [converge(events, s3_event(buckets.source, key)) for key in keys]
    unrouted = converge(events, s3_event("another-bucket", "z.txt"))

    assert [o.action for o in outcomes] == ["replicated"] * 3
    assert destination_bytes(gcs, logs_bucket, "a/x.log") == b"logs/app/x.log"
    assert destination_bytes(gcs, logs_bucket, "y.log") == b"logs/y.log"
    assert buckets.destination_bytes("all/z.txt") == b"z.txt"
    assert (unrouted.action, unrouted.reason) == (
        "ignored",
        "no replication rule for s3://another-bucket/z.txt",
    )


SENT = "photos/a+b%2Bc.jpg"  # decodes to "photos/a b+c.jpg"
DECODED = "photos/a b+c.jpg"


@pytest.mark.parametrize("at_the_source", [DECODED, SENT])
def test_eventbridge_copies_whichever_key_form_the_source_has(
    buckets: Buckets, services: Build, at_the_source: str
) -> None:
    buckets.put(at_the_source, b"one of the two")

    outcome = converge(services().events, eventbridge(buckets.source, SENT, "Object Created"))

    assert (outcome.action, outcome.s3_key) == ("replicated", at_the_source)
    assert [b.name for b in buckets.gcs.list_blobs(buckets.dest)] == [at_the_source]
    assert_matches_source(buckets, at_the_source)


@pytest.mark.parametrize("at_the_destination", [DECODED, SENT])
def test_eventbridge_delete_removes_the_copy_of_whichever_form_the_destination_holds(
    buckets: Buckets, services: Build, at_the_destination: str
) -> None:
    events = services(delete_policy="propagate").events
    buckets.put(at_the_destination, b"gone soon")
    converge(events, eventbridge(buckets.source, SENT, "Object Created"))
    buckets.s3.delete_object(Bucket=buckets.source, Key=at_the_destination)

    outcome = converge(events, eventbridge(buckets.source, SENT, "Object Deleted"))

    assert (outcome.action, outcome.s3_key) == ("deleted", at_the_destination)
    buckets.assert_nothing_written()


def test_eventbridge_delete_keeps_the_copy_of_a_form_the_source_still_has(
    buckets: Buckets, services: Build
) -> None:
    events = services(delete_policy="propagate").events
    buckets.put(SENT, b"still here")
    converge(events, eventbridge(buckets.source, SENT, "Object Created"))

    outcome = converge(events, eventbridge(buckets.source, SENT, "Object Deleted"))

    assert outcome.action == EventAction.SKIPPED
    assert_matches_source(buckets, SENT)


# Faults on the wire: a proxy in front of fake-gcs-server.


@pytest.fixture
def proxied(moto_server: emulators.Emulator, gcs_proxy: FaultProxy, dest_bucket: str) -> Settings:
    return make_settings(
        moto_server.url,
        gcs_proxy.url,
        dest_bucket,
        delete_policy="propagate",
        startup_probe=False,
        read_timeout=1,
    )


PRECONDITION_FAILED = json.dumps(
    {
        "error": {
            "code": 412,
            "message": "conditionNotMet",
            "errors": [{"reason": "conditionNotMet"}],
        }
    }
).encode()


def test_every_delete_is_fenced_by_the_generation_it_looked_at_and_a_412_looks_again(
    buckets: Buckets, services: Build, proxied: Settings, gcs_proxy: FaultProxy
) -> None:
    events = services(proxied).events
    buckets.put("a.txt", b"short-lived")
    converge(events, s3_event(buckets.source, "a.txt"))
    copied = blob(buckets, "a.txt")
    assert copied is not None
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")
    gcs_proxy.add(
        Fault("DELETE", "/o/a.txt", "status", status=412, body=PRECONDITION_FAILED, times=1)
    )

    outcome = converge(events, s3_event(buckets.source, "a.txt", REMOVED))

    assert outcome.action == EventAction.DELETED
    deletes = gcs_proxy.seen("DELETE", "/o/a.txt")
    assert len(deletes) == 2
    assert all(f"ifGenerationMatch={copied.generation}" in d.target for d in deletes)
    assert blob(buckets, "a.txt") is None


def test_a_destination_that_keeps_changing_is_a_transient_error(
    buckets: Buckets, services: Build, proxied: Settings, gcs_proxy: FaultProxy
) -> None:
    events = services(proxied).events
    buckets.put("a.txt", b"short-lived")
    converge(events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")
    gcs_proxy.add(Fault("DELETE", "/o/a.txt", "status", status=412, body=PRECONDITION_FAILED))

    with pytest.raises(errors.TransientError):
        converge(events, s3_event(buckets.source, "a.txt", REMOVED))

    assert len(gcs_proxy.seen("DELETE", "/o/a.txt")) == LOOKS
    assert blob(buckets, "a.txt") is not None


@pytest.mark.xfail(
    strict=True,
    reason="emulator limitation: fake-gcs-server v1.54 ignores ifGenerationMatch on DELETE "
    "(the client sends it, as the test above shows; real GCS answers 412)",
)
def test_a_stale_delete_cannot_remove_a_newer_generation(
    buckets: Buckets, services: Build, proxied: Settings, settings: Settings, gcs_proxy: FaultProxy
) -> None:
    """The delete looks, then stalls on the wire; meanwhile the object is re-created and
    another process copies it. The retried delete carries the old generation and is refused,
    so the next look finds the re-created object and keeps its copy."""
    events = services(proxied).events
    other_process = services(settings).replicator
    buckets.put("a.txt", b"old")
    converge(events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")
    gcs_proxy.add(Fault("DELETE", "/o/a.txt", "stall", stall_for=5, times=1))
    outcome: list[Any] = []
    converging = threading.Thread(
        target=lambda: outcome.append(converge(events, s3_event(buckets.source, "a.txt", REMOVED)))
    )

    converging.start()
    while not gcs_proxy.seen("DELETE", "/o/a.txt"):
        converging.join(0.01)
    buckets.put("a.txt", b"re-created")
    other_process.replicate(ReplicationRequest(buckets.source, "a.txt", buckets.dest, "a.txt"))
    converging.join()

    assert blob(buckets, "a.txt") is not None, "the stale delete removed the newer copy"
    assert buckets.destination_bytes("a.txt") == b"re-created"
    assert outcome[0].action == EventAction.SKIPPED


# One pass per event: what the batch plan decides is final, counted once.


def failed(reason: str) -> float:
    """replicator_objects_failed{reason} in this process."""
    value = REGISTRY.get_sample_value("replicator_objects_failed_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("delete_policy", "action"),
    [("ignore", EventAction.SKIPPED), ("propagate", EventAction.DELETED)],
)
def test_a_copy_event_whose_source_is_gone_ends_as_the_delete_policy_says_and_is_no_failure(
    buckets: Buckets,
    services: Build,
    s3_proxy: FaultProxy,
    gcs_server: emulators.Emulator,
    delete_policy: str,
    action: EventAction,
) -> None:
    """A late create event for an object deleted since: the batch plan's listing shows the
    source without it, so the plan hands the key to the event's own look (no GET), which
    ends it as DELETE_POLICY says. Nothing counts it as failed on the way."""
    settings = make_settings(s3_proxy.url, gcs_server.url, buckets.dest)
    events = services(settings, delete_policy=delete_policy).events
    buckets.put("a.txt", b"short-lived")
    converge(events, s3_event(buckets.source, "a.txt"))
    buckets.s3.delete_object(Bucket=buckets.source, Key="a.txt")
    gets = len(s3_proxy.seen("GET", f"/{buckets.source}/a.txt"))
    before = failed("not_found")

    outcome = converge(events, s3_event(buckets.source, "a.txt"))

    assert (outcome.action, outcome.error) == (action, None)
    assert failed("not_found") == before
    assert len(s3_proxy.seen("GET", f"/{buckets.source}/a.txt")) == gets
    assert (blob(buckets, "a.txt") is None) == (delete_policy == "propagate")


def test_a_transient_fault_is_retried_by_one_policy_once_and_counted_once(
    buckets: Buckets, services: Build, s3_proxy: FaultProxy, gcs_server: emulators.Emulator
) -> None:
    """S3 answers every GET of the object 503 SlowDown: the batch plan's GET is tried
    MAX_RETRIES + 1 times, the key is not looked at again, the event comes back as a
    TransientError (its message goes back to the queue) and one failure is counted."""
    settings = make_settings(s3_proxy.url, gcs_server.url, buckets.dest)
    events = services(settings).events
    buckets.put("a.txt", b"never read")
    s3_proxy.add(Fault("GET", f"/{buckets.source}/a.txt", "status", status=503, body=S3_SLOW_DOWN))
    before = failed("unavailable")

    [outcome] = events.converge_all([s3_event(buckets.source, "a.txt")])

    assert isinstance(outcome, errors.TransientError)
    assert len(s3_proxy.seen("GET", f"/{buckets.source}/a.txt")) == settings.max_retries + 1
    assert s3_proxy.seen("HEAD", f"/{buckets.source}/a.txt") == []
    assert failed("unavailable") == before + 1
    assert blob(buckets, "a.txt") is None
