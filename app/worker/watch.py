"""What the worker reports besides its own work: how many operations are pending.

Every `QUEUE_STATS_SECONDS` (30 by default) one GetQueueAttributes of the queue, and one of
its dead-letter queue when the redrive policy names one, set `replicator_queue_messages`
(visible and in flight, as S3 Replication's operations pending); the ledger is asked whether
it answers at the same time, so `replicator_ledger_up` falls to 0 while Redis is down even
when no event arrives to find out. A failed look is logged and tried again at the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from app import errors, metrics
from app.queues.sqs import SqsQueue

log = logging.getLogger(__name__)


class QueueWatch:
    def __init__(
        self,
        queue: SqsQueue,
        dead_letters: SqsQueue | None,
        ledger_state: Callable[[], str],
        every: float,
    ) -> None:
        self._queues = {"main": queue, "dead_letter": dead_letters}
        self._ledger_state = ledger_state
        self._every = every
        self._stopping = threading.Event()

    def start(self) -> QueueWatch:
        threading.Thread(target=self._run, name="queue-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()

    def look(self) -> None:
        """Read the depths and the ledger's state now."""
        for name, queue in self._queues.items():
            if queue is None:
                continue
            try:
                depth = queue.depth()
            except errors.ReplicatorError as exc:
                log.warning("could not read the depth of %s: %s", queue.url, exc.detail)
                continue
            metrics.QUEUE_MESSAGES.labels(name, "visible").set(depth.visible)
            metrics.QUEUE_MESSAGES.labels(name, "in_flight").set(depth.in_flight)
        metrics.QUEUE_STATS_AGE.set(time.time())
        self._ledger_state()  # sets replicator_ledger_up as it finds Redis

    def _run(self) -> None:
        while True:
            self.look()
            if self._stopping.wait(self._every):
                return
