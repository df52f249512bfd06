"""Many namespaces: pattern expansion, target lifecycle, parallel collection
under a deadline (a slow and a failing namespace), the server's deadline
from X-Prometheus-Scrape-Timeout-Seconds, and all three formats rendering
several namespaces. Fake targets / backends only (the VM suite has the
real-kernel version in tests/kernel/test_namespaces_vm.py)."""
import threading
import time

import pytest

from ipvs_fast import cli
from ipvs_fast.collection.namespaces import TargetSet, can_be_several, expand, is_glob
from ipvs_fast.collection.target import CollectResult, NamespaceTarget
from ipvs_fast.exporter import Exporter, FilteredCollectors
from ipvs_fast.formats.ingress import IngressRenderer, default_build_info
from ipvs_fast.formats.ipvs import IPVSRenderer
from ipvs_fast.formats.node import NodeRenderer
from tests.test_server import ServerThread, World, make_snapshot, parse


class FakeTarget:
    """collect() -> up=1 with a small snapshot, after *delay*; *fail* -> up=0."""

    def __init__(self, path, delay=0.0, fail=False, gate=None):
        self.path = path
        self.delay = delay
        self.fail = fail
        self.gate = gate
        self.calls = 0
        self.running = 0
        self.max_running = 0
        self.closed = False
        self._lock = threading.Lock()

    def collect(self):
        with self._lock:
            self.calls += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        t0 = time.monotonic()
        try:
            if self.gate is not None:
                self.gate.wait(10)
            if self.delay:
                time.sleep(self.delay)
            if self.fail:
                return CollectResult(self.path, False, time.monotonic() - t0, error="boom")
            return CollectResult(self.path, True, time.monotonic() - t0, make_snapshot(1, 1))
        finally:
            with self._lock:
                self.running -= 1

    def close(self):
        self.closed = True


class Maker:
    def __init__(self, **per_path):
        self.per_path = per_path        # path -> kwargs for FakeTarget
        self.made = {}

    def __call__(self, path):
        t = FakeTarget(path, **self.per_path.get(path, {}))
        self.made.setdefault(path, []).append(t)
        return t


def by_ns(results):
    return {r.namespace: r for r in results}


# -- expansion -----------------------------------------------------------------------

def test_expand(tmp_path):
    for n in ("b", "a", "c"):
        (tmp_path / n).write_text("")
    (tmp_path / "dir").mkdir()
    g = str(tmp_path / "*")
    assert is_glob(g) and not is_glob("/run/netns/x") and not is_glob("")
    assert expand([g]) == [str(tmp_path / n) for n in "abc"]
    # "" = own namespace, literal paths kept even if missing, duplicates once
    assert expand(["", "/nope", g, str(tmp_path / "b"), ""]) == \
        ["", "/nope"] + [str(tmp_path / n) for n in "abc"]
    empty = []
    assert expand([str(tmp_path / "zz*")], empty) == [] and empty == [str(tmp_path / "zz*")]


def test_glob_reexpanded_each_scrape_and_vanished_closed(tmp_path):
    (tmp_path / "a").write_text("")
    (tmp_path / "b").write_text("")
    mk = Maker()
    ts = TargetSet([str(tmp_path / "*")], make_target=mk)
    assert can_be_several(ts.patterns)
    a, b, c = (str(tmp_path / n) for n in "abc")
    assert [r.namespace for r in ts.collect(5)] == [a, b]
    (tmp_path / "a").unlink()
    (tmp_path / "c").write_text("")
    res = ts.collect(5)
    assert [r.namespace for r in res] == [b, c] and all(r.up for r in res)
    assert mk.made[a][0].closed                  # vanished -> handle closed
    assert not mk.made[b][0].closed and len(mk.made[b]) == 1   # kept, not recreated
    assert mk.made[b][0].calls == 2
    (tmp_path / "a").write_text("")              # back again: a new target
    assert [r.namespace for r in ts.collect(5)] == [a, b, c]
    assert len(mk.made[a]) == 2 and not mk.made[a][1].closed
    ts.close()
    assert all(t.closed for ts_ in mk.made.values() for t in ts_)


