"""A real Prometheus scraping a real worker and a real service on loopback, with the rules of
deploy/prometheus/rules.yml: a poison message fires the dead-letter alert and a stopped Redis
the ledger alert (both read from Prometheus's own alerts API), a ready worker does not fire
the no-worker alert, and every expression of the rules and of the Grafana dashboard evaluates
without error against what was scraped, naming only metrics Prometheus has seen.

The rules Prometheus loads are rules.yml with each `for:` cut to one second (what the promtool
unit tests cover) and nothing else changed: `short_for` rewrites that field only, and the
test asserts the expressions it loaded are the file's.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.cloud import storage

from app.dev import emulators
from tests import http_calls
from tests.conftest import RedisServer
from tests.ops import prom
from tests.service_process import START_TIMEOUT, running_service, service_settings
from tests.worker import test_worker
from tests.worker.test_worker import (
    Aws,
    blob_of,
    event_body,
    gcs_bucket,
    running_worker,
    wait_for,
    worker_settings,
)

aws = test_worker.aws
INTERVAL = "1s"  # scrape and evaluation


def short_for(rules: dict[str, Any]) -> dict[str, Any]:
    """The rules with every `for:` one second; nothing else touched."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return rules


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: dict[str, str]) -> Iterator[str]:
    """Prometheus on a free loopback port, scraping `targets` (job -> host:port) with the
    rules; yields its URL."""
    binary = prom.binary("prometheus")
    rules = workdir / "rules.yml"
    loaded = short_for(yaml.safe_load(prom.RULES.read_text()))
    expressions = [r["expr"] for g in loaded["groups"] for r in g["rules"]]
    assert expressions == [r["expr"] for r in prom.alerts().values()]  # only `for` changed
    rules.write_text(yaml.safe_dump(loaded))
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = emulators.free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if http_calls.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("prometheus never became ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def firing(url: str, name: str) -> list[dict[str, Any]]:
    answer = http_calls.get(f"{url}/api/v1/alerts", timeout=5).json()
    return [
        alert
        for alert in answer["data"]["alerts"]
        if alert["labels"]["alertname"] == name and alert["state"] == "firing"
    ]


def query(url: str, expression: str) -> dict[str, Any]:
    answer: dict[str, Any] = http_calls.get(
        f"{url}/api/v1/query", params={"query": expression}, timeout=10
    ).json()
    return answer


def known_names(url: str) -> set[str]:
    return set(http_calls.get(f"{url}/api/v1/label/__name__/values", timeout=5).json()["data"])


def test_prometheus_fires_the_alerts_and_evaluates_every_expression(
    aws: Aws,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    gcs: storage.Client,
    tmp_path: Path,
) -> None:
    prom.binary("prometheus")
    redis = RedisServer(emulators.free_port()).start()
    queue, bucket, dest = aws.queue(max_receives=1), aws.bucket("prom"), gcs_bucket(gcs)
    common = {"LEDGER_URL": redis.url(), "QUEUE_STATS_SECONDS": "0.5"}
    worker_env = worker_settings(aws, moto_server.url, gcs_server.url, dest, queue, **common)
    service_env = service_settings(moto_server.url, gcs_server.url, dest, **common)
    try:
        with contextlib.ExitStack() as stack:
            worker = stack.enter_context(running_worker(tmp_path, worker_env))
            service = stack.enter_context(running_service(tmp_path, service_env))
            targets = {
                "replicator-worker": worker.url.removeprefix("http://"),
                "replicator": service.url.removeprefix("http://"),
            }
            url = stack.enter_context(running_prometheus(tmp_path, targets))

            aws.s3.put_object(Bucket=bucket, Key="good.txt", Body=os.urandom(1000))
            aws.send(queue, event_body(bucket, "good.txt"))
            wait_for(lambda: blob_of(gcs, dest, "good.txt"), "the good key is copied")
            http_calls.get(f"{service.url}/v1/object/{dest}/good.txt")  # an API request, timed
            assert firing(url, "ReplicatorDeadLetters") == []

            aws.send(queue, "{a poison message")
            [dead] = wait_for(
                lambda: firing(url, "ReplicatorDeadLetters"), "the dead-letter alert fires"
            )
            assert dead["labels"]["severity"] == "warn"
            assert dead["annotations"]["summary"].startswith("1 messages wait")
            assert firing(url, "ReplicatorNoWorkerReady") == []
            assert firing(url, "ReplicatorLedgerDown") == []

            every = prom.every_expression()
            names = set().union(*(prom.metric_names(e) for e in every))
            wait_for(lambda: names <= known_names(url), "every metric named has been scraped")
            for expression in every:
                answer = query(url, expression)
                assert answer["status"] == "success", (expression, answer)
            loaded = http_calls.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
            assert [(r["name"], r["duration"]) for g in loaded for r in g["rules"]] == [
                (name, 1) for name in prom.alerts()
            ]

            redis.stop()
            down = wait_for(lambda: firing(url, "ReplicatorLedgerDown"), "the ledger alert fires")
            assert {alert["labels"]["job"] for alert in down} >= {"replicator-worker"}
    finally:
        redis.stop()
