"""The shipped Prometheus and Grafana files (deploy/prometheus, deploy/grafana)
as the tests need them: every PromQL expression of the dashboards with
Grafana's variables filled in, and every recording rule's expression."""
import glob
import json
import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROM_DIR = os.path.join(ROOT, "deploy", "prometheus")
GRAFANA_DIR = os.path.join(ROOT, "deploy", "grafana")
DASHBOARDS = sorted(glob.glob(os.path.join(GRAFANA_DIR, "*.json")))
RULE_FILES = ["recording.yml", "alerts.yml", "kube-service-names.yml"]

# What Grafana puts in place of the variables when "All" is selected (the
# dashboards' allValue) and of $__rate_interval at a 2 s scrape interval.
VARIABLES = {"$instance": ".*", "$namespace": ".*", "$service": ".*", "$__rate_interval": "1m"}


def fill(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unfilled variable in {expr!r}"
    return expr


def _panels(panels):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", ()))


def dashboard_targets(path: str):
    """(panel title, refId, expression with variables filled, legendFormat) of every query."""
    with open(path) as f:
        board = json.load(f)
    for p in _panels(board["panels"]):
        for t in p.get("targets", ()):
            yield p["title"], t["refId"], fill(t["expr"]), t.get("legendFormat", "")


_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)$", re.S)


def dashboard_variable_queries(path: str):
    """(variable name, PromQL) for every query variable: Grafana's
    label_values(selector, label) as the equivalent `group by (label) (selector)`."""
    with open(path) as f:
        board = json.load(f)
    for v in board["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = _LABEL_VALUES.match(q.strip())
        assert m, f"variable {v['name']}: not a label_values() query: {q!r}"
        yield v["name"], f"group by ({m.group(2)}) ({fill(m.group(1))})"


def rule_groups(name: str) -> list:
    with open(os.path.join(PROM_DIR, name)) as f:
        return yaml.safe_load(f)["groups"]


def recording_rules():
    """(file, record name, expression) of every recording rule shipped."""
    for name in RULE_FILES:
        for g in rule_groups(name):
            for r in g["rules"]:
                if "record" in r:
                    yield name, r["record"], r["expr"]
