"""/docs and /redoc work without internet access: the pages name only the service's own URLs,
and a real headless Chromium, allowed to reach nothing but the service, renders the
operations from them."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.dev import emulators
from tests.service_process import ServiceProcess, running_service, service_settings

BROWSER_TIMEOUT = 120  # a safety net for a browser that hangs; never asserted on
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian, Ubuntu


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_only_the_services_own_urls(client: TestClient, page: str) -> None:
    html = client.get(page)
    assert html.status_code == 200

    assert re.findall(r"(?:https?:)?//[^\s\"'<>]+", html.text) == []
    referenced = re.findall(r"(?:src|href)=\"([^\"]+)\"", html.text)
    assert any(url.endswith(".js") for url in referenced), referenced
    for url in referenced:
        assert url.startswith("/docs/static/"), url
        served = client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 1000, url


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("docs-service")
    settings = service_settings(moto_server.url, gcs_server.url, "docs-bucket", STARTUP_PROBE="0")
    with running_service(workdir, settings) as process:
        yield process


def rendered_dom(url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run, in headless Chromium that can resolve no host
    but the loopback address: anything fetched from elsewhere fails."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)"
)
def test_swagger_ui_renders_the_operations_offline(service: ServiceProcess, tmp_path: Path) -> None:
    dom = rendered_dom(f"{service.url}/docs", tmp_path)

    assert 'class="swagger-ui"' in dom
    operations = re.findall(r'class="opblock opblock-(\w+)', dom)
    assert operations.count("post") == 4, operations
    assert {"get", "delete"} <= set(operations)
    for path in (
        "/v1/replicate",
        "/v1/replicate/batch",
        "/v1/events",
        "/v1/object/{bucket}/{key}",
        "/v1/jobs",
        "/v1/jobs/{id}/report",
        "/health",
    ):
        assert f'data-path="{path}"' in dom, path
    assert "Failed to load API definition" not in dom


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)"
)
def test_redoc_renders_the_operations_offline(service: ServiceProcess, tmp_path: Path) -> None:
    dom = rendered_dom(f"{service.url}/redoc", tmp_path)

    assert "cross-cloud-replicator" in dom
    for path in ("/v1/replicate", "/v1/replicate/batch", "/v1/events", "/v1/object/{bucket}/{key}"):
        assert path in dom, path
    assert "Something went wrong" not in dom
