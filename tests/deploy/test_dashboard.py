"""The Grafana dashboard is what its generator writes, and the chart ships the very file."""

from __future__ import annotations

from tests.deploy.test_values_schema import ROOT, generator


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    """deploy/grafana/prsm.json equals `python deploy/grafana/dashboard.py`'s output."""
    dashboard = generator("deploy/grafana/dashboard.py")
    assert dashboard.DASHBOARD_PATH.read_text() == dashboard.rendered()


def test_the_chart_ships_the_repositorys_dashboard_and_rules() -> None:
    """deploy/grafana/prsm.json and deploy/prometheus/prsm-rules.yaml are the chart's files."""
    files = ROOT / "deploy" / "helm" / "prsm" / "files"
    assert (ROOT / "deploy/grafana/prsm.json").resolve() == files / "grafana" / "prsm.json"
    assert (ROOT / "deploy/prometheus/prsm-rules.yaml").resolve() == files / "prsm-rules.yaml"
