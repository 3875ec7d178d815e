"""The GCS adapter's transport: the proxy variables requests would have honoured, and a 401."""

from __future__ import annotations

from typing import Any

import google.auth.credentials
import pytest
import urllib3
from google.cloud import storage

from app.storage.gcs import transport
from tests.faults import Fault, FaultProxy


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_without_proxy_variables_the_pool_connects_directly() -> None:
    pool = transport._pool("https://storage.googleapis.com", 4)
    assert not isinstance(pool, urllib3.ProxyManager)


def test_https_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    pool = transport._pool("https://storage.googleapis.com", 4)
    assert isinstance(pool, urllib3.ProxyManager)
    assert pool.proxy is not None
    assert pool.proxy.host == "proxy.internal"

    monkeypatch.setenv("NO_PROXY", "storage.googleapis.com")
    assert not isinstance(
        transport._pool("https://storage.googleapis.com", 4), urllib3.ProxyManager
    )


class CountingCredentials(google.auth.credentials.Credentials):
    """Bearer tokens t0, t1, ...: each refresh issues the next."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "t0"
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"t{self.refreshes}"


def test_a_401_refreshes_the_credentials_and_tries_once_more(
    gcs_proxy: FaultProxy, gcs: storage.Client, dest_bucket: str
) -> None:
    credentials = CountingCredentials()
    client = transport.Http(credentials, gcs_proxy.url, max_pool_connections=2)
    gcs_proxy.add(Fault("GET", f"/b/{dest_bucket}", "status", status=401, times=1))

    answer = client.request("GET", f"{gcs_proxy.url}/storage/v1/b/{dest_bucket}", timeout=(2, 5))

    assert answer.status_code == 200
    assert answer.json()["name"] == dest_bucket
    assert credentials.refreshes == 1
    sent = [seen.headers["authorization"] for seen in gcs_proxy.seen("GET")]
    assert sent == ["Bearer t0", "Bearer t1"]
