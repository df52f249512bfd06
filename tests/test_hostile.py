"""Hostile and careless clients (issue 10): scrape-timeout headers that must
not hurt other clients, malformed requests that must not flood the log or be
echoed, the concurrent-request cap, shutdown, odd HTTP versions, the Server
header, SIGHUP. A real server on loopback with fake namespaces."""
import inspect
import logging
import os
import signal
import socket
import threading
import time

import pytest

from ipvs_fast import cli
from ipvs_fast.collection.namespaces import TargetSet
from ipvs_fast.exporter import Exporter
from ipvs_fast.formats.exposition import Body
from ipvs_fast.formats.ingress import IngressRenderer
from ipvs_fast.http import limits, protocol
from ipvs_fast.http.server import MetricsServer
from tests.test_cli import Exporter as ExporterProcess
from tests.test_cli import run_cli
from tests.test_namespaces import Maker, by_ns
from tests.test_server import ServerThread, parse

HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


def up(body: bytes) -> dict:
    return {dict(k[1])["namespace"]: v for k, v in parse(body).items() if k[0] == "ipvs_up"}


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send *data*, read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(data)
        s.settimeout(timeout)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


# -- 1. X-Prometheus-Scrape-Timeout-Seconds ------------------------------------------

def test_scrape_timeout_header_values():
    st = limits.scrape_timeout
    assert st("3", 10, 60) == 3 and st("0.02", 10, 60) == 0.02
    for bad in (None, "", "soon", "nan", "NaN", "inf", "-inf", "0", "-0", "-1", "1e-400",
                "1e309", "9" * 100):
        assert st(bad, 10, 60) == 10, bad
    assert st("1e9", 10, 60) == 60 and st("1e300", 10, 60) == 60
    assert st("1e9", 10, 10_000) == limits.MAX_SCRAPE_TIMEOUT


def test_may_share():
    assert limits.may_share(10.0, 10.0, 5)
    assert limits.may_share(9.6, 10.0, 5)          # ends 0.4 s earlier: close enough
    assert not limits.may_share(9.4, 10.0, 5)      # would give up on namespaces earlier
    assert not limits.may_share(8.9, 10.0, 50)     # at most 1 s earlier
    assert not limits.may_share(10.1, 10.0, 5)     # would wait past the request's deadline
    assert not limits.may_share(0.95, 1.0, 0.2)    # tolerance is a tenth of a short deadline


def _exporter(**per_path):
    mk = Maker(**per_path)
    ts = TargetSet(list(per_path), make_target=mk)
    return Exporter(ts, IngressRenderer(), process_metrics=False), mk


