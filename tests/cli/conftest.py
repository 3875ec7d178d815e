"""What the command-line tests share: running `replicator` against the session's emulators."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.dev import emulators
from tests.conftest import Buckets
from tests.service_process import RUN_TIMEOUT, replicator, service_settings


@pytest.fixture
def run(
    tmp_path: Path,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    buckets: Buckets,
) -> Any:
    def command(
        *args: str, s3_url: str | None = None, timeout: float = RUN_TIMEOUT, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        settings = service_settings(
            s3_url or moto_server.url, gcs_server.url, buckets.dest, RETRY_DELAY="0.01", **extra
        )
        return replicator(*args, cwd=tmp_path, timeout=timeout, **settings)

    return command
