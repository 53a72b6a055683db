"""The shipped Prometheus, Alertmanager and Grafana files, checked by promtool and amtool.

Grafana itself is not run (no Debian package): the dashboard's queries go through
promtool's parser as recording rules, and its structure is held to what Grafana's file
provisioning needs. Whether the server exports every metric they read is
tests/integration/test_monitoring_metrics.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.support.monitoring import (
    ALERTMANAGER,
    DASHBOARD,
    GRAFANA_DIR,
    PROMETHEUS,
    PROMETHEUS_DIR,
    ROOT,
    RULE_TESTS,
    RULES,
    alerting_rules,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    run,
    used_metrics,
)

OPERATIONS = ROOT / "docs" / "operations.md"
TOKEN_FILE = "/etc/prometheus/coinlink-metrics-token"
SEVERITIES = {"critical", "warning"}


def headings(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{job="x", route!~"/h|<u>"}'
        "[5m] offset 1h))) / on(instance) group_left(pod) b_total > 1e3 and absent(c) or "
        'sum(d:rate5m) without (code) unless e{le="+Inf"} > bool 0'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:rate5m", "e"}


def test_promtool_accepts_the_config_with_its_rules(tmp_path: Path) -> None:
    """``promtool check config`` on the shipped directory, the token file (which promtool
    insists exists) at a path of the test's own."""
    config = load_yaml(PROMETHEUS)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "coinlink"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": TOKEN_FILE}
    assert config["rule_files"] == [RULES.name]
    token = tmp_path / "coinlink-metrics-token"
    token.write_text("a-token-of-the-test\n")
    for path in (PROMETHEUS, RULES):
        shutil.copy(path, tmp_path)
    copy = tmp_path / PROMETHEUS.name
    copy.write_text(copy.read_text().replace(TOKEN_FILE, str(token)))

    checked = run("promtool", "check", "config", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in checked.stdout


def test_every_rule_waits_names_its_severity_and_points_at_its_runbook() -> None:
    checked = run("promtool", "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    anchors = headings(OPERATIONS.read_text())
    for rule in alerting_rules():
        name = rule["alert"]
        assert re.fullmatch(r"\d+m", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, name
        assert annotations["runbook"] == f"docs/operations.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/operations.md has no section {name}"


def test_every_rule_fires_and_stays_quiet_in_the_promtool_unit_tests() -> None:
    checked = run("promtool", "test", "rules", RULE_TESTS.name, cwd=PROMETHEUS_DIR)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert firing == names, "rules without a firing case"
    assert quiet == names, "rules without a quiet case"


def test_amtool_accepts_the_alertmanager_example_and_it_routes_every_severity() -> None:
    checked = run("amtool", "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = load_yaml(ALERTMANAGER)
    receivers = {receiver["name"] for receiver in config["receivers"]}
    routed = {config["route"]["receiver"]} | {r["receiver"] for r in config["route"]["routes"]}
    assert routed <= receivers
    assert {'severity="critical"'} == {m for r in config["route"]["routes"] for m in r["matchers"]}
    alert_names = {rule["alert"] for rule in alerting_rules()}
    for inhibit in config["inhibit_rules"]:
        named = " ".join(inhibit["source_matchers"] + inhibit["target_matchers"])
        assert set(re.findall(r"CoinLink\w+", named)) <= alert_names, "inhibits an unknown alert"


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule for promtool."""
    queries = list(dashboard_queries())
    rules = [
        {"record": f"dashboard:query_{n}", "expr": query.expr} for n, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run("promtool", "check", "rules", str(path))
    assert checked.returncode == 0, (
        checked.stdout
        + checked.stderr
        + "\n".join(f"{n}: {query.where}" for n, query in enumerate(queries))
    )


def test_the_dashboard_is_what_the_grafana_provisioning_loads() -> None:
    board = dashboard()
    panels: list[dict[str, Any]] = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert "$instance" in target["expr"] or "ingest_leader" in target["expr"], (
                f"{panel['title']}: not filtered by the instance variable"
            )

    datasources = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "coinlink.yml")
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    assert (
        prometheus["jsonData"]["timeInterval"] == load_yaml(PROMETHEUS)["global"]["scrape_interval"]
    )
    providers = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "coinlink.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    assert DASHBOARD.parent.name == "dashboards"


def test_every_metric_read_is_documented() -> None:
    documented = set(re.findall(r"^\| `(\w+)`", OPERATIONS.read_text(), re.M))
    documented |= {f"{name}_bucket" for name in documented}
    missing = {name: where for name, where in used_metrics().items() if name not in documented}
    assert not missing, f"metrics read but not in docs/operations.md#metrics: {missing}"
