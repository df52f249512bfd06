"""ingress_ipvs_exporter-compatible output: the hand renderer vs the
prometheus_client collector, exact exposition, label rules."""
import math
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ipvs_fast.backends.records import (DEST_STRUCT, SVC_STRUCT, Dest, Service, pack_dest,
                                         pack_service)
from ipvs_fast.backends.snapshot import Snapshot
from ipvs_fast.collection.target import CollectResult
from ipvs_fast.formats import exposition, ingress
from ipvs_fast.formats.ingress import (IngressCollector, IngressRenderer, collect_families, render)

FIXTURES = Path(__file__).parent / "fixtures"
AF4, AF6 = socket.AF_INET, socket.AF_INET6
TCP, UDP, SCTP = 6, 17, 132

# HELP strings exactly as ingress_ipvs_exporter prints them (typos included).
EXPECTED_FAMILIES = {
    "ipvs_services_total": ("gauge", "The total number of services registered in ipvs"),
    "ipvs_connections_total": ("counter", "The total number of connections made to a virtual server"),
    "ipvs_bytes_in_total": ("counter", "The total number of incoming bytes a virtual server"),
    "ipvs_bytes_out_total": ("counter", "The total number of outgoing bytes from a virtual server"),
    "ipvs_destination_total": ("gauge", "The total number of real servers that are destinations to the service"),
    "ipvs_destination_active_connections_total": ("gauge", "The total number of connections established to a destination server"),
    "ipvs_destination_inactive_connections_total": ("gauge", "The total number of connections inactive but established to a destination server"),
    "ipvs_destination_bytes_in_total": ("counter", "The total number of incoming bytes to a real server"),
    "ipvs_destination_bytes_out_total": ("counter", "The total number of outgoing bytes to a real server"),
    "ipvs_destination_connections_total": ("counter", "The total number connections ever established to a destination"),
}
BUILD_INFO = {"version": "0.1.0", "backend": "native", "python_version": "3.11.7"}


# -- snapshot building ----------------------------------------------------------

def ip(text: str) -> bytes:
    if ":" in text:
        return socket.inet_pton(AF6, text)
    return socket.inet_pton(AF4, text) + bytes(12)


def stats(conns=0, inpkts=0, outpkts=0, inbytes=0, outbytes=0):
    return (conns, inpkts, outpkts, inbytes, outbytes, 1, 2, 3, 4, 5)


def svc(af=AF4, protocol=0, port=0, fwmark=0, addr="0.0.0.0", st=stats()):
    """A service record (first_dest/ndests filled in by snapshot())."""
    return Service(af, protocol, port, 1, fwmark, 0, 0, 0xFFFFFFFF, ip(addr),
                   b"rr".ljust(16, b"\0"), bytes(32), st, 0, 0)


def dest(addr, port=0, active=0, inactive=0, st=stats(), af=None):
    if af is None:
        af = AF6 if ":" in addr else AF4
    return Dest(0, af, port, ip(addr), 0, 1, 0, 0, active, inactive, 0, 0, 0, 0, 1, st)


def snapshot(entries) -> Snapshot:
    """entries: [(Service, [Dest, ...]), ...] -> Snapshot with consistent indexes."""
    sbuf, dbuf = [], []
    n = 0
    for i, (s, ds) in enumerate(entries):
        sbuf.append(pack_service(s._replace(first_dest=n, ndests=len(ds))))
        for d in ds:
            dbuf.append(pack_dest(d._replace(svc_index=i)))
        n += len(ds)
    return Snapshot(b"".join(sbuf), b"".join(dbuf))


def result(snap=None, ns="/var/run/docker/netns/ingress_sbox", ports=None, up=True,
           duration=0.25, error=None):
    return CollectResult(ns, up, duration, snap if up else None, dict(ports or {}),
                         None if up else (error or "namespace path missing"))


