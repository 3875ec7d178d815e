"""The product run as a pod runs it with no key stored anywhere, on both platforms, with
tokens that last two seconds:

- eks: AWS credentials from a web identity token file (AssumeRoleWithWebIdentity), GCS
  through workload identity federation signed with those credentials;
- gke: an ID token from the metadata server buys the AWS role; GCS sees the pod's service
  account, its token from the same metadata server.

Each platform runs every scenario once (tests/identity/scenarios.py); the tests read what
the stand-ins, the recording proxy and the destination saw. The last test holds the S3 and
SQS calls made against the policy docs/permissions.md publishes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from google.cloud import storage

from app.dev import emulators
from tests.faults import Seen
from tests.identity.conftest import (
    AUDIENCE,
    GKE_ACCOUNT,
    POD_ROLE,
    POOL,
    Clouds,
    stood_up,
)
from tests.identity.scenarios import Run, run_everything, summary

pytestmark = pytest.mark.slow  # five processes for each platform

PERMISSIONS = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"
POD_SESSION = re.compile(r"arn:aws:sts::123456789012:assumed-role/replicator-pod/[\w+=,.@-]+")
# Calls made that the policy may leave out, and why.
OPTIONAL = {"s3:ListAllMyBuckets": "the start-up probe takes AccessDenied as an answer"}


@dataclass
class Ran:
    run: Run
    held: dict[str, bytes]
    clouds: Clouds


@pytest.fixture(scope="module", params=["eks", "gke"])
def ran(
    request: pytest.FixtureRequest,
    moto_server: emulators.Emulator,
    gcs_server: emulators.Emulator,
    gcs: storage.Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ran]:
    with stood_up(moto_server, gcs_server) as clouds:
        workdir = tmp_path_factory.mktemp(request.param)
        run, held = run_everything(request.param, clouds, workdir, moto_server, gcs)
        yield Ran(run, held, clouds)


def test_every_copy_lands_with_its_bytes(ran: Ran) -> None:
    run = ran.run
    for answer in run.answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["action"] == "replicated"
    synced = summary(run.commands["sync"])
    assert (synced["copied"], synced["deleted"], synced["failed"]) == (2, 1, 0)
    checked = summary(run.commands["check"])
    assert checked.get("failed", 0) == 0, checked
    assert run.commands["enqueue"].returncode == 0, run.commands["enqueue"].stderr
    assert ran.held == run.expected  # the stale object is gone, every other is exact


def test_gcs_saw_only_the_pod_s_identity_and_every_token_was_fresh(ran: Ran) -> None:
    calls = ran.clouds.gcs.calls
    refused = [call for call in calls if call.identity is None]
    assert refused == []  # no request carried an expired or unknown token
    if ran.run.platform == "eks":
        prefix = f"principal://{POOL.removeprefix('//iam.googleapis.com/')}/subject/"
        for identity in ran.clouds.gcs.identities():
            assert identity is not None
            assert identity.startswith(prefix)
            assert POD_SESSION.fullmatch(identity.removeprefix(prefix)), identity
    else:
        assert ran.clouds.gcs.identities() == {f"serviceAccount:{GKE_ACCOUNT}"}
    # Tokens last two seconds and the run takes longer: they were refreshed as they went.
    assert len(ran.clouds.tokens.issued) > 2


def test_aws_saw_only_the_role_s_keys(ran: Ran) -> None:
    sts = ran.clouds.sts
    assert sts.refused == []
    assert set(sts.assumed) == {POD_ROLE}
    assert len(sts.assumed) > 1  # short-lived: refreshed as they went
    keys = {_access_key(request) for request in ran.run.wire}
    assert keys  # every S3 and SQS request was signed, with keys STS issued for the role
    assert keys <= set(sts.issued)
    if ran.run.platform == "gke":
        # The role was bought with ID tokens from the metadata server, a fresh one each time.
        assert len(ran.clouds.metadata.id_tokens) == len(sts.assumed)
    else:
        assert ran.clouds.google.refused == []
        assert all(POD_SESSION.fullmatch(arn) for arn in ran.clouds.google.exchanged)


def test_health_and_ready_name_both_identities_and_no_secret(ran: Ran) -> None:
    run = ran.run
    aws, gcs = run.health["identities"]["aws"], run.health["identities"]["gcs"]
    assert aws["role"] == POD_ROLE
    assert POD_SESSION.fullmatch(aws["arn"])  # GetCallerIdentity, asked by the start-up probe
    if run.platform == "eks":
        assert aws["credentials"].startswith("web identity token file ")
        assert gcs == {"credentials": "workload identity federation from AWS", "audience": POOL}
    else:
        assert aws["credentials"].startswith("web identity from the metadata server")
        assert AUDIENCE in aws["credentials"]
        assert gcs == {"credentials": "the metadata server", "service_account": GKE_ACCOUNT}
    assert run.ready["identities"] == run.health["identities"]
    assert run.worker_health["identities"]["aws"]["role"] == POD_ROLE
    shown = json.dumps([run.health, run.ready, run.worker_health])
    for secret, *_ in ran.clouds.sts.issued.values():
        assert secret not in shown


def test_every_s3_and_sqs_call_is_in_the_published_policy(ran: Ran) -> None:
    used = {iam_action(request) for request in ran.run.wire}
    # The scenarios reached every kind of call the product makes.
    assert {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:ListBucket",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
    } <= used
    missing = used - documented_actions() - set(OPTIONAL)
    assert missing == set(), f"calls made that {PERMISSIONS.name} does not allow"


def documented_actions() -> set[str]:
    """The actions the IAM policy on docs/permissions.md allows (its first JSON block)."""
    text = PERMISSIONS.read_text()
    block = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert block is not None, f"no JSON policy in {PERMISSIONS}"
    policy = json.loads(block.group(1))
    assert policy["Version"] == "2012-10-17"
    actions: set[str] = set()
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow":
            named = statement["Action"]
            actions |= {named} if isinstance(named, str) else set(named)
    return actions


def iam_action(request: Seen) -> str:
    """The IAM action an S3 or SQS request needs, as the service authorization reference
    lists them (a batch call needs the single call's action)."""
    target = request.headers.get("x-amz-target", "")
    if target.startswith("AmazonSQS."):
        return "sqs:" + target.removeprefix("AmazonSQS.").removesuffix("Batch")
    path, _, query = request.target.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    if request.method not in ("GET", "HEAD"):
        return f"unexpected: {request.method} {request.target}"  # the source is only read
    if path == "/":
        return "s3:ListAllMyBuckets"
    bucket, _, key = path.lstrip("/").partition("/")
    if not key:
        if "versions" in params:
            return "s3:ListBucketVersions"
        if "location" in params:
            return "s3:GetBucketLocation"
        if request.method == "HEAD" or "list-type" in params or not query:
            return "s3:ListBucket"
        return f"unexpected: {request.method} {request.target}"
    if "attributes" in params:
        return (
            "s3:GetObjectVersionAttributes" if "versionId" in params else "s3:GetObjectAttributes"
        )
    if "versionId" in params:
        return "s3:GetObjectVersion"
    return "s3:GetObject"


def _access_key(request: Seen) -> str:
    found = re.search(r"Credential=([^/]+)/", request.headers.get("authorization", ""))
    assert found is not None, request
    return found.group(1)
