"""Namespace churn the way Docker does it: the exporter watches a bind-mounted
path (like /var/run/docker/netns/ingress_sbox); the namespace behind it is
deleted and a new one, with other services, is mounted at the same path.

Per cycle: up=1 with exactly the new namespace's services (and its port map),
up=0 once it is gone (the mount point file removed, as Docker does, or left
behind as an empty file), and the exporter's fds do not grow -- a handle
pinning a dead namespace would show up as an extra fd (and as a net:[inode]
link other than the current namespace's). Both backends, side by side.
"""
import os
import subprocess
import time

import pytest

from . import topo
from .conftest import INGRESS_SBOX

pytestmark = pytest.mark.kernel

PATH = "/var/run/docker/netns/churn_sbox"
assert PATH != INGRESS_SBOX
CYCLES = 5


def rules(i: int) -> tuple[str, list[str]]:
    """Cycle i's namespace: i+1 TCP services and fwmark 700+i published on 31000+i."""
    lines = []
    for k in range(i + 1):
        lines.append(f"-A -t 10.99.{i}.{k + 1}:{8000 + i} -s rr")
        lines.append(f"-a -t 10.99.{i}.{k + 1}:{8000 + i} -r 10.98.0.{k + 2}:80 -m -w 1")
    lines.append(f"-A -f {700 + i} -s wrr")
    lines.append(f"-a -f {700 + i} -r 10.98.1.{i + 2}:80 -m -w 2")
    mangle = [f"-A PREROUTING -d 10.99.{i}.100/32 -p tcp -m tcp --dport {31000 + i} "
              f"-j MARK --set-xmark {700 + i:#x}/0xffffffff"]
    return "\n".join(lines), mangle


def expected_services(i: int) -> set:
    out = {(str(700 + i), str(31000 + i), None, None)}
    for k in range(i + 1):
        out.add(("0", str(8000 + i), "tcp", f"10.99.{i}.{k + 1}"))
    return out


def served_services(samples: dict) -> set:
    out = set()
    for (name, labels), _ in samples.items():
        if name == "ipvs_connections_total":
            d = dict(labels)
            out.add((d["fwmark"], d["port"], d.get("protocol"), d.get("service_address")))
    return out


def mount_new(i: int) -> str:
    name = f"ipvsf-churn{i}"
    topo.sh(f"ip netns add {name}")
    topo.sh("ip link set lo up", ns=name)   # IPv4 destinations need the local table
    text, mangle = rules(i)
    topo.sh("ipvsadm -R", ns=name, input=text + "\n")
    for r in mangle:
        topo.sh(f"iptables -t mangle {r}", ns=name)
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    if not os.path.exists(PATH):
        open(PATH, "a").close()
    topo.sh(f"mount --bind /run/netns/{name} {PATH}")
    return name


def unmount(name: str, remove_file: bool) -> None:
    # Lazily, like libnetwork and `ip netns del` (MNT_DETACH): a plain umount
    # fails with EBUSY while the exporter holds an fd opened through the mount.
    topo.sh(f"umount -l {PATH}")
    if remove_file:
        os.unlink(PATH)
    topo.sh(f"ip netns del {name}")


def fds(pid: int) -> tuple[int, set]:
    """(number of open fds, inodes of the net namespaces they hold), the
    minimum over a few reads (a just-finished scrape's socket may linger)."""
    best = None
    for _ in range(3):
        links = []
        d = f"/proc/{pid}/fd"
        for fd in os.listdir(d):
            try:
                links.append(os.readlink(f"{d}/{fd}"))
            except OSError:
                pass
        nets = {link for link in links if link.startswith("net:[")}
        if best is None or len(links) < best[0]:
            best = (len(links), nets)
        time.sleep(0.1)
    return best


def check_up(e, i: int, who: str) -> None:
    s = e.samples()
    ups = [v for (n, _), v in s.items() if n == "ipvs_up"]
    assert ups == [1.0], (who, i, e.logtext()[-3000:])
    assert served_services(s) == expected_services(i), (who, i)
    total = [v for (n, _), v in s.items() if n == "ipvs_services_total"]
    assert total == [i + 2], (who, i)


@pytest.fixture
def churn_path(ip_vs_module):
    yield PATH
    subprocess.run(["umount", "-l", PATH], capture_output=True)
    for i in range(CYCLES + 2):
        subprocess.run(["ip", "netns", "del", f"ipvsf-churn{i}"], capture_output=True)
    if os.path.exists(PATH):
        os.unlink(PATH)


def test_namespace_churn(churn_path, exporter):
    name = mount_new(0)
    exps = {b: exporter("--namespace-path", PATH, "--backend", b, wait=False)
            for b in ("native", "python")}
    for e in exps.values():
        e.wait_ready()
    up_fds = {b: [] for b in exps}
    down_fds = {b: [] for b in exps}
    for i in range(CYCLES):
        if i:
            name = mount_new(i)
        ino = f"net:[{os.stat(PATH).st_ino}]"
        for b, e in exps.items():
            check_up(e, i, b)
            n, nets = fds(e.pid)
            assert nets <= {ino}, (b, i, nets, ino)   # nothing pins an old namespace
            up_fds[b].append(n)
        unmount(name, remove_file=(i % 2 == 0))
        for b, e in exps.items():
            for _ in range(2):      # stays down, and keeps serving
                assert e.up() == 0.0, (b, i)
            n, nets = fds(e.pid)
            assert not nets, (b, i, nets)
            assert n < up_fds[b][-1], (b, i, n, up_fds[b])   # the handle was closed
            down_fds[b].append(n)
    for b in exps:
        assert max(up_fds[b][1:]) <= up_fds[b][0], (b, up_fds[b])
        assert max(down_fds[b][1:]) <= down_fds[b][0], (b, down_fds[b])

    # Replaced behind the exporter's back, no scrape in between: the held
    # handle belongs to the dead namespace, the path to a new one.
    name = mount_new(CYCLES)
    for b, e in exps.items():
        check_up(e, CYCLES, b)
    unmount(name, remove_file=False)
    name = mount_new(CYCLES + 1)
    ino = f"net:[{os.stat(PATH).st_ino}]"
    for b, e in exps.items():
        check_up(e, CYCLES + 1, b)
        n, nets = fds(e.pid)
        assert nets <= {ino}, (b, nets, ino)
        assert n <= up_fds[b][0], (b, n, up_fds[b])
        # One line per state change, not per scrape: exactly one "unavailable"
        # line per down period (CYCLES of them).
        downs = [line for line in e.logtext().splitlines() if "IPVS unavailable" in line]
        assert len(downs) == CYCLES, (b, downs)
