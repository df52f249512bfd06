"""Docker Swarm service names against a real Swarm node in the VM
(tests/kernel/dockerd.py): two services published through the routing mesh
and one on an overlay network with a VIP; every fwmark of ingress_sbox and of
the overlay's lb_* namespace gets its service's name; a service created after
the exporter started appears within one refresh; stopping dockerd leaves
scrapes working (the names just go away)."""
import json
import os
import subprocess
import time

import pytest

from . import dockerd

pytestmark = pytest.mark.kernel

REFRESH = 3.0
ADDR = "10.199.0.1"


def wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def kernel_marks(path: str) -> set:
    """fwmarks of the IPVS services in the namespace at *path* (ipvsadm's view)."""
    p = subprocess.run(["nsenter", f"--net={path}", "ipvsadm", "-Ln"], capture_output=True,
                       text=True)
    return {int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("FWM ")}


@pytest.fixture(scope="module")
def swarm(ip_vs_module):
    if not dockerd.available():
        pytest.fail("docker.io / containerd / runc / busybox-static missing (tests/setup-env.sh)")
    subprocess.run(["ip", "link", "add", "ipvsf-swarm0", "type", "dummy"], check=True)
    subprocess.run(["ip", "addr", "add", f"{ADDR}/24", "dev", "ipvsf-swarm0"], check=True)
    subprocess.run(["ip", "link", "set", "ipvsf-swarm0", "up"], check=True)
    d = dockerd.Dockerd()
    try:
        d.start()
        d.docker("swarm", "init", "--advertise-addr", ADDR, "--listen-addr", f"{ADDR}:2377")
        image = d.import_busybox()
        d.docker("network", "create", "-d", "overlay", "--subnet", "10.198.7.0/24", "backend")
        create = ("service", "create", "--detach", "--no-resolve-image", "--replicas", "1")
        d.docker(*create, "--name", "web", "--publish", "30080:80",
                 "--label", "com.docker.stack.namespace=shop",
                 image, "httpd", "-f", "-p", "80", "-h", "/www")
        d.docker(*create, "--name", "api", "--publish", "30081:81", "--publish", "30082:82",
                 image, "httpd", "-f", "-p", "81", "-h", "/www")
        d.docker(*create, "--name", "db", "--network", "backend", image, "sleep", "100000")
        yield d, image
    finally:
        d.cleanup()
        subprocess.run(["ip", "link", "del", "ipvsf-swarm0"], capture_output=True)


def lb_path(d) -> str:
    net_id = d.docker("network", "inspect", "backend", "--format", "{{.Id}}").stdout.strip()
    return os.path.join(d.netns_dir, "lb_" + net_id[:9])


def docker_truth(d, network: str) -> dict:
    """{fwmark: service name} as Docker itself reports it (the network's verbose
    inspect: each service's LocalLBIndex is its fwmark on this node)."""
    out = json.loads(d.docker("network", "inspect", "--verbose", network).stdout)[0]
    return {int(v["LocalLBIndex"]): name for name, v in (out.get("Services") or {}).items()
            if name and v.get("LocalLBIndex")}


def info(e) -> dict:
    """{(namespace basename, fwmark): labels} of ipvs_swarm_service_info."""
    return {(os.path.basename(dict(lab)["namespace"]), int(dict(lab)["fwmark"])): dict(lab)
            for (n, lab), v in e.samples().items() if n == "ipvs_swarm_service_info" and v == 1}


def test_swarm_service_names_vm(swarm, exporter):
    d, image = swarm
    sbox = os.path.join(d.netns_dir, "ingress_sbox")
    # the kernel has the two routing-mesh services and the VIP service
    wait(lambda: os.path.exists(sbox) and len(kernel_marks(sbox)) >= 2, 240, "ingress_sbox")
    lb = lb_path(d)
    wait(lambda: os.path.exists(lb) and len(kernel_marks(lb)) >= 1, 240, "lb namespace")
    e = exporter("--namespace-path", sbox, "--namespace-path", os.path.join(d.netns_dir, "lb_*"),
                 "--docker.host", d.host, "--docker.refresh-interval", str(REFRESH))
    want = {("ingress_sbox", m) for m in kernel_marks(sbox)} | {
        (os.path.basename(lb), m) for m in kernel_marks(lb)}
    got = wait(lambda: (lambda i: i if set(i) >= want else None)(info(e)), 60, "names")
    ids = {n: d.docker("service", "inspect", n, "--format", "{{.ID}}").stdout.strip()
           for n in ("web", "api", "db")}
    truth = {("ingress_sbox", m): n for m, n in docker_truth(d, "ingress").items()}
    truth.update({(os.path.basename(lb), m): n for m, n in docker_truth(d, "backend").items()})
    names = {k: v["service_name"] for k, v in got.items()}
    assert {names[k] for k in want} == {"web", "api", "db"}, (names, truth)
    for k in want:
        assert names[k] == truth[k], (k, names, truth)
        assert got[k]["service_id"] == ids[names[k]]
        assert got[k]["port"] in {"web": {"30080"}, "api": {"30081", "30082"},
                                  "db": {""}}[names[k]], got[k]
        assert got[k]["stack"] == ("shop" if names[k] == "web" else ""), got[k]
    # the drop-in series are what they always were
    s = e.samples()
    assert s[("ipvs_up", (("namespace", sbox),))] == 1
    assert any(n == "ipvs_connections_total" and dict(lab).get("port") == "30080"
               for (n, lab) in s)

    # a service created now shows up within one refresh of the kernel having it
    before = kernel_marks(lb)
    d.docker("service", "create", "--detach", "--no-resolve-image", "--name", "late",
             "--network", "backend", image, "sleep", "100000")
    wait(lambda: kernel_marks(lb) - before, 240, "the late service in the kernel")
    t0 = time.monotonic()
    late = wait(lambda: [v for v in info(e).values() if v["service_name"] == "late"],
                2 * REFRESH + 30, "the late service's name")
    took = time.monotonic() - t0
    assert late[0]["namespace"] == lb and took <= REFRESH + 30, took

    # dockerd gone: scrapes keep working, promptly, without names
    d.stop()
    for _ in range(3):
        t0 = time.monotonic()
        text = e.get()
        assert time.monotonic() - t0 < 20
        assert "ipvs_up" in text
        time.sleep(REFRESH)
    wait(lambda: not info(e), 3 * REFRESH + 30, "the names to go")
    # one log line for the state change, however many refreshes failed since
    lines = [x for x in e.logtext().splitlines() if "swarm names: Docker API" in x]
    assert ["unavailable" in x for x in lines] == [False, True], lines
