"""Fail-fast start-up, checked on the real server: `python -m uvicorn app.main:app` as a process.

Each run starts in an empty directory (so no `.env` is read) with the app's settings removed
from the environment, and gets only the settings the test names.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.dev import emulators
from tests import http_calls
from tests.service_process import running_service, service_command, service_env, service_settings

SECRET = "do-not-print-this-secret-0451"
EXIT_TIMEOUT = 30  # a safety net for a server that does not stop; never asserted on


def start_and_exit(workdir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Start the server and wait for it to stop, as a misconfigured server must."""
    return subprocess.run(
        service_command(emulators.free_port()),
        cwd=workdir,
        env=service_env(settings),
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
    settings = service_settings(moto_server.url, gcs_server.url, dest_bucket, **AWS_KEYS)
    result = start_and_exit(tmp_path, **{**settings, name: value})
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


def test_a_credentials_file_google_cannot_read_is_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text("{}")
    result = start_and_exit(
        tmp_path, GCS_BUCKET_NAME="dest", GOOGLE_APPLICATION_CREDENTIALS=str(key_file), **AWS_KEYS
    )
    assert_refused_naming(result, "GOOGLE_APPLICATION_CREDENTIALS", "does not have a valid type")


def test_unreachable_s3_stops_the_server(
    tmp_path: Path, gcs_server: emulators.Emulator, dest_bucket: str
) -> None:
    s3_url = nowhere()
    settings = service_settings(s3_url, gcs_server.url, dest_bucket, **AWS_KEYS)
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, "S3", s3_url)
    assert SECRET not in result.stdout + result.stderr


def test_unreachable_gcs_stops_the_server(tmp_path: Path, moto_server: emulators.Emulator) -> None:
    gcs_host = nowhere().removeprefix("http://")  # without a scheme, as people write it
    settings = service_settings(moto_server.url, gcs_host, "dest", **AWS_KEYS)
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, "GCS", gcs_host)


def test_missing_destination_bucket_stops_the_server(
    tmp_path: Path, moto_server: emulators.Emulator, gcs_server: emulators.Emulator
) -> None:
    absent = "absent-destination-bucket"
    settings = service_settings(moto_server.url, gcs_server.url, absent, **AWS_KEYS)
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, absent)


@pytest.mark.parametrize("bucket_setting", ["GCS_BUCKET_NAME", "TARGET_GCS_BUCKET"])
def test_serves_with_correct_settings(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    dest_bucket: str,
    bucket_setting: str,
) -> None:
    """The bucket may be named by GCS_BUCKET_NAME or by its alias TARGET_GCS_BUCKET: the probe
    checks it either way, and /health reports it."""
    settings = service_settings(moto_server.url, gcs_server.url, dest_bucket, **AWS_KEYS)
    settings[bucket_setting] = settings.pop("GCS_BUCKET_NAME")  # the name or its alias
    with running_service(tmp_path, settings) as service:
        response = http_calls.get(f"{service.url}/health")

    assert response.status_code == 200
    assert response.json()["current_config"] == {
        "s3_target": moto_server.url,
        "gcs_target": gcs_server.url,
        "gcs_bucket": dest_bucket,
    }
    assert SECRET not in response.text


def test_probe_can_be_turned_off(tmp_path: Path) -> None:
    s3_url, gcs_url = nowhere(), nowhere()
    settings = {
        "S3_ENDPOINT_URL": s3_url,
        "STORAGE_EMULATOR_HOST": gcs_url,
        "GCS_BUCKET_NAME": "dest",
        "STARTUP_PROBE": "false",
    }
    with running_service(tmp_path, settings) as service:
        response = http_calls.get(f"{service.url}/health")

    assert response.status_code == 200
    assert response.json()["current_config"] == {
        "s3_target": s3_url,
        "gcs_target": gcs_url,
        "gcs_bucket": "dest",
    }
