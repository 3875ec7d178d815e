"""Fail-fast start-up, checked on the real server: `python -m uvicorn app.main:app` as a process.

Each run starts in an empty directory (so no `.env` is read) with the app's settings removed
from the environment, and gets only the settings the test names.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.dev import emulators

REPO = Path(__file__).resolve().parents[1]
SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"TARGET_GCS_BUCKET"}
SECRET = "do-not-print-this-secret-0451"
EXIT_TIMEOUT = 30  # a safety net for a server that does not stop; never asserted on


def server_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(settings)
    return env


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]


def start_and_exit(workdir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Start the server and wait for it to stop, as a misconfigured server must."""
    return subprocess.run(
        server_command(emulators.free_port()),
        cwd=workdir,
        env=server_env(**settings),
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )


def assert_refused_naming(result: subprocess.CompletedProcess[str], *words: str) -> list[str]:
    """Non-zero exit, no traceback, and one line that names every word. Returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if all(word in line for word in words)]
    assert lines, f"no line names {words}:\n{output}"
    return lines


@contextlib.contextmanager
def serving(workdir: Path, **settings: str) -> Iterator[str]:
    """Start the server, wait until /health answers, yield its URL, then terminate it."""
    port = emulators.free_port()
    url = f"http://{emulators.HOST}:{port}"
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            server_command(port),
            cwd=workdir,
            env=server_env(**settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /health:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nowhere() -> str:
    """A loopback URL where nothing listens."""
    return f"http://{emulators.HOST}:{emulators.free_port()}"


AWS_KEYS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": SECRET}


def test_missing_bucket_name_stops_the_server(tmp_path: Path) -> None:
    result = start_and_exit(tmp_path, STORAGE_EMULATOR_HOST=nowhere())
    assert_refused_naming(result, "GCS_BUCKET_NAME")


def test_invalid_value_stops_the_server_naming_it(tmp_path: Path) -> None:
    result = start_and_exit(
        tmp_path, GCS_BUCKET_NAME="dest", STORAGE_EMULATOR_HOST=nowhere(), MAX_RETRIES="lots"
    )
    assert_refused_naming(result, "MAX_RETRIES", "lots")


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    result = start_and_exit(
        tmp_path, STORAGE_EMULATOR_HOST=nowhere(), MAX_RETRIES="lots", RETRY_DELAY="soon"
    )
    for name in ("GCS_BUCKET_NAME", "MAX_RETRIES", "RETRY_DELAY"):
        [line] = assert_refused_naming(result, name)
        others = {"GCS_BUCKET_NAME", "MAX_RETRIES", "RETRY_DELAY"} - {name}
        assert not any(other in line for other in others), line


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GCS_BUCKET_NAME", ""),
        ("S3_ENDPOINT_URL", "http://bad host:9000"),
        ("STORAGE_EMULATOR_HOST", "localhost:abc"),
    ],
)
def test_malformed_value_stops_the_server_naming_it(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
    name: str,
    value: str,
) -> None:
    settings = {
        "S3_ENDPOINT_URL": moto_server.url,
        "STORAGE_EMULATOR_HOST": gcs_server.url,
        "GCS_BUCKET_NAME": dest_bucket,
        **AWS_KEYS,
        name: value,
    }
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, name)


def test_real_gcs_needs_credentials(tmp_path: Path) -> None:
    result = start_and_exit(tmp_path, GCS_BUCKET_NAME="dest", **AWS_KEYS)
    assert_refused_naming(result, "GOOGLE_APPLICATION_CREDENTIALS")
    assert SECRET not in result.stdout + result.stderr


def test_credentials_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key.json"
    result = start_and_exit(
        tmp_path, GCS_BUCKET_NAME="dest", GOOGLE_APPLICATION_CREDENTIALS=str(missing)
    )
    assert_refused_naming(result, "GOOGLE_APPLICATION_CREDENTIALS", str(missing))


def test_unreachable_s3_stops_the_server(
    tmp_path: Path, gcs_server: emulators.Emulator, dest_bucket: str
) -> None:
    s3_url = nowhere()
    result = start_and_exit(
        tmp_path,
        S3_ENDPOINT_URL=s3_url,
        STORAGE_EMULATOR_HOST=gcs_server.url,
        GCS_BUCKET_NAME=dest_bucket,
        **AWS_KEYS,
    )
    assert_refused_naming(result, "S3", s3_url)
    assert SECRET not in result.stdout + result.stderr


def test_unreachable_gcs_stops_the_server(tmp_path: Path, moto_server: emulators.Emulator) -> None:
    gcs_host = nowhere().removeprefix("http://")  # without a scheme, as people write it
    result = start_and_exit(
        tmp_path,
        S3_ENDPOINT_URL=moto_server.url,
        STORAGE_EMULATOR_HOST=gcs_host,
        GCS_BUCKET_NAME="dest",
        **AWS_KEYS,
    )
    assert_refused_naming(result, "GCS", gcs_host)


def test_missing_destination_bucket_stops_the_server(
    tmp_path: Path, moto_server: emulators.Emulator, gcs_server: emulators.Emulator
) -> None:
    result = start_and_exit(
        tmp_path,
        S3_ENDPOINT_URL=moto_server.url,
        STORAGE_EMULATOR_HOST=gcs_server.url,
        GCS_BUCKET_NAME="absent-destination-bucket",
        **AWS_KEYS,
    )
    assert_refused_naming(result, "absent-destination-bucket")


def test_serves_with_correct_settings(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
) -> None:
    settings = {
        "S3_ENDPOINT_URL": moto_server.url,
        "STORAGE_EMULATOR_HOST": gcs_server.url,
        "GCS_BUCKET_NAME": dest_bucket,
        **AWS_KEYS,
    }
    with serving(tmp_path, **settings) as url:
        response = httpx.get(f"{url}/health")

    assert response.status_code == 200
    assert response.json()["current_config"] == {
        "s3_target": moto_server.url,
        "gcs_target": gcs_server.url,
        "gcs_bucket": dest_bucket,
    }
    assert SECRET not in response.text


def test_target_gcs_bucket_is_an_alias(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
) -> None:
    """The probe checks the bucket named through the alias, and /health reports it."""
    settings = {
        "S3_ENDPOINT_URL": moto_server.url,
        "STORAGE_EMULATOR_HOST": gcs_server.url,
        "TARGET_GCS_BUCKET": dest_bucket,
        **AWS_KEYS,
    }
    with serving(tmp_path, **settings) as url:
        response = httpx.get(f"{url}/health")

    assert response.json()["current_config"]["gcs_bucket"] == dest_bucket


def test_probe_can_be_turned_off(tmp_path: Path) -> None:
    s3_url, gcs_url = nowhere(), nowhere()
    settings = {
        "S3_ENDPOINT_URL": s3_url,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "GCS_BUCKET_NAME": "dest",
        "STARTUP_PROBE": "false",
    }
    with serving(tmp_path, **settings) as url:
        response = httpx.get(f"{url}/health")

    assert response.status_code == 200
    assert response.json()["current_config"] == {
        "s3_target": s3_url,
        "gcs_target": gcs_url,
        "gcs_bucket": "dest",
    }
