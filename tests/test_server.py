"""The HTTP server (real aiohttp on uvloop, on 127.0.0.1:0) and the
NamespaceTarget lifecycle, with an in-test fake backend returning Snapshots
built with records.pack_*. (Real-kernel tests run separately in a VM.)"""
import asyncio
import errno
import gzip
import http.client
import logging
import os
import socket
import threading
import time
import zlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipvs_fast import cli
from ipvs_fast.backends.errors import IPVSError
from ipvs_fast.backends.records import Dest, Service, pack_dest, pack_service
from ipvs_fast.backends.snapshot import Snapshot
from ipvs_fast.collection.namespaces import TargetSet
from ipvs_fast.collection.target import CollectResult, NamespaceTarget
from ipvs_fast.exporter import Exporter
from ipvs_fast.formats.exposition import Body
from ipvs_fast.formats.ingress import CONTENT_TYPE, IngressRenderer, default_build_info
from ipvs_fast.http import listen, payload
from ipvs_fast.http import server as srv
from ipvs_fast.http.server import MetricsServer, accepts_gzip

# -- fakes -------------------------------------------------------------------------

def make_snapshot(n_svc=2, n_dest=3, mark=260, conns=0) -> Snapshot:
    svcs, dests = [], []
    for i in range(n_svc):
        svcs.append(pack_service(Service(
            socket.AF_INET, 0, 0, 1, mark + i, 0, 0, 0xFFFFFFFF, bytes(16), bytes(16),
            bytes(32), (conns + i, 0, 0, 100 * i, 200 * i, 0, 0, 0, 0, 0), len(dests), n_dest)))
        for j in range(n_dest):
            dests.append(pack_dest(Dest(
                i, socket.AF_INET, 0, bytes([10, 0, i, j + 1]) + bytes(12), 0, 1, 0, 0,
                j, 2 * j, 0, 0, 0, 0, 1, (j, 0, 0, 10 * j, 20 * j, 0, 0, 0, 0, 0))))
    return Snapshot(b"".join(svcs), b"".join(dests))


class FakeBackend:
    """Stands in for NativeBackend/PythonBackend."""

    NAME = "fake"

    def __init__(self, world, path, timeout):
        self.world = world
        self.path = path
        self.ident = world.ident
        self.closed = False
        world.opened.append(self)

    def dump(self):
        self.world.dumps += 1
        if self.world.dump_error is not None:
            raise self.world.dump_error
        if self.world.dump_delay:
            time.sleep(self.world.dump_delay)
        return self.world.snapshot

    def ns_ident(self):
        return self.ident

    def close(self):
        self.closed = True


class World:
    """The fake kernel: what the next open/dump sees."""

    def __init__(self, snapshot=None):
        self.snapshot = snapshot if snapshot is not None else make_snapshot()
        self.ident = (1, 1)
        self.opened = []
        self.dumps = 0
        self.open_error = None
        self.dump_error = None
        self.dump_delay = 0.0

    def factory(self, path, timeout):
        if self.open_error is not None:
            raise self.open_error
        return FakeBackend(self, path, timeout)


def exporter_for(*targets, **kw) -> Exporter:
    """An Exporter (ingress format) over these targets, one namespace each."""
    by_path = {t.path: t for t in targets}
    return Exporter(TargetSet(list(by_path), by_path.__getitem__), IngressRenderer(), **kw)


class FunctionSource:
    """An exposition source made of a function: ``fn()`` or ``fn(deadline)``
    returning bytes or a sized iterable of bytes pieces."""

    content_types = (CONTENT_TYPE,)

    def __init__(self, fn):
        self.fn = fn
        code = getattr(fn, "__code__", None) or fn.__call__.__code__
        self.takes_deadline = code.co_argcount > (0 if hasattr(fn, "__code__") else 1)

    def collect(self, deadline, content_type=CONTENT_TYPE):
        body = self.fn(deadline) if self.takes_deadline else self.fn()
        return Body([body], len(body)) if isinstance(body, bytes) else body


# -- a real server on a background loop --------------------------------------------

