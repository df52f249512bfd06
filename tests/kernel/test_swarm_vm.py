"""A real Docker Swarm node in the VM (tests/kernel/swarmnode.py): dockerd,
`docker swarm init`, services published through the routing mesh -- Docker
itself writes the fwmark services of ingress_sbox and lb_* and their mangle
rules -- and real TCP and UDP traffic through them.

* Swarm names (--docker.host, the exporter from this tree): every fwmark of
  ingress_sbox and of an overlay network's lb_* namespace gets its service's
  name, id, published port and stack; a service created after start appears
  within one refresh; stopping dockerd leaves scrapes working (the names go,
  ipvs_up stays 1).
* The stack: the image the host stage built (deploy/docker/build.sh, saved
  with `docker save` to the cache, loaded here with `docker load`), deployed
  with `docker stack deploy -c deploy/swarm/stack.yml`; its published ports,
  connection and byte counters equal `ipvsadm -Ln --stats --exact` in
  ingress_sbox, its names equal Docker's, and a service published after it
  started is in the next scrape.

One dockerd and one Swarm serve the module; the image is loaded in the
background while the workload services start (busybox httpd from a local
image; the UDP service runs tests/kernel/traffic.py in the exporter image).
The tests run in file order: the last one stops dockerd. conftest runs this
module before the tests that borrow /var/run/docker/netns/ingress_sbox for a
simulated one. Timings are printed at the end ("swarm timings").
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
from ..docker_engine import CACHE, IMAGE, IMAGE_TARBALL, ROOT, source_key, version
from . import topo
from .swarmnode import ADDR, DATA, NETNS_DIR, SwarmNode, kernel_marks, wait_for

pytestmark = pytest.mark.kernel

SBOX = os.path.join(NETNS_DIR, "ingress_sbox")
LB_GLOB = os.path.join(NETNS_DIR, "lb_*")
SOCKET = "unix:///var/run/docker.sock"
REFRESH = 3.0                   # --docker.refresh-interval of the exporter from this tree
STACK = "ipvs"
WEB, API1, API2, DNS, LATE, LATE2 = 30080, 30081, 30082, 30053, 30090, 30091
TRAFFIC = str(ROOT / "tests/kernel/traffic.py")
DROP_IN = {"ipvs_services_total", "ipvs_connections_total", "ipvs_bytes_in_total",
           "ipvs_bytes_out_total", "ipvs_destination_total",
           "ipvs_destination_active_connections_total",
           "ipvs_destination_inactive_connections_total", "ipvs_destination_bytes_in_total",
           "ipvs_destination_bytes_out_total", "ipvs_destination_connections_total"}
# The stack file as shipped, plus what emulation needs: a first collection
# and the health check's interpreter start take seconds here.
EMULATION_OVERRIDE = """\
version: "3.8"
services:
  exporter:
    environment:
      IPVS_FAST_SCRAPE_TIMEOUT: "120"
    healthcheck:
      interval: 5s
      timeout: 120s
      start_period: 300s
      retries: 3
"""


class Loader:
    """`docker load` of the host stage's image tarball, in the background."""

    def __init__(self, node: SwarmNode):
        self.node = node
        self.error = None
        self.load = None
        key = CACHE / "ipvs-fast-exporter.key"
        if not IMAGE_TARBALL.exists() or not key.exists() or key.read_text().strip() != source_key():
            self.error = (f"no image saved from this tree at {IMAGE_TARBALL} (key {key}): the "
                          "host stage builds and saves it (tests/kernel/run-in-vm.sh runs "
                          "tests/image_tarball.py before booting; tests/test_image.py too)")
            return
        self.start = time.monotonic()
        self.load = topo.Background(["/usr/bin/docker", "load", "-i", str(IMAGE_TARBALL)])

    def wait(self, timeout: float = 600) -> str:
        """The image's name once `docker load` is done (fails the test otherwise)."""
        if self.error:
            pytest.fail(self.error)
        try:
            self.load.wait(max(timeout - (time.monotonic() - self.start), 1))
        except RuntimeError as e:
            pytest.fail(f"{e}\n{self.node.logs()}")
        finally:
            if "docker load" not in self.node.timings:
                self.node.mark("docker load (background)", self.start)
        return f"{IMAGE}:{version()}"

    def kill(self) -> None:
        if self.load is not None and self.load.proc.poll() is None:
            self.load.proc.kill()
            self.load.proc.wait()


