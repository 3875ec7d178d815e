"""Service-account impersonation for GCS: the identity GCS sees is the impersonated account,
whatever the caller's own credentials are (a user's, from an `impersonated_service_account`
file; an AWS role's, from a federation file that names an account to impersonate)."""

from __future__ import annotations

import json
from pathlib import Path

from app.config import Settings
from app.dev import emulators
from app.wiring import build_identities
from tests import http_calls
from tests.conftest import Buckets
from tests.identity.conftest import POOL, PROBE_TIMEOUT, Clouds, eks_settings, federation_file
from tests.service_process import running_service
from tests.test_startup import assert_refused_naming, start_and_exit

TARGET = "writer@project.iam.gserviceaccount.com"
WORKFORCE = "//iam.googleapis.com/locations/global/workforcePools/staff/providers/okta"
DEVELOPER = "principal://iam.googleapis.com/locations/global/workforcePools/staff/subject/dev"


def impersonation_file(path: Path, clouds: Clouds) -> Path:
    """As `gcloud auth application-default login --impersonate-service-account` writes it
    for a workforce identity federation user, with the token endpoints at the stand-in (a
    plain Google user's file cannot name its token endpoint)."""
    clouds.google.refresh_tokens["1//dev-refresh-token"] = DEVELOPER
    path.write_text(
        json.dumps(
            {
                "type": "impersonated_service_account",
                "service_account_impersonation_url": impersonation_url(clouds),
                "source_credentials": {
                    "type": "external_account_authorized_user",
                    "audience": WORKFORCE,
                    "client_id": "32555940559.apps.googleusercontent.com",
                    "client_secret": "not-a-secret-here",
                    "refresh_token": "1//dev-refresh-token",
                    "token_url": f"{clouds.google.url}/v1/token",
                    "token_info_url": f"{clouds.google.url}/v1/introspect",
                },
                "delegates": [],
            }
        )
    )
    return path


def impersonation_url(clouds: Clouds) -> str:
    return f"{clouds.google.url}/v1/projects/-/serviceAccounts/{TARGET}:generateAccessToken"


def user_settings(workdir: Path, clouds: Clouds, s3_url: str, bucket: str) -> dict[str, str]:
    """A developer's workstation: ADC from the impersonation file, test keys for S3."""
    return {
        "S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "GCS_ENDPOINT_URL": clouds.gcs.url,
        "GCS_BUCKET_NAME": bucket,
        "GOOGLE_APPLICATION_CREDENTIALS": str(impersonation_file(workdir / "adc.json", clouds)),
        "PROBE_TIMEOUT": PROBE_TIMEOUT,
    }


def copy_one(workdir: Path, settings: dict[str, str], buckets: Buckets) -> dict[str, str]:
    """Start the service, copy one object with it; returns what /health said of GCS."""
    data = buckets.put_random("impersonated.bin", 5000)
    with running_service(workdir, settings) as service:
        health = http_calls.get(f"{service.url}/health").json()
        answer = http_calls.post(
            f"{service.url}/v1/replicate",
            json={"s3_bucket": buckets.source, "s3_key": "impersonated.bin"},
            timeout=30,
        )
    buckets.assert_replicated(answer, "impersonated.bin", data)
    gcs: dict[str, str] = health["identities"]["gcs"]
    return gcs


def test_a_user_impersonating_a_service_account_writes_as_that_account(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, buckets: Buckets
) -> None:
    clouds.google.may_impersonate = lambda caller, account: (
        (caller, account)
        == (
            DEVELOPER,
            TARGET,
        )
    )
    settings = user_settings(tmp_path, clouds, moto_server.url, buckets.dest)
    assert copy_one(tmp_path, settings, buckets) == {
        "credentials": "impersonation, from workforce identity federation (a user)",
        "service_account": TARGET,
    }
    assert clouds.gcs.identities() == {f"serviceAccount:{TARGET}"}


def test_a_federated_aws_role_impersonating_a_service_account_writes_as_that_account(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, buckets: Buckets
) -> None:
    federated = f"principal://{POOL.removeprefix('//iam.googleapis.com/')}/subject/"
    clouds.google.may_impersonate = lambda caller, account: (
        caller.startswith(federated) and account == TARGET
    )
    settings = eks_settings(clouds, tmp_path, moto_server.url, buckets.dest)
    federation_file(
        Path(settings["GOOGLE_APPLICATION_CREDENTIALS"]),
        clouds.google,
        service_account_impersonation_url=impersonation_url(clouds),
    )
    assert copy_one(tmp_path, settings, buckets) == {
        "credentials": "workload identity federation from AWS",
        "audience": POOL,
        "service_account": TARGET,
    }
    assert clouds.gcs.identities() == {f"serviceAccount:{TARGET}"}
    assert clouds.google.exchanged  # the role's signed request was exchanged first


def test_impersonation_refused_is_named_at_start_up(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = user_settings(tmp_path, clouds, moto_server.url, dest_bucket)
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, f"GCS identity: impersonating {TARGET} refused")
    assert clouds.gcs.calls == []


def test_the_impersonation_setting_wraps_the_credentials_found(
    tmp_path: Path, clouds: Clouds
) -> None:
    """GOOGLE_IMPERSONATE_SERVICE_ACCOUNT over the credential file, built without a call (its
    endpoint is Google's own IAM Credentials, which these tests cannot reach)."""
    user = tmp_path / "user.json"
    info = json.loads(impersonation_file(tmp_path / "adc.json", clouds).read_text())
    user.write_text(json.dumps(info["source_credentials"]))
    settings = Settings(
        _env_file=None,
        gcs_bucket_name="dest",
        gcs_endpoint_url=clouds.gcs.url,
        google_application_credentials=user,
        google_impersonate_service_account=TARGET,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    assert build_identities(settings).describe()["gcs"] == {
        "credentials": "impersonation, from workforce identity federation (a user)",
        "service_account": TARGET,
    }
    assert clouds.google.requests == []
