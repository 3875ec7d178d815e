"""The Google credentials of the GCS transport.

- A credential file (GOOGLE_APPLICATION_CREDENTIALS) of any type google-auth reads: a service
  account key, `impersonated_service_account`, `external_account`. An `external_account` file
  for AWS (workload identity federation) gets its AWS credentials from boto3's resolution
  (app.identity.aws) rather than google-auth's own, which reads only environment keys and the
  EC2 instance metadata service: so on EKS the identity GCS sees is the pod's role (IRSA, Pod
  Identity), refreshed as boto3 refreshes it.
- No file: Application Default Credentials (the metadata server on GKE, GCE and Cloud Run;
  gcloud's credentials on a workstation).
- GOOGLE_IMPERSONATE_SERVICE_ACCOUNT: whichever of those, used to impersonate that service
  account (it needs roles/iam.serviceAccountTokenCreator on it).
- An emulator (STORAGE_EMULATOR_HOST): none.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import google.auth
import google.auth.aws
import google.auth.exceptions
import google.auth.external_account
import google.oauth2.credentials
from google.auth import (
    compute_engine,
    external_account_authorized_user,
    impersonated_credentials,
)
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import service_account

from app import errors
from app.identity.aws import AwsIdentity

SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
AWS_SUBJECT_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"  # what impersonation asks


class BotoCredentialsSupplier(google.auth.aws.AwsSecurityCredentialsSupplier):
    """google-auth's AWS credentials, taken from boto3's resolution: the same (refreshing)
    credentials as the S3 and SQS clients, so a role's keys are fresh whenever they are."""

    def __init__(self, identity: AwsIdentity) -> None:
        self._identity = identity

    def get_aws_security_credentials(
        self, context: Any, request: Any
    ) -> google.auth.aws.AwsSecurityCredentials:
        try:
            credentials = self._identity.credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except Exception as exc:  # botocore's, STS's: google-auth reports a RefreshError
            raise google.auth.exceptions.RefreshError(
                f"no AWS credentials to sign the subject token ({self._identity.method}): {exc}"
            ) from exc
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            raise google.auth.exceptions.RefreshError(
                "no AWS credentials to sign the subject token (boto3 found none)"
            )
        return google.auth.aws.AwsSecurityCredentials(
            frozen.access_key, frozen.secret_key, frozen.token
        )

    def get_aws_region(self, context: Any, request: Any) -> str:
        return self._identity.region


def credentials(
    *,
    credentials_file: Path | None,
    impersonate: str | None,
    aws: AwsIdentity,
) -> Credentials:
    """The credentials for real GCS (or an endpoint that checks them). Reads files, talks to
    no server; StartupError naming the setting when they cannot be built."""
    try:
        found = _from_file(credentials_file, aws) if credentials_file else _default()
    except (google.auth.exceptions.GoogleAuthError, ValueError, OSError) as exc:
        raise errors.StartupError(f"GOOGLE_APPLICATION_CREDENTIALS: {exc}") from None
    if isinstance(found, service_account.Credentials):
        # A service account signs its own tokens (a self-signed JWT): no token endpoint call.
        found = found.with_always_use_jwt_access(True)
    if impersonate:
        found = impersonated_credentials.Credentials(
            source_credentials=_scoped(found, (CLOUD_PLATFORM,)),
            target_principal=impersonate,
            target_scopes=list(SCOPES),
        )
    return found


def _from_file(path: Path, aws: AwsIdentity) -> Credentials:
    info = json.loads(path.read_text())
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "external_account" and info.get("subject_token_type") == AWS_SUBJECT_TOKEN_TYPE:
        federation = {k: v for k, v in info.items() if k != "credential_source"}
        return google.auth.aws.Credentials.from_info(
            federation,
            aws_security_credentials_supplier=BotoCredentialsSupplier(aws),
            scopes=list(SCOPES),
        )
    if kind == "impersonated_service_account":
        found = impersonated_credentials.Credentials.from_impersonated_service_account_info(
            info, scopes=list(SCOPES)
        )
        # google-auth takes only the account's name from the URL; the file's endpoint (a
        # private one, say) is where it must be asked.
        found._iam_endpoint_override = info["service_account_impersonation_url"]
        return found
    with warnings.catch_warnings():
        # The warning is about configurations from untrusted sources; this one is the
        # operator's own, named by GOOGLE_APPLICATION_CREDENTIALS.
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded, _ = google.auth.load_credentials_from_file(str(path), scopes=list(SCOPES))
    return loaded


def _default() -> Credentials:
    found, _ = google.auth.default(scopes=list(SCOPES))
    return found


def _scoped(found: Credentials, scopes: tuple[str, ...]) -> Credentials:
    with_scopes = getattr(found, "with_scopes", None)
    if with_scopes is not None and getattr(found, "requires_scopes", False):
        scoped: Credentials = with_scopes(list(scopes))
        return scoped
    return found


def describe(found: Credentials) -> dict[str, str]:
    """Which identity GCS sees, never a secret: the service account, the federation (the
    workload identity pool provider) or the metadata server's account."""
    if isinstance(found, AnonymousCredentials):
        return {"credentials": "none (an emulator)"}
    if isinstance(found, impersonated_credentials.Credentials):
        source = describe(found._source_credentials)
        return {
            "credentials": f"impersonation, from {source['credentials']}",
            "service_account": found.service_account_email,
        }
    if isinstance(found, google.auth.external_account.Credentials):
        described = {
            "credentials": "workload identity federation"
            + (" from AWS" if isinstance(found, google.auth.aws.Credentials) else ""),
            "audience": str(found._audience),
        }
        if found.service_account_email:
            described["service_account"] = found.service_account_email
        return described
    email = getattr(found, "service_account_email", None)
    if isinstance(found, compute_engine.Credentials):
        return {"credentials": "the metadata server", "service_account": str(email)}
    if isinstance(found, google.oauth2.credentials.Credentials):
        return {"credentials": "user credentials (gcloud)"}
    if isinstance(found, external_account_authorized_user.Credentials):
        return {"credentials": "workforce identity federation (a user)"}
    if email:
        return {"credentials": "service account key", "service_account": str(email)}
    return {"credentials": type(found).__module__.removeprefix("google.")}


def check(found: Credentials) -> None:
    """Get a token now; StartupError naming the step that refused."""
    if isinstance(found, AnonymousCredentials):
        return
    import google.auth.transport.requests  # requests: only when a token is asked for

    try:
        found.refresh(google.auth.transport.requests.Request())
    except google.auth.exceptions.GoogleAuthError as exc:
        raise errors.StartupError(f"GCS identity: {_step(found)} refused: {exc}") from exc


def _step(found: Credentials) -> str:
    if isinstance(found, impersonated_credentials.Credentials):
        return f"impersonating {found.service_account_email}"
    if isinstance(found, google.auth.external_account.Credentials):
        return "Google's token exchange (STS) of the subject token"
    return "getting an access token"
