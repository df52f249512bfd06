"""Cardinality controls: service selectors (record-level filtering),
destination aggregation / dropping (ingress and ipvs formats), metric
family globs; CLI errors name the flag and exit 2."""
import math
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvs_fast import cli
from ipvs_fast.collection.namespaces import TargetSet
from ipvs_fast.exporter import Exporter
from ipvs_fast.formats.ingress import IngressRenderer
from ipvs_fast.formats.ipvs import DEST_FAMILIES as IPVS_DEST_FAMILIES
from ipvs_fast.formats.ipvs import DEST_INFO, IPVSRenderer
from ipvs_fast.formats.node import NodeRenderer
from ipvs_fast.formats.policy import (DEST_LABELS, FamilyFilter, ServiceFilter,
                                      parse_destination_labels, parse_selector)
from tests.test_cli import ROOT
from tests.test_formats import ipvs_reference, with_totals
from tests.test_ingress import (AF4, AF6, SCTP, SMALL_PORTS, TCP, UDP, reference, result,
                                results_st, samples, small_snapshot, snapshot)

NS = "/var/run/docker/netns/ingress_sbox"
INGRESS_DEST = {"ipvs_destination_active_connections_total", "ipvs_destination_inactive_connections_total",
                "ipvs_destination_bytes_in_total", "ipvs_destination_bytes_out_total",
                "ipvs_destination_connections_total"}
IPVS_DEST = {f[0] for f in IPVS_DEST_FAMILIES}


# -- selectors -------------------------------------------------------------------

@pytest.mark.parametrize("text, matches, misses", [
    ("tcp:10.0.0.0/8:*", [(AF4, TCP, 80, 0, "10.1.2.3")],
     [(AF4, UDP, 80, 0, "10.1.2.3"), (AF4, TCP, 80, 0, "11.0.0.1"), (AF6, TCP, 80, 0, "fd00::1"),
      (AF4, 0, 0, 260, "0.0.0.0")]),
    ("*:*:30000-32767", [(AF4, UDP, 30000, 0, "1.2.3.4"), (AF6, SCTP, 32767, 0, "::1")],
     [(AF4, TCP, 29999, 0, "1.2.3.4"), (AF4, 0, 0, 30000, "0.0.0.0")]),
    ("udp:[fd00::/8]:53", [(AF6, UDP, 53, 0, "fd12::1")],
     [(AF6, UDP, 53, 0, "fe80::1"), (AF4, UDP, 53, 0, "10.0.0.1"), (AF6, UDP, 54, 0, "fd12::1")]),
    ("udp:[fd00::]/8:53", [(AF6, UDP, 53, 0, "fd12::1")], [(AF6, UDP, 53, 0, "fe80::1")]),
    ("tcp:fd00::1:443", [(AF6, TCP, 443, 0, "fd00::1")], [(AF6, TCP, 443, 0, "fd00::2")]),
    ("SCTP:192.168.1.10:9000", [(AF4, SCTP, 9000, 0, "192.168.1.10")],
     [(AF4, TCP, 9000, 0, "192.168.1.10")]),
    ("fwmark:260", [(AF4, 0, 0, 260, "0.0.0.0"), (AF6, 0, 0, 260, "::")],
     [(AF4, 0, 0, 261, "0.0.0.0"), (AF4, TCP, 260, 0, "1.1.1.1")]),
    ("fwmark:0x100-0x1ff", [(AF4, 0, 0, 256, "0.0.0.0"), (AF4, 0, 0, 511, "0.0.0.0")],
     [(AF4, 0, 0, 512, "0.0.0.0")]),
    ("fwmark:*", [(AF4, 0, 0, 1, "0.0.0.0")], [(AF4, TCP, 80, 0, "1.1.1.1")]),
])
def test_selector_matching(text, matches, misses):
    sel = parse_selector(text)

    def m(af, proto, port, fw, addr):
        raw = socket.inet_pton(af, addr).ljust(16, b"\0")
        return sel.matches(af, proto, port, fw, raw)
    assert all(m(*x) for x in matches)
    assert not any(m(*x) for x in misses)


@pytest.mark.parametrize("text, msg", [
    ("tcp", "expected PROTO:ADDRESS:PORT"), ("icmp:*:*", "unknown protocol"),
    ("tcp:*", "expected PROTO:ADDRESS:PORT"), ("tcp:10.0.0.0/33:*", "not *, an IP address"),
    ("tcp:*:http", "port 'http'"), ("tcp:*:90-80", "out of range"), ("tcp:*:70000", "out of range"),
    ("fwmark:x", "fwmark 'x'"), ("tcp:[fd00::1:80", "missing ']'"), ("fwmark:-1", "fwmark"),
])
def test_selector_errors(text, msg):
    with pytest.raises(ValueError, match=msg.replace("*", r"\*").replace("(", r"\(")):
        parse_selector(text)


