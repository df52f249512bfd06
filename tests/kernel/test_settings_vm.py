"""Operator metrics on the real kernel: destinations at weight 0 per service,
the namespace's IPVS settings and sysctls (each namespace its own), and the
scrape error counter when a namespace is deleted under the exporter."""
import re
import subprocess

import pytest

from . import topo

pytestmark = pytest.mark.kernel

BACKENDS = ["native", "python"]

RULES = """
-A -t 10.98.0.1:80 -s rr
-a -t 10.98.0.1:80 -r 10.98.1.2:8080 -m -w 1
-a -t 10.98.0.1:80 -r 10.98.1.3:8080 -m -w 1
-a -t 10.98.0.1:80 -r 10.98.1.4:8080 -m -w 1
-A -f 7 -s rr
-a -f 7 -r 10.98.1.2:0 -m -w 2
-a -f 7 -r 10.98.1.3:0 -m -w 2
"""


@pytest.fixture
def bare(ip_vs_module):
    made = []

    def make(name, rules=""):
        ns = topo.Bare(name, rules)
        made.append(ns)
        return ns.build()
    yield make
    for ns in made:
        ns.teardown()


def per_service(e, name):
    """{fwmark or port: value} of a per-service family."""
    return {dict(lab)["fwmark"] or dict(lab)["port"]: v
            for (n, lab), v in e.samples().items() if n == name}


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_weight_destinations_vm(exporter, bare, backend):
    ns = bare(f"ipvsf-zw-{backend}", RULES)
    e = exporter("--format", "ipvs", "--backend", backend, "--namespace-path", ns.netns_path)
    assert per_service(e, "ipvs_service_destinations_zero_weight") == {"80": 0, "7": 0}
    topo.sh("ipvsadm -e -t 10.98.0.1:80 -r 10.98.1.3:8080 -m -w 0", ns=ns.name)
    topo.sh("ipvsadm -e -f 7 -r 10.98.1.2:0 -m -w 0", ns=ns.name)
    topo.sh("ipvsadm -e -f 7 -r 10.98.1.3:0 -m -w 0", ns=ns.name)
    assert per_service(e, "ipvs_service_destinations_zero_weight") == {"80": 1, "7": 2}
    # the total stays the total: fwmark 7 now blackholes new connections
    assert per_service(e, "ipvs_service_destinations") == {"80": 3, "7": 2}
    topo.sh("ipvsadm -e -t 10.98.0.1:80 -r 10.98.1.3:8080 -m -w 5", ns=ns.name)
    assert per_service(e, "ipvs_service_destinations_zero_weight") == {"80": 0, "7": 2}
    # --service.* filters apply
    f = exporter("--format", "ipvs", "--backend", backend, "--namespace-path", ns.netns_path,
                 "--service.exclude", "fwmark:*")
    assert per_service(f, "ipvs_service_destinations_zero_weight") == {"80": 0}


def sysctl_tool(ns: str) -> dict:
    out = {}
    for line in topo.sh("sysctl net.ipv4.vs", ns=ns, check=False).splitlines():
        k, sep, v = line.partition(" = ")
        if sep and re.fullmatch(r"-?\d+", v.strip()):
            out[k[len("net.ipv4.vs."):]] = int(v)
    return out


def settings_of(e, ns_path: str) -> dict:
    out = {}
    for (n, lab), v in e.samples().items():
        lab = dict(lab)
        if lab.get("namespace") != ns_path:
            continue
        if n.startswith("ipvs_sysctl_"):
            out[n[len("ipvs_sysctl_"):]] = v
        elif n == "ipvs_timeout_seconds":
            out["timeout_" + lab["protocol"]] = v
        elif n == "ipvs_connection_table_size":
            out["size"] = v
        elif n == "ipvs_version_info":
            out["version"] = lab["version"]
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_settings_and_sysctls_per_namespace_vm(exporter, bare, backend):
    a = bare(f"ipvsf-set-a-{backend}", RULES)
    b = bare(f"ipvsf-set-b-{backend}", RULES)
    e = exporter("--format", "ipvs", "--backend", backend,
                 "--namespace-path", a.netns_path, "--namespace-path", b.netns_path)
    before_a, before_b = settings_of(e, a.netns_path), settings_of(e, b.netns_path)
    root = sysctl_tool("")
    head = topo.ipvsadm("-Ln", a.name).splitlines()[0]     # IP Virtual Server version 1.2.1 (size=4096)
    m = re.search(r"version (\S+) \(size=(\d+)\)", head)
    assert (before_a["version"], before_a["size"]) == (m.group(1), int(m.group(2)))
    assert before_a == before_b
    assert before_a["expire_nodest_conn"] == 0 and before_a["conn_reuse_mode"] == 1
    assert (before_a["timeout_tcp"], before_a["timeout_tcp_fin"], before_a["timeout_udp"]) == (
        900, 120, 300)

    topo.sh("sysctl -qw net.ipv4.vs.expire_nodest_conn=1", ns=a.name)
    topo.sh("sysctl -qw net.ipv4.vs.conn_reuse_mode=0", ns=a.name)
    topo.sh("sysctl -qw net.ipv4.vs.expire_quiescent_template=1", ns=a.name)
    topo.sh("ipvsadm --set 1000 100 200", ns=a.name)
    after_a, after_b = settings_of(e, a.netns_path), settings_of(e, b.netns_path)
    # a: exactly what sysctl(8) says inside a; b and the root namespace unchanged
    tool_a = sysctl_tool(a.name)
    assert {k: v for k, v in after_a.items() if k in tool_a} == tool_a
    assert set(tool_a) <= set(after_a)
    assert (after_a["expire_nodest_conn"], after_a["conn_reuse_mode"],
            after_a["expire_quiescent_template"]) == (1, 0, 1)
    assert (after_a["timeout_tcp"], after_a["timeout_tcp_fin"], after_a["timeout_udp"]) == (
        1000, 100, 200)
    assert after_b == before_b
    assert sysctl_tool("") == root


@pytest.mark.parametrize("fmt", ["ingress", "node", "ipvs"])
def test_scrape_errors_when_namespace_deleted_vm(exporter, bare, fmt):
    ns = bare(f"ipvsf-err-{fmt}", RULES)
    e = exporter("--format", fmt, "--namespace-path", ns.netns_path, "--namespace-path", "")

    def errors():
        s = e.samples()
        return {dict(lab)["namespace"]: v for (n, lab), v in s.items()
                if n == "ipvs_scrape_errors_total"}, {
                dict(lab)["namespace"]: v for (n, lab), v in s.items() if n == "ipvs_up"}
    assert errors() == ({ns.netns_path: 0, "": 0}, {ns.netns_path: 1, "": 1})
    subprocess.run(["ip", "netns", "del", ns.name], check=True)
    assert errors() == ({ns.netns_path: 1, "": 0}, {ns.netns_path: 0, "": 1})
    assert errors() == ({ns.netns_path: 2, "": 0}, {ns.netns_path: 0, "": 1})
    ns.build()                                  # back: up again, the count stays
    assert errors() == ({ns.netns_path: 2, "": 0}, {ns.netns_path: 1, "": 1})
