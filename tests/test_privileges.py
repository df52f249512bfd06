"""Least privilege on the host: what each configuration needs, and the
exporter as a real process dropping the rest (needs root, as CI runs; the
VM suite checks that scrapes still work: tests/kernel/test_privileges_vm.py)."""
import os

import pytest

from ipvs_fast import privileges
from ipvs_fast.privileges import CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE
from tests.test_cli import Exporter


def test_needed():
    assert privileges.needed([""]) == {CAP_NET_ADMIN}
    assert privileges.needed(["", "/run/netns/*"]) == {CAP_NET_ADMIN, CAP_SYS_ADMIN}
    assert privileges.needed(["/var/run/docker/netns/ingress_sbox"]) == {CAP_NET_ADMIN,
                                                                         CAP_SYS_ADMIN}
    assert privileges.needed(["/proc/1/ns/net"]) == {CAP_NET_ADMIN, CAP_SYS_ADMIN,
                                                     CAP_SYS_PTRACE}


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.mark.skipif(os.geteuid() != 0 or not int(status("self")["CapEff"], 16) >> 21 & 1,
                    reason="needs root with CAP_SYS_ADMIN")
@pytest.mark.parametrize("paths, want", [
    ([""], 1 << CAP_NET_ADMIN),
    (["", "/run/netns/nope"], 1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN),
])
def test_exporter_drops_what_it_does_not_need(paths, want):
    e = Exporter(*[a for p in paths for a in ("--namespace-path", p)])
    try:
        assert e.get()[0] == 200
        st = status(e.proc.pid)
        got = {k: int(st[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb")}
        assert got == {"CapEff": want, "CapPrm": want, "CapBnd": want, "CapInh": 0,
                       "CapAmb": 0}
        assert st["NoNewPrivs"] == "1"
        assert e.get()[0] == 200
    finally:
        rc, _, err = e.stop()
    assert rc == 0
    assert "capabilities: kept cap_net_admin" in err
