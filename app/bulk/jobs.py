"""Sync and check jobs over HTTP: started by a request, run on a thread of their own, watched
and cancelled by id.

`Jobs` keeps them in the process (the running ones, and the last `keep` that ended): a restart
forgets them. At most `max_running` run at once, and one at a time for any source and
destination. Each job counts in its own `Tally`, keeps its first `MAX_ERRORS` errors, and
spools its report (one line per key) to a temporary file, since a job may cover millions of
keys. Its thread and every thread it starts log with its id (`logging_config.job_id`).
"""

from __future__ import annotations

import datetime
import enum
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from app import errors, metrics
from app.bulk.check import COUNT_OF, Check, CheckOptions, Mark
from app.bulk.compare import Location
from app.bulk.decide import Outcome
from app.bulk.sync import Sync, SyncOptions
from app.bulk.tally import Snapshot, Tally
from app.logging_config import in_context, job_id

log = logging.getLogger(__name__)

MAX_ERRORS = 100  # errors a job keeps (key and reason); the counts have them all
READ_SIZE = 64 * 1024  # bytes of the report read at a time


class Kind(enum.StrEnum):
    SYNC = "sync"
    CHECK = "check"


class Status(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every key settled (sync) or compared (check)
    FAILED = "failed"  # a key failed or could not be compared, or the run stopped on an error
    CANCELLED = "cancelled"  # stopped on request (or at shutdown) before the end


@dataclass(frozen=True)
class JobRequest:
    kind: Kind
    source: Location
    destination: Location
    options: SyncOptions | CheckOptions


@dataclass(frozen=True)
class KeyFailure:
    key: str  # below the source prefix
    reason: str


@dataclass(frozen=True)
class JobView:
    """A job as it is now."""

    id: str
    request: JobRequest
    status: Status
    progress: Snapshot
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    errors: tuple[KeyFailure, ...]
    error: str | None  # why the run stopped before the end, when it did on an error


class JobNotFound(errors.ObjectNotFound):
    pass


class PairBusy(errors.ReplicatorError):
    """A job runs already from this source to this destination."""

    status_code = 409
    kind = "conflict"


class TooManyJobs(errors.ReplicatorError):
    status_code = 429
    kind = "too_many_jobs"


class ReportFile:
    """Lines appended by the job's threads to an unnamed temporary file, readable while it
    grows: a reader gets every line written before it started."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile("a+b")
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        with self._lock:
            self._file.write(line.encode() + b"\n")

    def read(self) -> Iterator[bytes]:
        """The report so far, in chunks. Reads its own descriptor at explicit offsets, so
        writers go on meanwhile and `close` does not cut it short."""
        with self._lock:
            self._file.flush()
            size = self._file.tell()
            fd = os.dup(self._file.fileno())

        def chunks() -> Iterator[bytes]:
            try:
                offset = 0
                while offset < size:
                    chunk = os.pread(fd, min(READ_SIZE, size - offset), offset)
                    if not chunk:
                        return
                    offset += len(chunk)
                    yield chunk
            finally:
                os.close(fd)

        return chunks()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Job:
    def __init__(self, request: JobRequest) -> None:
        self.id = secrets.token_hex(8)
        self.request = request
        self.tally = Tally()
        self.stop = threading.Event()
        self.report = ReportFile()
        self.started_at = _now()
        self.finished_at: datetime.datetime | None = None
        self.status = Status.RUNNING
        self.error: str | None = None
        self._errors: list[KeyFailure] = []
        self._lock = threading.Lock()
        self._copied_bytes = 0  # of the tally's bytes, those already counted in the metrics

    def record(self, line: str, outcome: str, key: str = "", reason: str = "") -> None:
        """One settled key: its report line, its outcome in the metrics and, when `reason`
        is given, an error."""
        self.report.append(line)
        metrics.JOB_OBJECTS.labels(self.request.kind, outcome).inc()
        if outcome == "copied":  # the tally already counts this copy's bytes (and maybe more)
            copied = self.tally.snapshot()["bytes"]
            with self._lock:
                metrics.JOB_BYTES.inc(max(0, copied - self._copied_bytes))
                self._copied_bytes = max(copied, self._copied_bytes)
        if reason:
            with self._lock:
                if len(self._errors) < MAX_ERRORS:
                    self._errors.append(KeyFailure(key, reason))

    def finish(self, error: str | None) -> None:
        progress = self.tally.snapshot()
        if progress.stopped:
            status = Status.CANCELLED
        elif error or progress["failed"] or progress["errors"]:
            status = Status.FAILED
        else:
            status = Status.SUCCEEDED
        with self._lock:
            self.error, self.status, self.finished_at = error, status, _now()

    def view(self) -> JobView:
        progress = self.tally.snapshot()
        with self._lock:
            return JobView(
                self.id,
                self.request,
                self.status,
                progress,
                self.started_at,
                self.finished_at,
                tuple(self._errors),
                self.error,
            )


class Jobs:
    def __init__(self, sync: Sync, check: Check, *, max_running: int, keep: int = 100) -> None:
        self._sync = sync
        self._check = check
        self._max_running = max_running
        self._keep = keep
        self._jobs: dict[str, Job] = {}  # oldest first
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, request: JobRequest) -> JobView:
        """Start a job on a thread of its own; PairBusy when one runs already for the same
        source and destination, TooManyJobs when `max_running` run."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.status == Status.RUNNING]
            for job in running:
                same = (job.request.source, job.request.destination)
                if same == (request.source, request.destination):
                    raise PairBusy(
                        f"job {job.id} is running from {request.source} to "
                        f"{request.destination}; cancel it or wait for it to end"
                    )
            if len(running) >= self._max_running:
                raise TooManyJobs(
                    f"{len(running)} jobs are running, the most this service runs at once; "
                    "start this one when one has ended"
                )
            job = Job(request)
            self._jobs[job.id] = job
            self._forget_old()
            thread = threading.Thread(target=in_context(self._run), args=(job,), name="job")
            self._threads[job.id] = thread
            metrics.JOBS_RUNNING.inc()
            thread.start()
        return job.view()

    def get(self, id: str) -> JobView:
        return self._job(id).view()

    def recent(self) -> list[JobView]:
        """The jobs kept, newest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [job.view() for job in reversed(jobs)]

    def cancel(self, id: str) -> tuple[JobView, bool]:
        """Ask a running job to stop: no copy starts any more, those in flight finish. The
        flag says whether the job was still running."""
        job = self._job(id)
        running = job.status == Status.RUNNING
        if running:
            log.info("job %s: cancelling", job.id)
            job.stop.set()
        return job.view(), running

    def report(self, id: str) -> Iterator[bytes]:
        """The job's report so far, one line per key; JobNotFound at once for an unknown id."""
        return self._job(id).report.read()

    def close(self) -> None:
        """Stop every running job and wait for the copies in flight."""
        with self._lock:
            threads = list(self._threads.values())
            for job in self._jobs.values():
                job.stop.set()
        for thread in threads:
            thread.join()
        with self._lock:
            for job in self._jobs.values():
                job.report.close()

    def _job(self, id: str) -> Job:
        with self._lock:
            job = self._jobs.get(id)
        if job is None:
            raise JobNotFound(
                f"no job {id!r} here: this process keeps the running jobs and the last "
                f"{self._keep} that ended, and forgets them when it restarts"
            )
        return job

    def _forget_old(self) -> None:
        """Drop the oldest jobs that have ended beyond `keep` (under the lock)."""
        ended = [job for job in self._jobs.values() if job.status != Status.RUNNING]
        for job in ended[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job.id]
            job.report.close()

    def _run(self, job: Job) -> None:
        job_id.set(job.id)
        request = job.request
        log.info("job %s: %s %s -> %s", job.id, request.kind, request.source, request.destination)
        error = None
        try:
            if isinstance(request.options, SyncOptions):
                self._run_sync(job, request.options)
            else:
                self._run_check(job, request.options)
        except errors.ReplicatorError as exc:
            error = f"{exc.kind}: {exc.detail}"
        except Exception as exc:  # said in the job, never lost with its thread
            log.exception("job %s failed unexpectedly", job.id)
            error = f"internal_error: {exc!r}"
        job.finish(error)
        view = job.view()
        with self._lock:
            del self._threads[job.id]
        metrics.JOBS_RUNNING.dec()
        metrics.JOBS_FINISHED.labels(request.kind, view.status).inc()
        shown = view.progress.counts.items()
        counts = ", ".join(f"{name} {n}" for name, n in shown if n and not name.startswith("found"))
        log.info(
            "job %s %s: %s%s", job.id, view.status, counts or "nothing", f"; {error}" * bool(error)
        )

    def _run_sync(self, job: Job, options: SyncOptions) -> None:
        def report(key: str, outcome: Outcome, detail: str) -> None:
            failed = outcome == Outcome.FAILED
            label = str(outcome).replace(" ", "_")
            job.record(f"{outcome} {key}", label, key, detail if failed else "")

        request = job.request
        self._sync.run(request.source, request.destination, options, report, job.tally, job.stop)

    def _run_check(self, job: Job, options: CheckOptions) -> None:
        def report(key: str, mark: Mark, reason: str) -> None:
            label = "error" if mark == Mark.ERROR else COUNT_OF[mark]
            job.record(f"{mark} {key}", label, key, reason if mark == Mark.ERROR else "")

        request = job.request
        self._check.run(request.source, request.destination, options, report, job.tally, job.stop)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
