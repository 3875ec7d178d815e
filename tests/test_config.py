"""Settings: process environment over `.env.local` over `.env`, normalised and validated, with
one readable line per problem and never a secret in it."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from app.config import Settings, load_settings
from app.errors import StartupError

SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"TARGET_GCS_BUCKET"}
SECRET = "do-not-print-this-secret-0451"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory and no app setting in the process environment."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_env(path: Path, **values: str) -> None:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def problems(**environment: str) -> list[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        with pytest.raises(StartupError) as failure:
            load_settings()
    return str(failure.value).splitlines()


def test_process_env_over_env_local_over_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(
        clean_env / ".env",
        GCS_BUCKET_NAME="from-env",
        STORAGE_EMULATOR_HOST="http://env:1",
        MAX_RETRIES="1",
        RETRY_DELAY="1.5",
    )
    assert load_settings().gcs_bucket_name == "from-env"

    write_env(clean_env / ".env.local", GCS_BUCKET_NAME="from-env-local", MAX_RETRIES="2")
    layered = load_settings()
    assert (layered.gcs_bucket_name, layered.max_retries) == ("from-env-local", 2)

    monkeypatch.setenv("GCS_BUCKET_NAME", "from-process")
    settings = load_settings()
    assert settings.gcs_bucket_name == "from-process"
    assert settings.max_retries == 2  # .env.local still wins over .env
    assert settings.retry_delay == 1.5  # and .env still counts where nothing overrides it
    assert settings.storage_emulator_host == "http://env:1"


def test_alias_in_process_env_wins_over_the_name_in_a_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_env(clean_env / ".env", GCS_BUCKET_NAME="from-env", LOCAL_GCS_PATH=str(clean_env))
    monkeypatch.setenv("TARGET_GCS_BUCKET", "from-process")
    assert load_settings().gcs_bucket_name == "from-process"


def test_alias_in_env_local_wins_over_the_name_in_env(clean_env: Path) -> None:
    write_env(clean_env / ".env", GCS_BUCKET_NAME="from-env", LOCAL_GCS_PATH=str(clean_env))
    write_env(clean_env / ".env.local", TARGET_GCS_BUCKET="from-env-local")
    assert load_settings().gcs_bucket_name == "from-env-local"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:4443", "http://127.0.0.1:4443"),
        ("localhost:4443/", "http://localhost:4443"),
        (" http://127.0.0.1:4443 ", "http://127.0.0.1:4443"),
        ("https://gcs.example.com", "https://gcs.example.com"),
    ],
)
def test_endpoints_get_a_scheme(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("GCS_BUCKET_NAME", "dest")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", given)
    monkeypatch.setenv("S3_ENDPOINT_URL", given)
    settings = load_settings()
    assert settings.storage_emulator_host == expected
    assert settings.s3_endpoint_url == expected
    assert settings.describe()["gcs_target"] == expected


@pytest.mark.parametrize("size", [256 * 1024 + 1, 1_000_000, 64 * 1024 * 1024 - 1])
def test_chunk_size_must_be_a_multiple_of_256_kib(size: int) -> None:
    [line] = problems(
        GCS_BUCKET_NAME="dest", STORAGE_EMULATOR_HOST="h:1", UPLOAD_CHUNK_SIZE=str(size)
    )
    assert "UPLOAD_CHUNK_SIZE" in line
    assert "262144" in line


def test_chunk_size_multiple_of_256_kib_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCS_BUCKET_NAME", "dest")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "h:1")
    monkeypatch.setenv("UPLOAD_CHUNK_SIZE", str(3 * 256 * 1024))
    assert load_settings().upload_chunk_size == 3 * 256 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_RETRIES", "lots"),
        ("MAX_RETRIES", "21"),
        ("RETRY_DELAY", "-1"),
        ("CONNECT_TIMEOUT", "0"),
        ("OVERWRITE", "sometimes"),
        ("DELETE_POLICY", "sometimes"),
        ("REPLICATION_RULES", "not json"),
        ("STARTUP_PROBE", "maybe"),
        ("BATCH_CONCURRENCY", "0"),
        ("GCS_BUCKET_NAME", ""),
        ("GCS_BUCKET_NAME", "Bad_Bucket"),
        ("S3_ENDPOINT_URL", "http://bad host:9000"),
        ("STORAGE_EMULATOR_HOST", "localhost:abc"),
        ("GCS_STORAGE_CLASS", "GLACIER"),
        ("GCS_KMS_KEY", "my-key"),
        ("S3_REQUESTER_PAYS", "perhaps"),
    ],
)
def test_invalid_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    environment = {"GCS_BUCKET_NAME": "dest", "STORAGE_EMULATOR_HOST": "h:1", name: value}
    [line] = problems(**environment)
    assert name in line


def test_an_invalid_replication_rule_is_one_line_naming_the_setting_and_the_rule() -> None:
    rules = (
        '[{"source": "s3://logs/app/", "destination": "gs://archive/app/"},\n'
        ' {"source": "s3://media", "destination": "ftp://elsewhere"}]'
    )
    [line] = problems(GCS_BUCKET_NAME="dest", STORAGE_EMULATOR_HOST="h:1", REPLICATION_RULES=rules)
    assert line.startswith("configuration error: REPLICATION_RULES: rule 1: destination")
    assert "gs://" in line


def test_replication_rules_and_delete_policy_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCS_BUCKET_NAME", "dest")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "h:1")
    assert load_settings().replication_rules == ()
    assert load_settings().delete_policy == "ignore"
    monkeypatch.setenv("DELETE_POLICY", "propagate")
    monkeypatch.setenv(
        "REPLICATION_RULES", '[{"source": "s3://logs/app/", "destination": "gs://archive/a/"}]'
    )
    settings = load_settings()
    assert settings.delete_policy == "propagate"
    [rule] = settings.replication_rules
    assert (rule.source_bucket, rule.source_prefix) == ("logs", "app/")
    assert (rule.destination_bucket, rule.destination_prefix) == ("archive", "a/")


def test_an_sns_endpoint_pattern_that_is_no_regular_expression_is_one_line() -> None:
    environment = {"GCS_BUCKET_NAME": "dest", "STORAGE_EMULATOR_HOST": "h:1"}
    [line] = problems(**environment, SNS_ENDPOINT_PATTERN="^https://(sns")
    assert line.startswith("configuration error: SNS_ENDPOINT_PATTERN: not a regular expression: ")
    assert "(got '^https://(sns')" in line


def test_sns_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GCS_BUCKET_NAME", "dest")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "h:1")
    settings = load_settings()
    assert settings.sns_endpoint_pattern == r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
    assert settings.sns_topic_arn_set() == frozenset()
    assert settings.sns_verify_signatures is True
    monkeypatch.setenv("SNS_TOPIC_ARNS", " arn:aws:sns:us-east-1:1:a ,, arn:aws:sns:us-east-1:1:b")
    monkeypatch.setenv("SNS_VERIFY_SIGNATURES", "false")
    settings = load_settings()
    assert settings.sns_topic_arn_set() == {
        "arn:aws:sns:us-east-1:1:a",
        "arn:aws:sns:us-east-1:1:b",
    }
    assert settings.sns_verify_signatures is False


def test_one_line_per_problem_naming_the_variable() -> None:
    lines = problems(STORAGE_EMULATOR_HOST="h:1", MAX_RETRIES="lots", RETRY_DELAY="-1")

    assert len(lines) == 3
    for name in ("GCS_BUCKET_NAME", "MAX_RETRIES", "RETRY_DELAY"):
        naming = [line for line in lines if name in line]
        assert len(naming) == 1, lines
    assert any("'lots'" in line for line in lines)


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        (
            {"GCS_BUCKET_NAME": "dest", "AWS_WEB_IDENTITY_AUDIENCE": "sts.amazonaws.com"},
            "AWS_ROLE_ARN",
        ),
        (
            {"GCS_BUCKET_NAME": "dest", "GCS_ENDPOINT_URL": "h:1", "STORAGE_EMULATOR_HOST": "h:2"},
            "GCS_ENDPOINT_URL",
        ),
        (
            {"GCS_BUCKET_NAME": "dest", "GOOGLE_APPLICATION_CREDENTIALS": "/no/such/key.json"},
            "GOOGLE_APPLICATION_CREDENTIALS",
        ),
        ({"GCS_BUCKET_NAME": "dest", "STORAGE_EMULATOR_HOST": "h:1"}, "AWS_ACCESS_KEY_ID"),
    ],
)
def test_conditional_requirements(environment: dict[str, str], named: str) -> None:
    """A credential file named must exist; one AWS key needs the other; an audience needs a
    role; an emulator takes no endpoint beside it."""
    if named == "AWS_ACCESS_KEY_ID":
        environment = {**environment, "AWS_SECRET_ACCESS_KEY": SECRET}
    [line] = problems(**environment)
    assert named in line
    assert SECRET not in line


def test_credentials_are_not_needed_with_an_emulator_or_a_directory(tmp_path: Path) -> None:
    assert load_settings(gcs_bucket_name="dest", storage_emulator_host="h:1").uses_real_gcs is False
    local = load_settings(gcs_bucket_name="dest", local_gcs_path=str(tmp_path))
    assert local.local_gcs_path == tmp_path
    assert local.uses_real_gcs is False


@pytest.mark.parametrize(
    "broken",
    [
        {"MAX_RETRIES": "lots"},
        {"RETRY_DELAY": "-1"},
        # real GCS, so the credential file's rule fires
        {"STORAGE_EMULATOR_HOST": "", "GOOGLE_APPLICATION_CREDENTIALS": "/no/such/key.json"},
    ],
)
def test_secrets_never_appear_in_the_error(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, broken: dict[str, str]
) -> None:
    write_env(clean_env / ".env", AWS_SECRET_ACCESS_KEY=SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SECRET + "-id")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "h:1")
    monkeypatch.setenv("GCS_BUCKET_NAME", "dest")
    for name, value in broken.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(StartupError) as failure:
        load_settings()

    assert str(failure.value)
    printed = "".join(traceback.format_exception(failure.value))  # what a crash log would show
    assert SECRET not in printed


def test_secrets_stay_out_of_repr_and_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    settings = load_settings(gcs_bucket_name="dest", storage_emulator_host="h:1")

    assert settings.aws_secret_access_key is not None
    assert settings.aws_secret_access_key.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.describe())


def test_ledger_url_takes_redis_and_rediss_with_a_password_and_keeps_it_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_URL", f"rediss://:{SECRET}@redis.internal:6380/2")
    settings = load_settings(gcs_bucket_name="dest", storage_emulator_host="h:1")

    assert settings.ledger_url is not None
    assert settings.ledger_url.get_secret_value() == f"rediss://:{SECRET}@redis.internal:6380/2"
    assert (settings.ledger_lock_ttl, settings.ledger_ttl) == (30.0, 14 * 24 * 3600)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.describe())
    unset = load_settings(gcs_bucket_name="dest", storage_emulator_host="h:1", ledger_url=" ")
    assert unset.ledger_url is None


@pytest.mark.parametrize(
    "url",
    [f"http://:{SECRET}@redis:6379", f"redis://:{SECRET}@redis:port/0", f"{SECRET}@redis"],
)
def test_a_ledger_url_that_is_not_redis_is_one_line_without_its_password(url: str) -> None:
    [line] = problems(GCS_BUCKET_NAME="dest", STORAGE_EMULATOR_HOST="h:1", LEDGER_URL=url)
    assert line.startswith("configuration error: LEDGER_URL: ")
    assert SECRET not in line


def test_the_destinations_class_and_key_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "projects/dr/locations/us/keyRings/replicas/cryptoKeys/objects"
    for name, value in {
        "GCS_BUCKET_NAME": "dest",
        "STORAGE_EMULATOR_HOST": "h:1",
        "GCS_STORAGE_CLASS": "coldline",
        "GCS_KMS_KEY": key,
        "S3_REQUESTER_PAYS": "true",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.gcs_storage_class, settings.gcs_kms_key) == ("COLDLINE", key)
    assert settings.s3_requester_pays is True
