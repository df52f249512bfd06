"""A real Docker Swarm node in the VM, with the exporter deployed by
`docker stack deploy -c deploy/swarm/stack.yml`.

dockerd runs here on a tmpfs (the VM's root is the host's, read-only), with
its default exec root so Swarm's namespaces are /var/run/docker/netns/*,
iptables on. Docker itself writes the routing mesh: the fwmark services in
ingress_sbox and the mangle rules that mark published ports. The image is
the one tests/test_image.py built on the host and saved (docker save) into
the cache; it is loaded here with docker load. Nothing is pulled: services
are created with --no-resolve-image, there is no default route, and the
resolver points at loopback.

Runs before the other kernel tests (conftest sorts it first after the
ip_vs_absent ones): this engine keeps Docker's default exec root, as the
stack file expects /var/run/docker/netns, and the session's standard lab
later borrows /var/run/docker/netns/ingress_sbox for its own namespace.
(test_swarm_vm.py runs its own engine under a separate exec root.)
"""
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .. import ipvsadm_text as ipv
from ..docker_engine import IMAGE, IMAGE_TARBALL, ROOT, CACHE, DockerEngine, source_key, version
from . import topo

pytestmark = pytest.mark.kernel

INGRESS_SBOX = "/var/run/docker/netns/ingress_sbox"
STACK = "ipvs"
WEB_PORT, DNS_PORT, LATE_PORT = 18080, 18053, 18090
TRAFFIC = str(ROOT / "tests/kernel/traffic.py")
DATA = Path("/run/ipvs-fast-swarm")
EMULATION_OVERRIDE = """\
version: "3.8"
services:
  exporter:
    environment:
      IPVS_FAST_SCRAPE_TIMEOUT: "120"
    healthcheck:
      interval: 60s
      timeout: 120s
      start_period: 600s
      retries: 10
"""


def wait_for(what: str, check, timeout: float = 600, every: float = 3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Swarm:
    def __init__(self, engine: DockerEngine):
        self.engine = engine
        self.docker = engine.docker
        self.timings = {}

    def mark(self, name: str, start: float) -> None:
        self.timings[name] = round(time.monotonic() - start, 1)

    def service(self, name: str, published: int, proto: str, replicas: int) -> None:
        """traffic.py serve (TCP 8080, UDP 5353) behind a routing-mesh port."""
        target = 8080 if proto == "tcp" else 5353
        self.docker("service", "create", "--no-resolve-image", "--detach", "--name", name,
                    "--replicas", str(replicas),
                    "--publish", f"published={published},target={target},protocol={proto}",
                    "--mount", f"type=bind,source={ROOT}/tests/kernel,target=/t,readonly",
                    "--entrypoint", "python3", "--no-healthcheck",
                    f"{IMAGE}:{version()}", "/t/traffic.py", "serve")

    def running_tasks(self, service: str) -> list:
        out = self.docker("service", "ps", service, "--filter", "desired-state=running",
                          "--format", "{{.CurrentState}}").stdout.split("\n")
        return [line for line in out if line.startswith("Running")]

    def wait_running(self, service: str, replicas: int) -> None:
        try:
            wait_for(f"{service}: {replicas} running tasks",
                     lambda: len(self.running_tasks(service)) >= replicas)
        except AssertionError as e:
            # why the tasks did not run, in Docker's words
            ps = self.docker("service", "ps", "--no-trunc", service, check=False).stdout
            log = self.engine.log_text()[-4000:]
            raise AssertionError(f"{e}\n{ps}\ndockerd log (tail):\n{log}") from None

    def task_addresses(self, service: str) -> set:
        """Addresses of the service's running tasks on the ingress network (the
        IPVS destinations Docker must have written)."""
        ids = self.docker("service", "ps", service, "--filter", "desired-state=running",
                          "-q", "--no-trunc").stdout.split()
        tasks = json.loads(self.docker("inspect", *ids).stdout)
        out = set()
        for t in tasks:
            for att in t.get("NetworksAttachments", []):
                if att["Network"]["Spec"]["Name"] == "ingress":
                    out |= {a.split("/")[0] for a in att["Addresses"]}
        return out

    def exporter_container(self) -> str:
        return wait_for("the exporter's container", lambda: self.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_exporter",
            "--filter", "status=running").stdout.strip())

    def scrape(self) -> str:
        """/metrics from inside the exporter's container (its port is on the
        overlay network only; Prometheus reaches it there)."""
        return self.docker("exec", self.exporter_container(), "python", "-c",
                           "import urllib.request as u; import sys; sys.stdout.write(u.urlopen("
                           "'http://127.0.0.1:9100/metrics', timeout=60).read().decode())",
                           timeout=120).stdout


