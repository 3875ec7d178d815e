"""`make soak`, or `.venv/bin/python -m soak [--seconds N]` (`SOAK_SECONDS`, 600 by default):
the whole system for a fixed time on the emulators, under churn and faults, then proof that
it converged.

Running: moto (S3, SQS), fake-gcs-server, a valkey-server as the shared ledger, one HTTP
service and three workers on one queue with its dead-letter queue, all with
`DELETE_POLICY=propagate`; S3 and GCS reached through fault proxies answering a few per cent
of requests with 503, a reset connection or a stall. The load (soak/load.py) writes through
S3 so notifications flow, and sends duplicate, reordered and direct events. Meanwhile a
worker is SIGKILLed and restarted every minute or so, the three get a rolling SIGTERM
restart, and Redis is stopped and started again (empty) once.

At the end the load stops, the queue drains, and: `replicator check --checksum` over the
whole bucket must report no difference, the dead-letter queue must be empty, no composite
part may be left (a SIGKILLed copy leaves its parts to the sweep the workers run every half
PARALLEL_COMPOSITE_STALE_AFTER, 120 s here: the soak waits up to twice that), and S3 must
have sent under 1.05 bytes per byte replicated. Prints a table and writes
bench-results/soak-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from app.dev import emulators, plumbing
from app.dev.valkey import RedisServer
from app.replication.composite import PARTS_PREFIX
from benchmarks import machine
from benchmarks.stack import DESTINATION_BUCKET, REPO, SOURCE_BUCKET, emulators_running
from soak.load import Load
from tests.faults import Fault, FaultProxy

WORKERS = 3
KILL_EVERY = 60.0  # seconds, give or take a quarter
FAULT_CHANCE = {"status": 0.02, "reset": 0.01, "stall": 0.003}  # of each request, per cloud
START_ATTEMPTS = 5
STALE_AFTER = 120  # seconds: PARALLEL_COMPOSITE_STALE_AFTER; no copy here takes that long
DRAIN_TIMEOUT = 600.0  # a safety net for a queue that never drains
READ_AT_MOST = 1.05
LAG_BUCKETS = "replicator_event_lag_seconds_bucket"


@dataclass
class Process:
    """A service or worker process: started, killed and started again by the soak."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # starts that ended during start-up (see `start`)
    last_metrics: dict[str, float] = field(default_factory=dict)  # this incarnation's
    finished: list[dict[str, float]] = field(default_factory=list)  # earlier incarnations'

    def start(self) -> None:
        """Start it and wait for /health. A process that exits during start-up is started
        again, as its supervisor (Kubernetes) would: its start-up probe does not retry, so a
        fault the proxies inject into it ends it with one line (counted in `restarts`)."""
        for _ in range(START_ATTEMPTS):
            if self._started():
                return
            self.restarts += 1
        raise RuntimeError(f"{self.name} did not start {START_ATTEMPTS} times; see {self.log}")

    def _started(self) -> bool:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.2)
        self.process.kill()
        self.process.wait()
        return False

    def stop(self) -> None:
        """SIGTERM, or SIGKILL when it does not stop in time: the soak never leaves a process
        behind, whether it passed or failed."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def url(self) -> str:
        return f"http://{emulators.HOST}:{self.port}"

    def scrape(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
            self.last_metrics = parse_metrics(text)

    def kill(self) -> None:
        """SIGKILL: what it counted since the last scrape is lost (the soak says so)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._retire()

    def terminate(self) -> None:
        assert self.process is not None
        self.scrape()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)
        self._retire()

    def _retire(self) -> None:
        self.finished.append(self.last_metrics)
        self.last_metrics = {}

    def totals(self) -> dict[str, float]:
        summed: dict[str, float] = {}
        for snapshot in [*self.finished, self.last_metrics]:
            for name, value in snapshot.items():
                summed[name] = summed.get(name, 0.0) + value
        return summed


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {series: value}, labels kept in the series name."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                found[series] = float(value)
    return found