def small_snapshot() -> Snapshot:
    return snapshot([
        # Swarm-style fwmark service, published port 30000 (mark 260)
        (svc(fwmark=260, st=stats(conns=12, inbytes=3456, outbytes=789012)), [
            dest("10.0.0.5", active=2, inactive=3, st=stats(conns=7, inbytes=2000, outbytes=500000)),
            dest("10.0.0.6", active=0, inactive=1, st=stats(conns=5, inbytes=1456, outbytes=289012)),
        ]),
        # IPv6 fwmark service with the same mark: must stay a distinct series
        (svc(af=AF6, fwmark=260, addr="::", st=stats(conns=1, inbytes=100, outbytes=200)), [
            dest("fd00::5", st=stats(conns=1, inbytes=100, outbytes=200)),
        ]),
        # fwmark with no published port in the port map
        (svc(fwmark=261), []),
        # plain TCP service: virtual port, protocol, service_address; dests with ports
        (svc(protocol=TCP, port=80, addr="192.168.1.10",
             st=stats(conns=2 ** 64 - 1, inbytes=2 ** 53 + 1, outbytes=10 ** 15)), [
            dest("10.1.0.1", port=8080, active=4, st=stats(conns=3)),
            dest("10.1.0.1", port=8081, inactive=9, st=stats(conns=4)),
        ]),
        (svc(af=AF6, protocol=UDP, port=53, addr="2001:db8::1"), [
            dest("2001:db8::53", port=53, st=stats(conns=8, inbytes=64, outbytes=128)),
        ]),
    ])


SMALL_PORTS = {260: "30000"}


