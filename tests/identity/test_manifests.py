"""The two keyless deployments, deploy/eks and deploy/gke, as `kubectl kustomize` renders
them over deploy/kubernetes: no pod mounts a key, every variable is a setting, and the
settings they give build the identities they promise."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import wiring
from app.config import load_settings
from app.identity.aws import AwsIdentity
from tests.test_deploy import setting_names

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl renders the overlays")


def rendered(variant: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    output = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / variant)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pods(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"]["spec"] for d in docs if d["kind"] == "Deployment"]


def test_eks_mounts_the_federation_file_and_no_key() -> None:
    docs = rendered("eks")
    account = one(docs, "ServiceAccount", "replicator")["metadata"]["annotations"]
    assert account["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    settings = one(docs, "ConfigMap", "replicator-settings")["data"]
    federation = one(docs, "ConfigMap", "replicator-gcs-federation")["data"]
    for pod in pods(docs):
        assert all("secret" not in volume for volume in pod["volumes"])
        [volume] = pod["volumes"]
        assert volume["configMap"]["name"] == "replicator-gcs-federation"
        [mount] = pod["containers"][0]["volumeMounts"]
        assert mount["name"] == volume["name"]
        mounted = {f"{mount['mountPath']}/{name}" for name in federation}
        assert settings["GOOGLE_APPLICATION_CREDENTIALS"] in mounted
    assert set(settings) <= setting_names()
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(settings)


def test_the_eks_federation_file_is_signed_with_the_pod_s_role(tmp_path: Path) -> None:
    docs = rendered("eks")
    [text] = one(docs, "ConfigMap", "replicator-gcs-federation")["data"].values()
    path = tmp_path / "gcs-federation.json"
    path.write_text(text)
    values = one(docs, "ConfigMap", "replicator-settings")["data"]
    settings = load_settings(
        _env_file=None,
        **{
            **{k.lower(): v for k, v in values.items()},
            "google_application_credentials": str(path),  # where the pod mounts it
            "aws_role_arn": "arn:aws:iam::123456789012:role/replicator",  # EKS injects these
            "aws_web_identity_token_file": str(tmp_path / "token"),
        },
    )
    identities = wiring.build_identities(settings).describe()
    assert identities["gcs"] == {
        "credentials": "workload identity federation from AWS",
        "audience": json.loads(text)["audience"],
    }
    assert identities["aws"]["credentials"] == f"web identity token file {tmp_path / 'token'}"


def test_gke_runs_as_a_google_service_account_with_an_aws_role_and_no_key() -> None:
    docs = rendered("gke")
    account = one(docs, "ServiceAccount", "replicator")["metadata"]["annotations"]
    assert account == {
        "iam.gke.io/gcp-service-account": "replicator@PROJECT.iam.gserviceaccount.com"
    }
    for pod in pods(docs):
        assert "volumes" not in pod
        assert "volumeMounts" not in pod["containers"][0]
        assert pod["nodeSelector"] == {"iam.gke.io/gke-metadata-server-enabled": "true"}
    values = one(docs, "ConfigMap", "replicator-settings")["data"]
    assert set(values) <= setting_names()
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in values
    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in values.items()})
    aws = AwsIdentity(
        region=settings.aws_region,
        role_arn=settings.aws_role_arn,
        audience=settings.aws_web_identity_audience,
    ).describe()
    assert aws["role"] == values["AWS_ROLE_ARN"]
    assert aws["credentials"].startswith("web identity from the metadata server")
    assert not [d for d in docs if d["kind"] in ("ScaledObject", "TriggerAuthentication")]
