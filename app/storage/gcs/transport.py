"""The one HTTP transport of the GCS adapter: JSON-API calls on urllib3, with google-auth's
credentials.

Hand-written rather than taken from google-auth: its requests `AuthorizedSession` added about
0.3 ms of CPU to every call (environment merging, request preparation, hooks: 0.69-0.75 ms
against 0.36-0.42 ms for the same upload of a 4 KiB object on urllib3, measured in one process
against fake-gcs-server), and its urllib3 `AuthorizedHttp` sends token refreshes through the
API's proxy manager, ignoring NO_PROXY for the metadata server. So the credentials' headers are
added here as google-auth's transports add them, refreshed (through requests, which honours
the proxy variables) and tried once more on a 401. urllib3's own retries are off: app.retry
owns the policy.

The credentials are built by app.identity.google (anonymous for an emulator).
"""

from __future__ import annotations

import json as jsonlib
import os
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import google.auth.exceptions
import google.auth.transport
import urllib3
from google.auth.credentials import AnonymousCredentials, Credentials

from app import names

GCS_URL = "https://storage.googleapis.com"
# What a call raises when the network, not the server, failed (a token refresh that could
# not reach its endpoint included).
NETWORK_ERRORS = (urllib3.exceptions.HTTPError, google.auth.exceptions.TransportError)
Timeout = tuple[float, float]  # connect, read


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class Http:
    """Calls to one JSON API endpoint (`base_url`: GCS, a private endpoint, or an emulator)
    with `credentials`."""

    def __init__(
        self, credentials: Credentials, base_url: str, *, max_pool_connections: int
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._refreshable = not isinstance(credentials, AnonymousCredentials)
        self._pool = _pool(self.base_url, max_pool_connections)
        # Token refreshes are rare; they go through requests, which honours the proxy
        # variables and NO_PROXY for the token endpoint and the metadata server.
        self._refresh = _TokenRequests()

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: Timeout,
        params: Mapping[str, str] | None = None,
        body: bytes | memoryview | Iterable[bytes | memoryview] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One call with the credentials' headers; a 401 refreshes them and tries once more,
        as google-auth's own transports do. Raises one of NETWORK_ERRORS when no answer came."""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers = {**(headers or {}), "Content-Type": "application/json; charset=UTF-8"}
        answer = self._send(method, url, timeout, params, body, headers, preload=True)
        return Response(answer.status, answer.headers, answer.data)

    def stream(
        self,
        url: str,
        *,
        timeout: Timeout,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """A GET as `request` sends it, whose body is left unread: read it in pieces
        (`read(n, decode_content=False)`), then `close` and `release_conn`."""
        return self._send("GET", url, timeout, params, None, headers, preload=False)

    def _send(
        self,
        method: str,
        url: str,
        timeout: Timeout,
        params: Mapping[str, str] | None,
        body: bytes | memoryview | Iterable[bytes | memoryview] | None,
        headers: Mapping[str, str] | None,
        *,
        preload: bool,
    ) -> urllib3.BaseHTTPResponse:
        if params:
            url = f"{url}?{urlencode(params)}"
        for attempt in (1, 2):
            sent = {"User-Agent": names.USER_AGENT, **(headers or {})}
            self._credentials.before_request(self._refresh, method, url, sent)
            answer = self._pool.urlopen(
                method,
                url,
                body=body,
                headers=sent,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                retries=False,
                preload_content=preload,
                decode_content=preload,  # a streamed body is read as it was sent
            )
            if answer.status != 401 or attempt == 2 or not self._refreshable:
                break
            answer.drain_conn()  # a short error document; its connection goes back to the pool
            self._credentials.refresh(self._refresh)
        return answer


class _TokenRequests(google.auth.transport.Request):
    """google-auth's requests transport, imported on the first token request: importing
    requests costs about 0.1 s of every command's start-up, which an emulator, a
    service-account file (self-signed tokens) and a token still valid never need."""

    def __init__(self) -> None:
        self._request: google.auth.transport.Request | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> google.auth.transport.Response:
        if self._request is None:
            import google.auth.transport.requests
            import requests

            self._request = google.auth.transport.requests.Request(requests.Session())
        return self._request(*args, **kwargs)


def _pool(base_url: str, size: int) -> urllib3.PoolManager:
    """One pool for the API's host, through the proxy the environment names for it, if any,
    with the CA bundle requests would use."""
    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    options: dict[str, Any] = {"maxsize": size, "retries": False}
    options["ca_certs"] = ca_certs or certifi.where()
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(base_url)
    proxy = proxies.get(parts.scheme)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if proxy and not bypass(parts.netloc, proxies):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)
