"""Everything the service is made of, built in one place: `build(settings) -> Services`.

The HTTP lifespan, `make dev`, and the command-line tools call it; nothing else creates a
client, a thread pool or the replication flow. Building talks to no cloud: `Services.probe`
does, when asked.
"""

from __future__ import annotations

import datetime
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from google.auth.credentials import Credentials
from pydantic import SecretStr

from app import errors, metrics
from app.bulk.check import Check
from app.bulk.enqueue import Enqueue
from app.bulk.jobs import Jobs
from app.bulk.sync import Sync
from app.config import Settings
from app.events.converge import Converger
from app.events.dead_letters import DeadLetters
from app.events.intake import EventIntake
from app.events.sns import SnsVerifier
from app.identity import google
from app.identity.aws import AwsIdentity
from app.ledger.base import Ledger
from app.ledger.checkpoints import RedisCheckpoints
from app.ledger.failures import FailureNotes, NoFailureNotes, RedisFailureNotes
from app.ledger.local import LocalLedger
from app.queues import sqs
from app.replication.batch import Batch
from app.replication.composite import CompositeCopy, CompositePlan, sweep_stale_parts
from app.replication.copier import Copier
from app.replication.objects import DestinationObjects
from app.replication.replicator import Replicator
from app.retry import RetryPolicy
from app.storage import gcs, local, s3
from app.storage.base import Composer, Destination, Source

REQUEST_THREADS = 40  # threads that serve the synchronous routes (anyio's limiter is set to it)
LOOKUP_THREADS = 64  # destination lookups beside the source's, and multipart part layouts


@dataclass
class Identities:
    """Who the service is at each cloud: built once, shared by every client."""

    aws: AwsIdentity
    google: Credentials | None  # None: an emulator or LOCAL_GCS_PATH

    def describe(self) -> dict[str, dict[str, str]]:
        """For /health and /ready: which identity each side uses, never a secret."""
        gcs = google.describe(self.google) if self.google is not None else {"credentials": "none"}
        return {"aws": self.aws.describe(), "gcs": gcs}


def build_identities(settings: Settings) -> Identities:
    """Reads credential files; talks to no server."""
    aws = AwsIdentity(
        region=settings.aws_region,
        access_key_id=_secret(settings.aws_access_key_id),
        secret_access_key=_secret(settings.aws_secret_access_key),
        role_arn=settings.aws_role_arn,
        token_file=settings.aws_web_identity_token_file,
        audience=settings.aws_web_identity_audience,
    )
    gcs: Credentials | None = None
    if settings.uses_real_gcs:
        gcs = google.credentials(
            credentials_file=settings.google_application_credentials,
            impersonate=settings.google_impersonate_service_account,
            aws=aws,
        )
    return Identities(aws, gcs)


class Probe:
    """Clients with short timeouts and no retries, for the start-up probe and /ready. They are
    built on the first run, so commands that never probe (sync, check) do not pay for them
    (about 0.1 s of a command's start-up)."""

    def __init__(self, settings: Settings, identities: Identities) -> None:
        self._settings = settings
        self._identities = identities
        self._lock = threading.Lock()
        self._clients: tuple[Source, Destination, Any] | None = None

    def run(self) -> None:
        """Reach S3 and GCS now, one step after the other: the AWS identity (credentials, then
        STS GetCallerIdentity where STS is AWS's or AWS_ENDPOINT_URL_STS names it), S3, the
        Google identity (a token), the GCS bucket. StartupError naming the first step that
        failed."""
        self.reach_source()
        self.reach_destination(self._settings.gcs_bucket_name)

    def reach_source(self) -> None:
        """The AWS identity, then S3; StartupError when either fails."""
        source, _, sts = self._built()
        self._identities.aws.check(sts)
        source.probe()

    def reach_destination(self, bucket: str) -> None:
        """The Google identity, then `bucket` at the destination; StartupError when it cannot
        be reached as whom we are."""
        _, destination, _ = self._built()
        if self._identities.google is not None:
            google.check(self._identities.google)
        try:
            destination.probe(bucket)
        except errors.StartupError as exc:
            if isinstance(exc.__cause__, errors.AccessDenied) and self._identities.google:
                who = google.describe(self._identities.google)
                raise errors.StartupError(f"{exc} (identity: {_one_line(who)})") from exc
            raise

    def _built(self) -> tuple[Source, Destination, Any]:
        with self._lock:
            if self._clients is None:
                quick = self._settings.model_copy(
                    update={
                        "connect_timeout": self._settings.probe_timeout,
                        "read_timeout": self._settings.probe_timeout,
                    }
                )
                source, destination = _clients(
                    quick, self._identities, RetryPolicy(max_retries=0), connections=2
                )
                sts = None
                if self._settings.s3_endpoint_url is None or _sts_configured():
                    # An S3 emulator or private endpoint, and no STS endpoint named: the
                    # caller is not looked up (AWS's STS may not be reachable from here).
                    sts = self._identities.aws.sts_client(timeout=self._settings.probe_timeout)
                self._clients = source, destination, sts
            return self._clients


