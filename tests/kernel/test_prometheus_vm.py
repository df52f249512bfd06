"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the exporter.

Prometheus on loopback in the VM, scrape interval 2 s, its target health
goes up=1 (it parsed our exposition), and PromQL through /api/v1/query
returns what ipvsadm reports for FWM 260, before and after new traffic.
`promtool check metrics` accepts the exposition: no parse error and no lint
problem except the four gauges whose names end in _total, which are
ingress_ipvs_exporter's metric names (kept verbatim for compatibility).
"""
import subprocess

import pytest

from ..prometheus import PROMTOOL, until
from .conftest import INGRESS_SBOX
from .test_core_vm import kernel_stats

pytestmark = pytest.mark.kernel

FWM = ("FWM", "inet", 260)

# promtool's linter flags gauges named *_total; these four names come from
# ingress_ipvs_exporter and cannot change without breaking dashboards.
COMPAT_LINT = {f'{name} non-counter metrics should not have "_total" suffix' for name in (
    "ipvs_services_total", "ipvs_destination_total",
    "ipvs_destination_active_connections_total",
    "ipvs_destination_inactive_connections_total")}


def static_config(target_port: int) -> str:
    return f"""global:
  scrape_interval: 5s
  scrape_timeout: 5s
  evaluation_interval: 2s
scrape_configs:
  - job_name: ipvs
    static_configs:
      - targets: ['127.0.0.1:{target_port}']
"""


def test_prometheus_scrapes_exporter(lab, exporter, prometheus):
    e = exporter("--backend", "native", wait=False)   # default path: ingress_sbox
    prom = prometheus(static_config(e.port))
    e.wait_ready()
    prom.wait_ready()
    until(lambda: (prom.value('up{job="ipvs"}') == 1.0, prom.api("/api/v1/targets")),
          180, "target up=1")
    targets = prom.api("/api/v1/targets")["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
    # The first scrape may miss its deadline under emulation (namespace open,
    # port map): ipvs_up must become 1 within a few scrapes.
    until(lambda: (prom.value(f'ipvs_up{{job="ipvs",namespace="{INGRESS_SBOX}"}}') == 1.0,),
          120, "ipvs_up=1")

    def agree(want=None):
        # ipvsadm, Prometheus, ipvsadm: equal outer reads, so the value is exact.
        # want: the connection count the kernel must show first (the kernel
        # folds new traffic into its counters up to 2 s late).
        before = kernel_stats(lab.director)[FWM]
        conns = prom.value('ipvs_connections_total{job="ipvs",fwmark="260",port="30000"}')
        dests = {r["metric"]["address"]: float(r["value"][1]) for r in prom.query(
            'ipvs_destination_connections_total{job="ipvs",fwmark="260"}')}
        after = kernel_stats(lab.director)[FWM]
        kernel = (before["values"][0], {h: v[0] for (h, _), v in before["dests"].items()})
        ok = before == after and (conns, dests) == kernel and want in (None, kernel[0])
        return (ok, conns, dests, kernel)

    _, conns, dests, _ = until(agree, 120, "Prometheus agrees with ipvsadm on FWM 260")
    assert conns > 0 and len(dests) == 2
    # Live: new connections through the fwmark service reach Prometheus.
    lab.send("tcp", "10.77.100.2", 30000, count=3)
    _, conns2, _, _ = until(lambda: agree(conns + 3), 120,
                            "Prometheus agrees with ipvsadm after 3 new connections")
    assert conns2 == conns + 3

    # promtool on the same exposition
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=e.get(), capture_output=True,
                       text=True, timeout=120)
    problems = {line for line in (p.stdout + p.stderr).splitlines() if line.strip()}
    assert p.returncode in (0, 3), (p.returncode, problems)   # 1 = parse error
    assert problems <= COMPAT_LINT, problems - COMPAT_LINT
    assert (p.returncode == 0) == (not problems)