def quantile(totals: dict[str, float], q: float) -> float | None:
    """The q-quantile of the event lag from the summed histogram buckets, interpolated in the
    bucket as Prometheus's histogram_quantile does."""
    buckets: dict[float, float] = {}
    for series, value in totals.items():
        if series.startswith(LAG_BUCKETS + "{"):
            le = series.split('le="')[1].split('"')[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets or buckets.get(float("inf"), 0) == 0:
        return None
    bounds = sorted(buckets)
    rank = q * buckets[float("inf")]
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / max(buckets[bound] - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, buckets[bound]
    return previous_bound


def faults(proxy: FaultProxy, cloud: str) -> list[Fault]:
    """A few per cent of the requests to `cloud` answered 503, reset or stalled."""
    body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    if cloud == "gcs":
        body = b'{"error":{"code":503,"message":"Backend Error"}}'
    added = [
        Fault(action="status", status=503, body=body, chance=FAULT_CHANCE["status"]),
        Fault(action="reset", chance=FAULT_CHANCE["reset"]),
        Fault(action="stall", stall_for=12, chance=FAULT_CHANCE["stall"]),
    ]
    for fault in added:
        proxy.add(fault)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600"))
    )
    args = parser.parse_args(argv)
    console = Console()
    workdir = Path(os.environ.get("SOAK_WORKDIR") or REPO / "bench-results" / "soak-work")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y%m%d-%H%M%S")
    results = run(args.seconds, workdir, console)
    results["machine"] = machine.describe()
    results["started"] = started
    out = REPO / "bench-results" / f"soak-{started}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print_table(console, results)
    console.print(f"results: {out}")
    return 0 if results["passed"] else 1


def run(seconds: float, workdir: Path, console: Console) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        clouds = stack.enter_context(emulators_running(workdir))
        redis = RedisServer(emulators.free_port()).start()
        stack.callback(redis.stop)
        s3_proxy = stack.enter_context(FaultProxy(clouds.moto.url))
        gcs_proxy = stack.enter_context(FaultProxy(clouds.gcs.url, resumable_status=True))
        injected = {"s3": faults(s3_proxy, "s3"), "gcs": faults(gcs_proxy, "gcs")}
        queue = plumbing.queue_with_dead_letters(
            clouds.sqs, "soak-events", visibility_timeout=20, max_receives=10
        )
        plumbing.notify_queue(clouds.s3, SOURCE_BUCKET, queue)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GCS_"))},
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "S3_ENDPOINT_URL": s3_proxy.url,
            "STORAGE_EMULATOR_HOST": gcs_proxy.url,
            "GCS_BUCKET_NAME": DESTINATION_BUCKET,
            "SQS_ENDPOINT_URL": clouds.moto.url,
            "LEDGER_URL": redis.url(),
            "LEDGER_LOCK_TTL": "10",
            "DELETE_POLICY": "propagate",
            "READ_TIMEOUT": "5",
            "RETRY_DELAY": "0.2",
            "WORKER_RETRY_BACKOFF": "1",
            "WORKER_CONCURRENCY": "8",
            "QUEUE_STATS_SECONDS": "5",
            "PARALLEL_COMPOSITE_THRESHOLD": str(24 * 1024 * 1024),
            "PARALLEL_COMPOSITE_PART_SIZE": str(8 * 1024 * 1024),
            "PARALLEL_COMPOSITE_STALE_AFTER": str(STALE_AFTER),
            "LOG_FORMAT": "json",
            "API_KEYS": "",
        }
        service_port = emulators.free_port()
        service = Process(
            "service",
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(service_port)],
            env,
            service_port,
            workdir / "service.log",
        )
        workers = []
        for n in range(WORKERS):
            port = emulators.free_port()
            worker_env = {**env, "SQS_QUEUE_URL": queue.url, "WORKER_PORT": str(port)}
            command = [sys.executable, "-m", "app.cli", "worker"]
            workers.append(Process(f"worker-{n}", command, worker_env, port, workdir / f"w{n}.log"))
        for process in [service, *workers]:
            stack.callback(process.stop)
            process.start()

        load = Load(clouds.s3, clouds.sqs, SOURCE_BUCKET, queue.url, service.url)
        chaos = Chaos(workers, redis, seconds)
        stop = threading.Event()
        console.print(f"soak: {seconds:.0f} s of load, {WORKERS} workers, faults {FAULT_CHANCE}")
        began = time.monotonic()
        threads = [
            threading.Thread(target=load.run, args=(stop,), name="load"),
            threading.Thread(target=chaos.run, args=(stop,), name="chaos"),
            threading.Thread(target=scraper, args=([service, *workers], stop), name="scrape"),
        ]
        for thread in threads:
            thread.start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        load_seconds = time.monotonic() - began
        console.print("soak: load stopped; draining the queue")

        drain_began = time.monotonic()
        drained = drain(clouds.sqs, queue.url)
        drain_seconds = time.monotonic() - drain_began
        for process in [service, *workers]:
            process.scrape()
        for fault in injected["s3"] + injected["gcs"]:
            fault.chance = 0.0  # the check looks straight at the clouds anyway
        check = check_bucket(clouds.moto.url, clouds.gcs.url, workdir)
        dead = dlq_depth(clouds.sqs, queue.dead_letter_url)
        console.print("soak: waiting for the sweep of the parts killed copies left")
        parts_at_drain = parts_left(clouds.gcs_client)
        sweep_began = time.monotonic()
        parts = parts_at_drain
        while parts and time.monotonic() - sweep_began < STALE_AFTER * 2:
            time.sleep(5)
            parts = parts_left(clouds.gcs_client)
        sweep_seconds = time.monotonic() - sweep_began
        totals: dict[str, float] = {}
        for process in [service, *workers]:
            for name, value in process.totals().items():
                totals[name] = totals.get(name, 0.0) + value
        replicated = totals.get("replicator_bytes_replicated_total", 0.0)
        read = s3_proxy.body_bytes["GET"]
        ratio = read / replicated if replicated else None
        objects = totals.get("replicator_objects_replicated_total", 0.0)
        results: dict[str, Any] = {
            "seconds": round(load_seconds, 1),
            "drain_seconds": round(drain_seconds, 1),
            "drained": drained,
            "load": dict(load.tally.counts),
            "bytes_put": load.tally.bytes_put,
            "load_errors": load.tally.errors,
            "objects_replicated": objects,
            "objects_per_second": objects / (load_seconds + drain_seconds),
            "bytes_replicated": replicated,
            "s3_bytes_read": read,
            "read_per_byte_replicated": ratio,
            "lag_p50_seconds": quantile(totals, 0.5),
            "lag_p99_seconds": quantile(totals, 0.99),
            "faults": {
                cloud: {f.action: f.fired for f in fired} for cloud, fired in injected.items()
            },
            "requests": {"s3": len(s3_proxy.requests), "gcs": len(gcs_proxy.requests)},
            "kills": chaos.kills,
            "rolling_restarts": chaos.rolling,
            "redis_restarts": chaos.redis_restarts,
            "start_up_exits": sum(p.restarts for p in [service, *workers]),
            "chaos_error": chaos.error,
            "failed_by_reason": {
                k.split('"')[1]: v
                for k, v in totals.items()
                if k.startswith("replicator_objects_failed_total{") and v
            },
            "messages_put_back": totals.get("replicator_messages_put_back_total", 0.0),
            "check": check,
            "dead_letters": dead,
            "parts_left_at_drain": len(parts_at_drain),
            "parts_swept_within_seconds": round(sweep_seconds, 1),
            "parts_left": parts,
        }
        results["passed"] = bool(
            chaos.error is None
            and drained
            and check.get("exit") == 0
            and check.get("different", 1) == 0
            and check.get("missing", 1) == 0
            and check.get("extra", 1) == 0
            and check.get("errors", 1) == 0
            and dead == 0
            and not parts
            and ratio is not None
            and ratio < READ_AT_MOST
        )
        return results


