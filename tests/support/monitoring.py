"""The shipped monitoring files (deploy/prometheus/, deploy/grafana/) and the PromQL in them.

promtool 2.42 cannot list the metrics a query reads, so :func:`metric_names` takes them out
of the text: what is left of a query without its strings, label matchers, label lists and
ranges is names, function calls and keywords.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules.test.yml"
ALERTMANAGER = PROMETHEUS_DIR / "alertmanager.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "coinlink.json"

# What Grafana puts into a query before Prometheus sees it (all instances selected).
GRAFANA_VALUES = {"$__rate_interval": "5m", "$instance": ".*"}
# Series that Prometheus itself makes for each scrape, not the server.
SCRAPE_SERIES = frozenset({"up"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
# Not preceded by a digit or a dot: the exponent of 1e3 and the unit of 5m are no names.
_NAME = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*+(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan"})
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*\w+\)")


@dataclass(frozen=True)
class Query:
    where: str  # the rule or panel, for messages
    expr: str  # as Prometheus receives it


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a histogram's ``_bucket`` series keeps
    its suffix: that is the name the server exports)."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _LABEL_LIST, _RANGE):
        text = pattern.sub(" ", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VALUES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_queries() -> Iterator[Query]:
    """Every panel target's query and the instance variable's selector."""
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield Query(
                f"panel {panel['title']!r} {target['refId']}", _grafana_to_promql(target["expr"])
            )
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector = _LABEL_VALUES.fullmatch(variable["definition"])
            assert selector, f"variable {variable['name']}: not label_values(selector, label)"
            yield Query(f"variable {variable['name']!r}", selector.group(1))


def queries() -> Iterator[Query]:
    """Every PromQL expression of the alert rules and the dashboard."""
    for rule in alerting_rules():
        yield Query(f"rule {rule['alert']}", rule["expr"])
    yield from dashboard_queries()


def used_metrics() -> dict[str, list[str]]:
    """Each metric the rules and the dashboard read (Prometheus's own ``up`` left out), with
    where it is read."""
    used: dict[str, list[str]] = {}
    for query in queries():
        for name in metric_names(query.expr) - SCRAPE_SERIES:
            used.setdefault(name, []).append(query.where)
    return used


def run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """A monitoring tool (promtool, amtool), its output kept for the assertion message."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
