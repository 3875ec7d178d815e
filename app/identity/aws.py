"""The AWS credentials of the S3 and SQS clients, resolved once and shared, refreshing.

In order: static keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); AWS_ROLE_ARN with
AWS_WEB_IDENTITY_TOKEN_FILE (EKS IAM roles for service accounts); AWS_ROLE_ARN with
AWS_WEB_IDENTITY_AUDIENCE and no token file: an ID token for that audience from Google's
metadata server (GKE Workload Identity, GCE, Cloud Run), exchanged by
`AssumeRoleWithWebIdentity`; else boto3's own chain (EKS Pod Identity and ECS container
credentials, `~/.aws` profiles, the EC2 instance metadata service).

Role credentials are refreshed by botocore before they expire (15 minutes ahead), each time
with a fresh token. STS is reached where boto3 would reach it (AWS_ENDPOINT_URL_STS names
another endpoint).
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import botocore.config
import botocore.credentials
import botocore.exceptions as bce
import botocore.session
import urllib3

from app import errors

METADATA_HOST = "metadata.google.internal"  # GCE_METADATA_HOST names another, as google-auth
ID_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
METADATA_TIMEOUT = 10.0  # seconds; the metadata server is on the node, but may be busy


_loader_lock = threading.Lock()
_data_loader: Any = None  # the first session's; every later session reads through it


def new_session() -> botocore.session.Session:
    """A botocore session that shares the process's data loader. Each session otherwise
    parses botocore's JSON again (endpoints, partitions, each service's model and rules): the
    service's clients (the identity's session, S3, SQS) took 0.45 s of CPU to build, 0.28 s of
    it in `json.loads`, each time the service started in a process (a test process starts
    hundreds); the loader caches what it has read, and nothing reads it but botocore."""
    global _data_loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _data_loader is None:
            _data_loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _data_loader)
    return session


class AwsIdentity:
    """Where the AWS credentials come from. Building it talks to no server; the first call of
    any client (or `check`) fetches the credentials."""

    def __init__(
        self,
        *,
        region: str,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        role_arn: str | None = None,
        token_file: Path | None = None,
        audience: str | None = None,
    ) -> None:
        self.region = region
        self._session = new_session()
        self._lock = threading.Lock()
        self._credentials: botocore.credentials.Credentials | None = None
        self._resolved = False
        self.caller_arn: str | None = None  # from GetCallerIdentity, once `check` has run
        self.role_arn = role_arn
        self.token_file = token_file
        self.audience = audience
        if access_key_id and secret_access_key:
            self.method = "static keys (AWS_ACCESS_KEY_ID)"
            self._credentials = botocore.credentials.Credentials(
                access_key_id, secret_access_key, method="explicit"
            )
            self._resolved = True
        elif role_arn and token_file is not None:
            self.method = f"web identity token file {token_file}"
            self._credentials = self._web_identity(_FileToken(token_file))
            self._resolved = True
        elif role_arn and audience:
            host = _metadata_host()
            self.method = f"web identity from the metadata server at {host} (audience {audience})"
            self._credentials = self._web_identity(_MetadataIdToken(host, audience))
            self._resolved = True
        else:
            self.method = "boto3's credential chain"

    def _web_identity(self, token: Any) -> botocore.credentials.Credentials:
        assert self.role_arn is not None
        fetcher = botocore.credentials.AssumeRoleWithWebIdentityCredentialFetcher(
            client_creator=self._sts_creator,
            web_identity_token_loader=token,
            role_arn=self.role_arn,
            extra_args={"RoleSessionName": f"cross-cloud-replicator-{socket.gethostname()}"[:64]},
        )
        return botocore.credentials.DeferredRefreshableCredentials(
            method="assume-role-with-web-identity", refresh_using=fetcher.fetch_credentials
        )

    def _sts_creator(self, service: str, **kwargs: Any) -> Any:
        return self._session.create_client(service, region_name=self.region, **kwargs)

    def credentials(self) -> botocore.credentials.Credentials | None:
        """The shared credentials (refreshing); None when boto3's chain finds none."""
        with self._lock:
            if not self._resolved:
                self._credentials = self._session.get_credentials()
                self._resolved = True
                if self._credentials is not None:
                    self.method = f"boto3's credential chain ({self._credentials.method})"
            return self._credentials

    def install(self, session: botocore.session.Session) -> None:
        """Make `session`'s clients use these credentials (the same object, so one refresh
        serves every client)."""
        resolver = session.get_component("credential_provider")
        resolver.insert_before("env", _Shared(self))

    def sts_client(self, endpoint_url: str | None = None, timeout: float = 5.0) -> Any:
        session = new_session()
        self.install(session)
        config = botocore.config.Config(
            region_name=self.region,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1},
        )
        return session.create_client("sts", endpoint_url=endpoint_url, config=config)

    def check(self, sts: Any | None) -> None:
        """Fetch the credentials now, then (with `sts`) ask GetCallerIdentity who they are.
        StartupError naming the step that failed."""
        if self.token_file is not None and self.role_arn and not self.token_file.is_file():
            raise errors.StartupError(
                f"AWS identity: no web identity token file at {self.token_file} "
                "(AWS_WEB_IDENTITY_TOKEN_FILE)"
            )
        try:
            credentials = self.credentials()
            if credentials is None:
                raise errors.StartupError(
                    "AWS identity: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or run with a role: AWS_ROLE_ARN, an instance "
                    "profile, EKS or ECS credentials)"
                )
            credentials.get_frozen_credentials()
        except bce.ClientError as exc:
            raise _refused(f"STS refused to let us assume {self.role_arn}", exc) from exc
        except (bce.BotoCoreError, OSError, ValueError) as exc:
            raise errors.StartupError(f"AWS identity: {self.method}: {exc}") from exc
        if sts is None:
            return
        try:
            self.caller_arn = str(sts.get_caller_identity()["Arn"])
        except bce.ClientError as exc:
            what = f"STS GetCallerIdentity refused our credentials ({self.method})"
            raise _refused(what, exc) from exc
        except bce.BotoCoreError as exc:
            raise errors.StartupError(f"AWS identity: cannot reach STS: {exc}") from exc

    def describe(self) -> dict[str, str]:
        """Which identity, never a secret: how the credentials are found, the role, and the
        caller's ARN once `check` has asked STS."""
        described = {"credentials": self.method}
        if self.role_arn and (self.token_file is not None or self.audience):
            described["role"] = self.role_arn
        if self.caller_arn:
            described["arn"] = self.caller_arn
        return described