class Chaos:
    """SIGKILL a random worker and start it again every KILL_EVERY seconds or so; a rolling
    SIGTERM restart of every worker at half time; Redis stopped at a third of the time and
    started again (empty) 20 seconds later."""

    def __init__(self, workers: list[Process], redis: RedisServer, seconds: float) -> None:
        self._workers = workers
        self._redis = redis
        self._seconds = seconds
        self._rng = random.Random(5)
        self.kills = 0
        self.rolling = 0
        self.redis_restarts = 0
        self.error: str | None = None

    def run(self, stop: threading.Event) -> None:
        """The chaos until `stop`; an error here stops the soak (kept in `error`) rather than
        leaving it to run on without its chaos."""
        try:
            self._run(stop)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            stop.set()

    def _run(self, stop: threading.Event) -> None:
        began = time.monotonic()
        rolled = redis_done = False
        next_kill = began + KILL_EVERY * self._rng.uniform(0.75, 1.25)
        while not stop.wait(1.0):
            now = time.monotonic() - began
            if not redis_done and now > self._seconds / 3:
                self._redis.stop()
                stop.wait(20)
                self._redis.start()
                self.redis_restarts += 1
                redis_done = True
            if not rolled and now > self._seconds / 2:
                for worker in self._workers:
                    worker.terminate()
                    worker.start()
                self.rolling += 1
                rolled = True
            if time.monotonic() > next_kill:
                victim = self._rng.choice(self._workers)
                victim.kill()
                victim.start()
                self.kills += 1
                next_kill = time.monotonic() + KILL_EVERY * self._rng.uniform(0.75, 1.25)


