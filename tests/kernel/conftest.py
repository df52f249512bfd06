import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from . import topo

INGRESS_SBOX = "/var/run/docker/netns/ingress_sbox"


def pytest_collection_modifyitems(config, items):
    # Tests that need ip_vs *not* loaded run first, before anything loads it.
    # Then the real Swarm node (test_swarm_vm.py, in file order): its dockerd
    # owns /var/run/docker/netns/ingress_sbox, which the session's lab later
    # borrows for its simulated one.
    def order(item):
        if "ip_vs_absent" in getattr(item, "fixturenames", ()):
            return 0
        return 1 if "swarm" in getattr(item, "fixturenames", ()) else 2
    items.sort(key=order)


#: lines for the run's terminal summary (so CI's log shows them; a passing
#: test's own output is captured and dropped)
_NUMBERS: list = []


@pytest.fixture
def report(request):
    """``report(text)``: print *text* now and again in the terminal summary."""
    def add(text: str) -> None:
        print(text)
        _NUMBERS.append(f"{request.node.name}: {text}")
    return add


def pytest_terminal_summary(terminalreporter):
    if _NUMBERS:
        terminalreporter.section("numbers")
        for line in _NUMBERS:
            terminalreporter.write_line(line)


def ip_vs_loaded() -> bool:
    return os.path.exists("/sys/module/ip_vs")


@pytest.fixture(scope="session")
def ip_vs_module():
    """Load ip_vs (and sctp, so the backends' SCTP servers start). Only
    fixtures that need IPVS use this: the failure-mode tests need it absent."""
    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["modprobe", "sctp"], check=True)
    yield


@pytest.fixture
def ip_vs_absent():
    """ip_vs not loaded. Such tests are sorted first, so normally nothing has
    loaded it yet; otherwise unload it and its scheduler/helper modules."""
    if ip_vs_loaded():
        subprocess.run(["ipvsadm", "-C"], capture_output=True)
        deadline = time.monotonic() + 30
        while ip_vs_loaded():
            with open("/proc/modules") as f:
                mods = [line.split()[0] for line in f if line.startswith("ip_vs_")]
            subprocess.run(["rmmod", *mods], capture_output=True)
            subprocess.run(["rmmod", "ip_vs"], capture_output=True)
            if time.monotonic() > deadline:
                pytest.fail("cannot unload ip_vs (a namespace still holds IPVS services?)")
            time.sleep(0.5)
    assert not os.path.exists("/proc/net/ip_vs")
    yield
    # The exporter must never load the module itself.
    assert not ip_vs_loaded(), "ip_vs got loaded during a test that must not load it"


@pytest.fixture(scope="session")
def lab(ip_vs_module):
    """The standard topology, reachable at Docker's ingress_sbox path, with traffic.

    One for the whole session (building it takes most of a minute under
    emulation). Tests may add traffic; tests that add services remove them.
    Every comparison is bracketed (topo.stable), so no test depends on the
    exact counters another one left behind."""
    lab = topo.Lab(prefix="ipvsf", alias_path=INGRESS_SBOX)
    try:
        lab.build()
        lab.ipvs(topo.STANDARD_RULES)
        lab.mangle(topo.STANDARD_MANGLE_V4)
        lab.mangle(topo.STANDARD_MANGLE_V6, v6=True)
        topo.standard_traffic(lab)
        yield lab
    finally:
        lab.teardown()


def _bare(name: str, rules: str):
    ns = topo.Bare(name, rules)
    try:
        yield ns.build()
    finally:
        ns.teardown()


@pytest.fixture(scope="session")
def empty_ns(ip_vs_module):
    """A namespace without IPVS services."""
    yield from _bare("ipvsf-empty", "")


@pytest.fixture(scope="session")
def many_ns(ip_vs_module):
    """A namespace with 300 services of every kind (topo.mixed_rules)."""
    yield from _bare("ipvsf-many", topo.mixed_rules(300))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """`python -m ipvs_fast` on a free loopback port. `wrap` prefixes the
    command (e.g. capsh); wait=False returns at once (call wait_ready()), so
    several exporters can start in parallel."""

    def __init__(self, args, env=None, wrap=None, wait=True):
        self.port = free_port()
        self.log = open(f"/tmp/exporter-{self.port}.log", "w+")
        argv = [sys.executable, "-m", "ipvs_fast", "--listen-address", f"127.0.0.1:{self.port}",
                *args]
        if wrap:
            argv = wrap(argv)
        # Emulation makes a first collection (namespace open, iptables-save via
        # nsenter) take seconds; the default 10 s scrape deadline is for real
        # hardware. Deadlines themselves are tested on the host.
        env = dict(os.environ if env is None else env)
        env.setdefault("IPVS_FAST_SCRAPE_TIMEOUT", "120")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 300) -> "Exporter":
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/healthz")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not start: {self.logtext()}")
                time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path="/metrics", timeout=60) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def samples(self) -> dict:
        """One scrape as {(name, sorted label items): value}."""
        out = {}
        for fam in text_string_to_metric_families(self.get()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def up(self) -> float:
        ups = [v for (name, _), v in self.samples().items() if name == "ipvs_up"]
        assert len(ups) == 1, ups
        return ups[0]

    def logtext(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def exporter():
    started = []

    def start(*args, env=None, wrap=None, wait=True):
        e = Exporter(list(args), env=env, wrap=wrap, wait=wait)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()
