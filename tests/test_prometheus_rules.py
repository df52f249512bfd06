"""The shipped Prometheus configuration, rules and Grafana dashboards
(deploy/prometheus, deploy/grafana), checked with Debian's promtool and
Prometheus: configs load, rules parse, every rule's unit test passes, every
alert (per format) has a test that fires it and one where it stays quiet,
every dashboard expression parses and names only metrics that exist, and the
Kubernetes and Swarm relabelling turns discovered targets into the intended
ones. (That every expression returns data from a real exporter is
tests/kernel/test_prometheus_rules_vm.py.)"""
import glob
import json
import os
import re
import subprocess

import pytest
import yaml

from .prometheus import PROMTOOL, until
from .promassets import (DASHBOARDS, PROM_DIR, RULE_FILES, ROOT, dashboard_targets,
                         dashboard_variable_queries, recording_rules, rule_groups)

UNIT_TESTS = sorted(glob.glob(os.path.join(PROM_DIR, "tests", "*_test.yml")))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def promtool(*args, cwd=PROM_DIR):
    p = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "swarm.yml", "sharding.yml"])
def test_config_loads(config):
    rc, out = promtool("check", "config", config)
    assert rc == 0, out
    assert f"SUCCESS: {config} is valid prometheus config file syntax" in out


def _kubernetes_as_file_sd(tmp_path):
    """kubernetes.yml with its kubernetes_sd_configs replaced by a file_sd file.
    Debian builds Prometheus without Kubernetes discovery, so its promtool
    rejects kubernetes_sd_configs; everything else (relabelling, rules) is
    checked unchanged."""
    with open(os.path.join(PROM_DIR, "kubernetes.yml")) as f:
        config = yaml.safe_load(f)
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.json")], "refresh_interval": "1s"}]
    config["rule_files"] = [os.path.join(PROM_DIR, r) for r in config["rule_files"]]
    return config


def test_kubernetes_config_loads(tmp_path):
    rc, out = promtool("check", "config", "kubernetes.yml")
    if rc != 0:   # Debian's build: no Kubernetes discovery compiled in
        assert "field kubernetes_sd_configs not found" in out, out
    (tmp_path / "pods.json").write_text("[]")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(_kubernetes_as_file_sd(tmp_path)))
    rc, out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert rc == 0, out


@pytest.mark.parametrize("rules", RULE_FILES)
def test_rules_parse(rules):
    rc, out = promtool("check", "rules", rules)
    assert rc == 0, out
    assert "SUCCESS" in out


@pytest.mark.parametrize("unit", [os.path.basename(u) for u in UNIT_TESTS])
def test_rule_unit_tests(unit):
    rc, out = promtool("test", "rules", unit, cwd=os.path.join(PROM_DIR, "tests"))
    assert rc == 0, out
    assert "SUCCESS" in out


def _unit_tests():
    for path in UNIT_TESTS:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for group in doc["tests"]:
            yield os.path.basename(path), doc["rule_files"], group


def test_every_rule_file_has_unit_tests():
    covered = {os.path.basename(r) for _, files, _ in _unit_tests() for r in files}
    assert covered == set(RULE_FILES)


def test_every_recording_rule_is_unit_tested():
    tested = {t["expr"] for _, _, g in _unit_tests() for t in g.get("promql_expr_test", ())}
    tested_names = set(re.findall(r"[a-z_]+:[a-z_:0-9]+", " ".join(tested)))
    records = {name for _, name, _ in recording_rules()}
    assert records - tested_names == set()


def test_every_alert_fires_and_stays_quiet_in_unit_tests():
    """Each alert rule (name and format) fires in some unit test with its own
    labels, and each alert name has an evaluation where it must not fire."""
    rules = {(r["alert"], r["labels"].get("format"))
             for g in rule_groups("alerts.yml") for r in g["rules"] if "alert" in r}
    fired, quiet = set(), set()
    for _, _, group in _unit_tests():
        for t in group.get("alert_rule_test", ()):
            if not t.get("exp_alerts"):
                quiet.add(t["alertname"])
            for a in t.get("exp_alerts") or ():
                fired.add((t["alertname"], a["exp_labels"].get("format")))
                assert set(a["exp_annotations"]) == {"summary", "description"}, t
    assert rules - fired == set()
    assert {name for name, _ in rules} - quiet == set()


def test_every_alert_has_summary_and_description():
    for g in rule_groups("alerts.yml"):
        for r in g["rules"]:
            if "alert" in r:
                assert r["annotations"]["summary"].strip() and len(r["annotations"]["description"]) > 100, r
                assert r["labels"]["severity"] in ("critical", "warning", "info"), r