def test_tiny_scrape_timeout_does_not_fail_other_scrapes():
    """A client sending 0.02 in a loop: a concurrent scrape with a normal
    timeout still sees every (healthy, 0.2 s) namespace up."""
    exp, mk = _exporter(a={"delay": 0.2}, b={"delay": 0.2}, c={"delay": 0.2})
    stop = threading.Event()
    hostile_statuses = []

    def hostile():
        while not stop.is_set():
            hostile_statuses.append(s.request(headers={HEADER: "0.02"})[0])

    with ServerThread(exp, scrape_timeout=10.0) as s:
        threads = [threading.Thread(target=hostile) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            for _ in range(4):
                status, _, body = s.request(headers={HEADER: "5"})
                assert status == 200
                assert up(body) == {"a": 1, "b": 1, "c": 1}
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    assert hostile_statuses and set(hostile_statuses) == {200}
    # namespace collections were shared, not run once per scrape
    assert all(t.max_running == 1 for ts in mk.made.values() for t in ts)
    exp.close()


def test_huge_scrape_timeout_does_not_hold_other_scrapes():
    """A client sending 1e9 while a namespace hangs: a scrape with a 1 s
    timeout is answered within it (the hung namespace up 0), and neither
    gets a 500 or 503."""
    gate = threading.Event()
    exp, _ = _exporter(fast={}, stuck={"gate": gate})
    with ServerThread(exp, scrape_timeout=10.0, request_timeout=3.0) as s:
        out = {}
        huge = threading.Thread(target=lambda: out.setdefault(
            "huge", s.request(headers={HEADER: "1e300"})))
        huge.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        status, _, body = s.request(headers={HEADER: "1"})
        took = time.monotonic() - t0
        assert status == 200 and took < 1.0, (status, took)
        assert up(body) == {"fast": 1, "stuck": 0}
        huge.join(10)
        gate.set()
        status, _, body = out["huge"]
        assert status == 200 and up(body) == {"fast": 1, "stuck": 0}   # clamped: 3 s
    exp.close()


def test_concurrent_collections_share_namespaces_under_own_deadlines():
    """TargetSet: a short-deadline scrape and a long one at the same time.
    The long one waits for the namespaces the short one started (one
    collection each), and a queued collection it waits for is not
    cancelled at the short one's deadline."""
    mk = Maker(a={"delay": 0.3}, b={"delay": 0.1})
    ts = TargetSet(["a", "b"], make_target=mk, workers=1)     # b queues behind a
    res = {}
    short = threading.Thread(target=lambda: res.setdefault("short", by_ns(ts.collect(0.05))))
    short.start()
    time.sleep(0.01)
    res["long"] = by_ns(ts.collect(2.0))
    short.join(5)
    assert not res["short"]["a"].up and not res["short"]["b"].up
    assert res["long"]["a"].up and res["long"]["b"].up
    assert [len(mk.made[p]) for p in "ab"] == [1, 1]
    assert mk.made["a"][0].calls == 1 and mk.made["b"][0].calls == 1
    ts.close()


def test_late_namespace_warnings_rate_limited(caplog):
    mk = Maker(slow={"delay": 0.05})
    ts = TargetSet(["slow"], make_target=mk)
    with caplog.at_level(logging.INFO, logger="ipvs_fast.collection.namespaces"):
        for _ in range(10):             # late, on time, late, on time, ...
            assert not ts.collect(0.001)[0].up
            time.sleep(0.1)
            assert ts.collect(1.0)[0].up
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    ts.close()


# -- 2, 3. malformed requests: no log flood, no echo -----------------------------------

MARK = b"Zq7"


@pytest.fixture
def fixed():
    with ServerThread(lambda: b"x 1\n", keepalive_timeout=2.0) as s:
        yield s


BAD_REQUESTS = [
    MARK * 90000,                                                  # 256 KiB of garbage
    b"\x16\x03\x01" + MARK * 100 + b"\r\n\r\n",                    # TLS on the HTTP port
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad " + MARK * 2000 + b"\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n\r\n",                              # no Host
    b"GET /" + MARK * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",      # line too long
    b"GET /metrics HTTP/3.7" + MARK + b"\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: " + MARK + b"\r\n\r\n",
]


def test_bad_requests_short_fixed_reply_and_one_log_line(fixed, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        for data in BAD_REQUESTS:
            reply = raw(fixed.port, data)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0] \
                or b" 431 " in head.split(b"\r\n")[0], reply[:200]
            assert MARK not in reply and len(body) < 40, reply[:300]
            assert b"\r\nServer: ipvs_fast\r\n" in head + b"\r\n"
    text = "\n".join(r.getMessage() + str(r.exc_info or "") + str(r.exc_text or "")
                     for r in caplog.records)
    assert MARK.decode() not in text and "Traceback" not in text
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "bad request" in
             r.getMessage()]
    assert len(lines) <= 1 and all(len(r.getMessage()) < 200 for r in lines)
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert fixed.request()[0] == 200