class ServerThread:
    def __init__(self, source, path="/metrics", **kw):
        if not hasattr(source, "content_types"):
            source = FunctionSource(source)
        self.server = MetricsServer(source, path, version="test", **kw)
        self.loop = None
        self.port = None
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        factory = srv.new_event_loop_factory()
        self.loop = factory() if factory else asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            addrs = self.loop.run_until_complete(self.server.start("127.0.0.1:0"))
            self.port = addrs[0][1]
        except BaseException as e:  # pragma: no cover
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def request(self, method="GET", path="/metrics", headers=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, body
        finally:
            c.close()


@pytest.fixture
def world():
    return World()


@pytest.fixture
def exporter_server(world, tmp_path):
    ns = tmp_path / "ns"
    ns.write_text("")
    st = os.stat(ns)
    world.ident = (st.st_dev, st.st_ino)
    target = NamespaceTarget(str(ns), world.factory, port_reader=lambda p: {260: "30000"})
    exp = exporter_for(target, build_info=default_build_info("native"))
    with ServerThread(exp) as s:
        s.ns_path = str(ns)
        yield s
    exp.close()


def parse(body: bytes):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


# -- HTTP behaviour ------------------------------------------------------------------

def test_get_metrics(exporter_server):
    status, headers, body = exporter_server.request()
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE
    assert "content-encoding" not in headers
    m = parse(body)
    ns = exporter_server.ns_path
    assert m[("ipvs_up", (("namespace", ns),))] == 1
    assert m[("ipvs_services_total", (("namespace", ns),))] == 2
    assert m[("ipvs_connections_total",
              (("fwmark", "260"), ("namespace", ns), ("port", "30000")))] == 0
    assert m[("ipvs_destination_bytes_out_total",
              (("address", "10.0.1.3"), ("fwmark", "261"), ("namespace", ns), ("port", "")))] == 40
    assert any(k[0] == "process_resident_memory_bytes" for k in m)
    assert m[("ipvs_exporter_build_info", (("backend", "native"), ("python_version", default_build_info("x")["python_version"]), ("version", "0.1.0")))] == 1
    assert not any(k[0].startswith("python_gc") or k[0] == "python_info" for k in m)


FIXED = b"# HELP x y\n# TYPE x gauge\nx 1\n" * 2000


@pytest.fixture
def fixed_server():
    calls = []

    def collect():
        calls.append(1)
        return FIXED
    with ServerThread(collect, keepalive_timeout=1.0) as s:
        s.calls = calls
        yield s


def test_head(fixed_server):
    status, headers, body = fixed_server.request("HEAD")
    assert status == 200
    assert body == b""
    assert headers["content-type"] == CONTENT_TYPE
    # HEAD answers with the headers alone: no collection, no body length
    assert fixed_server.calls == []
    assert headers.get("content-length") in (None, "0")


@pytest.mark.parametrize("ae", ["gzip", "gzip, deflate, br", "deflate;q=0.5, gzip;q=0.1",
                                "*", "GZIP"])
def test_gzip(fixed_server, ae):
    status, headers, body = fixed_server.request(headers={"Accept-Encoding": ae})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert "accept-encoding" in headers.get("vary", "").lower()
    assert gzip.decompress(body) == FIXED
    assert headers["transfer-encoding"] == "chunked"       # streamed
    assert len(body) < len(FIXED)


@pytest.mark.parametrize("ae", ["identity", "gzip;q=0", "deflate", "*;q=0", "", "br, *;q=0"])
def test_no_gzip(fixed_server, ae):
    status, headers, body = fixed_server.request(headers={"Accept-Encoding": ae})
    assert status == 200
    assert "content-encoding" not in headers
    assert body == FIXED


def test_gzip_real_output_roundtrip(exporter_server):
    _, headers, gz = exporter_server.request(headers={"Accept-Encoding": "gzip"})
    _, _, plain = exporter_server.request()
    assert headers["content-encoding"] == "gzip"
    a, b = parse(gzip.decompress(gz)), parse(plain)
    ipvs = {k for k in a if k[0].startswith("ipvs_") and k[0] != "ipvs_scrape_duration_seconds"}
    assert ipvs and ipvs == {k for k in b if k[0].startswith("ipvs_")
                             and k[0] != "ipvs_scrape_duration_seconds"}
    assert all(a[k] == b[k] for k in ipvs)


def test_gzip_streams_both_implementations():
    data = b"ipvs_up 1\n" * 1000 + bytes(range(256))
    for stream in (payload.gzip_stream, payload.zlib_gzip_stream):
        c = stream()
        out = c.compress(data[:5000]) + c.compress(data[5000:]) + c.flush()
        assert out[:2] == b"\x1f\x8b"                  # gzip magic, not raw zlib
        assert gzip.decompress(out) == data
        assert zlib.decompress(out, 16 + zlib.MAX_WBITS) == data
    assert payload.GZIP_IMPL in ("isal", "zlib")


def test_accepts_gzip():
    assert accepts_gzip("gzip")
    assert accepts_gzip("x-gzip")
    assert accepts_gzip("br;q=1.0, gzip;q=0.8")
    assert accepts_gzip("*;q=0.1")
    assert not accepts_gzip(None)
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("gzip;q=0.000")
    assert not accepts_gzip("*, gzip;q=0")
    assert not accepts_gzip("gzip;q=bogus")


def test_landing_healthz_404_405(fixed_server):
    status, headers, body = fixed_server.request(path="/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'<a href="/metrics">' in body
    status, _, body = fixed_server.request(path="/healthz")
    assert (status, body) == (200, b"ok")
    for path in ("/nope", "/metrics/", "/metricsx", "/favicon.ico"):
        assert fixed_server.request(path=path)[0] == 404
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, headers, _ = fixed_server.request(method, "/metrics")
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        assert fixed_server.request(method, "/")[0] == 405
    assert fixed_server.request("GET", "/metrics?foo=bar")[0] == 200
    assert fixed_server.calls, "metrics were collected"


def test_custom_telemetry_path():
    with ServerThread(lambda: b"x 1\n", path="/ipvs/metrics") as s:
        assert s.request(path="/ipvs/metrics")[2] == b"x 1\n"
        assert s.request(path="/metrics")[0] == 404
        assert b'href="/ipvs/metrics"' in s.request(path="/")[2]


def test_collection_error_is_500():
    def boom():
        raise RuntimeError("bug")
    with ServerThread(boom) as s:
        assert s.request()[0] == 500
        assert s.request(path="/healthz")[0] == 200


def test_request_timeout_is_503():
    gate = threading.Event()
    with ServerThread(lambda: gate.wait(5) and b"", request_timeout=0.3) as s:
        t0 = time.monotonic()
        assert s.request()[0] == 503
        assert time.monotonic() - t0 < 3
        gate.set()


# -- single-flight -------------------------------------------------------------------

def test_single_flight():
    calls = []
    started = threading.Event()

    def slow_collect():
        calls.append(threading.get_ident())
        started.set()
        time.sleep(0.5)
        return b"ipvs_up 1\n"

    with ServerThread(slow_collect) as s:
        results = []

        def client():
            results.append(s.request())
        threads = [threading.Thread(target=client) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 10
        assert all(r[0] == 200 and r[2] == b"ipvs_up 1\n" for r in results)
        assert len(calls) == 1
        # a request after the collection finished starts a new one
        assert s.request()[0] == 200
        assert len(calls) == 2


def test_single_flight_with_fake_backend(world, tmp_path):
    world.dump_delay = 0.4
    target = NamespaceTarget("", world.factory, port_reader=lambda p: {})
    exp = exporter_for(target)
    with ServerThread(exp) as s:
        threads = [threading.Thread(target=s.request) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert world.dumps == 1
        assert s.server.collections == 1


def test_single_flight_gzip(monkeypatch):
    compressors, compressed = [], []
    real = payload.gzip_stream

    class Counting:
        def __init__(self):
            self.c = real()
            compressors.append(self)

        def compress(self, data):
            compressed.append(len(data))
            time.sleep(0.2)
            return self.c.compress(data)

        def flush(self):
            return self.c.flush()
    monkeypatch.setattr(payload, "gzip_stream", Counting)

    def slow_collect():
        time.sleep(0.3)
        return FIXED
    with ServerThread(slow_collect) as s:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            s.request(headers={"Accept-Encoding": "gzip"}))) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 10
        assert all(gzip.decompress(r[2]) == FIXED for r in results)
        assert len(compressors) == 1 and sum(compressed) == len(FIXED)
        assert s.server.collections == 1


def test_disconnecting_client_does_not_cancel_shared_collection():
    gate = threading.Event()
    calls = []

    def collect():
        calls.append(1)
        gate.wait(5)
        return b"x 1\n"

    with ServerThread(collect) as s:
        c = socket.create_connection(("127.0.0.1", s.port))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        c.close()                                 # gives up while collecting
        res = []
        t = threading.Thread(target=lambda: res.append(s.request()))
        t.start()
        time.sleep(0.2)
        gate.set()
        t.join(10)
        assert res[0][0] == 200 and res[0][2] == b"x 1\n"
        assert len(calls) == 1


# -- hostile / sloppy clients -----------------------------------------------------------

def test_stalled_partial_request_does_not_block_others(fixed_server):
    stalled = socket.create_connection(("127.0.0.1", fixed_server.port))
    stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # never finished
    try:
        t0 = time.monotonic()
        for _ in range(5):
            assert fixed_server.request(timeout=5)[0] == 200
        assert time.monotonic() - t0 < 3
        # and the server drops the stalled connection (keepalive_timeout=1s)
        stalled.settimeout(10)
        assert stalled.recv(100) == b""
        assert time.monotonic() - t0 < 8
    finally:
        stalled.close()


def test_oversized_header_rejected(fixed_server):
    status, _, _ = fixed_server.request(headers={"X-Big": "a" * 20000})
    assert status in (400, 431)
    assert fixed_server.request()[0] == 200


def test_idle_connection_closed(fixed_server):
    c = socket.create_connection(("127.0.0.1", fixed_server.port))
    c.settimeout(10)
    t0 = time.monotonic()
    assert c.recv(10) == b""
    assert time.monotonic() - t0 < 8
    c.close()


def _nfds():
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_growth(fixed_server):
    for _ in range(20):        # warm up: pools, lazily opened files
        fixed_server.request()
    before = _nfds()
    for i in range(200):
        hdrs = {"Accept-Encoding": "gzip"} if i % 2 else {}
        assert fixed_server.request(headers=hdrs)[0] == 200
    time.sleep(0.2)
    assert _nfds() - before <= 3


def test_keepalive_reuse(fixed_server):
    c = http.client.HTTPConnection("127.0.0.1", fixed_server.port, timeout=5)
    for _ in range(5):
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200 and r.read() == FIXED
    c.close()


# -- listen addresses ------------------------------------------------------------------

@pytest.mark.parametrize("addr, expected", [
    (":9100", ("", 9100)),
    ("127.0.0.1:9100", ("127.0.0.1", 9100)),
    ("[::1]:9100", ("::1", 9100)),
    ("localhost:9100", ("localhost", 9100)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    (":0", ("", 0)),
])
def test_parse_listen_address(addr, expected):
    assert listen.parse_listen_address(addr) == expected


@pytest.mark.parametrize("addr", ["9100", "", ":", ":abc", ":70000", "::1:9100", "[::1]9100",
                                  "[zz]:1", "bad host:1", "a..b:1", ":-1", "1.2.3.4:+80"])
def test_parse_listen_address_invalid(addr):
    with pytest.raises(ValueError):
        listen.parse_listen_address(addr)


def test_listen_all_interfaces_dual_stack():
    s = listen.bind_listen_socket("", 0)
    try:
        s.listen()
        port = s.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        c.close()
        if s.family == socket.AF_INET6:
            c = socket.create_connection(("::1", port), timeout=2)
            c.close()
    finally:
        s.close()


def test_listen_localhost_and_v6():
    s = listen.bind_listen_socket("localhost", 0)
    assert s.getsockname()[0] in ("127.0.0.1", "::1")
    s.close()
    if socket.has_ipv6:
        try:
            s = listen.bind_listen_socket("::1", 0)
        except OSError:             # host without IPv6 loopback: nothing more to check
            return
        assert s.getsockname()[0] == "::1"
        s.close()


# -- NamespaceTarget ---------------------------------------------------------------------

@pytest.fixture
def nsfile(tmp_path, world):
    p = tmp_path / "ingress_sbox"
    p.write_text("")
    st = os.stat(p)
    world.ident = (st.st_dev, st.st_ino)
    return p


def _target(world, path, **kw):
    kw.setdefault("port_reader", lambda p: {260: "30000"})
    return NamespaceTarget(str(path), world.factory, **kw)


def test_target_lazy_open_and_reuse(world, nsfile):
    t = _target(world, nsfile)
    assert world.opened == [] and not t.is_open
    r = t.collect()
    assert isinstance(r, CollectResult)
    assert r.up and r.error is None and r.namespace == str(nsfile)
    assert r.snapshot is world.snapshot and r.ports == {260: "30000"}
    assert r.duration >= 0
    t.collect()
    assert len(world.opened) == 1 and world.dumps == 2
    t.close()
    assert world.opened[0].closed


def test_target_reopens_when_namespace_recreated(world, nsfile):
    t = _target(world, nsfile)
    assert t.collect().up
    nsfile.unlink()
    other = nsfile.with_name("tmp")
    other.write_text("x")               # keep the old inode busy: new inode for sure
    nsfile.write_text("")
    st = os.stat(nsfile)
    world.ident = (st.st_dev, st.st_ino)
    assert t.collect().up
    assert len(world.opened) == 2
    assert world.opened[0].closed and not world.opened[1].closed


def test_target_path_missing_closes_handle(world, nsfile, caplog):
    caplog.set_level(logging.INFO, logger="ipvs_fast.collection.target")
    t = _target(world, nsfile)
    assert t.collect().up
    nsfile.unlink()
    for _ in range(5):
        r = t.collect()
        assert not r.up and r.snapshot is None
        assert "ENOENT" in r.error and str(nsfile) in r.error
    assert world.opened[0].closed and not t.is_open
    down = [r for r in caplog.records if "ipvs_up=0" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING
    # comes back: reopened, one "up" line
    nsfile.write_text("")
    st = os.stat(nsfile)
    world.ident = (st.st_dev, st.st_ino)
    for _ in range(3):
        assert t.collect().up
    up = [r for r in caplog.records if "ipvs_up=1" in r.getMessage()]
    assert len(up) == 2           # initial + recovery
    assert len(world.opened) == 2


def test_target_open_errors_retry_each_scrape(world, nsfile, caplog):
    caplog.set_level(logging.INFO, logger="ipvs_fast.collection.target")
    world.open_error = IPVSError(errno.EPROTONOSUPPORT, "ip_vs not loaded")
    t = _target(world, nsfile)
    for _ in range(3):
        r = t.collect()
        assert not r.up and "EPROTONOSUPPORT" in r.error
    world.open_error = IPVSError(errno.EPERM, "Operation not permitted")
    for _ in range(3):
        assert "EPERM" in t.collect().error
    msgs = [r.getMessage() for r in caplog.records]
    assert len([m for m in msgs if "ipvs_up=0" in m]) == 2        # one per reason
    world.open_error = None
    assert t.collect().up


def test_target_dump_error_closes_and_reopens(world, nsfile):
    t = _target(world, nsfile)
    assert t.collect().up
    world.dump_error = IPVSError(errno.ETIMEDOUT, "kernel did not answer")
    r = t.collect()
    assert not r.up and "ETIMEDOUT" in r.error
    assert world.opened[0].closed
    world.dump_error = None
    assert t.collect().up and len(world.opened) == 2


def test_target_unexpected_exception_never_raises(world, nsfile):
    world.dump_error = ZeroDivisionError("backend bug")
    t = _target(world, nsfile)
    r = t.collect()
    assert not r.up and "ZeroDivisionError" in r.error


def test_target_own_namespace_skips_stat(world):
    t = _target(world, "")
    world.ident = (9, 9)
    assert t.collect().up and t.collect().up
    assert len(world.opened) == 1


def test_port_map_refresh_policy(world, nsfile):
    calls = []
    now = [1000.0]

    def reader(path):
        calls.append(path)
        return {260: "30000"}
    t = _target(world, nsfile, port_reader=reader, clock=lambda: now[0])
    t.collect()
    t.collect()
    assert calls == [str(nsfile)]                      # same marks: cached
    world.snapshot = make_snapshot(n_svc=3)            # mark 262 appeared
    assert t.collect().ports == {260: "30000"}
    assert len(calls) == 2
    t.collect()
    assert len(calls) == 2
    world.dump_error = IPVSError(errno.ETIMEDOUT, "x")  # reopen -> refresh
    t.collect()
    world.dump_error = None
    t.collect()
    assert len(calls) == 3
    now[0] += 10_000                                    # max age
    t.collect()
    assert len(calls) == 4


def test_port_map_not_read_without_fwmark_services(world, nsfile):
    calls = []
    snap = Snapshot(pack_service(Service(socket.AF_INET, 6, 80, 1, 0, 0, 0, 0, bytes(16),
                                         bytes(16), bytes(32), (0,) * 10, 0, 0)), b"")
    world.snapshot = snap
    t = _target(world, nsfile, port_reader=lambda p: calls.append(p) or {})
    assert t.collect().up
    assert calls == []


def test_port_map_read_only_for_the_ingress_format(world, nsfile):
    # iptables-save is a process per read (seconds under emulation, at every
    # max-age expiry): only the format whose labels carry the published port reads it
    calls = []
    t = _target(world, nsfile, port_map=False, port_reader=lambda p: calls.append(p) or {})
    assert t.collect().up and t.collect().ports == {}
    assert calls == []
    t = _target(world, nsfile, port_map=True, port_reader=lambda p: calls.append(p) or {})
    assert t.collect().up
    assert calls == [str(nsfile)]
    uses = {fmt: cli.make_renderer(cli.parse_args(["--format", fmt])).uses_port_map
            for fmt in ("ingress", "node", "ipvs")}
    assert uses == {"ingress": True, "node": False, "ipvs": False}


def test_backend_fallback(monkeypatch, caplog):
    from ipvs_fast import backends
    monkeypatch.setattr(backends, "_native_available", lambda: False)
    caplog.set_level(logging.WARNING)
    assert backends.resolve("native") == "python"
    assert any("falling back" in r.getMessage() for r in caplog.records)
    assert backends.resolve("python") == "python"
    with pytest.raises(ValueError):
        backends.resolve("bogus")


def test_down_target_served(world, tmp_path):
    t = NamespaceTarget(str(tmp_path / "missing"), world.factory)
    exp = exporter_for(t)
    with ServerThread(exp) as s:
        for _ in range(3):
            status, _, body = s.request()
            assert status == 200
        text = body.decode()
        assert 'ipvs_up{namespace="%s"} 0\n' % (tmp_path / "missing") in text
        assert "ipvs_services_total" not in text
    assert world.opened == []


class _TimedHandle:
    """A handle whose two reads take a settable time on a fake clock."""

    NAME = "timed"

    def __init__(self, snapshot, clock, costs):
        self.snapshot, self.clock, self.costs, self.calls = snapshot, clock, costs, []

    def _read(self, method):
        self.calls.append(method)
        self.clock[0] += self.costs[method]
        return self.snapshot

    def dump(self):
        return self._read("dump")

    def dump_table(self):
        return self._read("table")

    def close(self):
        pass


def test_without_counters_the_cheaper_read_is_used_and_the_other_reprobed(world):
    from ipvs_fast.collection import target as target_mod
    now = [0.0]
    costs = {"table": 1.0, "dump": 5.0}
    h = _TimedHandle(world.snapshot, now, costs)
    t = NamespaceTarget("", lambda p, timeout: h, counters=False, port_map=False,
                        clock=lambda: now[0])
    for _ in range(4):
        assert t.collect().up
    assert h.calls == ["table", "dump", "table", "table"]    # each timed once, then the cheaper
    costs["table"] = 9.0                                    # the table got dearer (more services)
    t.collect()
    for _ in range(3):
        t.collect()
    assert h.calls[4:] == ["table", "dump", "dump", "dump"]
    now[0] += target_mod.METHOD_PROBE_INTERVAL              # re-probe the other one once
    t.collect()
    t.collect()
    assert h.calls[8:] == ["table", "dump"]
    # with counters (ingress, ipvs) only the netlink dump is read
    h2 = _TimedHandle(world.snapshot, now, costs)
    t2 = NamespaceTarget("", lambda p, timeout: h2, port_map=False, clock=lambda: now[0])
    t2.collect()
    t2.collect()
    assert h2.calls == ["dump", "dump"]
