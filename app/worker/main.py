"""Start the worker: settings, the wiring, the start-up probe (S3, GCS and the queue), the
health server, then the loop until SIGTERM or SIGINT. Exit codes: 0 after a clean stop, 2
when it cannot start (one readable line on stderr).

The worker does not check the signatures of SNS envelopes it finds on the queue, whatever
SNS_VERIFY_SIGNATURES says: whoever may send to the queue could as well send the S3 event
without an envelope (or SNS delivers it raw), so a signature proves nothing there. The
boundary is the queue's access policy: allow sqs:SendMessage to the topic or bucket that
feeds it (aws:SourceArn), and to nothing else. POST /v1/events, open to the network,
verifies every SNS message.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from app import errors, wiring
from app.config import load_settings
from app.logging_config import setup_logging
from app.worker import health
from app.worker.loop import Worker
from app.worker.watch import QueueWatch

log = logging.getLogger("app.worker")


def run() -> int:
    setup_logging()
    try:
        settings = load_settings()
        setup_logging(settings.log_format, settings.log_level)
        if settings.sqs_queue_url is None:
            raise errors.StartupError(
                "configuration error: SQS_QUEUE_URL: required by `replicator worker`"
            )
        services = wiring.build(settings, wait_for_leases=False)
        queue = services.queue
        assert queue is not None
        if settings.startup_probe:
            services.probe.run()
            queue.probe()
        attributes = queue.attributes()
    except errors.StartupError as exc:
        print(f"replicator worker: {exc}", file=sys.stderr)
        return 2
    except errors.ReplicatorError as exc:
        print(f"replicator worker: SQS_QUEUE_URL: {exc.detail}", file=sys.stderr)
        return 2
    if attributes.redrive_policy is None:
        log.warning(
            "%s has no redrive policy: a message that can never be converged will come back "
            "until it expires; give the queue a dead-letter queue",
            queue.url,
        )
    if not settings.sns_verify_signatures:
        log.warning(
            "SNS_VERIFY_SIGNATURES=false changes nothing here: the worker never checks SNS "
            "signatures; who may send to %s is the queue's access policy's to decide",
            queue.url,
        )
    worker = Worker(
        queue,
        services.events,
        services.retry,
        concurrency=settings.worker_concurrency,
        visibility_timeout=attributes.visibility_timeout,
        backoff=settings.worker_retry_backoff,
        wait=settings.sqs_wait_seconds,
        put_back=max(1.0, settings.ledger_lock_ttl / 10),
        put_back_max=settings.ledger_lock_ttl,  # a dead holder's lease has expired by then
        dead_letter_queue=attributes.redrive_policy is not None,
        notes=services.failure_notes,
    )
    try:
        dead_letters = queue.dead_letter_queue(attributes)
    except errors.ReplicatorError as exc:
        log.warning("the dead-letter queue's depth will not be reported: %s", exc.detail)
        dead_letters = None
    watch = QueueWatch(
        queue, dead_letters, lambda: services.ledger.state, settings.queue_stats_seconds
    ).start()

    def ready() -> dict[str, Any]:
        services.probe.run()
        queue.probe()
        # The ledger's state is reported; it never makes the worker unready.
        return {"ledger": services.ledger.state, "identities": services.identities.describe()}

    server = (
        health.serve(settings.worker_port, ready, services.identities.describe)
        if settings.worker_port
        else None
    )
    threading.Thread(target=services.keep_sweeping, name="sweep", daemon=True).start()

    def stop(signum: int, _: FrameType | None) -> None:
        log.info("%s: finishing what is in flight, then stopping", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "draining %s with %d keys in flight (visibility timeout %d s)",
        queue.url,
        settings.worker_concurrency,
        attributes.visibility_timeout,
    )
    try:
        worker.run()
    finally:
        watch.stop()
        if server is not None:
            server.shutdown()
        services.close()
    if worker.refused is not None:
        print(f"replicator worker: SQS_QUEUE_URL: {worker.refused.detail}", file=sys.stderr)
        return 2
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run())
