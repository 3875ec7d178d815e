"""Settings from the environment: process environment over `.env.local` over `.env`.

`load_settings()` turns every problem into one readable line naming the variable, so a
misconfigured service stops before it serves instead of failing on its first request.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic import model_validator as model_check
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app import rules
from app.errors import StartupError
from app.events.parse import SNS_ENDPOINT_PATTERN
from app.names import check_gcs_bucket
from app.policy import DeletePolicy, Overwrite

MiB = 1024 * 1024
_KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(".env", ".env.local"),  # later files win; the process environment wins over both
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_region: str = "us-east-1"
    s3_endpoint_url: str | None = None
    s3_direct_gets: bool = True  # false: every S3 GET goes through boto3
    s3_requester_pays: bool = False  # true: every S3 request agrees to pay (requester-pays)

    # Without keys: AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE (EKS), or with
    # AWS_WEB_IDENTITY_AUDIENCE and no token file (an ID token from Google's metadata server);
    # else boto3's chain (app/identity/aws.py).
    aws_role_arn: str | None = None
    aws_web_identity_token_file: Path | None = None
    aws_web_identity_audience: str | None = None

    gcs_bucket_name: str = Field(
        validation_alias=AliasChoices("GCS_BUCKET_NAME", "TARGET_GCS_BUCKET", "gcs_bucket_name"),
    )
    # Every object written: its storage class (unset: the bucket's default) and the Cloud KMS
    # key that encrypts it (unset: the bucket's default encryption).
    gcs_storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None
    gcs_kms_key: str | None = None
    storage_emulator_host: str | None = None  # an emulator: no credentials
    gcs_endpoint_url: str | None = None  # the JSON API elsewhere (VPC-SC, PSC), with credentials
    google_application_credentials: Path | None = None  # unset: ADC (the metadata server)
    google_impersonate_service_account: str | None = None  # an email; needs Token Creator
    local_gcs_path: Path | None = None

    max_retries: int = Field(3, ge=0, le=20)
    retry_delay: float = Field(0.5, ge=0, le=60)
    retry_max_delay: float = Field(30.0, ge=0, le=600)
    connect_timeout: float = Field(5.0, gt=0, le=120)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    startup_probe: bool = True
    probe_timeout: float = Field(3.0, gt=0, le=60)

    api_keys: SecretStr | None = None  # comma-separated; unset: the API is open
    # SNS deliveries to POST /v1/events: where signing certificates may come from (a regular
    # expression for scheme://host[:port]), which topics are taken (comma-separated; unset:
    # any whose signature verifies), and whether signatures are checked (false: emulators only).
    sns_endpoint_pattern: str = SNS_ENDPOINT_PATTERN
    sns_topic_arns: str | None = None
    sns_verify_signatures: bool = True
    log_format: Literal["rich", "json"] = "rich"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_request_bytes: int = Field(4 * MiB, ge=1024, le=64 * MiB)

    overwrite: Overwrite = Overwrite.DIFFERENT
    delete_policy: DeletePolicy = DeletePolicy.IGNORE
    # JSON text, parsed by app.rules (NoDecode: the validator sees the text, so bad JSON is
    # reported like any other bad value). Empty: every bucket goes to GCS_BUCKET_NAME.
    replication_rules: Annotated[tuple[rules.Rule, ...], NoDecode] = ()
    upload_chunk_size: int = Field(64 * MiB, ge=256 * 1024, le=1024 * MiB)
    batch_concurrency: int = Field(16, ge=1, le=256)
    # Key ranges a sync or check lists at once, on each side (app.bulk.ranges); 1: one stream.
    list_concurrency: int = Field(16, ge=1, le=256)
    # A source with no more keys than this is listed as one stream, without probing.
    list_split_min_keys: int = Field(10_000, ge=0)
    max_running_jobs: int = Field(4, ge=1, le=64)  # sync and check jobs over HTTP at once
    # The queue of S3 events: the worker drains it; with it set, POST /v1/events queues.
    sqs_queue_url: str | None = None
    sqs_endpoint_url: str | None = None  # an emulator's; unset: AWS's endpoint for the region
    worker_concurrency: int = Field(16, ge=1, le=256)  # keys in flight in one worker
    worker_port: int = Field(8080, ge=0, le=65535)  # /health, /ready, /metrics; 0: none
    worker_retry_backoff: float = Field(10.0, ge=0, le=900)  # seconds, doubled per receive
    sqs_wait_seconds: int = Field(20, ge=1, le=20)  # long polling; a stop waits for it
    # Seconds between the worker's looks at the queue's and dead-letter queue's depth.
    queue_stats_seconds: float = Field(30.0, ge=0.5, le=3600)
    # The ledger shared by replicas (redis:// or rediss://, with its password: a secret);
    # unset: the in-process one. Leases live LEDGER_LOCK_TTL seconds unless renewed; records
    # of what was settled, LEDGER_TTL seconds (longer than an SQS retention period).
    ledger_url: SecretStr | None = None
    ledger_lock_ttl: float = Field(30.0, ge=0.5, le=3600)
    ledger_ttl: int = Field(14 * 24 * 3600, ge=1)
    # Objects of at least this size go up as parallel composite uploads (0: never).
    parallel_composite_threshold: int = Field(150 * MiB, ge=0)
    parallel_composite_part_size: int = Field(32 * MiB, ge=256 * 1024, le=1024 * MiB)
    parallel_composite_workers: int = Field(4, ge=1, le=32)
    # Parts older than this are a killed copy's: no live copy may take longer.
    parallel_composite_stale_after: int = Field(86400, ge=60)

    @field_validator(
        "s3_endpoint_url",
        "storage_emulator_host",
        "gcs_endpoint_url",
        "sqs_endpoint_url",
        mode="before",
    )
    @classmethod
    def _url_with_scheme(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().rstrip("/")
            if not value:
                return None
            if "://" not in value:
                value = f"http://{value}"
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 - raises ValueError on a port that is not a number
            except ValueError:
                raise ValueError("the port is not a number") from None
            if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
                raise ValueError("must be an http(s) URL such as http://127.0.0.1:9000")
        return value

    @field_validator("ledger_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        """Never echoes the value: it may carry a password."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 - raises ValueError on a port that is not a number
            except ValueError:
                raise ValueError("the port is not a number") from None
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ValueError(
                    "must be a redis:// or rediss:// URL such as redis://:password@host:6379/0"
                )
        return value

    @field_validator("replication_rules", mode="before")
    @classmethod
    def _replication_rules(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return ()
        if isinstance(value, str | list):
            return rules.parse_rules(value)
        return value

    @field_validator("sns_endpoint_pattern")
    @classmethod
    def _regular_expression(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("gcs_storage_class", "gcs_kms_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if info.field_name == "gcs_storage_class":
                value = value.upper()
            return value or None
        return value

    @field_validator("gcs_kms_key")
    @classmethod
    def _kms_key_name(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY.fullmatch(value):
            raise ValueError(
                "must be a key's resource name: projects/PROJECT/locations/LOCATION/keyRings/"
                "RING/cryptoKeys/KEY"
            )
        return value

    @field_validator("gcs_bucket_name")
    @classmethod
    def _gcs_bucket_name(cls, value: str) -> str:
        return check_gcs_bucket(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """One source per env file, later files first, so that `.env.local` wins over `.env`
        even when they spell a variable differently (TARGET_GCS_BUCKET / GCS_BUCKET_NAME)."""
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        files = dotenv_settings.env_file  # honours Settings(_env_file=...)
        if files is None or isinstance(files, str | os.PathLike):
            per_file: tuple[PydanticBaseSettingsSource, ...] = (dotenv_settings,)
        else:
            per_file = tuple(
                DotEnvSettingsSource(
                    settings_cls,
                    env_file=file,
                    env_file_encoding=dotenv_settings.env_file_encoding,
                )
                for file in reversed(list(files))
            )
        return init_settings, env_settings, *per_file, file_secret_settings

    @field_validator("upload_chunk_size")
    @classmethod
    def _chunk_granularity(cls, value: int) -> int:
        if value % (256 * 1024):
            raise ValueError("must be a multiple of 262144 (256 KiB), as GCS requires")
        return value

    @model_check(mode="after")
    def _conditional_requirements(self) -> Settings:
        if bool(self.aws_access_key_id) != bool(self.aws_secret_access_key):
            missing = "AWS_SECRET_ACCESS_KEY" if self.aws_access_key_id else "AWS_ACCESS_KEY_ID"
            raise ValueError(f"{missing}: required when the other AWS key is set")
        if self.aws_web_identity_audience and not self.aws_role_arn:
            raise ValueError("AWS_ROLE_ARN: required when AWS_WEB_IDENTITY_AUDIENCE is set")
        if self.aws_web_identity_token_file and not self.aws_role_arn:
            raise ValueError("AWS_ROLE_ARN: required when AWS_WEB_IDENTITY_TOKEN_FILE is set")
        if self.gcs_endpoint_url and self.storage_emulator_host:
            raise ValueError(
                "GCS_ENDPOINT_URL: set it or STORAGE_EMULATOR_HOST (an emulator, no "
                "credentials), not both"
            )
        if self.uses_real_gcs and self.google_application_credentials is not None:
            if not self.google_application_credentials.is_file():
                path = self.google_application_credentials
                raise ValueError(f"GOOGLE_APPLICATION_CREDENTIALS: no file at {path}")
        return self

    def api_key_list(self) -> list[str]:
        if self.api_keys is None:
            return []
        return _comma_separated(self.api_keys.get_secret_value())

    def sns_topic_arn_set(self) -> frozenset[str]:
        """The SNS topics POST /v1/events takes; empty: any whose signature verifies."""
        return frozenset(_comma_separated(self.sns_topic_arns or ""))

    @property
    def uses_real_gcs(self) -> bool:
        return self.storage_emulator_host is None and self.local_gcs_path is None

    def describe(self) -> dict[str, str]:
        """Where the service points, for /health. Never a secret."""
        if self.local_gcs_path is not None:
            gcs_target = f"LOCAL {self.local_gcs_path}"
        else:
            gcs_target = self.storage_emulator_host or self.gcs_endpoint_url or "REAL GCS"
        return {
            "s3_target": self.s3_endpoint_url or "REAL AWS",
            "gcs_target": gcs_target,
            "gcs_bucket": self.gcs_bucket_name,
        }


_SECRET_URLS = frozenset({"LEDGER_URL"})  # URLs that may carry a password: never shown


def _comma_separated(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def load_settings(**overrides: Any) -> Settings:
    """Settings, or a StartupError with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise StartupError("\n".join(_problem(e) for e in exc.errors())) from None


def _problem(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a cross-field rule; its message names the variable
        return f"configuration error: {message}"
    name = str(error["loc"][0]).upper()
    if error["type"] == "missing":
        return f"configuration error: {name}: required but not set"
    value = error.get("input")
    secret = "KEY" in name or "SECRET" in name or name in _SECRET_URLS
    shown = f" (got {value!r})" if isinstance(value, str | int | float) and not secret else ""
    return f"configuration error: {name}: {message}{shown}"
