"""Google Cloud Storage as a replication destination, over the JSON API on one transport.

    transport.py    urllib3 with google-auth's credentials: the one HTTP stack
    errors.py       `translate`: every answer or network failure into app.errors
    resources.py    object and bucket resources to and from the storage vocabulary
    upload.py       simple (multipart) uploads, resumable sessions, compose
    download.py     an object's bytes, one generation, read in pieces
    destination.py  GCSDestination: probe, head, iter_objects, list, open, delete, write,
                    compose

`build_destination` is the one way in; app.main calls it at start-up.
"""

from __future__ import annotations

from google.auth.credentials import AnonymousCredentials, Credentials

from app.retry import RetryPolicy
from app.storage.gcs import transport
from app.storage.gcs.destination import GCSDestination
from app.storage.gcs.transport import Timeout

__all__ = ["GCSDestination", "build_destination"]


def build_destination(
    *,
    emulator_host: str | None = None,
    endpoint_url: str | None = None,
    credentials: Credentials | None = None,
    retry: RetryPolicy,
    chunk_size: int,
    timeout: Timeout,
    max_pool_connections: int,
    target: str = "REAL GCS",
) -> GCSDestination:
    """The destination at the emulator at `emulator_host` (STORAGE_EMULATOR_HOST) without
    credentials, else at `endpoint_url` (GCS_ENDPOINT_URL; None: GCS's own) with
    `credentials` (app.identity.google builds them). `retry` is used only inside uploads and
    compose (see GCSDestination). Talks to no server."""
    if emulator_host:
        http = transport.Http(
            AnonymousCredentials(), emulator_host, max_pool_connections=max_pool_connections
        )
    else:
        assert credentials is not None, "real GCS needs credentials"
        base_url = endpoint_url or transport.GCS_URL
        http = transport.Http(credentials, base_url, max_pool_connections=max_pool_connections)
    return GCSDestination(http, retry, chunk_size=chunk_size, timeout=timeout, target=target)