class Ctx:
    def __init__(self, node: SwarmNode, loader: Loader, busybox: str):
        self.node, self.loader, self.busybox = node, loader, busybox


def httpd(node: SwarmNode, image: str, name: str, *opts, replicas: int = 1, port: int = 80):
    node.docker("service", "create", "--detach", "--no-resolve-image", "--name", name,
                "--replicas", str(replicas), *opts, image, "httpd", "-f", "-p", str(port),
                "-h", "/www")


@pytest.fixture(scope="module")
def swarm(ip_vs_module, request):
    node = SwarmNode()
    loader = None
    start = time.monotonic()
    ok = False
    try:
        node.start()
        t = time.monotonic()
        loader = Loader(node)
        # a single-node Swarm on the dummy link's address (the VM has no other)
        node.docker("swarm", "init", "--advertise-addr", ADDR, "--listen-addr", f"{ADDR}:2377")
        t = node.mark("swarm init", t)
        busybox = node.import_busybox()
        node.docker("network", "create", "-d", "overlay", "--subnet", "10.198.7.0/24", "backend")
        # two services through the routing mesh (one with two published
        # ports), one with a VIP on an overlay network only
        httpd(node, busybox, "web", "--publish", f"{WEB}:80", "--replicas", "2",
              "--label", "com.docker.stack.namespace=shop")
        httpd(node, busybox, "api", "--publish", f"{API1}:81", "--publish", f"{API2}:81",
              port=81)
        httpd(node, busybox, "db", "--network", "backend", port=82)
        node.wait_running({"web": 2, "api": 1, "db": 1})
        node.mark("workload services", t)
        yield Ctx(node, loader, busybox)
        ok = True
    finally:
        t = time.monotonic()
        if loader is not None:
            loader.kill()
        node.stop()
        node.mark("teardown", t)
        node.mark("module total", start)
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        line = "swarm timings (s): " + ", ".join(f"{k} {v}" for k, v in node.timings.items())
        if tr is not None:
            tr.write_line("\n" + line)
        print(line)
    if ok:
        assert not node.cleanup_errors, node.cleanup_errors
        left = [m for m in open("/proc/self/mounts").read().split("\n")
                if " /run/docker" in m or str(DATA) in m]
        assert not left, f"mounts left behind: {left}"


# -- Swarm names (the exporter from this tree) ------------------------------------------

def info(e) -> dict:
    """{(namespace path, fwmark): labels} of ipvs_swarm_service_info."""
    return {(dict(lab)["namespace"], int(dict(lab)["fwmark"])): dict(lab)
            for (n, lab), v in e.samples().items() if n == "ipvs_swarm_service_info" and v == 1}


def info_from_text(text: str) -> dict:
    return {(s.labels["namespace"], int(s.labels["fwmark"])): s.labels
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "ipvs_swarm_service_info" and s.value == 1}


def truth(node: SwarmNode, networks: list) -> dict:
    """{(namespace path, fwmark): service name} as Docker reports it, for
    every namespace of *networks* ("ingress" -> ingress_sbox)."""
    out = {}
    for net in networks:
        path = SBOX if net == "ingress" else node.lb_path(net)
        out.update({(path, mark): name for mark, name in node.lb_marks(net).items()})
    return out


def kernel_view(paths: list) -> set:
    return {(p, m) for p in paths for m in kernel_marks(p)}


def check_names(node: SwarmNode, got: dict, want: dict, ports: dict, stacks: dict) -> None:
    """Every fwmark Docker names (want) named alike by the exporter, with the
    service's id, one of its published ports (ingress_sbox; "" in lb_*) and
    its stack; and nothing named that Docker does not name."""
    ids = {}
    for key, name in sorted(want.items()):
        assert key in got, (key, name, sorted(got))
        labels = got[key]
        assert labels["service_name"] == name, (key, labels, want)
        if name not in ids:
            ids[name] = node.docker("service", "inspect", name, "--format",
                                    "{{.ID}}").stdout.strip()
        assert labels["service_id"] == ids[name], (labels, ids[name])
        if key[0] == SBOX:
            assert labels["port"] in {str(p) for p in ports[name]}, labels
        else:
            assert labels["port"] == "", labels
        assert labels["stack"] == stacks.get(name, ""), labels
    assert set(got) <= set(want), sorted(set(got) - set(want))


