"""`make dev`: moto as S3 on :9000, fake-gcs-server as GCS on :4443, demo data, the API on :8000.

Ctrl-C stops all three and frees the ports.
"""

from __future__ import annotations

import os
import sys

import boto3
import urllib3
import uvicorn

from app.dev import emulators

API_PORT, S3_PORT, GCS_PORT = 8000, 9000, 4443
SOURCE_BUCKET = "source-bucket"


def seed(s3_url: str, gcs_url: str, destination_bucket: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    s3.put_object(
        Bucket=SOURCE_BUCKET,
        Key="hello.txt",
        Body=b"Hello from S3! This object was replicated by cross-cloud-replicator.\n",
        ContentType="text/plain",
        Metadata={"origin": "make-dev"},
    )
    created = urllib3.request(
        "POST",
        f"{gcs_url}/storage/v1/b?project=local-emulator",
        json={"name": destination_bucket},
    )
    if created.status != 200:
        raise RuntimeError(f"fake-gcs-server did not create {destination_bucket}: {created.data!r}")


def main() -> int:
    for port, what in ((API_PORT, "the API"), (S3_PORT, "moto (S3)"), (GCS_PORT, "fake-gcs")):
        try:
            emulators.ensure_port_free(port, what)
        except emulators.PortInUse as exc:
            print(f"make dev: {exc}; stop whatever holds it and try again", file=sys.stderr)
            return 1
    destination_bucket = os.environ.setdefault("GCS_BUCKET_NAME", "destination-bucket")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    started: list[emulators.Emulator] = []
    try:
        started.append(emulators.start_moto(S3_PORT))
        started.append(emulators.start_fake_gcs(GCS_PORT))
        s3_url, gcs_url = started[0].url, started[1].url
        seed(s3_url, gcs_url, destination_bucket)
        os.environ.update(S3_ENDPOINT_URL=s3_url, STORAGE_EMULATOR_HOST=gcs_url)
        os.environ.pop("LOCAL_GCS_PATH", None)
        print(
            f"S3 (moto) at {s3_url} with s3://{SOURCE_BUCKET}/hello.txt; "
            f"GCS (fake-gcs-server) at {gcs_url} with gs://{destination_bucket}\n"
            f"API at http://127.0.0.1:{API_PORT} (docs at /docs). Ctrl-C stops everything.",
            flush=True,
        )
        uvicorn.run("app.main:app", host="127.0.0.1", port=API_PORT, log_level="info")
    except emulators.PortInUse as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        for emulator in reversed(started):
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