def _svc_keys(snap):
    services, dests = snap.decoded()
    out = []
    for i, s in enumerate(services):
        ds = dests[s.first_dest:s.first_dest + s.ndests]
        assert all(d.svc_index == i for d in ds)
        out.append((s.fwmark or s.port, [d.addr for d in ds]))
    # records are consistent: dest ranges tile the dest array in order
    pos = 0
    for s in services:
        assert s.first_dest == pos
        pos += s.ndests
    assert pos == len(dests)
    return out


def test_filter_keeps_and_renumbers():
    snap = with_totals(small_snapshot())
    f = ServiceFilter(include=["fwmark:*", "udp:*:*"], exclude=["fwmark:261"])
    got = f.apply(snap)
    assert got.totals == snap.totals             # namespace totals stay the kernel's
    keys = _svc_keys(got)
    assert [k[0] for k in keys] == [260, 260, 53]
    assert len(got.dests) // 144 == 4
    # renders exactly like a snapshot made of those services only
    full = small_snapshot().decoded()
    kept = [0, 1, 4]
    services, dests = full
    entries = [(services[i], dests[services[i].first_dest:services[i].first_dest
                                   + services[i].ndests]) for i in kept]
    expected = snapshot(entries)
    assert got.services == expected.services and got.dests == expected.dests
    assert IngressRenderer().render([result(got, ports=SMALL_PORTS)]) == \
        IngressRenderer().render([result(expected, ports=SMALL_PORTS)])


def test_filter_identity_when_everything_kept():
    snap = small_snapshot()
    assert ServiceFilter().apply(snap) is snap
    assert ServiceFilter(include=["fwmark:*", "*:*:*"]).apply(snap) is snap
    assert ServiceFilter(exclude=["sctp:*:*"]).apply(snap) is snap
    empty = ServiceFilter(include=["sctp:*:*"]).apply(snap)
    assert empty.services == b"" and empty.dests == b""


def test_filter_exclude_cidr_and_ports():
    snap = small_snapshot()
    got = ServiceFilter(exclude=["*:192.168.0.0/16:*", "fwmark:260-261"]).apply(snap)
    assert [k[0] for k in _svc_keys(got)] == [53]


def test_exporter_applies_service_filter():
    r = result(small_snapshot(), ports=SMALL_PORTS)
    target = type("T", (), {"collect": lambda self: r, "close": lambda self: None})()
    exp = Exporter(TargetSet([NS], lambda path: target), IngressRenderer(),
                   process_metrics=False, service_filter=ServiceFilter(include=["tcp:*:80"]))
    names = samples(b"".join(exp.collect()))
    svcs = [lab for n, lab, _ in names if n == "ipvs_connections_total"]
    assert svcs == [(("fwmark", "0"), ("namespace", NS), ("port", "80"), ("protocol", "tcp"),
                     ("service_address", "192.168.1.10"))]
    assert ("ipvs_services_total", (("namespace", NS),), 1.0) in names


# -- destinations ----------------------------------------------------------------

def test_destination_labels_parsing():
    assert parse_destination_labels("all", "ingress") is None
    assert parse_destination_labels("none", "ipvs") == "none"
    assert parse_destination_labels("none", "node") == "none"
    assert parse_destination_labels("address", "ingress") == ("address", "namespace")
    assert parse_destination_labels("destination_address, fwmark,namespace", "ipvs") == (
        "destination_address", "fwmark", "namespace")
    with pytest.raises(ValueError, match="unknown destination label.*service_address"):
        parse_destination_labels("service_address", "ipvs")
    with pytest.raises(ValueError, match="--node.backend-labels"):
        parse_destination_labels("address", "node")


AGG_EXPECTED = """\
ipvs_destination_connections_total{address="10.0.0.5",namespace="%(ns)s"} 7
ipvs_destination_connections_total{address="10.0.0.6",namespace="%(ns)s"} 5
ipvs_destination_connections_total{address="fd00::5",namespace="%(ns)s"} 1
ipvs_destination_connections_total{address="10.1.0.1",namespace="%(ns)s"} 7
ipvs_destination_connections_total{address="2001:db8::53",namespace="%(ns)s"} 8
""" % {"ns": NS}


