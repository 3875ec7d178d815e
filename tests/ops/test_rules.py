"""The alert rules and the dashboard as files: `promtool check rules` and `promtool test
rules` (deploy/prometheus/rules_test.yml, cases for every alert), the PrometheusRule the same
rules as rules.yml, and the dashboard valid Grafana JSON whose queries are the ones
tests/ops/test_prometheus.py evaluates against a real Prometheus."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from tests.ops import prom

ALERTS = {
    "ReplicatorLagHigh",
    "ReplicatorBacklogGrowing",
    "ReplicatorFailureRatioHigh",
    "ReplicatorDeadLetters",
    "ReplicatorLedgerDown",
    "ReplicatorNoWorkerReady",
}


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [prom.binary("promtool"), "check", "rules", str(prom.RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass_for_every_alert() -> None:
    result = subprocess.run(
        [prom.binary("promtool"), "test", "rules", str(prom.RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=prom.RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    cases = yaml.safe_load(prom.RULES_TEST.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    quiet = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if not check["exp_alerts"]
    }
    assert fired == ALERTS  # each alert is shown firing...
    assert quiet == ALERTS  # ...and quiet where it should be


def test_every_alert_has_a_summary_saying_what_to_look_at_first_and_a_runbook() -> None:
    alerts = prom.alerts()
    assert set(alerts) == ALERTS
    operations = (prom.ROOT / "docs" / "operations.md").read_text()
    for name, rule in alerts.items():
        assert "look first at" in rule["annotations"]["summary"].lower(), name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert f"### {name}" in operations  # the anchor the runbook link points at
        assert rule["labels"]["severity"] in ("page", "warn")


def test_the_lag_alert_is_at_15_minutes_for_10_minutes() -> None:
    lag = prom.alerts()["ReplicatorLagHigh"]
    assert lag["expr"].strip().endswith("> 900")
    assert "histogram_quantile(0.99" in lag["expr"]
    assert lag["for"] == "10m"


def test_the_prometheus_rule_holds_the_same_rules() -> None:
    resource = yaml.safe_load(prom.PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"]
    assert resource["spec"]["groups"] == prom.rule_groups()


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    dashboard: dict[str, Any] = json.loads(prom.DASHBOARD.read_text())
    assert dashboard["title"]
    assert dashboard["uid"]
    assert dashboard["schemaVersion"] >= 30
    assert isinstance(dashboard["panels"], list)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in (
        "Objects per second",
        "Bytes per second",
        "Replication lag",
        "Backlog and dead-letter queue",
        "Failures by reason",
        "Copies in flight",
        "Ledger",
        "HTTP latency p99 by route",
    ):
        assert wanted in titles
    for panel in dashboard["panels"]:
        assert panel["type"] in ("timeseries", "stat")
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"]
            assert target["expr"]
            assert target["datasource"]["type"] == "prometheus"
            assert "$" not in target["expr"]  # plain PromQL: what the Prometheus test ran
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    assert variables == ["datasource"]