@pytest.fixture(scope="module")
def stack_node(ip_vs_module):
    key_file = CACHE / "ipvs-fast-exporter.key"
    if not IMAGE_TARBALL.exists() or not key_file.exists() \
            or key_file.read_text().strip() != source_key():
        pytest.fail(f"no image saved from this tree at {IMAGE_TARBALL}: the host stage "
                    "(tests/test_image.py, or tests/run-all.sh) builds and saves it")
    # As on a systemd host: mounts propagate, so a namespace Docker creates
    # later reaches the exporter's rslave bind mount.
    subprocess.run(["mount", "--make-rshared", "/"], check=True)
    # Nothing resolves: the agent's pull attempts (it tries even for a local
    # image) fail at once, on this machine.
    resolv = Path("/etc/resolv.conf")
    saved_resolv = resolv.read_text()
    resolv.write_text("nameserver 127.0.0.1\n")
    DATA.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200m", "ipvs-fast-swarm", str(DATA)],
                   check=True)
    engine = DockerEngine(DATA / "docker", storage_driver="overlay2", host_only=False,
                          own_containerd=True, log=Path("/tmp/ipvs-fast-swarm-dockerd.log"))
    sw = Swarm(engine)
    start = time.monotonic()
    try:
        engine.start(timeout=900)
        sw.mark("dockerd", start)
        t = time.monotonic()
        engine.docker("load", "-i", str(IMAGE_TARBALL), timeout=900)
        sw.mark("docker load", t)
        t = time.monotonic()
        # a single-node Swarm advertising loopback: nothing here has another address
        engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=300)
        sw.mark("swarm init", t)
        yield sw
    finally:
        print("swarm timings (s):", sw.timings)
        engine.docker("swarm", "leave", "--force", check=False, timeout=300)
        engine.stop()
        subprocess.run(["umount", "-l", str(DATA)], capture_output=True)
        resolv.write_text(saved_resolv)
        # what Docker leaves behind would shadow the lab's ingress_sbox alias,
        # or meet the next engine's bridges
        for ns in Path("/var/run/docker/netns").glob("*"):
            subprocess.run(["umount", "-l", str(ns)], capture_output=True)
            ns.unlink(missing_ok=True)
        for link in ("docker_gwbridge", "docker0"):
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def mangle_ports(ns: str) -> dict:
    """{fwmark: published port} from the MARK rules Docker wrote (last rule wins)."""
    out = {}
    for line in topo.sh("iptables-save -t mangle", ns=ns).splitlines():
        m = re.search(r"--dport (\d+) .*--set-x?mark (0x[0-9a-f]+)", line)
        if m:
            out[int(m.group(2), 16)] = m.group(1)
    return out


def expected(ns_path: str) -> dict:
    """What the exporter must serve for ingress_sbox, from ipvsadm and iptables."""
    stats = ipv.parse_listing(topo.ipvsadm("-Ln --stats --exact", ns_path), 5)
    plain = ipv.parse_plain(topo.ipvsadm("-Ln", ns_path))
    ports = mangle_ports(ns_path)
    out = {("ipvs_services_total", (("namespace", INGRESS_SBOX),)): float(len(stats))}
    for key, entry in stats.items():
        assert key[0] == "FWM", key           # the routing mesh is fwmark services only
        labels = {"namespace": INGRESS_SBOX, "fwmark": str(key[2]), "port": ports[key[2]]}
        svc = tuple(sorted(labels.items()))
        conns, _, _, inbytes, outbytes = entry["values"]
        out[("ipvs_connections_total", svc)] = float(conns)
        out[("ipvs_bytes_in_total", svc)] = float(inbytes)
        out[("ipvs_bytes_out_total", svc)] = float(outbytes)
        out[("ipvs_destination_total", svc)] = float(len(entry["dests"]))
        for (host, port), dvals in entry["dests"].items():
            dl = dict(labels, address=host)
            if port:
                dl["destination_port"] = str(port)
            dl = tuple(sorted(dl.items()))
            _, _, active, inactive = plain[key]["dests"][(host, port)]
            out[("ipvs_destination_active_connections_total", dl)] = float(active)
            out[("ipvs_destination_inactive_connections_total", dl)] = float(inactive)
            out[("ipvs_destination_connections_total", dl)] = float(dvals[0])
            out[("ipvs_destination_bytes_in_total", dl)] = float(dvals[3])
            out[("ipvs_destination_bytes_out_total", dl)] = float(dvals[4])
    return out