def test_single_literal_path_is_not_several():
    assert not can_be_several(["/var/run/docker/netns/ingress_sbox"])
    assert not can_be_several([""])
    assert can_be_several(["", "/run/netns/x"])
    assert can_be_several(["/run/netns/*"])


# -- deadline ------------------------------------------------------------------------

def test_slow_and_failing_namespaces_do_not_block_others():
    mk = Maker(slow={"delay": 1.0}, bad={"fail": True})
    ts = TargetSet(["fast", "slow", "bad", "fast2"], make_target=mk)
    t0 = time.monotonic()
    res = by_ns(ts.collect(0.3))
    took = time.monotonic() - t0
    assert took < 0.8, took
    assert res["fast"].up and res["fast2"].up
    assert not res["bad"].up and res["bad"].error == "boom"
    assert not res["slow"].up and "deadline" in res["slow"].error
    assert 0.25 <= res["slow"].duration < 0.8
    # still running: not started twice, reported as busy with its age
    res = by_ns(ts.collect(0.3))
    assert not res["slow"].up and "still running" in res["slow"].error
    assert res["fast"].up
    slow = mk.made["slow"][0]
    assert slow.calls == 1 and slow.max_running == 1
    time.sleep(1.0)                               # it finished: the next scrape retries
    res = by_ns(ts.collect(2.0))
    assert res["slow"].up and slow.calls == 2 and slow.max_running == 1
    ts.close()


def test_vanished_while_running_closed_after_it_returns(tmp_path):
    p = tmp_path / "ns"
    p.write_text("")
    gate = threading.Event()
    mk = Maker(**{str(p): {"gate": gate}})
    ts = TargetSet([str(tmp_path / "*")], make_target=mk)
    assert not ts.collect(0.1)[0].up
    p.unlink()
    assert ts.collect(0.1) == []
    t = mk.made[str(p)][0]
    assert not t.closed                           # its collection still runs
    gate.set()
    deadline = time.monotonic() + 5
    while not t.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert t.closed
    ts.close()


def test_queued_collections_cancelled_at_deadline():
    gate = threading.Event()
    mk = Maker(a={"gate": gate}, b={"gate": gate})
    ts = TargetSet(["a", "b", "c"], make_target=mk, workers=2)
    res = by_ns(ts.collect(0.2))
    assert not any(r.up for r in res.values())
    assert "not started" in res["c"].error
    gate.set()
    time.sleep(0.2)
    assert mk.made["c"][0].calls == 0            # cancelled, never ran late
    assert all(r.up for r in ts.collect(2))
    ts.close()


def test_real_targets_in_parallel(tmp_path):
    """NamespaceTargets with a fake backend: one slow dump does not hold the others."""
    worlds = {}
    for name, delay in (("a", 0.0), ("b", 0.8), ("c", 0.0)):
        (tmp_path / name).write_text("")
        w = worlds[str(tmp_path / name)] = World(make_snapshot(1, 2, mark=300))
        w.dump_delay = delay
        import os
        st = os.stat(tmp_path / name)
        w.ident = (st.st_dev, st.st_ino)

    def make(path):
        return NamespaceTarget(path, worlds[path].factory, port_reader=lambda p: {})
    ts = TargetSet([str(tmp_path / "*")], make_target=make)
    res = by_ns(ts.collect(0.3))
    assert [res[str(tmp_path / n)].up for n in "abc"] == [True, False, True]
    ts.close()


# -- server: deadline from the request -----------------------------------------------

def test_deadline_from_header():
    seen = []

    def collect(deadline):
        seen.append(deadline)
        return b"x 1\n"
    with ServerThread(collect, scrape_timeout=10.0, scrape_timeout_margin=0.5) as s:
        s.request()
        s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"})
        s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.4"})
        s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": "soon"})
        s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": "-1"})
        # absurd values: ignored, or clamped to the per-request time limit (60 s)
        for v in ("nan", "inf", "-inf", "0", "-0", "1e-400", "1" * 100):
            assert s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": v})[0] == 200
        for v in ("1e9", "1e20", "1e300", "1e309"):
            assert s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": v})[0] == 200
    assert seen == [9.5, 2.5, 0.2, 9.5, 9.5] + [9.5] * 7 + [59.5, 59.5, 59.5, 9.5]


