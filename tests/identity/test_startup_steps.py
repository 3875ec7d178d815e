"""A pod whose identity is refused somewhere stops at start-up with one line naming the step
that failed: the token file, STS, the metadata server's token, Google's token exchange,
impersonation, or the bucket."""

from __future__ import annotations

from pathlib import Path

from app.dev import emulators
from tests.identity.conftest import POD_ROLE, Clouds, eks_settings, gke_settings
from tests.test_startup import assert_refused_naming, start_and_exit


def test_a_missing_token_file_is_named(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = eks_settings(clouds, tmp_path, moto_server.url, dest_bucket)
    Path(settings["AWS_WEB_IDENTITY_TOKEN_FILE"]).unlink()
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(
        result,
        "AWS identity: no web identity token file at",
        settings["AWS_WEB_IDENTITY_TOKEN_FILE"],
    )
    assert clouds.sts.assumed == []


def test_sts_refusing_the_token_is_named(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = eks_settings(clouds, tmp_path, moto_server.url, dest_bucket)
    clouds.eks_tokens.clear()  # the cluster's OIDC issuer is not trusted
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(
        result, f"AWS identity: STS refused to let us assume {POD_ROLE}: InvalidIdentityToken"
    )
    assert clouds.gcs.calls == []


def test_a_metadata_token_for_another_audience_is_named(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = gke_settings(clouds, moto_server.url, dest_bucket)
    settings["AWS_WEB_IDENTITY_AUDIENCE"] = "someone-else"
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(result, "AWS identity: STS refused", "Incorrect token audience")
    assert len(clouds.metadata.id_tokens) == 1  # the token was asked of the metadata server


def test_google_refusing_the_subject_token_is_named(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = eks_settings(clouds, tmp_path, moto_server.url, dest_bucket)
    clouds.google.roles.clear()  # the pool maps no AWS role
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(
        result, "GCS identity: Google's token exchange (STS) of the subject token refused"
    )
    assert set(clouds.sts.assumed) == {POD_ROLE}  # the AWS side passed
    assert clouds.gcs.calls == []


def test_the_bucket_refusing_the_identity_is_named(
    tmp_path: Path, clouds: Clouds, moto_server: emulators.Emulator, dest_bucket: str
) -> None:
    settings = gke_settings(clouds, moto_server.url, dest_bucket)
    clouds.gcs.allowed = {"serviceAccount:someone-else@project.iam.gserviceaccount.com"}
    result = start_and_exit(tmp_path, **settings)
    assert_refused_naming(
        result,
        f"GCS bucket '{dest_bucket}' at {clouds.gcs.url} refused our identity",
        "service_account replicator@project.iam.gserviceaccount.com",
    )
