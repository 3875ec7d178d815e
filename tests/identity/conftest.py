"""The token services of both clouds stood up on loopback (tests/identity/standins.py), in
front of the suite's emulators, and the settings of the two ways to run with no key stored:

- on AWS (EKS): a web identity token file for the pod's role, GCS through workload identity
  federation (an `external_account` file whose token_url is GoogleAuth's);
- on Google Cloud (GKE): the metadata server, whose ID token buys the AWS role through
  AssumeRoleWithWebIdentity and whose access token is the pod's service account at GCS.

Google access tokens last TOKEN_TTL seconds, the role's keys and ID tokens KEYS_TTL: a run of
the scenarios outlives both many times over.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.dev import emulators
from tests import test_startup
from tests.identity import standins

TOKEN_TTL = 2.0  # seconds every Google access token lasts
# Seconds the role's credentials and the metadata server's ID tokens last. botocore refreshes
# role credentials from 15 minutes before they expire, so each use of them refreshes them,
# with a fresh ID token. Longer than TOKEN_TTL only so that a token is still live when STS
# checks it on a loaded machine.
KEYS_TTL = 10.0
ACCOUNT = "123456789012"  # moto's
POD_ROLE = f"arn:aws:iam::{ACCOUNT}:role/replicator-pod"
POOL = (
    "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/aws/"
    "providers/eks"
)
GKE_ACCOUNT = "replicator@project.iam.gserviceaccount.com"
AUDIENCE = "sts.amazonaws.com/replicator"  # what the AWS role's trust policy names (oaud)
PROBE_TIMEOUT = "30"  # the stand-ins share a loaded machine with the suite


@dataclass
class Clouds:
    """The stand-ins, and the secrets a pod would hold (its token file's contents)."""

    tokens: standins.Tokens
    metadata: standins.Metadata
    sts: standins.AwsStsGate
    google: standins.GoogleAuth
    gcs: standins.GcsGate
    eks_tokens: set[str]  # what the EKS OIDC issuer signed: the STS gate trusts these

    def trusted(self, token: str, role: str) -> str | None:
        if role != POD_ROLE:
            return f"Not authorized to perform sts:AssumeRoleWithWebIdentity on {role}"
        if token in self.eks_tokens:
            return None
        claims = self.metadata.claims(token)
        if claims is None:
            return "Couldn't verify the token's signature"
        if claims["aud"] != AUDIENCE:
            return f"Incorrect token audience: {claims['aud']}"
        if claims["exp"] <= time.time():
            return "Token expired"
        return None


@contextlib.contextmanager
def stood_up(moto: emulators.Emulator, gcs: emulators.Emulator) -> Iterator[Clouds]:
    """Every stand-in, in front of moto's server and fake-gcs-server."""
    tokens = standins.Tokens(ttl=TOKEN_TTL)
    metadata = standins.Metadata(tokens, GKE_ACCOUNT, id_token_ttl=KEYS_TTL)
    holder: list[Clouds] = []
    sts = standins.AwsStsGate(moto.url, lambda t, r: holder[0].trusted(t, r), KEYS_TTL)
    google = standins.GoogleAuth(tokens, sts, moto.url, POOL, roles={POD_ROLE})
    gate = standins.GcsGate(gcs.url, tokens)
    holder.append(Clouds(tokens, metadata, sts, google, gate, set()))
    with standins.serving(metadata, sts, google, gate):
        yield holder[0]


@pytest.fixture
def clouds(moto_server: emulators.Emulator, gcs_server: emulators.Emulator) -> Iterator[Clouds]:
    with stood_up(moto_server, gcs_server) as found:
        yield found


def federation_file(path: Path, google: standins.GoogleAuth, **more: str) -> Path:
    """An `external_account` credential configuration for AWS, as
    `gcloud iam workload-identity-pools create-cred-config ... --aws` writes it, with the
    token exchange at `google`."""
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": google.audience,
                "subject_token_type": standins.AWS_TOKEN_TYPE,
                "token_url": f"{google.url}/v1/token",
                "credential_source": {
                    "environment_id": "aws1",
                    "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
                    "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
                    "regional_cred_verification_url": standins.AWS_VERIFICATION_URL,
                },
                **more,
            }
        )
    )
    return path


def eks_settings(clouds: Clouds, workdir: Path, s3_url: str, bucket: str) -> dict[str, str]:
    """A pod on EKS with IAM roles for service accounts: a token file for the pod's role, the
    federation file for GCS; no key anywhere."""
    token = f"eks-oidc-{secrets.token_hex(8)}"
    clouds.eks_tokens.add(token)
    token_file = workdir / "eks-token"
    token_file.write_text(token)
    return {
        "S3_ENDPOINT_URL": s3_url,
        "AWS_ROLE_ARN": POD_ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "GCS_ENDPOINT_URL": clouds.gcs.url,
        "GOOGLE_APPLICATION_CREDENTIALS": str(federation_file(workdir / "gcs.json", clouds.google)),
        "GCS_BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL_STS": clouds.sts.url,
        "PROBE_TIMEOUT": PROBE_TIMEOUT,
    }


def gke_settings(clouds: Clouds, s3_url: str, bucket: str) -> dict[str, str]:
    """A pod on GKE with Workload Identity: the metadata server for both clouds."""
    return {
        "S3_ENDPOINT_URL": s3_url,
        "AWS_ROLE_ARN": POD_ROLE,
        "AWS_WEB_IDENTITY_AUDIENCE": AUDIENCE,
        "GCS_ENDPOINT_URL": clouds.gcs.url,
        "GCS_BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL_STS": clouds.sts.url,
        "GCE_METADATA_HOST": clouds.metadata.host,
        "GCE_METADATA_IP": clouds.metadata.host,
        "PROBE_TIMEOUT": PROBE_TIMEOUT,
    }


@pytest.fixture(autouse=True)
def _patient_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start-up here talks to several stand-ins in this process: on a machine loaded by the
    rest of the suite it may take longer than tests/test_startup.py's safety net allows."""
    monkeypatch.setattr(test_startup, "EXIT_TIMEOUT", 120)
