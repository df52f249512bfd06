"""The shipped Prometheus rules and Grafana dashboards on a real Prometheus
scraping real IPVS.

Debian's Prometheus loads deploy/prometheus/prometheus.yml (its relabelling
unchanged; only the target addresses and, to bound the test's time, the
intervals are the test's) with the shipped recording rules, alerts and
Kubernetes name rules, and scrapes two exporters on the standard lab: one
`--format ipvs`, one in the default (ingress) format, while real traffic runs
through IPVS. A small HTTP server stands in for kube-state-metrics with
kube_service_info for two of the lab's virtual addresses. Then:

* every PromQL expression of both dashboards (variables at "All") and of every
  recording rule returns data through /api/v1/query;
* setting every destination of tcp 10.77.100.1:80 to weight 0 with
  `ipvsadm -e` makes IPVSServiceBlackholed fire for that service (and no
  other) in /api/v1/alerts, and restoring the weights resolves it.

With IPVS_FAST_VM_OUT set (run-in-vm.sh sets it), the range data of the
--format ipvs dashboard's panels is written there for docs/dashboard-preview.py.
"""
import http.server
import json
import os
import threading
import time

import pytest
import yaml

from ..prometheus import until
from ..promassets import (DASHBOARDS, PROM_DIR, dashboard_targets, dashboard_variable_queries,
                          recording_rules)
from . import topo
from .conftest import INGRESS_SBOX

pytestmark = pytest.mark.kernel

BLACKHOLED = "tcp 10.77.100.1:80"
BLACKHOLE_DESTS = [("10.77.11.2:8080", 1), ("10.77.12.2:8080", 2)]   # topo.STANDARD_RULES
# Every standard service but the one blackholed (a connection to it is refused meanwhile).
TRAFFIC = [("tcp", "10.77.100.2", 30000, 2, 2000), ("udp", "10.77.100.1", 53, 3, 300),
           ("tcp", "fd77:100::1", 80, 2, 1500), ("tcp", "10.77.100.1", 443, 1, 500),
           ("tcp", "fd77:100::2", 30001, 1, 800)]
TRAFFIC_SECONDS = 150
KSM = """# TYPE kube_service_info gauge
kube_service_info{namespace="shop",service="web",uid="u1",cluster_ip="10.77.100.1",external_name="",load_balancer_ip=""} 1
kube_service_info{namespace="shop",service="web-v6",uid="u2",cluster_ip="fd77:100::1",external_name="",load_balancer_ip=""} 1
kube_service_info{namespace="shop",service="headless",uid="u3",cluster_ip="None",external_name="",load_balancer_ip=""} 1
"""


class StaticMetrics(http.server.ThreadingHTTPServer):
    """Serves one exposition text at every path (kube-state-metrics' stand-in)."""
    daemon_threads = True

    def __init__(self, text: str):
        body = text.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def shipped_config(ipvs_port: int, ingress_port: int, ksm_port: int) -> str:
    """deploy/prometheus/prometheus.yml with our targets and short intervals.
    The two exporters get different host names (127.0.0.1, localhost) so the
    shipped relabelling (instance = host) keeps them apart."""
    with open(os.path.join(PROM_DIR, "prometheus.yml")) as f:
        config = yaml.safe_load(f)
    config["global"] = {"scrape_interval": "5s", "scrape_timeout": "5s", "evaluation_interval": "2s"}
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ipvs" and len(job["static_configs"]) == 1
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{ipvs_port}", f"localhost:{ingress_port}"]
    assert config["rule_files"] == ["recording.yml", "alerts.yml"]
    config["rule_files"].append("kube-service-names.yml")
    config["scrape_configs"].append({"job_name": "kube-state-metrics",
                                     "static_configs": [{"targets": [f"127.0.0.1:{ksm_port}"]}]})
    return yaml.safe_dump(config)


def set_weights(lab, weights) -> None:
    for (dest, _), w in zip(BLACKHOLE_DESTS, weights):
        topo.ipvsadm(f"-e -t 10.77.100.1:80 -r {dest} -m -w {w}", lab.director)


