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

from app.retry import RetryPolicy
from app.storage.gcs import transport
from app.storage.gcs.destination import GCSDestination
from app.storage.gcs.resources import Placement
from app.storage.gcs.transport import Timeout

__all__ = ["GCSDestination", "build_destination"]


def build_destination(
    *,
    emulator_host: str | None,
    retry: RetryPolicy,
    chunk_size: int,
    timeout: Timeout,
    max_pool_connections: int,
    target: str = "REAL GCS",
    storage_class: str | None = None,
    kms_key: str | None = None,
) -> GCSDestination:
    """The destination for real GCS with Application Default Credentials, or for the emulator
    at `emulator_host` (STORAGE_EMULATOR_HOST) without any. `retry` is used only inside
    uploads and compose (see GCSDestination). Talks to no server."""
    http = transport.connect(emulator_host, max_pool_connections=max_pool_connections)
    return GCSDestination(
        http,
        retry,
        chunk_size=chunk_size,
        timeout=timeout,
        target=target,
        placement=Placement(storage_class=storage_class, kms_key=kms_key),
    )
