"""Docker Swarm service names (--docker.host): a fake Docker Engine API on a
unix socket (aiohttp server, Docker's JSON shapes), fake mangle rules; the
real-Swarm VM test is not in the suite yet: see the note on issue 13."""
import asyncio
import json
import logging
import threading
import time

import pytest
from aiohttp import web

from ipvs_fast import cli
from ipvs_fast.collection.namespaces import TargetSet
from ipvs_fast.collection.swarm import SwarmNames, parse_docker_host, parse_vip_marks
from ipvs_fast.collection.target import CollectResult
from ipvs_fast.exporter import Exporter
from ipvs_fast.formats.ingress import IngressRenderer
from ipvs_fast.formats.ipvs import IPVSRenderer
from ipvs_fast.formats.node import NodeRenderer
from tests.test_server import make_snapshot, parse

INGRESS_NET = "x1ngress0000000000000000a"
OVERLAY_NET = "0verlay12345678900000000b"
SBOX = "/var/run/docker/netns/ingress_sbox"
LB = "/var/run/docker/netns/lb_0verlay12"


def service(sid, name, ports=(), vips=(), stack=None):
    spec = {"Name": name, "Labels": {"com.docker.stack.namespace": stack} if stack else {}}
    return {"ID": sid, "Version": {"Index": 1}, "Spec": spec, "Endpoint": {
        "Spec": {}, "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": p,
                               "PublishMode": "ingress"} for p in ports],
        "VirtualIPs": [{"NetworkID": n, "Addr": a + "/24"} for n, a in vips]}}


NETWORKS = [{"Name": "ingress", "Id": INGRESS_NET, "Ingress": True, "Driver": "overlay"},
            {"Name": "backend", "Id": OVERLAY_NET, "Ingress": False, "Driver": "overlay"},
            {"Name": "bridge", "Id": "b" * 64, "Driver": "bridge"}]
SERVICES = [
    service("svcweb", "web", ports=[30080], vips=[(INGRESS_NET, "10.0.0.5")], stack="shop"),
    service("svcapi", "api", ports=[30081, 30082], vips=[(INGRESS_NET, "10.0.0.7")]),
    service("svcdb", "db", vips=[(OVERLAY_NET, "10.0.1.2")], stack="shop"),
]
VIPS = {SBOX: {256: "10.0.0.5", 257: "10.0.0.7"}, LB: {300: "10.0.1.2"}}


