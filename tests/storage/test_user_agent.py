"""Every call the service makes to a cloud names the product and its version in User-Agent,
as operators read it in GCS's audit logs and CloudTrail: seen at proxies in front of both
emulators, during real copies (boto3's calls, the direct GETs, GCS uploads and lookups)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import Buckets, make_settings
from tests.faults import FaultProxy, s3_sender

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def product() -> str:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return f"{project['name']}/{project['version']}"


def test_every_call_to_either_cloud_names_the_product_and_version(
    buckets: Buckets, s3_proxy: FaultProxy, gcs_proxy: FaultProxy
) -> None:
    buckets.put("first.txt", b"the first GET of a bucket goes through boto3")
    data = buckets.put("second.txt", b"later GETs of it take the direct path")
    settings = make_settings(s3_proxy.url, gcs_proxy.url, buckets.dest)

    with TestClient(create_app(settings)) as client:
        for key in ("first.txt", "second.txt"):
            response = client.post(
                "/v1/replicate", json={"s3_bucket": buckets.source, "s3_key": key}
            )
            assert response.status_code == 200, response.text

    assert buckets.destination_bytes("second.txt") == data
    gcs_agents = {seen.headers.get("user-agent", "") for seen in gcs_proxy.requests}
    assert gcs_agents, "no request reached GCS"
    for agent in gcs_agents:
        assert agent.startswith(f"{product()} python/"), agent
    s3_requests = s3_proxy.requests
    assert {s3_sender(seen) for seen in s3_requests} == {"boto3", "direct"}
    for seen in s3_requests:
        agent = seen.headers.get("user-agent", "")
        assert product() in agent, (seen.method, seen.target, agent)