def test_ingress_aggregate_by_address_exact():
    r = IngressRenderer(destinations=("address", "namespace"))
    res = [result(small_snapshot(), ports=SMALL_PORTS)]
    out = r.render(res).decode()
    assert "".join(x + "\n" for x in out.splitlines()
                   if x.startswith("ipvs_destination_connections_total{")) == AGG_EXPECTED
    assert 'ipvs_destination_inactive_connections_total{address="10.1.0.1",namespace="%s"} 9' \
        % NS in out
    # every non-destination line unchanged
    full = IngressRenderer().render(res).decode()
    assert [x for x in full.splitlines() if x.split("{")[0] not in INGRESS_DEST] == \
        [x for x in out.splitlines() if x.split("{")[0] not in INGRESS_DEST]
    assert r.render(res).decode() == out                # cached groups: same output


def test_ingress_aggregate_per_namespace_and_none():
    res = [result(small_snapshot(), ports=SMALL_PORTS), result(small_snapshot(), ns="/b")]
    out = samples(IngressRenderer(destinations=("namespace",)).render(res))
    d = {(n, lab): v for n, lab, v in out}
    assert d[("ipvs_destination_connections_total", (("namespace", NS),))] == 7 + 5 + 1 + 3 + 4 + 8
    assert d[("ipvs_destination_connections_total", (("namespace", "/b"),))] == 28
    none = IngressRenderer(destinations="none").render(res).decode()
    assert not any(x.split("{")[0] in INGRESS_DEST for x in none.splitlines())
    assert "ipvs_destination_total{" in none             # the per-service count stays


def test_ipvs_aggregate_and_none():
    res = [result(small_snapshot(), ns="/n")]
    out = IPVSRenderer(destinations=("destination_address", "namespace")).render(res).decode()
    assert DEST_INFO[0] not in out
    d = {(n, lab): v for n, lab, v in samples(out)}
    assert d[("ipvs_destination_connections_total",
              (("destination_address", "10.1.0.1"), ("namespace", "/n")))] == 7
    none = IPVSRenderer(destinations="none").render(res).decode()
    assert not any(x.split("{")[0] in IPVS_DEST | {DEST_INFO[0]} for x in none.splitlines())
    assert "ipvs_service_destinations{" in none


def aggregate(text, dest_names, keep):
    """Reference aggregation of a collector's exposition (one namespace)."""
    out = {}
    for name, lab, v in samples(text):
        if name not in dest_names:
            continue
        key = (name, tuple((k, x) for k, x in lab if k in keep))
        out[key] = out.get(key, 0) + v
    return out


def _close(a, b):
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-12) for k in a)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st(), st.sets(st.sampled_from(DEST_LABELS["ingress"])),
       st.sets(st.sampled_from(DEST_LABELS["ipvs"])))
def test_aggregation_matches_reference(results, keep_i, keep_p):
    keep_i = parse_destination_labels(",".join(keep_i) or "namespace", "ingress")
    keep_p = parse_destination_labels(",".join(keep_p) or "namespace", "ipvs")
    if len({x.namespace for x in results}) != len(results):
        return                                   # repeated namespaces: ambiguous
    ri = IngressRenderer(destinations=keep_i)
    rp = IPVSRenderer(destinations=keep_p)
    for _ in range(2):                           # the second time from the cache
        got_i, got_p, ref_i, ref_p = {}, {}, {}, {}
        for r in results:
            got_i.update(aggregate(ri.render([r]), INGRESS_DEST, DEST_LABELS["ingress"]))
            ref_i.update(aggregate(reference([r]), INGRESS_DEST, keep_i))
            got_p.update(aggregate(rp.render([r]), IPVS_DEST, DEST_LABELS["ipvs"]))
            ref_p.update(aggregate(ipvs_reference([r]), IPVS_DEST, keep_p))
        assert _close(got_i, ref_i)
        assert _close(got_p, ref_p)


# -- metric families -------------------------------------------------------------

def test_family_filter():
    f = FamilyFilter(include=["ipvs_*"], exclude=["*_per_second", "ipvs_up"])
    assert f("ipvs_service_connections_total") and not f("ipvs_service_connections_per_second")
    assert not f("ipvs_up") and not f("process_cpu_seconds_total")
    assert FamilyFilter()("anything")
    for bad in ("ipvs up", "a{b}", "ipvs_[x", ""):
        with pytest.raises(ValueError):
            FamilyFilter([bad])


