"""Google Cloud Storage as a replication destination, over the JSON API on one transport.

    transport.py    urllib3 with google-auth's credentials: the one HTTP stack
    errors.py       `translate`: every answer or network failure into app.errors
    resources.py    object and bucket resources to and from the storage vocabulary
    upload.py       simple (multipart) uploads, resumable sessions, compose
    download.py     an object's bytes, one generation, read in pieces
    destination.py  GCSDestination: probe, head, iter_objects, list, open, delete, write,
                    compose

`build_destination` is the one way in; app.wiring calls it.

Why not google-cloud-storage, the SDK the design names. The uploads are the reason
(upload.py): the SDK's resumable upload rewinds its stream to recover a failed chunk, and this
stream is read once, its last bytes released only after the source verified; doing it here
also cut the CPU per small object by about a third. Once the uploads are here, the rest (head,
list, delete, the bucket) came along on the same transport for about 0.3 ms of CPU per call
saved on an emulator (transport.py), a weak reason on its own; what keeps them here is one HTTP
stack, one error translation and one retry policy (app.retry) instead of two of each.

What this client does NOT do that the SDK does (a deployment that needs one of these needs
the SDK, or the feature added here):
- Endpoints: always https://storage.googleapis.com (or STORAGE_EMULATOR_HOST, anonymously).
  No universe domain other than googleapis.com (GOOGLE_CLOUD_UNIVERSE_DOMAIN is ignored), no
  `api_endpoint` override for a regional or Private Service Connect endpoint, no mTLS
  (GOOGLE_API_USE_CLIENT_CERTIFICATE and storage.mtls.googleapis.com are ignored), no gRPC or
  Direct Path transport.
- Requester pays: no `userProject` parameter, so a requester-pays bucket answers 400
  ("UserProjectMissing"). A quota project set in the credentials (ADC's quota_project_id) is
  still sent, as google-auth adds `x-goog-user-project`.
- Encryption: no customer-supplied keys (CSEK): an object written with one cannot be read back
  (`open` fails; `check --download` reports it). No per-object `kmsKeyName`: new objects take
  the bucket's default key, Google-managed or CMEK.
- Object settings the SDK can set on upload: no ACL (`predefinedAcl`), holds, retention or
  custom time; the bucket's defaults apply. No managed folders or HNS folders are created.
- Telemetry: it sends `User-Agent: cross-cloud-replicator/<version> python/<version>` (what
  GCS's audit logs show as callerSuppliedUserAgent) but not the SDK's `x-goog-api-client`;
  no OpenTelemetry spans.
- Retries follow app.retry, not the SDK's default policy (its 120 s deadline and its
  per-call idempotency rules); each upload is conditional (`ifGenerationMatch`), so retrying it
  is safe, as the SDK would require.
"""

from __future__ import annotations

from google.auth.credentials import AnonymousCredentials, Credentials

from app.retry import RetryPolicy
from app.storage.gcs import transport
from app.storage.gcs.destination import GCSDestination
from app.storage.gcs.resources import Placement
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
    storage_class: str | None = None,
    kms_key: str | None = None,
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
    return GCSDestination(
        http,
        retry,
        chunk_size=chunk_size,
        timeout=timeout,
        target=target,
        placement=Placement(storage_class=storage_class, kms_key=kms_key),
    )
