"""`replicator`, the console script that `make dev` and `make test` install, run as a process.

Each run starts in an empty directory (so no `.env` is read) with the app's settings removed
from the environment, and gets only the settings the test names.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from app.dev import emulators
from tests import http_calls
from tests.service_process import (
    REPLICATOR,
    REPO,
    RUN_TIMEOUT,
    STOP_TIMEOUT,
    replicator,
    running_service,
    service_settings,
)

HEAVY_PACKAGES = {"boto3", "botocore", "google", "fastapi", "uvicorn", "pydantic"}


def test_help_lists_serve() -> None:
    result = replicator("--help")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+serve\s+run the HTTP service$", result.stdout, re.MULTILINE), (
        result.stdout
    )


def test_version_is_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = replicator("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"replicator {version}\n"


def test_parsing_the_command_line_imports_no_cloud_sdk() -> None:
    """What keeps `replicator --help` instant: the SDKs and the app load only in a command."""
    probe = (
        "import sys, app.cli\n"
        "app.cli.build_parser().format_help()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *HEAVY_PACKAGES],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_serve_answers_health_and_stops_on_sigterm(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
) -> None:
    # LOG_LEVEL=ERROR would hide the INFO line checked below; --log-level must win over it.
    # A generous probe timeout: moto answers its first S3 request slowly on a busy machine.
    settings = service_settings(
        moto_server.url, gcs_server.url, dest_bucket, LOG_LEVEL="ERROR", PROBE_TIMEOUT="30"
    )

    def serve(port: int) -> list[str]:
        return [str(REPLICATOR), "serve", "--port", str(port), "--log-level", "info"]

    with running_service(tmp_path, settings, serve) as service:
        health = http_calls.get(f"{service.url}/health")
        assert health.status_code == 200
        assert health.json()["current_config"]["gcs_bucket"] == dest_bucket
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=STOP_TIMEOUT) == 0, service.log.read_text()
    log = service.log.read_text()
    assert "serving; replicating to" in log
    assert "Traceback" not in log


def test_serve_without_a_bucket_name_exits_2_with_one_line(tmp_path: Path) -> None:
    nowhere = f"http://{emulators.HOST}:{emulators.free_port()}"
    result = replicator(
        "serve", "--port", str(emulators.free_port()), cwd=tmp_path, STORAGE_EMULATOR_HOST=nowhere
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    [line] = output.splitlines()
    assert "GCS_BUCKET_NAME" in line
