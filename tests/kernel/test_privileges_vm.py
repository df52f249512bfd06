"""Least privilege: started as root with every capability, the exporter
keeps only what its namespace paths need (CAP_NET_ADMIN; + CAP_SYS_ADMIN
for another namespace; + CAP_SYS_PTRACE for /proc/PID/ns/net), in every
set, with no_new_privs, and still reads IPVS everywhere it should."""
import os
import subprocess
import time

import pytest

from . import topo

pytestmark = pytest.mark.kernel

NET_ADMIN, SYS_PTRACE, SYS_ADMIN = 1 << 12, 1 << 19, 1 << 21
ROOT_RULES = "-A -t 10.77.0.1:80 -s rr\n-a -t 10.77.0.1:80 -r 10.77.1.1:80 -m\n"


def status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def caps(pid: int) -> dict:
    st = status(pid)
    return {k: int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} | {
        "NoNewPrivs": int(st["NoNewPrivs"])}


@pytest.fixture
def root_service(ip_vs_module):
    """One service in the VM's own namespace (the exporter's '' path)."""
    topo.sh("ipvsadm -R", input=ROOT_RULES)
    yield
    topo.sh("ipvsadm -D -t 10.77.0.1:80", check=False)


@pytest.fixture
def other_ns(ip_vs_module):
    ns = topo.Bare("ipvsf-priv", "-A -u 10.78.0.1:53 -s rr\n-A -u 10.78.0.2:53 -s rr\n")
    ns.build()
    # a root process with every capability inside it, for /proc/PID/ns/net
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "600"])
    time.sleep(0.5)
    yield ns, f"/proc/{proc.pid}/ns/net"
    proc.kill()
    proc.wait()
    ns.teardown()


def test_capabilities_dropped_to_what_the_paths_need(root_service, other_ns, exporter):
    ns, proc_path = other_ns
    assert caps(1)["CapEff"] & SYS_ADMIN        # we start with everything
    cases = {
        ("",): NET_ADMIN,
        ("", ns.netns_path): NET_ADMIN | SYS_ADMIN,
        (proc_path,): NET_ADMIN | SYS_ADMIN | SYS_PTRACE,
    }
    started = {}
    for paths, _ in cases.items():
        args = [a for p in paths for a in ("--namespace-path", p)]
        started[paths] = exporter(*args, wait=False)
    for e in started.values():
        e.wait_ready(600)           # interpreter start-up on a busy emulated machine
    services = {"": 1, ns.netns_path: 2, proc_path: 2}
    for paths, want in cases.items():
        e = started[paths]
        c = caps(e.pid)
        print(paths, {k: hex(v) for k, v in c.items()})
        assert c == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                     "CapAmb": 0, "NoNewPrivs": 1}, (paths, c)
        m = e.samples()
        for p in paths:
            assert m[("ipvs_up", (("namespace", p),))] == 1, (paths, p, e.logtext())
            assert m[("ipvs_services_total", (("namespace", p),))] == services[p]
        # threads started after the drop (collection pools) inherit it
        for tid in os.listdir(f"/proc/{e.pid}/task"):
            with open(f"/proc/{e.pid}/task/{tid}/status") as f:
                eff = [line for line in f if line.startswith("CapEff:")][0].split()[1]
            assert int(eff, 16) == want, (paths, tid, eff)
        assert "capabilities: kept" in e.logtext()