def samples(text):
    """Sorted (name, labels, value) of an exposition; NaN-safe."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            v = "NaN" if math.isnan(s.value) else s.value
            out.append((s.name, tuple(sorted(s.labels.items())), v))
    return sorted(out, key=lambda t: (t[0], t[1], float(t[2])))


def reference(results, build_info=None) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IngressCollector(lambda: results, build_info))
    return generate_latest(reg)


def by_name(text):
    d = {}
    for name, labels, value in samples(text):
        d.setdefault(name, []).append((dict(labels), value))
    return d


# -- exact exposition -------------------------------------------------------------

def test_small_fixture_exact():
    res = [result(small_snapshot(), ports=SMALL_PORTS, duration=0.25)]
    out = IngressRenderer().render(res, BUILD_INFO)
    expected = (FIXTURES / "ingress_small.prom").read_bytes()
    assert out.decode() == expected.decode()
    # and the prometheus_client collector agrees sample for sample
    assert samples(reference(res, BUILD_INFO)) == samples(expected)


def test_small_fixture_module_render_and_repeat():
    res = [result(small_snapshot(), ports=SMALL_PORTS, duration=0.25)]
    expected = (FIXTURES / "ingress_small.prom").read_bytes()
    r = IngressRenderer()
    for _ in range(3):          # cold, then cached
        assert r.render(res, BUILD_INFO) == expected
    assert render(res, BUILD_INFO) == expected


def test_help_and_type_verbatim():
    res = [result(small_snapshot(), ports=SMALL_PORTS)]
    for text in (render(res).decode(), reference(res).decode()):
        helps, types = {}, {}
        for line in text.splitlines():
            if line.startswith("# HELP "):
                name, doc = line[7:].split(" ", 1)
                helps[name] = doc
            elif line.startswith("# TYPE "):
                name, typ = line[7:].split(" ", 1)
                types[name] = typ
        for name, (typ, doc) in EXPECTED_FAMILIES.items():
            assert helps[name] == doc
            assert types[name] == typ
        assert types["ipvs_up"] == "gauge"
        assert types["ipvs_scrape_duration_seconds"] == "gauge"
    assert "_created" not in reference(res).decode()
    assert "_created" not in render(res).decode()


def test_integers_printed_as_integers():
    text = render([result(small_snapshot(), ports=SMALL_PORTS)]).decode()
    assert ' 1000000000000000\n' in text          # prometheus_client: 1e+15
    assert ' 789012\n' in text
    # beyond 2**53 float64 cannot hold every integer: printed exactly as
    # prometheus_client does, so both parse to the same value
    assert ' 1.8446744073709552e+19\n' in text
    assert ' 9.007199254740992e+15\n' in text
    for name, _, value in samples(text):
        assert float(value) == value


# -- label rules --------------------------------------------------------------------

NS = "/var/run/docker/netns/ingress_sbox"


def test_label_rules():
    m = by_name(render([result(small_snapshot(), ports=SMALL_PORTS)]))
    conns = m["ipvs_connections_total"]
    labelsets = [lbl for lbl, _ in conns]
    assert {"namespace": NS, "fwmark": "260", "port": "30000"} in labelsets
    # same mark, other family: distinct series (the mark's port applies to both)
    assert {"namespace": NS, "fwmark": "260", "port": "30000", "family": "inet6"} in labelsets
    assert {"namespace": NS, "fwmark": "261", "port": ""} in labelsets
    assert {"namespace": NS, "fwmark": "0", "port": "80", "protocol": "tcp",
            "service_address": "192.168.1.10"} in labelsets
    assert {"namespace": NS, "fwmark": "0", "port": "53", "protocol": "udp",
            "service_address": "2001:db8::1"} in labelsets
    assert len(labelsets) == 5
    assert m["ipvs_services_total"] == [({"namespace": NS}, 5.0)]

    dtot = {lbl["fwmark"] + "/" + lbl.get("protocol", lbl.get("family", "")): v
            for lbl, v in m["ipvs_destination_total"]}
    assert dtot == {"260/": 2, "260/inet6": 1, "261/": 0, "0/tcp": 2, "0/udp": 1}

    active = m["ipvs_destination_active_connections_total"]
    assert ({"namespace": NS, "fwmark": "260", "port": "30000", "address": "10.0.0.5"}, 2.0) in active
    assert ({"namespace": NS, "fwmark": "260", "port": "30000", "family": "inet6",
             "address": "fd00::5"}, 0.0) in active
    # two dests on one IP, told apart by destination_port
    tcp = [(lbl, v) for lbl, v in active if lbl.get("protocol") == "tcp"]
    assert sorted((lbl["address"], lbl["destination_port"], v) for lbl, v in tcp) == [
        ("10.1.0.1", "8080", 4.0), ("10.1.0.1", "8081", 0.0)]
    inactive = m["ipvs_destination_inactive_connections_total"]
    assert ({"namespace": NS, "fwmark": "0", "port": "80", "protocol": "tcp",
             "service_address": "192.168.1.10", "address": "10.1.0.1",
             "destination_port": "8081"}, 9.0) in inactive
    # no destination_port label for port-0 (fwmark) dests
    assert all("destination_port" not in lbl for lbl, _ in active if lbl["fwmark"] != "0")
    # every series carries namespace
    for name, series in m.items():
        if name != "ipvs_exporter_build_info":
            assert all(lbl["namespace"] == NS for lbl, _ in series)


def test_sctp_and_unknown_protocol():
    snap = snapshot([(svc(protocol=SCTP, port=9, addr="10.9.9.9"), []),
                     (svc(protocol=99, port=10, addr="10.9.9.9"), [])])
    m = by_name(render([result(snap)]))
    assert sorted(lbl["protocol"] for lbl, _ in m["ipvs_connections_total"]) == ["99", "sctp"]


def test_dest_counters_from_64bit_stats():
    big = 2 ** 40 + 7
    snap = snapshot([(svc(protocol=TCP, port=1, addr="10.0.0.1"),
                      [dest("10.0.0.2", port=1, st=stats(conns=big, inbytes=big + 1, outbytes=big + 2))])])
    m = by_name(render([result(snap)]))
    assert m["ipvs_destination_connections_total"][0][1] == big
    assert m["ipvs_destination_bytes_in_total"][0][1] == big + 1
    assert m["ipvs_destination_bytes_out_total"][0][1] == big + 2


# -- up / down ------------------------------------------------------------------------

def test_down_namespace_emits_only_up_and_duration():
    res = [result(ns="/nonexistent", up=False, duration=0.001)]
    out = render(res, BUILD_INFO).decode()
    names = {n for n, _, _ in samples(out)}
    assert names == {"ipvs_up", "ipvs_scrape_duration_seconds", "ipvs_exporter_build_info"}
    assert 'ipvs_up{namespace="/nonexistent"} 0\n' in out
    assert "ipvs_services_total" not in out and "ipvs_destination" not in out
    assert samples(out) == samples(reference(res, BUILD_INFO))


def test_mixed_up_and_down_namespaces():
    res = [result(small_snapshot(), ns="/a", ports=SMALL_PORTS),
           result(ns="/b", up=False)]
    out = render(res)
    assert samples(out) == samples(reference(res))
    m = by_name(out)
    assert sorted((lbl["namespace"], v) for lbl, v in m["ipvs_up"]) == [("/a", 1.0), ("/b", 0.0)]
    assert {lbl["namespace"] for n, series in m.items() if n.startswith("ipvs_dest")
            for lbl, _ in series} == {"/a"}


def test_up_with_no_services():
    res = [result(Snapshot(b"", b""))]
    out = render(res).decode()
    assert 'ipvs_services_total{namespace="%s"} 0\n' % NS in out
    assert "ipvs_connections_total" not in out
    assert samples(out) == samples(reference(res))


def test_no_results():
    assert render([]) == b""
    assert samples(render([], BUILD_INFO)) == samples(reference([], BUILD_INFO))


# -- escaping ------------------------------------------------------------------------

@pytest.mark.parametrize("ns", ['a"b', "a\\b", "a\nb", "100%s%%d%(x)s", "ünï\u2603\U0001F600", "", '\\"\n\\n'])
def test_odd_namespace_strings(ns):
    res = [result(small_snapshot(), ns=ns, ports={260: 'p"\\\n'})]
    out = render(res)
    assert samples(out) == samples(reference(res))
    assert {lbl["namespace"] for _, lbls, _ in samples(out) for lbl in [dict(lbls)]
            if "namespace" in lbl} == {ns}


def test_escaping_functions():
    assert exposition.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert exposition.escape_help('a\\b"c\nd') == 'a\\\\b"c\\nd'


# -- collector ----------------------------------------------------------------------

def test_collector_in_registry_and_sources():
    snap = small_snapshot()

    class T:
        calls = 0

        def collect(self):
            T.calls += 1
            return result(snap, ports=SMALL_PORTS)

    reg = CollectorRegistry()
    reg.register(IngressCollector([T()], BUILD_INFO))
    text = generate_latest(reg)
    assert T.calls == 1                       # registration did not collect
    assert samples(text) == samples(render([result(snap, ports=SMALL_PORTS)], BUILD_INFO))
    fams = {f.name: f for f in collect_families([result(snap, ports=SMALL_PORTS)])}
    assert fams["ipvs_connections"].type == "counter"
    assert fams["ipvs_destination_total"].type == "gauge"


# -- internals: record offsets -------------------------------------------------------

def test_column_offsets_match_struct():
    snap = small_snapshot()
    rows = list(DEST_STRUCT.iter_unpack(snap.dests))
    cols = ingress.dest_columns(snap.dests)
    for spec in ingress.DEST_FAMILIES:
        assert list(cols[spec[3]]) == [r[spec[3]] for r in rows], spec[0]
    srows = list(SVC_STRUCT.iter_unpack(snap.services))
    scols = ingress.svc_columns(snap.services)
    for spec in ingress.SVC_FAMILIES:
        assert list(scols[spec[3]]) == [r[spec[3]] for r in srows], spec[0]
    assert struct.calcsize("<IHH") == ingress._DEST_KEY_OFF + 4


def test_big_endian_fallback_path(monkeypatch):
    res = [result(small_snapshot(), ports=SMALL_PORTS, duration=0.25)]
    expected = (FIXTURES / "ingress_small.prom").read_bytes()
    monkeypatch.setattr(ingress, "_LITTLE", False)
    r = IngressRenderer()
    assert r.render(res, BUILD_INFO) == expected
    assert r.render(res, BUILD_INFO) == expected


# -- cache behaviour ----------------------------------------------------------------

def _many(n_svc, n_dest, base=0, mark_base=256):
    return snapshot([(svc(fwmark=mark_base + base + i),
                      [dest("10.%d.%d.%d" % ((base + i) // 250 % 250, (base + i) % 250, j + 1))
                       for j in range(n_dest)]) for i in range(n_svc)])


def test_cache_bounded_under_churn():
    r = IngressRenderer()
    for gen in range(20):
        snap = _many(50, 4, base=gen * 50)
        out = r.render([result(snap)])
        assert r.cache_size() == (50, 200)
        assert samples(out) == samples(reference([result(snap)]))
    r.render([result(ns=NS, up=False)])
    assert r.cache_size() == (0, 0)


def test_cache_follows_changes():
    """Every change that affects labels must show up despite the cache."""
    r = IngressRenderer()
    base = small_snapshot()
    variants = [
        (base, SMALL_PORTS),
        (base, {260: "30001"}),                         # published port changed
        (base, {260: "30001", 261: "8080"}),            # mark got mapped
        (snapshot([(svc(fwmark=260), [dest("10.0.0.6"), dest("10.0.0.7")])]), SMALL_PORTS),
        (snapshot([(svc(fwmark=260), [dest("10.0.0.7"), dest("10.0.0.6")])]), SMALL_PORTS),
        (snapshot([(svc(fwmark=260), [dest("10.0.0.7", port=1)])]), SMALL_PORTS),
        (snapshot([(svc(fwmark=262), [dest("10.0.0.7", port=1)])]), SMALL_PORTS),
        (snapshot([(svc(fwmark=262), [dest("10.0.0.7", port=1, active=5)])]), SMALL_PORTS),
        (base, SMALL_PORTS),
    ]
    for snap, ports in variants:
        res = [result(snap, ports=ports)]
        assert r.render(res) == IngressRenderer().render(res)
        assert samples(r.render(res)) == samples(reference(res))


def test_malformed_ranges_match_collector():
    """Ranges that overlap, skip or run past the dest array: the renderer must
    still agree with the collector (which follows first_dest/ndests)."""
    d = [pack_dest(dest("10.0.0.%d" % i, port=i, active=i)._replace(svc_index=0))
         for i in range(1, 6)]
    s1 = pack_service(svc(protocol=TCP, port=1, addr="1.1.1.1")._replace(first_dest=3, ndests=2))
    s2 = pack_service(svc(protocol=TCP, port=2, addr="1.1.1.1")._replace(first_dest=0, ndests=2))
    s3 = pack_service(svc(protocol=TCP, port=3, addr="1.1.1.1")._replace(first_dest=1, ndests=99))
    s4 = pack_service(svc(protocol=TCP, port=4, addr="1.1.1.1")._replace(first_dest=77, ndests=1))
    snap = Snapshot(s1 + s2 + s3 + s4, b"".join(d))
    res = [result(snap)]
    r = IngressRenderer()
    for _ in range(2):
        assert samples(r.render(res)) == samples(reference(res))


# -- hypothesis: renderer == collector on arbitrary snapshots -------------------------

label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
ipv4 = st.binary(min_size=4, max_size=4).map(lambda b: b + bytes(12))
ipv6 = st.binary(min_size=16, max_size=16)
u64 = st.integers(0, 2 ** 64 - 1)
u32 = st.integers(0, 2 ** 32 - 1)
u16 = st.integers(0, 2 ** 16 - 1)


@st.composite
def dests_st(draw):
    af = draw(st.sampled_from([AF4, AF6]))
    addr = draw(ipv4 if af == AF4 else ipv6)
    return Dest(0, af, draw(st.one_of(st.just(0), u16)), addr, 0, 1, 0, 0, draw(u32), draw(u32),
                0, 0, 0, 0, 1, tuple(draw(st.lists(u64, min_size=10, max_size=10))))


@st.composite
def services_st(draw):
    af = draw(st.sampled_from([AF4, AF6]))
    fw = draw(st.one_of(st.just(0), st.integers(1, 2 ** 32 - 1), st.integers(256, 260)))
    if fw:
        proto, port, addr = 0, 0, bytes(16)
    else:
        proto = draw(st.sampled_from([TCP, UDP, SCTP]))
        port = draw(u16)
        addr = draw(ipv4 if af == AF4 else ipv6)
    s = Service(af, proto, port, 1, fw, 0, 0, 0, addr, bytes(16), bytes(32),
                tuple(draw(st.lists(u64, min_size=10, max_size=10))), 0, 0)
    return s, draw(st.lists(dests_st(), max_size=4))


@st.composite
def results_st(draw):
    n = draw(st.integers(1, 3))
    out = []
    for _ in range(n):
        up = draw(st.booleans())
        ns = draw(label_text)
        dur = draw(st.floats(0, 1e6, allow_nan=False))
        if not up:
            out.append(CollectResult(ns, False, dur, None, {}, "down"))
            continue
        snap = snapshot(draw(st.lists(services_st(), max_size=5)))
        ports = draw(st.dictionaries(st.integers(1, 2 ** 32 - 1) | st.integers(256, 260),
                                     label_text, max_size=4))
        out.append(CollectResult(ns, True, dur, snap, ports, None))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st(), st.one_of(st.none(), st.fixed_dictionaries(
    {"version": label_text, "backend": label_text, "python_version": label_text})))
def test_renderer_matches_collector(results, build_info):
    ref = samples(reference(results, build_info))
    assert samples(IngressRenderer().render(results, build_info)) == ref


_shared = IngressRenderer()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(results_st(), min_size=1, max_size=3))
def test_cached_renderer_matches_fresh(sequence):
    """A long-lived renderer (warm, stale cache from earlier examples) renders
    each snapshot exactly like a fresh one."""
    for results in sequence:
        assert _shared.render(results) == IngressRenderer().render(results)


def test_extra_text_appended():
    res = [result(ns="/x", up=False)]
    extra = "# HELP p q\n# TYPE p gauge\np 1\n"
    out = IngressRenderer().render(res, None, extra).decode()
    assert out == IngressRenderer().render(res).decode() + extra
    assert ("p", (), 1) in samples(out)
    assert IngressRenderer().render([], None, "p 1") == b"p 1\n"


def test_collector_and_render_accept_single_items():
    r1 = result(small_snapshot(), ports=SMALL_PORTS)

    class T:
        def collect(self):
            return r1
    expected = samples(render([r1]))
    assert samples(render(r1)) == expected
    for source in (T(), [T()], lambda: [r1], lambda: r1):
        assert samples(reference_from(source)) == expected


def reference_from(source) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IngressCollector(source))
    return generate_latest(reg)