def _refused(what: str, exc: bce.ClientError) -> errors.StartupError:
    error = exc.response.get("Error", {})
    return errors.StartupError(f"AWS identity: {what}: {error.get('Code')}: {error.get('Message')}")


def credential_error(exc: Exception) -> errors.ReplicatorError | None:
    """What a client call's failure to get credentials means, or None when it is another
    failure: the S3 and SQS adapters ask before their own translation."""
    if isinstance(exc, bce.ClientError) and exc.operation_name.startswith("AssumeRole"):
        error = exc.response.get("Error", {})
        return errors.AccessDenied(
            f"AWS STS refused the role's credentials: {error.get('Code')}: {error.get('Message')}"
        )
    if isinstance(exc, TokenUnavailable):
        return errors.TransientError(f"no web identity token: {exc}", cause="connection")
    return None


class _Shared(botocore.credentials.CredentialProvider):
    """A credential provider that hands a session the identity's own credentials."""

    METHOD = "cross-cloud-replicator"
    CANONICAL_NAME = "cross-cloud-replicator"

    def __init__(self, identity: AwsIdentity) -> None:
        super().__init__()
        self._identity = identity

    def load(self) -> botocore.credentials.Credentials | None:
        return self._identity.credentials()


class _FileToken:
    """The token in a file, read again for every exchange (the kubelet rotates it)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self) -> str:
        try:
            return self._path.read_text().strip()
        except OSError as exc:
            raise TokenUnavailable(
                msg=f"cannot read the web identity token file {self._path}: {exc.strerror}"
            ) from exc


class _MetadataIdToken:
    """A Google-signed ID token for `audience` from the metadata server, fetched for every
    exchange (they last an hour; STS only reads them once)."""

    def __init__(self, host: str, audience: str) -> None:
        query = urllib.parse.urlencode({"audience": audience, "format": "full"})
        self._url = f"http://{host}{ID_TOKEN_PATH}?{query}"
        self._pool = urllib3.PoolManager(retries=False, timeout=METADATA_TIMEOUT)

    def __call__(self) -> str:
        try:
            answer = self._pool.request("GET", self._url, headers={"Metadata-Flavor": "Google"})
        except urllib3.exceptions.HTTPError as exc:
            raise TokenUnavailable(msg=f"the metadata server did not answer: {exc}") from exc
        if answer.status != 200:
            text = answer.data.decode("utf-8", "replace")[:200]
            raise TokenUnavailable(
                msg=f"the metadata server refused an ID token: {answer.status} {text}"
            )
        return answer.data.decode().strip()


class TokenUnavailable(bce.BotoCoreError):
    """No web identity token to exchange (the file, or the metadata server)."""

    fmt = "{msg}"


def _metadata_host() -> str:
    """As google-auth finds it: GCE_METADATA_HOST, or its older name GCE_METADATA_ROOT."""
    return (
        os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_ROOT") or METADATA_HOST
    )