def blackhole_alerts(prom) -> list:
    return [a for a in prom.api("/api/v1/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == "IPVSServiceBlackholed"]


def test_shipped_rules_and_dashboards_on_real_prometheus(lab, exporter, prometheus):
    ksm = StaticMetrics(KSM)
    # Started one after the other: under emulation on a shared host, three
    # interpreters and a Prometheus starting at once can take minutes.
    ipvs = exporter("--format", "ipvs", "--namespace-path", INGRESS_SBOX, wait=False).wait_ready(300)
    ingress = exporter(wait=False).wait_ready(300)    # default format and path (ingress_sbox)
    files = {name: os.path.join(PROM_DIR, name)
             for name in ("recording.yml", "alerts.yml", "kube-service-names.yml")}
    prom = prometheus(shipped_config(ipvs.port, ingress.port, ksm.server_address[1]), files,
                      args=["--enable-feature=extra-scrape-metrics"])
    traffic = None
    blackholed = False
    try:
        prom.wait_ready()
        started = time.time()
        traffic = lab.start_traffic(TRAFFIC_SECONDS, TRAFFIC)
        health = 'sum(up{job="ipvs"}) + sum(ipvs_up{job="ipvs"})'   # 2 targets, 1 namespace each
        until(lambda: (prom.value(health) == 4.0, prom.value(health)), 180,
              "both exporters up, ipvs_up 1 in both")
        zero = f'ipvs_service:ipvs_destinations_zero_weight:count{{virtual_service="{BLACKHOLED}"}}'
        until(lambda: (prom.value(zero) == 0.0, prom.value(zero)), 120,
              f"{BLACKHOLED} recorded with no destination at weight 0")
        assert blackhole_alerts(prom) == []

        set_weights(lab, [0, 0])
        blackholed = True
        blackholed_at = time.time()

        # Every dashboard query, variable query and recording rule returns data.
        queries = [(os.path.basename(b), f"{title} [{ref}]", e)
                   for b in DASHBOARDS for title, ref, e, _ in dashboard_targets(b)]
        queries += [(os.path.basename(b), f"variable {name}", q)
                    for b in DASHBOARDS for name, q in dashboard_variable_queries(b)]
        queries += [(f, record, expr) for f, record, expr in recording_rules()]
        assert len(queries) > 50

        pending = list(queries)

        def empty():
            pending[:] = [(where, what, e) for where, what, e in pending if not prom.query(e)]
            return (not pending, [(where, what) for where, what, _ in pending])
        until(empty, 150, "every dashboard and recording-rule expression returns data")

        # Real traffic shows in the rates of both formats and by Kubernetes name.
        # (Retried: on a loaded host a scrape or rule evaluation can be late,
        # leaving a series stale for a moment.)
        for query in ('ipvs_service:ipvs_service_connections:rate5m{virtual_service="fwmark 260"}',
                      'ipvs_ingress_service:ipvs_connections:rate5m{fwmark="260"}',
                      'kube_service:ipvs_service_connections:rate5m{service="web-v6"}'):
            until(lambda: ((prom.value(query) or 0) > 0, prom.value(query)), 60, f"{query} > 0")
        want = {("shop", "web", f"{proto} 10.77.100.1:{port}")   # topo.STANDARD_RULES
                for proto, port in (("tcp", 80), ("udp", 53), ("tcp", 443), ("tcp", 8081))
                } | {("shop", "web-v6", "tcp [fd77:100::1]:80")}

        def named():
            got = {(r["metric"]["namespace"], r["metric"]["service"], r["metric"]["virtual_service"])
                   for r in prom.query("kube_service:ipvs_destinations:count")}
            return (got == want, got)
        until(named, 60, "every ClusterIP service named from kube_service_info")

        # The blackhole alert fires for that service only, after its `for` (1m).
        def firing():
            alerts = blackhole_alerts(prom)
            return (any(a["state"] == "firing" for a in alerts), alerts)
        (_, alerts) = until(firing, 240, f"IPVSServiceBlackholed firing for {BLACKHOLED}")
        assert [(a["state"], a["labels"]["virtual_service"], a["labels"]["instance"],
                 a["labels"]["format"], a["labels"]["severity"]) for a in alerts] == [
            ("firing", BLACKHOLED, "127.0.0.1", "ipvs", "critical")]
        assert time.time() - blackholed_at >= 60
        assert "all destinations have weight 0" in alerts[0]["annotations"]["summary"]

        set_weights(lab, [w for _, w in BLACKHOLE_DESTS])
        blackholed = False
        restored_at = time.time()
        until(lambda: (blackhole_alerts(prom) == [], blackhole_alerts(prom)), 120,
              "IPVSServiceBlackholed resolved once the weights are back")
        traffic.wait(timeout=TRAFFIC_SECONDS + 120)
        traffic = None

        out = os.environ.get("IPVS_FAST_VM_OUT")
        if out:
            save_preview(prom, os.path.join(out, "dashboard-preview.json"), started,
                         blackholed_at, restored_at)
    finally:
        if blackholed:
            set_weights(lab, [w for _, w in BLACKHOLE_DESTS])
        if traffic is not None:     # failed midway: stop it, keep the first error
            traffic.proc.kill()
            traffic.proc.wait()
        ksm.shutdown()


def save_preview(prom, path: str, start: float, blackholed_at: float, restored_at: float) -> None:
    """Range data of every panel of the --format ipvs dashboard, as queried."""
    board = next(b for b in DASHBOARDS if b.endswith("ipvs-fast-ipvs.json"))
    end = time.time()
    panels = []
    for title, ref, expr, legend in dashboard_targets(board):
        panels.append({"title": title, "refId": ref, "expr": expr, "legendFormat": legend,
                       "result": prom.query_range(expr, start, end, 5)})
    with open(path, "w") as f:
        json.dump({"start": start, "end": end, "blackholed_at": blackholed_at,
                   "restored_at": restored_at, "panels": panels}, f)