def test_swarm_service_names_vm(swarm, exporter):
    node = swarm.node
    t = time.monotonic()
    lb = node.lb_path("backend")
    # Docker wrote the services into the kernel: web and api in the routing
    # mesh, db behind its VIP on the overlay network
    wait_for("the routing mesh and the VIP in the kernel",
             lambda: len(kernel_marks(SBOX)) >= 2 and len(kernel_marks(lb)) >= 1, 240)
    want = truth(node, ["ingress", "backend"])
    assert set(want) == kernel_view([SBOX, lb]), (want, kernel_view([SBOX, lb]))
    assert sorted(want.values()) == ["api", "db", "web"], want
    e = exporter("--namespace-path", SBOX, "--namespace-path", LB_GLOB,
                 "--docker.host", SOCKET, "--docker.refresh-interval", str(REFRESH))
    got = wait_for("the names", lambda: (lambda i: i if set(i) >= set(want) else None)(info(e)),
                   60, 1)
    ports = {"web": [WEB], "api": [API1, API2], "db": [], "late": [LATE]}
    check_names(node, got, want, ports, {"web": "shop"})
    # the drop-in series are what they always were
    s = e.samples()
    assert s[("ipvs_up", (("namespace", SBOX),))] == 1
    assert s[("ipvs_up", (("namespace", lb),))] == 1
    assert any(n == "ipvs_connections_total" and dict(lab).get("port") == str(WEB)
               for (n, lab) in s)
    t = node.mark("names", t)

    # A service created now (published, and on the overlay network) is
    # named within one refresh of the kernel having it.
    before = kernel_view([SBOX, lb])
    httpd(node, swarm.busybox, "late", "--publish", f"{LATE}:80", "--network", "backend")
    wait_for("the late service in both namespaces",
             lambda: {p for p, _ in kernel_view([SBOX, lb]) - before} == {SBOX, lb}, 300, 1,
             lambda: node.service_ps("late"))
    seen = time.monotonic()
    want = truth(node, ["ingress", "backend"])
    got = wait_for("the late service's names",
                   lambda: (lambda i: i if set(i) >= set(want) else None)(info(e)),
                   REFRESH + 60, 0.5)
    took = time.monotonic() - seen
    node.timings["late name after kernel"] = round(took, 1)
    check_names(node, got, want, ports, {"web": "shop"})
    assert sum(1 for v in got.values() if v["service_name"] == "late") == 2, got
    # one refresh, plus what one refresh and one scrape take under emulation
    assert took <= REFRESH + 30, took
    node.mark("late service named", t)


# -- the stack ------------------------------------------------------------------------

def mangle_ports(ns: str) -> dict:
    """{fwmark: published port} from the PREROUTING MARK rules Docker wrote (last wins)."""
    out = {}
    for line in topo.sh(f"nsenter --net={ns} iptables-save -t mangle").splitlines():
        m = re.search(r"^-A PREROUTING .*--dport (\d+) .*--set-x?mark (0x[0-9a-f]+)", line)
        if m:
            out[int(m.group(2), 16)] = m.group(1)
    return out


def expected(ns: str = SBOX) -> dict:
    """What the exporter must serve for ingress_sbox: ipvsadm's counters,
    the published ports from the mangle table."""
    stats = ipv.parse_listing(topo.sh(f"nsenter --net={ns} ipvsadm -Ln --stats --exact"), 5)
    plain = ipv.parse_plain(topo.sh(f"nsenter --net={ns} ipvsadm -Ln"))
    ports = mangle_ports(ns)

    def service_labels(key):
        assert key[0] == "FWM", key           # the routing mesh is fwmark services only
        return {"fwmark": str(key[2]), "port": ports[key[2]]}

    return ipv.ingress_series(stats, plain, ns, service_labels)


def served(text: str, ns: str = SBOX) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name in DROP_IN and s.labels.get("namespace") == ns}