def test_single_flight_joins_only_a_suitable_deadline():
    """A request joins a collection in flight only if it ends no later than
    the request's own deadline and not much earlier; otherwise it starts
    its own."""
    seen = []

    def collect(deadline):
        seen.append(deadline)
        time.sleep(0.6)
        return b"x 1\n"
    with ServerThread(collect, scrape_timeout=10.0, scrape_timeout_margin=0.5) as s:
        out = []

        def scrape(timeout):
            out.append(s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": timeout}))
        threads = [threading.Thread(target=scrape, args=(t,)) for t in ("4", "4", "2", "8")]
        threads[0].start()
        time.sleep(0.15)
        for t in threads[1:]:            # 4: joins (ends 0.15 s later, within 0.35 s);
            t.start()                    # 2: would wait past its deadline; 8: too short for it
        for t in threads:
            t.join(10)
        assert [r[0] for r in out] == [200] * 4
        assert sorted(seen) == [1.5, 3.5, 7.5] and s.server.collections == 3


def test_exporter_over_http_slow_namespace(tmp_path):
    mk = Maker(slow={"delay": 2.0}, bad={"fail": True})
    ts = TargetSet(["fast", "slow", "bad"], make_target=mk)
    exp = Exporter(ts, IngressRenderer(), build_info=default_build_info("native"))
    with ServerThread(exp, scrape_timeout=10.0, scrape_timeout_margin=0.5) as s:
        t0 = time.monotonic()
        status, _, body = s.request(headers={"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        assert time.monotonic() - t0 < 1.5
        assert status == 200
        m = parse(body)
        assert m[("ipvs_up", (("namespace", "fast"),))] == 1
        assert m[("ipvs_up", (("namespace", "slow"),))] == 0
        assert m[("ipvs_up", (("namespace", "bad"),))] == 0
        assert 0.4 <= m[("ipvs_scrape_duration_seconds", (("namespace", "slow"),))] < 1.0
        assert m[("ipvs_services_total", (("namespace", "fast"),))] == 1
        assert ("ipvs_services_total", (("namespace", "slow"),)) not in m
    exp.close()


# -- formats with several namespaces -------------------------------------------------

def _results():
    return [CollectResult("/run/netns/a", True, 0.01, make_snapshot(1, 2, mark=260), {260: "80"}),
            CollectResult("/run/netns/b", True, 0.02, make_snapshot(2, 1, mark=260), {}),
            CollectResult("/run/netns/c", False, 0.5, error="deadline")]


def test_ingress_several_namespaces():
    m = parse(IngressRenderer().render(_results()))
    assert m[("ipvs_connections_total", (("fwmark", "260"), ("namespace", "/run/netns/a"),
                                         ("port", "80")))] == 0
    assert m[("ipvs_connections_total", (("fwmark", "261"), ("namespace", "/run/netns/b"),
                                         ("port", "")))] == 1
    assert m[("ipvs_services_total", (("namespace", "/run/netns/b"),))] == 2
    assert m[("ipvs_up", (("namespace", "/run/netns/c"),))] == 0


def test_ipvs_several_namespaces():
    m = parse(IPVSRenderer().render(_results()))
    assert m[("ipvs_services", (("namespace", "/run/netns/a"),))] == 1
    assert m[("ipvs_services", (("namespace", "/run/netns/b"),))] == 2
    assert m[("ipvs_destinations", (("namespace", "/run/netns/b"),))] == 2
    assert m[("ipvs_up", (("namespace", "/run/netns/c"),))] == 0


def test_node_several_namespaces_label():
    text = NodeRenderer(namespace_label=True).render(_results()).decode()
    lines = [x for x in text.splitlines() if x.startswith("node_ipvs_backend_weight")]
    assert len(lines) == 4
    assert sum('namespace="/run/netns/a"' in x for x in lines) == 2
    assert sum('namespace="/run/netns/b"' in x for x in lines) == 2


def test_cli_namespace_paths(monkeypatch):
    a = cli.parse_args(["--namespace-path", "", "--namespace-path", "/run/netns/*"])
    assert a.namespace_path == ["", "/run/netns/*"]
    monkeypatch.setenv("IPVS_FAST_NAMESPACE_PATH", ",/run/netns/*, /var/run/docker/netns/*")
    assert cli.parse_args([]).namespace_path == ["", "/run/netns/*", "/var/run/docker/netns/*"]
    monkeypatch.setenv("IPVS_FAST_NAMESPACE_PATH", "")
    assert cli.parse_args([]).namespace_path == [""]
    assert cli.parse_args(["--namespace-path", "/x"]).namespace_path == ["/x"]   # flag wins
    monkeypatch.setenv("IPVS_FAST_SCRAPE_TIMEOUT", "20")
    monkeypatch.setenv("IPVS_FAST_SCRAPE_TIMEOUT_MARGIN", "1.5")
    a = cli.parse_args([])
    assert (a.scrape_timeout, a.scrape_timeout_margin) == (20.0, 1.5)


@pytest.mark.parametrize("args, flag", [
    (["--scrape-timeout", "0"], "--scrape-timeout"),
    (["--scrape-timeout", "x"], "--scrape-timeout"),
    (["--scrape-timeout-margin", "-1"], "--scrape-timeout-margin"),
])
def test_cli_bad_scrape_timeouts(capsys, args, flag):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(args)
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_filtered_collectors():
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
    r = CollectorRegistry()
    Gauge("a", "x", registry=r).set(1)
    Counter("b_total", "y", registry=r).inc(2)
    assert generate_latest(FilteredCollectors(r, lambda n: n != "a")).decode().startswith(
        "# HELP b_total y\n# TYPE b_total counter\nb_total 2.0\n")
    assert generate_latest(FilteredCollectors(r, lambda n: n != "b_total")).decode() == \
        "# HELP a x\n# TYPE a gauge\na 1.0\n"


# -- scrape error counters -------------------------------------------------------------

def test_scrape_errors_counted_per_namespace():
    """Failed, late, still-running and never-started collections count; good ones don't."""
    mk = Maker(slow={"delay": 0.6}, bad={"fail": True})
    ts = TargetSet(["fast", "slow", "bad"], make_target=mk)

    def errors(deadline):
        return {r.namespace: r.scrape_errors for r in ts.collect(deadline)}
    assert errors(0.2) == {"fast": 0, "slow": 1, "bad": 1}      # slow missed the deadline
    assert errors(0.2) == {"fast": 0, "slow": 2, "bad": 2}      # slow: still running
    time.sleep(0.7)
    assert errors(2.0) == {"fast": 0, "slow": 2, "bad": 3}      # slow made it this time
    ts.close()


def test_scrape_errors_follow_the_namespace(tmp_path):
    """A namespace gone from the expansion loses its count; back, it starts at 0."""
    p = tmp_path / "ns"
    p.write_text("")
    mk = Maker(**{str(p): {"fail": True}})
    ts = TargetSet([str(tmp_path / "*")], make_target=mk)
    assert [r.scrape_errors for r in ts.collect(1)] == [1]
    assert [r.scrape_errors for r in ts.collect(1)] == [2]
    p.unlink()
    assert ts.collect(1) == []
    p.write_text("")
    assert [r.scrape_errors for r in ts.collect(1)] == [1]
    ts.close()


@pytest.mark.parametrize("renderer", [IngressRenderer, IPVSRenderer, NodeRenderer])
def test_scrape_errors_in_every_format(renderer):
    mk = Maker(bad={"fail": True})
    ts = TargetSet(["good", "bad"], make_target=mk)
    exp = Exporter(ts, renderer(), build_info=default_build_info("native"))
    for n in (1, 2, 3):
        m = parse(b"".join(exp.collect(5.0)))
        assert m[("ipvs_scrape_errors_total", (("namespace", "bad"),))] == n
        assert m[("ipvs_scrape_errors_total", (("namespace", "good"),))] == 0
    # a family like any other for --metrics.*
    from ipvs_fast.formats.policy import FamilyFilter
    exp2 = Exporter(TargetSet(["bad"], make_target=mk), renderer(),
                    metric_filter=FamilyFilter([], ["ipvs_scrape_errors_total"]))
    assert b"ipvs_scrape_errors_total" not in b"".join(exp2.collect(5.0))
    exp.close()
    exp2.close()
