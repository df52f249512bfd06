"""Many namespaces: one exporter watching a glob over /run/netns/ipvsf-glob-*.

Three namespaces at any time: an empty one and two with services. Per
cycle, the oldest namespace with services is deleted and a new one with
other services is added between scrapes: the scrape follows (the deleted one
disappears, the new one appears with exactly its services), every namespace
reports ipvs_up 1, and the exporter's fds stay flat and hold only current
namespaces (a handle left open would pin a deleted namespace). Both output
formats that carry per-namespace service counts, both backends.
"""
import os
import subprocess

import pytest

from . import topo
from .test_churn_vm import fds

pytestmark = pytest.mark.kernel

PREFIX = "ipvsf-glob-"
PATTERN = f"/run/netns/{PREFIX}*"
CYCLES = 4


def rules(i: int) -> str:
    """Namespace i: i+1 TCP services on 10.97.i.k:80, one destination each."""
    lines = []
    for k in range(i + 1):
        lines.append(f"-A -t 10.97.{i}.{k + 1}:80 -s rr")
        lines.append(f"-a -t 10.97.{i}.{k + 1}:80 -r 10.96.{i}.{k + 2}:8080 -m -w 1")
    return "\n".join(lines)


def add(i) -> str:
    name = f"{PREFIX}{i}"
    topo.sh(f"ip netns add {name}")
    topo.sh("ip link set lo up", ns=name)     # (adding a destination fails with lo down)
    if i != "e":
        topo.sh("ipvsadm -R", ns=name, input=rules(i) + "\n")
    return name


def ino(name: str) -> str:
    return f"net:[{os.stat(f'/run/netns/{name}').st_ino}]"


@pytest.fixture
def glob_namespaces(ip_vs_module):
    made = []
    yield made
    for i in list(range(CYCLES + 2)) + ["e"]:
        subprocess.run(["ip", "netns", "del", f"{PREFIX}{i}"], capture_output=True)


def observed(e, fmt: str) -> dict:
    """{namespace path: (up, set of service addresses)}"""
    s = e.samples()
    out = {}
    for (name, labels), v in s.items():
        if name == "ipvs_up":
            out.setdefault(dict(labels)["namespace"], [v, set()])[0] = v
    metric, key = (("ipvs_connections_total", "service_address") if fmt == "ingress"
                   else ("ipvs_service_connections_total", "address"))
    for (name, labels), v in s.items():
        if name == metric:
            d = dict(labels)
            out[d["namespace"]][1].add(d[key])
    return {k: (v[0], v[1]) for k, v in out.items()}


def expected(live: list) -> dict:
    out = {}
    for i in live:
        addrs = set() if i == "e" else {f"10.97.{i}.{k + 1}" for k in range(i + 1)}
        out[f"/run/netns/{PREFIX}{i}"] = (1.0, addrs)
    return out


def test_glob_follows_namespaces(glob_namespaces, exporter):
    live = ["e", 0, 1]
    for i in live:
        add(i)
    exps = {("ingress", "native"): None, ("ipvs", "python"): None}
    for fmt, backend in exps:
        exps[(fmt, backend)] = exporter("--namespace-path", PATTERN, "--format", fmt,
                                        "--backend", backend, wait=False)
    for e in exps.values():
        e.wait_ready()
    counts = {k: [] for k in exps}
    for cycle in range(CYCLES + 1):
        if cycle:
            gone = live.pop(1)                      # the oldest with services
            topo.sh(f"ip netns del {PREFIX}{gone}")
            new = cycle + 1
            add(new)
            live.append(new)
        want = expected(live)
        current = {ino(f"{PREFIX}{i}") for i in live}
        for (fmt, backend), e in exps.items():
            got = observed(e, fmt)
            assert got == want, (fmt, backend, cycle, got, e.logtext()[-3000:])
            got = observed(e, fmt)                 # handles open now: a second scrape
            assert got == want
            n, nets = fds(e.pid)
            # nothing pins a deleted namespace (the native core keeps no
            # namespace fd, only its socket; the python backend keeps both)
            assert nets <= current, (fmt, backend, cycle, nets, current)
            counts[(fmt, backend)].append(n)
        print(f"cycle {cycle}: namespaces {live}, fds "
              + ", ".join(f"{k[0]}/{k[1]}={v[-1]}" for k, v in counts.items()))
    for k, v in counts.items():
        assert max(v) == min(v), (k, v)            # flat: 3 namespaces, 3 handles
    # one namespace less, none added: its handle's fds are released
    gone = live.pop(1)
    topo.sh(f"ip netns del {PREFIX}{gone}")
    want = expected(live)
    for (fmt, backend), e in exps.items():
        assert observed(e, fmt) == want
        n, _ = fds(e.pid)
        assert n < counts[(fmt, backend)][-1], (fmt, backend, n, counts)
    for e in exps.values():
        log = e.logtext()
        assert "gone from the expansion" in log
