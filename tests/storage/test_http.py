"""The GCS adapter's urllib3 pool honours the proxy variables requests would have honoured."""

from __future__ import annotations

import pytest
import urllib3

from app.storage import http


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_without_proxy_variables_the_pool_connects_directly() -> None:
    pool = http._pool("https://storage.googleapis.com", 4)
    assert not isinstance(pool, urllib3.ProxyManager)


def test_https_proxy_is_used_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    pool = http._pool("https://storage.googleapis.com", 4)
    assert isinstance(pool, urllib3.ProxyManager)
    assert pool.proxy is not None
    assert pool.proxy.host == "proxy.internal"

    monkeypatch.setenv("NO_PROXY", "storage.googleapis.com")
    assert not isinstance(http._pool("https://storage.googleapis.com", 4), urllib3.ProxyManager)