def _sts_configured() -> bool:
    """AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL) names the STS boto3 reaches."""
    return bool(os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL"))


def _one_line(described: dict[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in described.items())


@dataclass
class Services:
    settings: Settings
    retry: RetryPolicy
    identities: Identities
    source: Source
    destination: Destination
    replicator: Replicator
    batch: Batch
    events: Converger
    objects: DestinationObjects
    probe: Probe
    queue: sqs.SqsQueue | None  # with SQS_QUEUE_URL: the worker drains it, the intake feeds it
    sns: SnsVerifier | None  # None with SNS_VERIFY_SIGNATURES=false
    intake: EventIntake  # POST /v1/events
    ledger: Ledger  # LocalLedger, or RedisLedger with LEDGER_URL
    sync: Sync  # `replicator sync`, and sync jobs
    check: Check  # `replicator check`, and check jobs
    enqueue: Enqueue | None  # `replicator sync --enqueue`: with SQS_QUEUE_URL
    jobs: Jobs  # sync and check jobs over HTTP (/v1/jobs)
    failure_notes: FailureNotes  # why keys failed, noted by the worker (in the ledger's Redis)
    dead_letters: DeadLetters | None  # `replicator failures`, `redrive`: with SQS_QUEUE_URL
    request_threads: int
    # `--checkpoint ledger` of sync, check and enqueue: with LEDGER_URL, built when asked for
    checkpoints: RedisCheckpoints | None = None
    pools: list[ThreadPoolExecutor] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def sweep_stale_parts(self) -> None:
        """Remove what killed composite copies left in the destination bucket (GCS only): the
        parts older than PARALLEL_COMPOSITE_STALE_AFTER."""
        if isinstance(self.destination, Composer):
            stale_after = datetime.timedelta(seconds=self.settings.parallel_composite_stale_after)
            sweep_stale_parts(
                self.destination, self.retry, self.settings.gcs_bucket_name, stale_after
            )

    def keep_sweeping(self) -> None:
        """Sweep now, then every half PARALLEL_COMPOSITE_STALE_AFTER until `close`: a worker
        that runs for weeks sweeps as one that restarts does. Run it on a thread of its own."""
        while True:
            self.sweep_stale_parts()
            if self.closing.wait(self.settings.parallel_composite_stale_after / 2):
                return

    def close(self) -> None:
        """Stop the jobs and the thread pools; work in flight finishes, queued work is dropped."""
        self.closing.set()
        self.jobs.close()
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self.ledger.close()
        if isinstance(self.failure_notes, RedisFailureNotes):
            self.failure_notes.close()
        if self.checkpoints is not None:
            self.checkpoints.close()

    def ledger_checkpoints(self) -> RedisCheckpoints | None:
        """The checkpoints kept in the ledger's Redis (None without LEDGER_URL), connected
        when first asked for: only a command with `--checkpoint ledger` talks to it."""
        if self.checkpoints is None and self.settings.ledger_url is not None:
            self.checkpoints = RedisCheckpoints.from_url(
                self.settings.ledger_url.get_secret_value(), ttl=self.settings.ledger_ttl
            )
        return self.checkpoints


def build(settings: Settings, *, wait_for_leases: bool = True) -> Services:
    """`wait_for_leases=False` (the queue worker): a key another replica holds raises
    `errors.KeyLeased` rather than wait, so its message goes back on the queue for a while."""
    retry = RetryPolicy(settings.max_retries, settings.retry_delay, settings.retry_max_delay)
    composite = CompositePlan(
        threshold=settings.parallel_composite_threshold,
        part_size=settings.parallel_composite_part_size,
        workers=settings.parallel_composite_workers,
    )
    batch_threads = max(settings.batch_concurrency, settings.worker_concurrency)
    part_threads = composite.workers * batch_threads
    job_threads = settings.max_running_jobs * settings.batch_concurrency  # each job's copies
    # One connection per thread that may talk to a cloud at once, so no call waits for, or
    # churns, a connection.
    connections = REQUEST_THREADS + batch_threads + LOOKUP_THREADS + part_threads + job_threads
    identities = build_identities(settings)
    source, destination = _clients(settings, identities, retry, connections)
    lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="lookup")
    batch_workers = ThreadPoolExecutor(batch_threads, thread_name_prefix="batch")
    parts = ThreadPoolExecutor(part_threads, thread_name_prefix="part")
    copier = Copier(
        source,
        destination,
        retry,
        lookups,
        block_size=settings.upload_chunk_size,
        composite=CompositeCopy(source, retry, composite, parts),
    )
    # One ledger for copies and deletes: they exclude each other.
    ledger = build_ledger(settings, wait_for_leases)
    replicator = Replicator(source, destination, retry, copier, ledger, lookups)
    events = Converger(
        replicator,
        Batch(replicator, retry, batch_workers, settings.worker_concurrency),
        retry,
        ledger,
        settings.replication_rules,
        default_bucket=settings.gcs_bucket_name,
        delete_policy=settings.delete_policy,
        overwrite=settings.overwrite,
    )
    queue = build_queue(settings, identities.aws)
    verifier = build_sns_verifier(settings)
    sync = Sync(replicator, retry, ledger)
    check = Check(source, destination, retry)
    notes = build_failure_notes(settings)
    return Services(
        settings=settings,
        retry=retry,
        identities=identities,
        source=source,
        destination=destination,
        replicator=replicator,
        batch=Batch(replicator, retry, batch_workers, settings.batch_concurrency),
        events=events,
        objects=DestinationObjects(destination, retry),
        probe=Probe(settings, identities),  # clients of its own: a probe never waits behind copies
        queue=queue,
        sns=verifier,
        intake=EventIntake(verifier, events, queue, retry),
        ledger=ledger,
        sync=sync,
        check=check,
        enqueue=(
            Enqueue(source, destination, queue, retry, settings.aws_region)
            if queue is not None
            else None
        ),
        jobs=Jobs(sync, check, max_running=settings.max_running_jobs),
        failure_notes=notes,
        dead_letters=DeadLetters(queue, notes, retry) if queue is not None else None,
        request_threads=REQUEST_THREADS,
        pools=[batch_workers, lookups, parts],
    )


def build_ledger(settings: Settings, wait_for_leases: bool = True) -> Ledger:
    """The in-process ledger, or with LEDGER_URL the one replicas share in Redis (it talks to
    Redis only when first used, and works without it while it does not answer). Threads of
    one process always wait for each other; `wait_for_leases` is for other replicas' leases."""
    if settings.ledger_url is None:
        metrics.LEDGER_UP.set(1)
        return LocalLedger()
    from app.ledger.redis import RedisLedger  # redis-py: only when asked for

    return RedisLedger.from_url(
        settings.ledger_url.get_secret_value(),
        lock_ttl=settings.ledger_lock_ttl,
        entry_ttl=settings.ledger_ttl,
        wait=wait_for_leases,
    )


def build_failure_notes(settings: Settings) -> FailureNotes:
    """Notes of why keys failed, in the shared ledger's Redis; none without one (see
    app.ledger.failures). Talks to Redis only when first used."""
    if settings.ledger_url is None:
        return NoFailureNotes()
    return RedisFailureNotes.from_url(
        settings.ledger_url.get_secret_value(), ttl=settings.ledger_ttl
    )


def build_queue(settings: Settings, aws: AwsIdentity) -> sqs.SqsQueue | None:
    if settings.sqs_queue_url is None:
        return None
    return sqs.build_queue(
        url=settings.sqs_queue_url,
        endpoint_url=settings.sqs_endpoint_url,
        region=settings.aws_region,
        identity=aws,
        connect_timeout=settings.connect_timeout,
    )


def build_sns_verifier(settings: Settings) -> SnsVerifier | None:
    """Certificates are fetched over TLS verified against the system's CA bundle
    (`SSL_CERT_FILE` names another)."""
    if not settings.sns_verify_signatures:
        return None
    return SnsVerifier(settings.sns_endpoint_pattern, settings.sns_topic_arn_set())


def _clients(
    settings: Settings, identities: Identities, retry: RetryPolicy, connections: int
) -> tuple[Source, Destination]:
    """The S3 source and the destination for these settings. Talks to no cloud."""
    source = s3.build_source(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        identity=identities.aws,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=connections,
        direct_gets=settings.s3_direct_gets,
        requester_pays=settings.s3_requester_pays,
    )
    destination: Destination
    if settings.local_gcs_path is not None:
        directory = local.LocalDestination(settings.local_gcs_path)
        directory.create_bucket(settings.gcs_bucket_name)
        destination = directory
    else:
        destination = gcs.build_destination(
            emulator_host=settings.storage_emulator_host,
            endpoint_url=settings.gcs_endpoint_url,
            credentials=identities.google,
            retry=retry,
            chunk_size=settings.upload_chunk_size,
            timeout=(settings.connect_timeout, settings.read_timeout),
            target=settings.describe()["gcs_target"],
            max_pool_connections=connections,
            storage_class=settings.gcs_storage_class,
            kms_key=settings.gcs_kms_key,
        )
    return source, destination


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