def test_rate_limited_log_counts_what_it_left_out(caplog):
    now = [0.0]
    rl = limits.RateLimitedLog(logging.getLogger("t.rl"), interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t.rl"):
        assert rl.log(logging.INFO, "bad request from %s", "a")
        assert not rl.log(logging.INFO, "bad request from %s", "b")
        assert not rl.log(logging.INFO, "bad request from %s", "c")
        now[0] = 10.5
        assert rl.log(logging.INFO, "bad request from %s", "d")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["bad request from a", "bad request from d (and 2 more since the last such line)"]


# -- 5. --web.max-requests --------------------------------------------------------------

def test_max_requests_503_at_once():
    gate = threading.Event()
    with ServerThread(lambda: gate.wait(10) and b"x 1\n", max_requests=2) as s:
        out = []
        held = [threading.Thread(target=lambda: out.append(s.request()[0])) for _ in range(2)]
        for t in held:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        status, headers, body = s.request()
        assert status == 503 and time.monotonic() - t0 < 1.0
        assert len(body) < 40 and headers["server"] == "ipvs_fast"
        assert s.request(path="/healthz")[0] == 200            # only scrapes are counted
        gate.set()
        for t in held:
            t.join(10)
        assert out == [200, 200]
        assert s.request()[0] == 200                            # slots given back


def test_max_requests_zero_is_no_limit():
    gate = threading.Event()
    with ServerThread(lambda: gate.wait(10) and b"x 1\n", max_requests=0) as s:
        out = []
        threads = [threading.Thread(target=lambda: out.append(s.request()[0]))
                   for _ in range(50)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        gate.set()
        for t in threads:
            t.join(10)
        assert out == [200] * 50


def test_max_requests_flag(monkeypatch):
    assert cli.parse_args([]).web_max_requests == 40
    assert cli.parse_args(["--web.max-requests", "0"]).web_max_requests == 0
    monkeypatch.setenv("IPVS_FAST_WEB_MAX_REQUESTS", "7")
    assert cli.parse_args([]).web_max_requests == 7
    monkeypatch.delenv("IPVS_FAST_WEB_MAX_REQUESTS")
    for bad in ("-1", "many", "1.5"):
        p = run_cli("--web.max-requests", bad)
        assert p.returncode == 2 and "--web.max-requests" in p.stderr


# -- 6. shutdown ---------------------------------------------------------------------------

def big_body(deadline=None):
    piece = b"#" * 1023 + b"\n"
    return Body([piece] * 65536, 65536 * 1024)          # 64 MiB, never held whole


def _stalled_reader(port):
    """A client that asked for the body and stopped reading it."""
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.recv(100).startswith(b"HTTP/1.1 200")
    return c


def test_shutdown_within_timeout_and_cut_off_response_is_reset():
    s = ServerThread(big_body, shutdown_timeout=1.0)
    s.__enter__()
    c = _stalled_reader(s.port)
    time.sleep(0.3)
    t0 = time.monotonic()
    s.__exit__(None, None, None)
    took = time.monotonic() - t0
    assert took < 1.3, took
    c.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while c.recv(1 << 20):
            pass
    c.close()


def test_client_hanging_up_mid_body_logs_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="ipvs_fast")
    with ServerThread(big_body) as s:
        for _ in range(5):
            c = _stalled_reader(s.port)
            c.recv(50000)
            c.close()
            time.sleep(0.2)
        assert s.request(path="/healthz")[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_sighup_ignored_and_sigterm_exits_within_shutdown_timeout():
    e = ExporterProcess("--namespace-path", "")
    try:
        assert e.get()[0] == 200
        idle = socket.create_connection(("127.0.0.1", e.port))      # keep-alive, idle
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        e.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert e.proc.poll() is None
        assert e.get()[0] == 200
        t0 = time.monotonic()
        rc, _, err = e.stop()
        took = time.monotonic() - t0
        idle.close()
    finally:
        if e.proc.poll() is None:
            e.proc.kill()
    assert rc == 0, err
    assert took < inspect.signature(MetricsServer).parameters["shutdown_timeout"].default, took
    assert "SIGHUP" in err and "ignored" in err


# -- 7. the smaller ones ---------------------------------------------------------------

@pytest.mark.parametrize("request_line", [b"GET /metrics HTTP/2.0", b"GET /metrics HTTP/0.9",
                                          b"GET /metrics"])
def test_odd_http_versions_not_echoed(fixed, request_line):
    reply = raw(fixed.port, request_line + b"\r\nHost: x\r\n\r\n")
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 505 HTTP Version Not Supported", reply[:200]
    assert reply.endswith(b"\r\n\r\n505 HTTP Version Not Supported\n")


def test_server_header_is_a_plain_token(fixed):
    for method, path in (("GET", "/metrics"), ("HEAD", "/metrics"), ("GET", "/"),
                         ("GET", "/healthz"), ("GET", "/nope"), ("POST", "/metrics")):
        _, headers, _ = fixed.request(method, path)
        assert headers["server"] == protocol.SERVER_TOKEN == "ipvs_fast"
    _, headers, _ = fixed.request(headers={"Accept-Encoding": "gzip"})
    assert headers["server"] == "ipvs_fast"


@pytest.mark.parametrize("path", ["/", "/healthz"])
def test_telemetry_path_taken_exits_2(path):
    p = run_cli("--telemetry-path", path)
    assert p.returncode == 2 and "--telemetry-path" in p.stderr
    with pytest.raises(ValueError):
        MetricsServer(None, path)


def test_no_fd_or_thread_leak_after_hostile_mix(fixed):
    for _ in range(10):
        fixed.request()
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for i in range(100):
        raw(fixed.port, BAD_REQUESTS[i % len(BAD_REQUESTS)])
        fixed.request(headers={HEADER: ("0.01", "1e300", "nan", "3")[i % 4]})
    time.sleep(0.3)
    assert len(os.listdir("/proc/self/fd")) - fds <= 3
    assert threading.active_count() - threads <= 4
