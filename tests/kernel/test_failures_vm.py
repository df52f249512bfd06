"""Failure modes: the exporter keeps serving with ipvs_up 0 and logs one clear
line per failure, however many scrapes.

(a) ip_vs not loaded -- and the exporter must not load it (resolving the
    IPVS generic-netlink family would: the module has that alias). These
    tests take the `ip_vs_absent` fixture, which conftest sorts first.
(b) the namespace path does not exist.
(c) no privileges: capsh drops CAP_NET_ADMIN and CAP_SYS_ADMIN.
"""
import os
import shlex

import pytest

from . import topo

pytestmark = pytest.mark.kernel

BACKENDS = ["native", "python"]
SCRAPES = 4


def down_lines(e) -> list[str]:
    return [line for line in e.logtext().splitlines() if "ipvs_up=0" in line]


def assert_down_once(e, key, *needles):
    """SCRAPES scrapes all say ipvs_up 0; the log has exactly one line about
    it, naming the cause; the exporter still serves afterwards.
    `key` (backend, path) names the exporter in failure messages."""
    for _ in range(SCRAPES):
        assert e.up() == 0.0, key
    assert e.get("/healthz") == "ok", key
    assert e.proc.poll() is None, key
    text = e.logtext()
    lines = down_lines(e)
    assert len(lines) == 1, (key, text)
    for n in needles:
        assert n in lines[0], (key, n, lines[0])
    assert "Traceback" not in text, (key, text)
    print(key, lines[0])
    return lines[0]


def start_all(exporter, paths, wrap=None) -> dict:
    """An exporter per (backend, namespace path), started in parallel
    (interpreter start-up takes many seconds under emulation)."""
    exps = {(b, p): exporter("--namespace-path", p, "--backend", b, wrap=wrap, wait=False)
            for b in BACKENDS for p in paths}
    for e in exps.values():
        e.wait_ready()
    return exps


def test_ip_vs_not_loaded(ip_vs_absent, exporter):
    # a namespace of its own (ip netns add does not load ip_vs) and our own one
    name = "ipvsf-nomod"
    topo.sh(f"ip netns add {name}")
    try:
        for key, e in start_all(exporter, [f"/run/netns/{name}", ""]).items():
            assert_down_once(e, key, "ip_vs not loaded")
    finally:
        topo.sh(f"ip netns del {name}")
    assert not os.path.exists("/proc/net/ip_vs")
    assert not os.path.exists("/sys/module/ip_vs")


def test_namespace_path_missing(exporter):
    path = "/run/netns/ipvsf-does-not-exist"
    assert not os.path.exists(path)
    for key, e in start_all(exporter, [path]).items():
        assert_down_once(e, key, path, "No such file or directory")


def capsh(argv: list[str]) -> list[str]:
    return ["capsh", "--drop=cap_net_admin,cap_sys_admin", "--",
            "-c", "exec " + " ".join(shlex.quote(a) for a in argv)]


def test_without_privileges(lab, exporter):
    # The lab's namespace (entering it needs CAP_SYS_ADMIN) and our own one
    # (IPVS commands need CAP_NET_ADMIN); ip_vs is loaded in both.
    for key, e in start_all(exporter, [lab.netns_path, ""], wrap=capsh).items():
        with open(f"/proc/{e.pid}/status") as f:
            eff = int([line for line in f if line.startswith("CapEff:")][0].split()[1], 16)
        assert not eff & (1 << 12) and not eff & (1 << 21), (key, hex(eff))  # NET_ADMIN, SYS_ADMIN
        assert_down_once(e, key, "Operation not permitted")
