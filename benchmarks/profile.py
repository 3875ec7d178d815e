"""Where the service's CPU goes, by scenario: `.venv/bin/python -m benchmarks.profile small`.

Starts the emulators and the service as `make bench` does, runs one scenario's workload
against it while py-spy samples the service process (only threads holding the GIL, so the
figures are CPU, not waiting), and prints the functions with the largest share of samples.
py-spy is not a dependency of the service: `.venv/bin/pip install py-spy` first.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import big_object, skip_path, small_batch, stack
from benchmarks.measure import MiB
from benchmarks.stack import DESTINATION_BUCKET, SOURCE_BUCKET, Service, Stack

FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def workloads(env: Stack, service: Service) -> dict[str, Callable[[], None]]:
    """Each scenario's work, seeded lazily: only the chosen one is prepared."""

    def small() -> None:
        keys = small_batch.seed(env, 1000, 4 * 1024)
        for run in range(2):
            env.gcs_client.create_bucket(f"profile-{run}")
            body = {"s3_bucket": SOURCE_BUCKET, "s3_keys": keys, "gcs_bucket": f"profile-{run}"}
            service.post("/v1/replicate/batch", body)

    def big() -> None:
        big_object.seed(env, 256 * MiB)
        for run in range(2):
            service.replicate(s3_bucket=SOURCE_BUCKET, s3_key=big_object.KEY, gcs_key=f"p{run}")
            env.discard(DESTINATION_BUCKET, f"p{run}")

    def skip() -> None:
        skip_path.seed(env, service)
        body = json.dumps({"s3_bucket": SOURCE_BUCKET, "s3_key": skip_path.KEY}).encode()

        def client() -> Callable[[], None]:
            return lambda: service.http.post(
                "/v1/replicate", content=body, headers={"Content-Type": "application/json"}
            ).raise_for_status()

        skip_path.hammer(client, skip_path.CLIENTS, 10.0)

    return {"small": small, "big": big, "skip": skip}


def summarise(raw: Path, top: int) -> list[tuple[float, str]]:
    """Inclusive share of samples per function, from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        names = set()
        for frame in stack_text.split(";"):
            found = FRAME.match(frame)
            if found:
                where = found.group(2).split("site-packages/")[-1].split(f"{stack.REPO}/")[-1]
                names.add(f"{found.group(1)} ({where})")
        for name in names:
            inclusive[name] += count
    return [(100 * n / max(total, 1), name) for name, n in inclusive.most_common(top)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("scenario", choices=["small", "big", "skip"])
    parser.add_argument("--top", type=int, default=40, help="functions to print (default 40)")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="profile-") as workdir,
        stack.emulators_running(Path(workdir)) as env,
        stack.service_running(env, "profile") as service,
    ):
        raw = Path(workdir) / "samples.txt"
        work = workloads(env, service)[args.scenario]
        command = [py_spy, "record", "--gil", "-r", "200", "-f", "raw", "-o", str(raw)]
        spy = subprocess.Popen(
            [*command, "-p", str(service.process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaches
        started = time.monotonic()
        work()
        elapsed = time.monotonic() - started
        spy.send_signal(signal.SIGINT)
        _, errors = spy.communicate(timeout=60)
        if not raw.exists():
            print(f"py-spy recorded nothing: {errors.decode()[-500:]}", file=sys.stderr)
            return 1
        print(f"{args.scenario}: {elapsed:.1f}s of work; share of the service's CPU samples")
        for share, name in summarise(raw, args.top):
            print(f"{share:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
