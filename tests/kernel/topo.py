"""Real topologies for kernel tests: network namespaces, veth pairs, IPVS
services and real traffic through them. Runs only inside the VM (root, a
kernel with ip_vs).

    client ns ──veth── director ns (IPVS, VIPs on lo) ──veth── backend ns b1
                                                       └─veth── backend ns b2
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
TRAFFIC = os.path.join(HERE, "traffic.py")
PY = sys.executable


def sh(cmd: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    argv = shlex.split(cmd)
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=120)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd!r} in {ns or 'root'} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def ipvsadm(args: str, ns: str) -> str:
    return sh(f"ipvsadm {args}", ns=ns)


@dataclass
class Lab:
    """A director namespace with backends and a client. `prefix` keeps names unique."""
    prefix: str = "ipvsf"
    netns_path: str = ""                # where the director namespace is reachable
    alias_path: str | None = None       # optional extra bind mount (e.g. Docker's ingress_sbox)
    servers: list = field(default_factory=list)
    namespaces: list = field(default_factory=list)

    @property
    def director(self) -> str:
        return f"{self.prefix}-dir"

    @property
    def client(self) -> str:
        return f"{self.prefix}-cli"

    def backend(self, i: int) -> str:
        return f"{self.prefix}-b{i}"

    # -- building -----------------------------------------------------------------
    def _ns(self, name: str) -> None:
        sh(f"ip netns add {name}")
        self.namespaces.append(name)
        sh("ip link set lo up", ns=name)

    def _veth(self, a_ns: str, a_if: str, b_ns: str, b_if: str) -> None:
        sh(f"ip link add {a_if} netns {a_ns} type veth peer name {b_if} netns {b_ns}")
        sh(f"ip link set {a_if} up", ns=a_ns)
        sh(f"ip link set {b_if} up", ns=b_ns)

    def _addr(self, ns: str, ifname: str, cidr: str) -> None:
        extra = " nodad" if ":" in cidr else ""
        sh(f"ip addr add {cidr} dev {ifname}{extra}", ns=ns)

    def build(self, nbackends: int = 2) -> "Lab":
        d, c = self.director, self.client
        self._ns(d)
        self._ns(c)
        self._veth(c, "eth0", d, "to-cli")
        self._addr(c, "eth0", "10.77.1.2/24")
        self._addr(c, "eth0", "fd77:1::2/64")
        self._addr(d, "to-cli", "10.77.1.1/24")
        self._addr(d, "to-cli", "fd77:1::1/64")
        sh("ip route add default via 10.77.1.1", ns=c)
        sh("ip -6 route add default via fd77:1::1", ns=c)
        for vip in ("10.77.100.1/32", "10.77.100.2/32", "fd77:100::1/128", "fd77:100::2/128"):
            self._addr(d, "lo", vip)
        sh("sysctl -qw net.ipv4.ip_forward=1", ns=d)
        sh("sysctl -qw net.ipv6.conf.all.forwarding=1", ns=d)
        for i in range(1, nbackends + 1):
            b = self.backend(i)
            self._ns(b)
            self._veth(d, f"to-b{i}", b, "eth0")
            self._addr(d, f"to-b{i}", f"10.77.{10 + i}.1/24")
            self._addr(d, f"to-b{i}", f"fd77:{10 + i}::1/64")
            self._addr(b, "eth0", f"10.77.{10 + i}.2/24")
            self._addr(b, "eth0", f"fd77:{10 + i}::2/64")
            sh(f"ip route add default via 10.77.{10 + i}.1", ns=b)
            sh(f"ip -6 route add default via fd77:{10 + i}::1", ns=b)
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", b, PY, TRAFFIC, "serve"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.netns_path = f"/run/netns/{d}"
        if self.alias_path:
            os.makedirs(os.path.dirname(self.alias_path), exist_ok=True)
            open(self.alias_path, "a").close()
            sh(f"mount --bind {self.netns_path} {self.alias_path}")
        self._wait_servers(nbackends)
        return self

    def _wait_servers(self, n: int) -> None:
        deadline = time.monotonic() + 30
        for i in range(1, n + 1):
            while True:
                out = sh("ss -Hltn sport = :8080", ns=self.backend(i), check=False)
                if "8080" in out:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("backend servers did not start")
                time.sleep(0.1)

    def ipvs(self, rules: str) -> None:
        """Load services with `ipvsadm -R` (one rule a line, ipvsadm -S syntax)."""
        sh("ipvsadm -R", ns=self.director, input=rules.strip() + "\n")

    def mangle(self, rules: list[str], v6: bool = False) -> None:
        tool = "ip6tables" if v6 else "iptables"
        for r in rules:
            sh(f"{tool} -t mangle {r}", ns=self.director)

    def send(self, kind: str, host: str, port: int, count: int = 1, size: int = 100) -> str:
        return sh(f"{PY} {TRAFFIC} {kind} {host} {port} {count} {size}", ns=self.client)

    def send_many(self, flows: list[tuple]) -> str:
        """flows: (kind, host, port, count, size) tuples, all sent by one client process."""
        specs = " ".join(",".join(str(x) for x in f) for f in flows)
        return sh(f"{PY} {TRAFFIC} multi {specs}", ns=self.client)

    def teardown(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        if self.alias_path:
            subprocess.run(["umount", self.alias_path], capture_output=True)
            try:
                os.unlink(self.alias_path)
            except OSError:
                pass
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# The standard service mix: TCP, UDP, fwmark v4/v6, IPv6, persistence, schedulers,
# forwarding methods, weights incl. 0, thresholds.
STANDARD_RULES = """
-A -t 10.77.100.1:80 -s rr
-a -t 10.77.100.1:80 -r 10.77.11.2:8080 -m -w 1
-a -t 10.77.100.1:80 -r 10.77.12.2:8080 -m -w 2 -x 100 -y 10
-A -u 10.77.100.1:53 -s wrr
-a -u 10.77.100.1:53 -r 10.77.11.2:5353 -m -w 1
-a -u 10.77.100.1:53 -r 10.77.12.2:5353 -m -w 1
-A -f 260 -s rr
-a -f 260 -r 10.77.11.2:8080 -m -w 1
-a -f 260 -r 10.77.12.2:8080 -m -w 1
-A -f 261 -6 -s rr
-a -f 261 -6 -r [fd77:11::2]:8080 -m -w 1
-A -t [fd77:100::1]:80 -s lc
-a -t [fd77:100::1]:80 -r [fd77:11::2]:8080 -m -w 1
-a -t [fd77:100::1]:80 -r [fd77:12::2]:8080 -m -w 0
-A -t 10.77.100.1:443 -s sh -p 300
-a -t 10.77.100.1:443 -r 10.77.11.2:8080 -m -w 1
-A -t 10.77.100.1:8081 -s wlc
-a -t 10.77.100.1:8081 -r 10.77.11.2:8081 -g -w 1
-a -t 10.77.100.1:8081 -r 10.77.12.2:8081 -i -w 1
"""

# Docker Swarm writes exactly this shape into ingress_sbox's mangle table.
STANDARD_MANGLE_V4 = [
    "-A PREROUTING -d 10.77.100.2/32 -p tcp -m tcp --dport 30000 -j MARK --set-xmark 0x104/0xffffffff",
]
STANDARD_MANGLE_V6 = [
    "-A PREROUTING -d fd77:100::2/128 -p tcp -m tcp --dport 30001 -j MARK --set-xmark 0x105/0xffffffff",
]


def standard_traffic(lab: Lab) -> None:
    lab.send_many([("tcp", "10.77.100.1", 80, 5, 300),
                   ("udp", "10.77.100.1", 53, 7, 60),
                   ("tcp", "10.77.100.2", 30000, 3, 200),
                   ("tcp", "fd77:100::2", 30001, 2, 150),
                   ("tcp", "fd77:100::1", 80, 4, 500),
                   ("tcp", "10.77.100.1", 443, 2, 100)])


def stable(read, settle: float = 2.5, tries: int = 20):
    """Call read() until two consecutive results agree with a value read in between.

    The kernel folds per-CPU counters into the exported stats every 2 s
    (estimator), so after traffic stops we wait for that, then read the
    kernel's view, ours, and the kernel's again: equal bracketing reads mean
    nothing moved while ours was taken, so the comparison can be exact.
    `read` returns (kernel_view, ours, kernel_view_again).
    """
    time.sleep(settle)
    last = None
    for _ in range(tries):
        before, ours, after = read()
        if before == after:
            return before, ours
        last = (before, after)
        time.sleep(0.5)
    raise AssertionError(f"kernel view never settled: {last}")