@pytest.mark.parametrize("board", [os.path.basename(b) for b in DASHBOARDS])
def test_dashboard_expressions_parse(board, tmp_path):
    """promtool parses every panel query and variable query (as recording rules)."""
    path = os.path.join(os.path.dirname(DASHBOARDS[0]), board)
    exprs = [e for _, _, e, _ in dashboard_targets(path)]
    exprs += [q for _, q in dashboard_variable_queries(path)]
    assert len(exprs) >= 10
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}:expr", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    rc, out = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert rc == 0, out


def _families(fixture: str) -> set:
    with open(os.path.join(FIXTURES, fixture)) as f:
        return {line.split()[2] for line in f if line.startswith("# TYPE ")}


# Series Prometheus writes itself, and kube-state-metrics' one we join with.
NOT_OURS = {"up", "scrape_duration_seconds", "scrape_timeout_seconds", "kube_service_info"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right"}


def _metric_names(expr: str) -> set:
    """The metric names an expression reads: identifiers left once strings,
    label matchers, ranges and grouping clauses are cut out, other than
    function names and keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?![a-zA-Z0-9_:]*\s*\()", expr)
    return {n for n in names if n not in KEYWORDS}


def test_every_metric_read_exists():
    """Dashboards and rules read only metrics one of our formats writes
    (the families in the host-test fixtures of each format), recorded series,
    or Prometheus' own; a typo in a name would otherwise just show no data."""
    exported = _families("ipvs_small.prom") | _families("ingress_small.prom") | _families("node_full.prom")
    assert {"ipvs_destination_weight", "ipvs_destination_total", "node_ipvs_backend_weight"} <= exported
    recorded = {name for _, name, _ in recording_rules()}
    exprs = [e for b in DASHBOARDS for _, _, e, _ in dashboard_targets(b)]
    exprs += [q for b in DASHBOARDS for _, q in dashboard_variable_queries(b)]
    exprs += [r["expr"] for name in RULE_FILES for g in rule_groups(name) for r in g["rules"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert "ipvs_service_info" in used and "ipvs_destination_active_connections_total" in used
    assert used - exported - recorded - NOT_OURS == set()


def _targets(prom, n: int, what: str) -> list:
    def check():
        active = prom.api("/api/v1/targets")["data"]["activeTargets"]
        return (len(active) == n, active)
    return until(check, 60, what)[1]


def test_kubernetes_relabelling(prometheus, tmp_path):
    """Prometheus' own relabelling turns pods, as Kubernetes discovery labels
    them, into one target per annotated ipvs-fast-exporter pod, on the
    annotated port and path, with instance = the node."""
    def pod(name, node, ip, labels, annotations, container_port="9120", init="false", phase="Running"):
        meta = {"__address__": f"{ip}:{container_port}", "__meta_kubernetes_namespace": "monitoring",
                "__meta_kubernetes_pod_name": name, "__meta_kubernetes_pod_node_name": node,
                "__meta_kubernetes_pod_ip": ip, "__meta_kubernetes_pod_phase": phase,
                "__meta_kubernetes_pod_container_init": init,
                "__meta_kubernetes_pod_container_port_number": container_port}
        meta.update({f"__meta_kubernetes_pod_label_{k}": v for k, v in labels.items()})
        meta.update({f"__meta_kubernetes_pod_annotation_{k}": v for k, v in annotations.items()})
        return {"targets": [meta.pop("__address__")], "labels": meta}

    ours = {"app_kubernetes_io_name": "ipvs-fast-exporter"}
    annotated = {"prometheus_io_scrape": "true", "prometheus_io_port": "9120"}
    pods = [
        pod("ipvs-a", "node-a", "192.168.0.11", ours, annotated),
        pod("ipvs-b", "node-b", "192.168.0.12", ours,
            {**annotated, "prometheus_io_path": "/ipvs/metrics"}, container_port="8080"),
        pod("ipvs-c", "node-c", "192.168.0.13", ours, {"prometheus_io_scrape": "false"}),
        pod("ipvs-d", "node-d", "192.168.0.14", ours, annotated, phase="Pending"),
        pod("other", "node-a", "10.244.0.7", {"app_kubernetes_io_name": "web"}, annotated),
    ]
    (tmp_path / "pods.json").write_text(json.dumps(pods))
    prom = prometheus(yaml.safe_dump(_kubernetes_as_file_sd(tmp_path)))
    prom.wait_ready(60)
    got = sorted((t["scrapeUrl"], t["labels"]["instance"], t["labels"]["pod"], t["labels"]["job"])
                 for t in _targets(prom, 2, "two kubernetes targets"))
    assert got == [("http://192.168.0.11:9120/metrics", "node-a", "ipvs-a", "ipvs"),
                   ("http://192.168.0.12:9120/ipvs/metrics", "node-b", "ipvs-b", "ipvs")]


def _swarm_as_file_sd(tmp_path):
    with open(os.path.join(PROM_DIR, "swarm.yml")) as f:
        config = yaml.safe_load(f)
    (job,) = config["scrape_configs"]
    assert job["dockerswarm_sd_configs"][0]["role"] == "tasks"
    del job["dockerswarm_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "tasks.json")], "refresh_interval": "1s"}]
    config["rule_files"] = [os.path.join(PROM_DIR, r) for r in config["rule_files"]]
    return config


def test_swarm_relabelling(prometheus, tmp_path):
    """The same for Swarm tasks as dockerswarm_sd_configs (role tasks) labels
    them: one target per running exporter task, its address on the shared
    monitoring network, instance = the node's hostname. (Prometheus makes a
    target per task and network; here file_sd stands in for the Docker API.)"""
    def task(node, ip, network, ingress="false", state="running", scrape="true", service="ipvs_exporter"):
        meta = {"__address__": f"{ip}:9100", "__meta_dockerswarm_task_desired_state": state,
                "__meta_dockerswarm_node_hostname": node, "__meta_dockerswarm_network_name": network,
                "__meta_dockerswarm_network_ingress": ingress, "__meta_dockerswarm_service_name": service,
                "__meta_dockerswarm_service_label_prometheus_io_scrape": scrape,
                "__meta_dockerswarm_service_label_prometheus_io_port": "9100"}
        return {"targets": [meta.pop("__address__")], "labels": meta}

    tasks = [
        task("swarm-1", "10.0.9.3", "ipvs_monitoring"),
        task("swarm-1", "10.0.0.3", "ingress", ingress="true"),
        task("swarm-2", "10.0.9.4", "ipvs_monitoring"),
        task("swarm-2", "10.0.9.5", "ipvs_monitoring", state="shutdown"),
        task("swarm-1", "10.0.9.8", "ipvs_monitoring", scrape="false", service="web"),
    ]
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    prom = prometheus(yaml.safe_dump(_swarm_as_file_sd(tmp_path)))
    prom.wait_ready(60)
    got = sorted((t["scrapeUrl"], t["labels"]["instance"], t["labels"]["swarm_service"])
                 for t in _targets(prom, 2, "two swarm targets"))
    assert got == [("http://10.0.9.3:9100/metrics", "swarm-1", "ipvs_exporter"),
                   ("http://10.0.9.4:9100/metrics", "swarm-2", "ipvs_exporter")]


def test_static_and_sharding_relabelling(prometheus, tmp_path):
    """Static targets get instance = host; hashmod sharding keeps a quarter of
    the nodes on each of the four shards, every node on exactly one."""
    nodes = [f"lb{i}.example.org:9100" for i in range(40)]
    with open(os.path.join(PROM_DIR, "sharding.yml")) as f:
        base = yaml.safe_load(f)
    kept = {}
    for shard in range(4):
        config = json.loads(json.dumps(base))
        config["rule_files"] = [os.path.join(PROM_DIR, r) for r in config["rule_files"]]
        del config["remote_write"]      # nothing may leave the machine
        (job,) = config["scrape_configs"]
        job["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")], "refresh_interval": "1s"}]
        keep = next(r for r in job["relabel_configs"] if r.get("source_labels") == ["__tmp_hash"])
        keep["regex"] = str(shard)
        (tmp_path / "targets.json").write_text(json.dumps([{"targets": nodes}]))
        prom = prometheus(yaml.safe_dump(config))
        prom.wait_ready(60)

        def check():
            active = prom.api("/api/v1/targets")["data"]["activeTargets"]
            return (len(active) > 0, active)
        active = until(check, 60, f"shard {shard} targets")[1]
        kept[shard] = {t["labels"]["instance"] for t in active}
        prom.stop()
    everyone = [i for s in kept.values() for i in s]
    assert sorted(everyone) == sorted(n.split(":")[0] for n in nodes)
    assert all(4 <= len(s) <= 20 for s in kept.values()), {k: len(v) for k, v in kept.items()}