def ups(text: str) -> dict:
    return {s.labels["namespace"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "ipvs_up"}


def test_stack_deploy_agrees_with_ipvsadm_vm(swarm):
    node = swarm.node
    t = time.monotonic()
    image = swarm.loader.wait()
    t = node.mark("waited for docker load", t)
    # UDP through the routing mesh: traffic.py's echo server, in the image just loaded
    node.docker("service", "create", "--detach", "--no-resolve-image", "--name", "dns",
                "--publish", f"published={DNS},target=5353,protocol=udp",
                "--mount", f"type=bind,source={ROOT}/tests/kernel,target=/t,readonly",
                "--entrypoint", "python3", "--no-healthcheck", image, "/t/traffic.py", "serve")
    override = DATA / "emulation.yml"
    override.write_text(EMULATION_OVERRIDE)
    r = subprocess.run(["/usr/bin/docker", "--host", SOCKET, "stack", "deploy",
                        "--resolve-image", "never", "-c", str(ROOT / "deploy/swarm/stack.yml"),
                        "-c", str(override), STACK],
                       env={**os.environ, "IPVS_FAST_IMAGE": image}, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Ignoring unsupported options" not in r.stderr, r.stderr   # cap_add/cap_drop applied
    node.wait_running({"dns": 1, f"{STACK}_exporter": 1})
    cid = node.docker("ps", "-q", "--filter",
                      f"label=com.docker.swarm.service.name={STACK}_exporter").stdout.split()
    assert len(cid) == 1, cid
    state = json.loads(node.docker("inspect", cid[0]).stdout)[0]
    pid = state["State"]["Pid"]
    t = node.mark("stack deploy + dns service", t)

    # Least privilege as deployed: NET_ADMIN + SYS_ADMIN and nothing else, a
    # read-only root, the Docker socket read-only.
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    with open(f"/proc/{pid}/status") as f:
        capeff = next(line.split()[1] for line in f if line.startswith("CapEff"))
    assert int(capeff, 16) == (1 << 12) | (1 << 21), capeff      # CAP_NET_ADMIN | CAP_SYS_ADMIN
    sock = [m for m in state["Mounts"] if m["Destination"] == "/var/run/docker.sock"]
    assert len(sock) == 1 and sock[0]["RW"] is False, state["Mounts"]

    def scrape() -> str:
        # the exporter's port is on the overlay network only: read it from
        # inside its network namespace
        return topo.sh(f"nsenter --net=/proc/{pid}/ns/net curl -sf --max-time 120 "
                       "http://127.0.0.1:9100/metrics")

    # Real traffic through the routing mesh: HTTP to web's two replicas and
    # api's two ports, UDP to dns.
    topo.sh(f"python3 {TRAFFIC} multi http,{ADDR},{WEB},6,300 http,{ADDR},{API1},2,100 "
            f"http,{ADDR},{API2},3,50 udp,{ADDR},{DNS},5,80")
    t = node.mark("traffic", t)

    body = {}

    def read():
        before = expected()
        body["text"] = scrape()
        return before, served(body["text"]), expected()

    want, got = topo.stable(read)
    assert got == want
    # every namespace the stack's globs matched is read
    assert ups(body["text"]).get(SBOX) == 1.0, ups(body["text"])
    assert all(v == 1.0 for v in ups(body["text"]).values()), ups(body["text"])
    # the published ports are Docker's, each service's destinations its tasks
    conns = {dict(lab)["port"]: (dict(lab)["fwmark"], v)
             for (n, lab), v in got.items() if n == "ipvs_connections_total"}
    published = {"web": {WEB}, "api": {API1, API2}, "dns": {DNS}, "late": {LATE}}
    mesh = node.lb_marks("ingress")          # what Docker has in the routing mesh
    assert {"web", "api", "dns"} <= set(mesh.values()) <= set(published), mesh
    assert len(conns) == len(mesh), (conns, mesh)
    for mark, name in mesh.items():
        port = next(p for p in conns if conns[p][0] == str(mark))
        assert int(port) in published[name], (name, port, conns)
    for service, port in (("web", WEB), ("dns", DNS)):
        dests = {dict(lab)["address"] for (n, lab) in got
                 if n == "ipvs_destination_connections_total" and dict(lab)["port"] == str(port)}
        assert dests == node.task_addresses(service), (service, dests)
    assert conns[str(WEB)][1] >= 6, conns
    dns = dict(port=str(DNS), fwmark=conns[str(DNS)][0], namespace=SBOX)
    assert got[("ipvs_bytes_in_total", tuple(sorted(dns.items())))] >= 5 * 80
    assert got[("ipvs_bytes_out_total", tuple(sorted(dns.items())))] >= 5 * 81   # echoed
    t = node.mark("counters agree", t)

    # The names, from the deployed stack (--docker.host, the socket mounted
    # read-only): every fwmark of ingress_sbox and of each lb_* namespace,
    # the stack's own VIP on its monitoring network among them. Its refresh
    # is the default 30 s.
    networks = ["ingress", "backend", f"{STACK}_monitoring"]
    want = truth(node, networks)
    assert set(want) == kernel_view(sorted({p for p, _ in want})), want
    names = wait_for("the stack exporter's names",
                     lambda: (lambda i: i if set(i) >= set(want) else None)(
                         info_from_text(scrape())), 90, 3)
    ports = {"web": [WEB], "api": [API1, API2], "dns": [DNS], "db": [], "late": [LATE],
             f"{STACK}_exporter": []}
    check_names(node, names, want, ports, {"web": "shop", f"{STACK}_exporter": STACK})
    assert names[(node.lb_path(f"{STACK}_monitoring"),
                  next(m for (p, m), n in want.items() if n == f"{STACK}_exporter"))
                 ]["stack"] == STACK
    t = node.mark("stack names", t)

    # A service published after the exporter started is in the next scrape.
    httpd(node, swarm.busybox, "late2", "--publish", f"{LATE2}:80")
    node.wait_running({"late2": 1})
    wait_for("late2 in ingress_sbox", lambda: str(LATE2) in mangle_ports(SBOX).values(), 120, 1)
    topo.sh(f"python3 {TRAFFIC} multi http,{ADDR},{LATE2},2,100")
    want, got = topo.stable(read)
    assert got == want
    late = {dict(lab)["port"]: v for (n, lab), v in got.items() if n == "ipvs_connections_total"}
    assert late.get(str(LATE2)) == 2, late
    node.mark("late service counted", t)


# -- dockerd stopped (last: the module's dockerd is gone afterwards) ---------------------

def test_scrapes_survive_dockerd_stopping_vm(swarm, exporter):
    node = swarm.node
    t = time.monotonic()
    e = exporter("--namespace-path", SBOX, "--namespace-path", LB_GLOB,
                 "--docker.host", SOCKET, "--docker.refresh-interval", str(REFRESH))
    wait_for("names", lambda: info(e), 60, 1)
    before = set(ups(e.get()))
    node.stop_dockerd()
    t = node.mark("dockerd stopped", t)
    # dockerd has exited: nothing changes the namespaces any more. Those
    # still mounted (ingress_sbox at least) are live namespaces and must stay
    # up; one Docker tore down on shutdown (the load balancer of a network
    # whose last container it stopped) is rightly ipvs_up 0 while its file
    # is left, or gone from the glob.
    live = {p for p in mounts_under(NETNS_DIR)
            if p == SBOX or os.path.basename(p).startswith("lb_")}     # what the globs match
    assert SBOX in live, live
    node.timings["namespaces live after stop"] = f"{len(live)} of {len(before)}"
    node.progress(f"after dockerd stopped: live {sorted(live)}, before {sorted(before)}")

    def check(up: dict) -> None:
        assert up.get(SBOX) == 1.0, up
        assert {p for p, v in up.items() if v == 1.0} == live & set(up), (up, live)
        assert live <= set(up), (up, live)

    for _ in range(3):
        t0 = time.monotonic()
        text = e.get()
        assert time.monotonic() - t0 < 20
        check(ups(text))
        time.sleep(REFRESH)
    wait_for("the names to go", lambda: not info(e), 3 * REFRESH + 30, 1)
    check(ups(e.get()))
    check_state_lines(e.logtext())
    node.mark("scrapes without dockerd", t)


def check_state_lines(log: str) -> None:
    """One log line per state change, however many refreshes failed since:
    reachable once, then unavailable -- again only when the reason changes
    (a stopping dockerd first answers 503, then its socket is gone)."""
    lines = [x for x in log.splitlines() if "swarm names: Docker API" in x]
    reasons = [re.search(r"unavailable \((.*)\);", x).group(1) for x in lines[1:]]
    assert lines and "reachable" in lines[0] and "unavailable" not in lines[0], lines
    assert 1 <= len(reasons) <= 3, lines
    assert all(a != b for a, b in zip(reasons, reasons[1:])), lines


def mounts_under(directory: str) -> set:
    """Mount points directly in *directory* (a namespace file is one while it
    pins a namespace), named under *directory* as given (/var/run is /run)."""
    real = os.path.realpath(directory)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return {os.path.join(directory, os.path.basename(p)) for p in points
            if os.path.dirname(p) == real}