def scraper(processes: list[Process], stop: threading.Event) -> None:
    """Every two seconds, each process's metrics (a SIGKILL loses what came since)."""
    while not stop.wait(2.0):
        for process in processes:
            process.scrape()


def parts_left(gcs_client: Any) -> list[str]:
    return [b.name for b in gcs_client.list_blobs(DESTINATION_BUCKET, prefix=PARTS_PREFIX)]


def queue_depth(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(found[name]) for name in names)


def dlq_depth(sqs: Any, url: str) -> int:
    return queue_depth(sqs, url)


def drain(sqs: Any, url: str) -> bool:
    """Wait until the queue holds nothing, waiting or in flight, five looks in a row."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    empty = 0
    while time.monotonic() < deadline:
        empty = empty + 1 if queue_depth(sqs, url) == 0 else 0
        if empty >= 5:
            return True
        time.sleep(1.0)
    return False


def check_bucket(moto_url: str, gcs_url: str, workdir: Path) -> dict[str, Any]:
    """`replicator check --checksum` of the whole source bucket against the destination,
    straight at the emulators (no proxy); its JSON summary and exit status."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GCS_"))},
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "S3_ENDPOINT_URL": moto_url,
        "STORAGE_EMULATOR_HOST": gcs_url,
    }
    command = [sys.executable, "-m", "app.cli", "check", "--checksum", "--json"]
    command += [f"s3://{SOURCE_BUCKET}", f"gs://{DESTINATION_BUCKET}"]
    command += ["--combined", str(workdir / "check.txt")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    try:
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {"output": (done.stdout + done.stderr)[-2000:]}
    summary["exit"] = done.returncode
    return summary


def print_table(console: Console, results: dict[str, Any]) -> None:
    table = Table(title="make soak")
    table.add_column("figure")
    table.add_column("value", justify="right")

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} s"

    check = results["check"]
    ratio = results["read_per_byte_replicated"]
    rows = [
        ("load time / drain time", f"{results['seconds']} s / {results['drain_seconds']} s"),
        ("objects replicated", f"{results['objects_replicated']:.0f}"),
        ("objects per second", f"{results['objects_per_second']:.2f}"),
        (
            "lag p50 / p99",
            f"{seconds(results['lag_p50_seconds'])} / {seconds(results['lag_p99_seconds'])}",
        ),
        ("load", ", ".join(f"{k} {v}" for k, v in sorted(results["load"].items()))),
        ("faults injected", json.dumps(results["faults"])),
        (
            "worker SIGKILLs / rolling restarts / Redis restarts",
            f"{results['kills']} / {results['rolling_restarts']} / {results['redis_restarts']}",
        ),
        ("worker starts ended by a fault at start-up", str(results["start_up_exits"])),
        ("chaos stopped by", results["chaos_error"] or "-"),
        ("failures by reason (retried)", json.dumps(results["failed_by_reason"])),
        (
            "check --checksum",
            f"exit {check.get('exit')}: "
            + ", ".join(
                f"{k} {check.get(k)}"
                for k in ("identical", "missing", "extra", "different", "errors")
            ),
        ),
        ("dead letters", str(results["dead_letters"])),
        (
            "composite parts at drain / left",
            f"{results['parts_left_at_drain']} / {len(results['parts_left'])}"
            f" (waited {results['parts_swept_within_seconds']} s for the sweep)",
        ),
        ("S3 bytes read per byte replicated", "n/a" if ratio is None else f"{ratio:.3f}"),
        ("passed", "yes" if results["passed"] else "NO"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
