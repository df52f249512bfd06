"""--format node against the real node_exporter, --format ipvs against the
kernel, on the lab's director namespace with real traffic."""
import math
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import ipvsadm_text as ipv

from . import topo
from .conftest import free_port

pytestmark = pytest.mark.kernel

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def node_samples(text: str) -> dict:
    """{(name, sorted labels): value} of the node_ipvs_* samples."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("node_ipvs_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def node_lines(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith(("node_ipvs_", "# HELP node_ipvs",
                                                                    "# TYPE node_ipvs"))]


class NodeExporter:
    """Debian's node_exporter, only the ipvs collector, reading namespace
    *ns*'s IPVS tables.

    It runs in the root namespace with ``--path.procfs=/proc/PID`` where PID
    is a process (``sleep``) living in *ns*: ``/proc/PID/net/ip_vs`` and
    ``ip_vs_stats`` are that namespace's view, exactly what node_exporter
    run inside the namespace reads from ``/proc/net``. So the test fetches
    its page directly instead of starting a Python inside the namespace for
    every fetch (which made these tests 50-95 s each under emulation).
    """

    def __init__(self, ns: str, *extra):
        assert NODE_EXPORTER, "prometheus-node-exporter is not installed"
        self.ns = ns
        self.port = free_port()
        self.holder = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "infinity"])
        self.log = open(f"/tmp/node-exporter-{self.port}.log", "w+")
        procfs = f"/proc/{self.holder.pid}"
        deadline = time.monotonic() + 30
        # the holder is in the namespace once `ip netns exec` has exec()ed sleep
        while os.readlink(f"{procfs}/ns/net") != _ns_link(ns):
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cannot start a process in {ns}")
            time.sleep(0.05)
        self.proc = subprocess.Popen(
            [NODE_EXPORTER, "--collector.disable-defaults", "--collector.ipvs",
             f"--path.procfs={procfs}", f"--web.listen-address=127.0.0.1:{self.port}", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise RuntimeError(f"node_exporter did not start: {self.log.read()}")
                time.sleep(0.2)

    def get(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=60) as r:
            return r.read().decode()

    def stop(self):
        for p in (self.proc, self.holder):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


def _ns_link(ns: str) -> str:
    return f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"


@pytest.fixture
def node_exporter(lab):
    started = []

    def start(*extra):
        ne = NodeExporter(lab.director, *extra)
        started.append(ne)
        return ne

    yield start
    for ne in started:
        ne.stop()


LABEL_SETS = [
    None,                                   # node_exporter's default: all six labels
    "local_address,local_port,proto",       # per service, summed over backends
    "remote_address,local_mark",            # per backend across services
]


@pytest.mark.parametrize("labels", LABEL_SETS, ids=["full", "service", "backend"])
def test_node_format_matches_node_exporter(lab, exporter, node_exporter, labels):
    extra_ne = [f"--collector.ipvs.backend-labels={labels}"] if labels else []
    extra_us = [f"--node.backend-labels={labels}"] if labels else []
    ne = node_exporter(*extra_ne)
    ours = exporter("--namespace-path", lab.netns_path, "--format", "node", *extra_us)
    topo.standard_traffic(lab)
    texts = {}

    def read():
        a = ne.get()
        m = ours.get()
        b = ne.get()
        texts["theirs"], texts["ours"] = a, m
        return node_samples(a), node_samples(m), node_samples(b)
    theirs, mine = topo.stable(read)
    assert mine == theirs
    # every family present and the backend series really carry traffic
    names = {k[0] for k in theirs}
    assert names == {"node_ipvs_connections_total", "node_ipvs_incoming_packets_total",
                     "node_ipvs_outgoing_packets_total", "node_ipvs_incoming_bytes_total",
                     "node_ipvs_outgoing_bytes_total", "node_ipvs_backend_connections_active",
                     "node_ipvs_backend_connections_inactive", "node_ipvs_backend_weight"}
    assert theirs[("node_ipvs_connections_total", ())] > 0
    # same text too: HELP/TYPE, label order, sample order, number formatting
    assert node_lines(texts["ours"]) == node_lines(texts["theirs"])
    print(f"\n[{labels or 'full'}] {len(theirs)} node_ipvs samples identical; e.g.")
    print("\n".join(node_lines(texts["ours"])[:4]))


def _ipvs_samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_ipvs_format_matches_kernel(lab, exporter):
    ours = exporter("--namespace-path", lab.netns_path, "--format", "ipvs")
    topo.standard_traffic(lab)

    def kstats():
        return ipv.parse_listing(topo.ipvsadm("-Ln --stats --exact", lab.director), 5)

    kernel, text = topo.stable(lambda: (kstats(), ours.get(), kstats()))
    s = _ipvs_samples(text)
    ns = lab.netns_path
    assert s[("ipvs_up", (("namespace", ns),))] == 1
    n_dests = sum(len(e["dests"]) for e in kernel.values())
    assert s[("ipvs_services", (("namespace", ns),))] == len(kernel)
    assert s[("ipvs_destinations", (("namespace", ns),))] == n_dests
    # per-service counters equal ipvsadm --stats --exact (conns, inpkts, outpkts, inbytes, outbytes)
    names = ["connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
             "outgoing_bytes"]
    checked = 0
    for (name, labels), value in s.items():
        if name != "ipvs_service_connections_total":
            continue
        L = dict(labels)
        if L["fwmark"]:
            key = ("FWM", L["family"], int(L["fwmark"]))
        else:
            key = (L["protocol"].upper(), L["address"], int(L["port"]))
        for i, n in enumerate(names):
            assert s[(f"ipvs_service_{n}_total", labels)] == kernel[key]["values"][i], (key, n)
        checked += 1
    assert checked == len(kernel)
    assert any(v > 0 for (n, _), v in s.items() if n == "ipvs_destination_incoming_bytes_total")
    info = [dict(k[1]) for k in s if k[0] == "ipvs_service_info"]
    assert {"persistent" in i["flags"] for i in info} == {True, False}
    fwd = {dict(k[1])["forwarding_method"] for k in s if k[0] == "ipvs_destination_info"}
    assert fwd == {"masq", "route", "tunnel"}
    assert not any(math.isnan(v) for v in s.values())
