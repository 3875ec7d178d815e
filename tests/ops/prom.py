"""What the Prometheus tests share: where promtool and prometheus are, the rules and the
dashboard as files, and the expressions they hold."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
# A metric name in an expression: a word followed by `{`, `[`, `)` or a space, that is not a
# PromQL function, keyword or label (label names appear inside braces or after by/without).
_NAME = re.compile(r"\b(replicator_[a-z_]+|up)\b")


def binary(name: str) -> str:
    """The path of `name` (promtool, prometheus), or skip the test in one clear line."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (Debian: apt-get install prometheus)")
    return found


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def every_expression() -> list[str]:
    """Each alert's expression, then each dashboard query."""
    return [rule["expr"].strip() for rule in alerts().values()] + dashboard_expressions()


def metric_names(expression: str) -> set[str]:
    """The metrics `expression` names (its histogram buckets by their series name)."""
    return set(_NAME.findall(expression))