def served(text: str, namespace: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("ipvs_") and s.labels.get("namespace") == namespace \
                    and s.name not in ("ipvs_up", "ipvs_scrape_duration_seconds"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def up(text: str) -> dict:
    return {s.labels["namespace"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "ipvs_up"}


def sbox_path() -> str:
    """ingress_sbox as the VM's tools reach it (the path the exporter reads
    in its container is the same file through the bind mount)."""
    return INGRESS_SBOX


def test_stack_exporter_agrees_with_ipvsadm_in_ingress_sbox(stack_node):
    swarm = stack_node
    t = time.monotonic()
    swarm.service("web", WEB_PORT, "tcp", replicas=2)
    swarm.service("dns", DNS_PORT, "udp", replicas=1)
    swarm.wait_running("web", 2)
    swarm.wait_running("dns", 1)
    swarm.mark("services", t)

    t = time.monotonic()
    env = {**swarm.engine.env, "IPVS_FAST_IMAGE": f"{IMAGE}:{version()}"}
    # The stack file as shipped, plus what emulation needs: a first
    # collection and the health check's interpreter start take seconds here.
    override = DATA / "emulation.yml"
    override.write_text(EMULATION_OVERRIDE)
    r = subprocess.run([swarm.engine.env["DOCKER"], "stack", "deploy", "--resolve-image", "never",
                        "-c", str(ROOT / "deploy/swarm/stack.yml"), "-c", str(override), STACK],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Ignoring unsupported options" not in r.stderr, r.stderr   # cap_add/cap_drop applied
    swarm.wait_running(f"{STACK}_exporter", 1)
    container = swarm.exporter_container()
    swarm.mark("stack deploy", t)

    # Least privilege as deployed: NET_ADMIN + SYS_ADMIN and nothing else, read-only root.
    state = json.loads(swarm.docker("inspect", container).stdout)[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    capeff = swarm.docker("exec", container, "grep", "CapEff", "/proc/1/status").stdout.split()[1]
    assert int(capeff, 16) == (1 << 12) | (1 << 21), capeff      # CAP_NET_ADMIN | CAP_SYS_ADMIN

    # Real traffic through the routing mesh: TCP to two replicas, UDP to one.
    t = time.monotonic()
    topo.sh(f"python3 {TRAFFIC} multi tcp,127.0.0.1,{WEB_PORT},6,300 "
            f"udp,127.0.0.1,{DNS_PORT},5,80")
    swarm.mark("traffic", t)

    body = {}

    def read():
        before = expected(sbox_path())
        body["text"] = swarm.scrape()
        return before, served(body["text"], INGRESS_SBOX), expected(sbox_path())

    want, got = topo.stable(read)
    assert got == want
    assert up(body["text"])[INGRESS_SBOX] == 1.0
    # every namespace the stack's glob matched was read
    assert all(v == 1.0 for v in up(body["text"]).values()), up(body["text"])
    # The routing mesh as Docker's API describes it: one fwmark service per
    # published port, its destinations the tasks' ingress addresses.
    ports = {labels: v for (name, labels), v in got.items() if name == "ipvs_connections_total"}
    by_port = {dict(labels)["port"]: dict(labels)["fwmark"] for labels in ports}
    assert set(by_port) == {str(WEB_PORT), str(DNS_PORT)}, by_port
    for service, port in (("web", WEB_PORT), ("dns", DNS_PORT)):
        dests = {dict(labels)["address"] for (name, labels) in got
                 if name == "ipvs_destination_connections_total" and dict(labels)["port"] == str(port)}
        assert dests == swarm.task_addresses(service), (service, dests)
    web = dict(next(labels for labels in ports if dict(labels)["port"] == str(WEB_PORT)))
    dns = dict(next(labels for labels in ports if dict(labels)["port"] == str(DNS_PORT)))
    assert got[("ipvs_connections_total", tuple(sorted(web.items())))] >= 6
    assert got[("ipvs_bytes_in_total", tuple(sorted(dns.items())))] >= 5 * 80

    # A service published after the exporter started is in the next scrape.
    t = time.monotonic()
    swarm.service("late", LATE_PORT, "tcp", replicas=1)
    swarm.wait_running("late", 1)
    swarm.mark("late service", t)
    topo.sh(f"python3 {TRAFFIC} multi tcp,127.0.0.1,{LATE_PORT},2,100")
    want, got = topo.stable(read)
    assert got == want
    late = {dict(labels)["port"] for (name, labels) in got if name == "ipvs_connections_total"}
    assert str(LATE_PORT) in late, late

    # Reachable the way Prometheus reaches it: over the stack's overlay network.
    t = time.monotonic()
    r = swarm.docker("run", "--rm", "--network", f"{STACK}_monitoring", "--entrypoint", "python3",
                     f"{IMAGE}:{version()}", "-c",
                     "import urllib.request as u; print(u.urlopen('http://tasks.ipvs_exporter:9100/healthz'"
                     ", timeout=60).read().decode())", timeout=600, check=False)
    swarm.mark("overlay scrape", t)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
