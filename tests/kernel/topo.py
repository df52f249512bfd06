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
import tempfile
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

    def start_traffic(self, seconds: float, flows: list[tuple]) -> "Background":
        """Repeat flows ((kind, host, port, count, size) tuples) from the client
        for `seconds` in a background process; Background.wait() collects it."""
        specs = [",".join(str(x) for x in f) for f in flows]
        return Background(["ip", "netns", "exec", self.client, PY, TRAFFIC, "loop",
                           str(seconds), *specs])

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


class Background:
    """A background command whose output goes to a temporary file."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 120) -> str:
        """Wait for the command to end; its output, or RuntimeError if it failed."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "timeout"
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        if rc != 0:
            raise RuntimeError(f"{' '.join(self.argv)} failed ({rc}): {text[-2000:]}")
        return text


@dataclass
class Bare:
    """A lone namespace with IPVS rules and no links (no traffic): for shapes
    of the service table rather than counters. Duck-types Lab's `director`
    and `netns_path`. lo must be up: until then the namespace has no local
    routing table and the kernel refuses every IPv4 destination (EINVAL)."""
    name: str
    rules: str = ""

    @property
    def director(self) -> str:
        return self.name

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    def build(self) -> "Bare":
        sh(f"ip netns add {self.name}")
        sh("ip link set lo up", ns=self.name)
        if self.rules.strip():
            sh("ipvsadm -R", ns=self.name, input=self.rules.strip() + "\n")
        return self

    def teardown(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def ip_vs_stats(ns: str) -> str:
    """/proc/net/ip_vs_stats as seen from inside namespace `ns`."""
    return sh("cat /proc/net/ip_vs_stats", ns=ns)


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


# SCTP services, added to the standard lab by the SCTP tests (backends serve SCTP on 8082).
SCTP_RULES = """
-A --sctp-service 10.77.100.1:9000 -s rr
-a --sctp-service 10.77.100.1:9000 -r 10.77.11.2:8082 -m -w 1
-a --sctp-service 10.77.100.1:9000 -r 10.77.12.2:8082 -m -w 1
-A --sctp-service [fd77:100::1]:9000 -s wrr
-a --sctp-service [fd77:100::1]:9000 -r [fd77:11::2]:8082 -m -w 3
"""


def mixed_rules(n: int) -> str:
    """n services of every kind (TCP/UDP/SCTP, IPv4/IPv6, fwmark v4/v6), with
    0..3 destinations, assorted schedulers, persistence, netmasks, forwarding
    methods, weights and thresholds: a service table spanning many datagrams."""
    scheds = ["rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq"]
    fwds = ["-m", "-g", "-i"]
    lines = []
    for i in range(n):
        kind = i % 6
        hi, lo = divmod(i, 250)
        if kind == 0:
            svc = f"-t 10.78.{hi}.{lo + 1}:80"
        elif kind == 1:
            svc = f"-u 10.78.{hi}.{lo + 1}:53"
        elif kind == 2:
            svc = f"--sctp-service 10.78.{hi}.{lo + 1}:9000"
        elif kind == 3:
            svc = f"-t [fd78::{i + 1:x}]:443"
        elif kind == 4:
            svc = f"-f {1000 + i}"
        else:
            svc = f"-f {1000 + i} -6"
        opts = f"-s {scheds[i % len(scheds)]}"
        if i % 7 == 0:
            opts += " -p 120" + (" -M 255.255.255.0" if kind in (0, 1, 2, 4) else "")
        lines.append(f"-A {svc} {opts}")
        v6 = kind in (3, 5)
        for j in range(i % 4):
            real = f"[fd77:{11 + j}::{i % 200 + 2:x}]" if v6 else f"10.77.{11 + j}.{i % 200 + 2}"
            # fwmark dests: no port (ipvsadm wants one after "[v6]", so :0 there)
            port = ":8080" if kind < 4 else ":0" if v6 else ""
            extra = f" -x {i % 50} -y {i % 10}" if j == 1 else ""
            lines.append(f"-a {svc} -r {real}{port} {fwds[(i + j) % 3]} -w {j}{extra}")
    return "\n".join(lines)


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
