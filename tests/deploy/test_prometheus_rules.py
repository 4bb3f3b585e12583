"""PRSM's Prometheus rules: valid (`promtool check rules`), their alerts unit-tested
(`promtool test rules`), every metric they name is one PRSM exports, and every alert has a
severity, a summary, a description and a runbook section."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import prsm.events.redis_sink
import prsm.jobs.callbacks
import prsm.jobs.worker
import prsm.metrics
import prsm.resilience.breaker  # noqa: F401 (their metrics register on import)
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

RULES = ROOT / "deploy" / "prometheus" / "prsm-rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
METRIC = re.compile(r"\b(prsm_[a-z_]+)")


def rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules(promtool: str) -> None:
    """`promtool check rules` accepts the file."""
    subprocess.run([promtool, "check", "rules", str(RULES)], check=True)


def test_every_alert_fires_when_it_should_and_only_then(promtool: str) -> None:
    """`promtool test rules`: each alert on series that should fire it and on series that
    should not."""
    tests = RULES.with_name("prsm-rules.test.yaml")
    subprocess.run([promtool, "test", "rules", str(tests)], check=True, cwd=tests.parent)
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}


def test_every_metric_named_is_one_prsm_exports() -> None:
    """A misspelled metric name in a rule fails here, before any Prometheus sees it."""
    exported = {metric.name for metric in REGISTRY.collect()}
    suffixes = ("_total", "_bucket", "_count", "_sum")
    named = set(METRIC.findall(RULES.read_text()))
    unknown = {n for n in named if n not in exported and n.removesuffix(
        next((s for s in suffixes if n.endswith(s)), "")) not in exported}  # fmt: skip
    assert named
    assert unknown == set()


def test_every_alert_has_severity_texts_and_a_runbook_section() -> None:
    """Severity, summary, description with the value, and a runbook anchor that exists."""
    anchors = {
        "#" + re.sub(r"[^a-z0-9-]", "", line.lstrip("# ").lower().replace(" ", "-"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules():
        if "alert" not in rule:
            continue
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"warning", "critical"}  # type: ignore[index]
        assert "{{ $value" in annotations["description"]  # type: ignore[index]
        assert annotations["summary"]  # type: ignore[index]
        url = annotations["runbook_url"]  # type: ignore[index]
        assert url.startswith("docs/runbook.md#")
        assert url.removeprefix("docs/runbook.md") in anchors, url