def test_family_filter_in_every_format():
    f = FamilyFilter(exclude=["ipvs_destination_*", "*_per_second", "ipvs_scrape_duration_seconds"])
    res = [result(with_totals(small_snapshot()), ports=SMALL_PORTS)]
    ing = IngressRenderer(metric_filter=f).render(res).decode()
    names = {x.split()[2] for x in ing.splitlines() if x.startswith("# TYPE")}
    assert names == {"ipvs_services_total", "ipvs_connections_total", "ipvs_bytes_in_total",
                     "ipvs_bytes_out_total", "ipvs_up"}
    # the remaining families are rendered exactly as without the filter
    full = IngressRenderer().render(res).decode()
    assert ing == "".join(b for b in _blocks(full) if b.split()[2] in names)
    ipv = IPVSRenderer(metric_filter=f).render(res).decode()
    assert "ipvs_service_connections_total{" in ipv and "_per_second" not in ipv
    assert "ipvs_destination_" not in ipv and "ipvs_scrape_duration" not in ipv
    assert "ipvs_destinations{" in ipv
    node = NodeRenderer(metric_filter=FamilyFilter(include=["node_ipvs_backend_weight"])) \
        .render(res).decode()
    assert {x.split()[2] for x in node.splitlines() if x.startswith("# TYPE")} == \
        {"node_ipvs_backend_weight"}


def _blocks(text):
    out, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP") and cur:
            out.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        out.append("".join(cur))
    return out


def test_exporter_filters_process_metrics():
    def body(**kw):
        return b"".join(Exporter(TargetSet([], None), IngressRenderer(), **kw).collect())
    assert b"process_" not in body(metric_filter=FamilyFilter(exclude=["process_*"]))
    assert b"process_cpu_seconds_total" in body()


# -- CLI -----------------------------------------------------------------------------

def test_cli_policy_flags(monkeypatch):
    a = cli.parse_args(["--service.include", "tcp:10.0.0.0/8:*,fwmark:*",
                        "--service.include", "udp:*:53", "--service.exclude", "fwmark:999",
                        "--metrics.exclude", "*_per_second", "--format", "ipvs",
                        "--destination.labels", "destination_address"])
    assert [s.text for s in a.service_filter.include] == ["tcp:10.0.0.0/8:*", "fwmark:*", "udp:*:53"]
    assert [s.text for s in a.service_filter.exclude] == ["fwmark:999"]
    assert a.destinations == ("destination_address", "namespace")
    assert not a.metric_filter("ipvs_service_connections_per_second")
    r = cli.make_renderer(a)
    assert type(r).__name__ == "IPVSRenderer"
    monkeypatch.setenv("IPVS_FAST_SERVICE_EXCLUDE", "tcp:*:22, fwmark:1")
    monkeypatch.setenv("IPVS_FAST_METRICS_INCLUDE", "ipvs_up,ipvs_service_*")
    monkeypatch.setenv("IPVS_FAST_DESTINATION_LABELS", "none")
    a = cli.parse_args([])
    assert [s.text for s in a.service_filter.exclude] == ["tcp:*:22", "fwmark:1"]
    assert a.metric_filter.include == ("ipvs_up", "ipvs_service_*")
    assert a.destinations == "none"


@pytest.mark.parametrize("args, env, flag", [
    (["--service.include", "tcp:10.0.0.0/8"], {}, "--service.include"),
    (["--service.exclude", "fwmark:abc"], {}, "--service.exclude"),
    (["--metrics.include", "ipvs up"], {}, "--metrics.include"),
    (["--metrics.exclude", "x[y"], {}, "--metrics.exclude"),
    (["--destination.labels", "nope"], {}, "--destination.labels"),
    (["--format", "node", "--destination.labels", "address"], {}, "--destination.labels"),
    ([], {"IPVS_FAST_SERVICE_INCLUDE": "http:*:*"}, "--service.include"),
    ([], {"IPVS_FAST_METRICS_EXCLUDE": "a b"}, "--metrics.exclude"),
    ([], {"IPVS_FAST_DESTINATION_LABELS": "bogus"}, "--destination.labels"),
])
def test_cli_policy_errors(monkeypatch, capsys, args, env, flag):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        cli.parse_args(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "usage:" in err
    for k in env:
        assert k in err


def test_cli_policy_error_subprocess():
    p = subprocess.run([sys.executable, "-m", "ipvs_fast", "--service.include", "tcp:*"],
                       capture_output=True, text=True, cwd=str(ROOT), timeout=30)
    assert p.returncode == 2 and "--service.include" in p.stderr and "PROTO:ADDRESS:PORT" in p.stderr