class FakeDocker:
    """Docker's /services and /networks on a unix socket, in a thread."""

    def __init__(self, path):
        self.path = path
        self.services = list(SERVICES)
        self.delay = 0.0
        self.status = 200
        self.requests = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, request):
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        body = self.services if request.path == "/services" else NETWORKS
        return web.Response(status=self.status, text=json.dumps(body),
                            content_type="application/json")

    def _run(self):
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/services", self._handler)
        app.router.add_get("/networks", self._handler)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.UnixSite(self.runner, self.path).start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def start(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def docker(tmp_path):
    d = FakeDocker(str(tmp_path / "docker.sock")).start()
    yield d
    if d._thread.is_alive():
        d.stop()


def results():
    return [
        CollectResult(SBOX, True, 0.1, make_snapshot(2, 1, mark=256), {256: "30080", 257: "30082"}),
        CollectResult(LB, True, 0.1, make_snapshot(1, 1, mark=300), {}),
        CollectResult("/run/netns/other", True, 0.1, make_snapshot(1, 1, mark=256), {256: "30080"}),
        CollectResult("/var/run/docker/netns/lb_deadbeef0", False, 0.1, error="gone"),
    ]


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def names(sw, res=None):
    return sorted((x["namespace"], x["fwmark"], x["port"], x["service_id"], x["service_name"],
                   x["stack"]) for x in sw.labels(res or results()))


WANT = sorted([(LB, "300", "", "svcdb", "db", "shop"),
               (SBOX, "256", "30080", "svcweb", "web", "shop"),
               (SBOX, "257", "30082", "svcapi", "api", "")])


def started(docker, refresh=0.2, **kw):
    sw = SwarmNames("unix://" + docker.path, refresh, vip_reader=lambda p: VIPS.get(p, {}), **kw)
    sw.labels(results())             # the scrape tells it which namespaces to read
    return sw.start()


def test_names_by_published_port_and_by_vip(docker):
    sw = started(docker)
    try:
        wait_for(lambda: names(sw) == WANT)
        # a mark without a published port falls back to the VIP rules
        res = results()
        res[0].ports = {}
        assert (SBOX, "257", "", "svcapi", "api", "") in names(sw, res)
    finally:
        sw.close()
    assert not sw._thread.is_alive()


def test_new_service_appears_within_one_refresh(docker):
    sw = started(docker, refresh=0.3)
    try:
        wait_for(lambda: names(sw) == WANT)
        docker.services.append(service("svcnew", "new", vips=[(OVERLAY_NET, "10.0.1.9")]))
        VIPS[LB][301] = "10.0.1.9"
        res = results()
        res[1].snapshot = make_snapshot(2, 1, mark=300)
        t0 = time.monotonic()
        wait_for(lambda: (LB, "301", "", "svcnew", "new", "") in names(sw, res))
        assert time.monotonic() - t0 < 2 * 0.3 + 1.0
    finally:
        VIPS[LB].pop(301, None)
        sw.close()


def test_unreachable_or_slow_api_never_slows_a_scrape(docker, caplog):
    caplog.set_level(logging.INFO, logger="ipvs_fast.collection.swarm")
    sw = started(docker, refresh=0.1, api_timeout=0.3)
    try:
        wait_for(lambda: names(sw) == WANT)
        docker.delay = 2.0                       # slower than the API timeout
        wait_for(lambda: names(sw) == [])
        t0 = time.monotonic()
        assert names(sw) == [] and time.monotonic() - t0 < 0.05
        docker.delay = 0
        wait_for(lambda: names(sw) == WANT)
        docker.status = 500
        wait_for(lambda: names(sw) == [])
        docker.status = 200
        wait_for(lambda: names(sw) == WANT)
        docker.stop()                            # gone altogether
        wait_for(lambda: names(sw) == [])
        n = sw.refreshes
        wait_for(lambda: sw.refreshes >= n + 3)  # still failing, still quiet
    finally:
        sw.close()
    lines = [r.getMessage() for r in caplog.records]
    # one line per state change, none repeated while the state holds
    assert [(" reachable (" in x, "timed out" in x, "HTTP 500" in x, "unavailable" in x)
            for x in lines] == [(True, False, False, False), (False, True, False, True),
                                (True, False, False, False), (False, False, True, True),
                                (True, False, False, False), (False, False, False, True)], lines


def test_hostile_api_answers_are_no_names(docker, caplog):
    docker.services = [{"ID": 5}, "x", {"ID": "ok", "Spec": [], "Endpoint": {"VirtualIPs": [
        {"NetworkID": OVERLAY_NET, "Addr": "10.0.1.2/24"}, None], "Ports": "bad"}}]
    sw = started(docker)
    try:
        wait_for(lambda: names(sw) == [(LB, "300", "", "ok", "", "")])
    finally:
        sw.close()


@pytest.mark.parametrize("renderer", [IngressRenderer, NodeRenderer, IPVSRenderer])
def test_exporter_adds_info_and_leaves_the_format_alone(docker, renderer):
    made = {r.namespace: r for r in results()}

    class Fixed:
        def __init__(self, path):
            self.path = path

        def collect(self):
            return made[self.path]

        def close(self):
            pass
    plain = Exporter(TargetSet(list(made), Fixed), renderer(), process_metrics=False)
    sw = SwarmNames("unix://" + docker.path, 0.2, vip_reader=lambda p: VIPS.get(p, {}))
    named = Exporter(TargetSet(list(made), Fixed), renderer(), process_metrics=False, swarm=sw)
    b"".join(named.collect(5.0))                 # tells it the namespaces
    b"".join(plain.collect(5.0))                 # (same scrape error counts)
    sw.start()
    try:
        wait_for(lambda: len(sw.labels(results())) == 3)
        a = b"".join(plain.collect(5.0)).decode()
        b = b"".join(named.collect(5.0)).decode()
        info = [x for x in b.splitlines() if "ipvs_swarm_service_info" in x]
        assert [x for x in b.splitlines() if x not in info] == a.splitlines()
        m = parse(b.encode())
        key = ("ipvs_swarm_service_info", (("fwmark", "256"), ("namespace", SBOX),
                                           ("port", "30080"), ("service_id", "svcweb"),
                                           ("service_name", "web"), ("stack", "shop")))
        assert m[key] == 1
    finally:
        named.close()
        plain.close()
    assert not sw._thread.is_alive()


def test_parse_vip_marks():
    text = """# Generated by iptables-save
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 30080 -j MARK --set-xmark 0x100/0xffffffff
-A PREROUTING -d 10.0.0.5/32 -j MARK --set-xmark 0x100/0xffffffff
-A OUTPUT -d 10.0.1.2/32 -j MARK --set-xmark 0x12c/0xffffffff
-A OUTPUT -d 10.0.2.0/24 -j MARK --set-xmark 0x12d/0xffffffff
-A OUTPUT ! -d 10.0.3.1/32 -j MARK --set-xmark 0x12e/0xffffffff
-A OUTPUT -d 10.0.4.1/32 -j ACCEPT
COMMIT
*nat
-A OUTPUT -d 10.9.9.9/32 -j MARK --set-xmark 0x1/0xffffffff
COMMIT
"""
    assert parse_vip_marks(text) == {256: "10.0.0.5", 300: "10.0.1.2"}


@pytest.mark.parametrize("value, ok", [
    ("unix:///var/run/docker.sock", ("unix", "/var/run/docker.sock")),
    ("tcp://127.0.0.1:2375", ("http", "http://127.0.0.1:2375")),
    ("tcp://[::1]:2375", ("http", "http://[::1]:2375")),
    ("unix://relative", None), ("ssh://host", None), ("tcp://", None), ("tcp://h:99999", None),
])
def test_parse_docker_host(value, ok):
    if ok is None:
        with pytest.raises(ValueError):
            parse_docker_host(value)
    else:
        assert parse_docker_host(value) == ok


def test_cli_docker_flags(monkeypatch):
    assert cli.parse_args([]).docker_host == ""
    monkeypatch.setenv("IPVS_FAST_DOCKER_HOST", "unix:///run/docker.sock")
    monkeypatch.setenv("IPVS_FAST_DOCKER_REFRESH_INTERVAL", "5")
    a = cli.parse_args([])
    assert (a.docker_host, a.docker_refresh) == ("unix:///run/docker.sock", 5.0)
