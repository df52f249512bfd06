"""--format node and --format ipvs on the planned exposition: the compiled
core and the pure-Python path write the same bytes; node series are sorted
as client_golang sorts them and summed as node_exporter sums them; the
caches (series grouping, label blocks) follow the snapshot's identity."""
import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ipvs_fast.backends.records import pack_dest, pack_service
from ipvs_fast.formats import exposition
from ipvs_fast.formats.exposition import go_float
from ipvs_fast.formats.ipvs import IPVSRenderer
from ipvs_fast.formats.node import NODE_LABELS, NodeRenderer
from tests.test_formats import (ipvs_snapshot, needs_node_exporter, node_reference, node_snapshot,
                                only_node, real_node_exporter, with_totals)
from tests.test_ingress import (AF6, TCP, UDP, dest, ip, label_text, result, results_st, samples,
                                snapshot, svc)


@pytest.fixture(params=["native", "python"])
def formatter(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(exposition, "_NATIVE", None)
    elif exposition._native_formatter() is None:
        pytest.fail("the C extension is not built (pip install -e .)")
    return request.param


def both_paths(render):
    """render() with the compiled core, then without it."""
    native = render()
    saved = exposition._NATIVE
    exposition._NATIVE = None
    try:
        python = render()
    finally:
        exposition._NATIVE = saved
    return native, python


def big_snapshot(n_svcs=300, per=7, seed=1):
    """Values around Go's float formatting boundaries, negative weights,
    fwmark v4/v6 sharing marks, repeated destinations across services."""
    rnd = random.Random(seed)
    vals = [0, 1, 999999, 1000000, 1234567, 2 ** 31 - 1, 2 ** 32 - 1, 10 ** 9]
    entries = []
    for i in range(n_svcs):
        kind = i % 4
        if kind == 0:
            s = svc(fwmark=256 + i % 5)
        elif kind == 1:
            s = svc(af=AF6, fwmark=256 + i % 5, addr="::")
        elif kind == 2:
            s = svc(protocol=TCP, port=80 + i % 3, addr="10.9.%d.1" % (i % 7))
        else:
            s = svc(af=AF6, protocol=UDP, port=53, addr="fd00::%x" % (i % 11))
        ds = []
        for j in range(per):
            a = "10.1.%d.%d" % (j, i % 3) if rnd.random() < 0.7 else "fd00:1::%x" % j
            ds.append(dest(a, port=8000 + j % 2, active=rnd.choice(vals),
                           inactive=rnd.choice(vals))._replace(
                weight=rnd.choice([0, 1, -5, 2 ** 31 - 1, -(2 ** 31), 1000000])))
        entries.append((s, ds))
    return with_totals(snapshot(entries), (2 ** 53 + 1, 2 ** 64 - 1, 1000000, 999999, 0,
                                           1, 2, 3, 4, 5))


# -- node -------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [NODE_LABELS, (), ("proto",), ("remote_address", "local_mark"),
                                    ("local_port", "remote_port")])
@pytest.mark.parametrize("many", [False, True])
def test_node_native_and_python_identical(labels, many):
    res = [result(big_snapshot(), ns="/a", duration=0.5)]
    if many:
        res += [result(big_snapshot(seed=2), ns="/b"), result(node_snapshot(), ns="/a\"\\\n"),
                result(ns="/gone", up=False)]
    native, python = both_paths(lambda: NodeRenderer(labels, many).render(res))
    assert native == python
    assert samples(native) == samples(node_reference(res, labels, many))
    # the totals and sums take Go's float text ("1e+06", "9.007199254740992e+15")
    assert b" 1e+06\n" in native and b"node_ipvs_connections_total" in native


def test_node_values_printed_like_go():
    res = [result(big_snapshot())]
    text = NodeRenderer(()).render(res).decode()
    lines = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln.startswith("node_ipvs"))
    ref = {n: v for n, _, v in samples(node_reference(res, ()))}
    for name, v in ref.items():
        if name.startswith("node_ipvs"):
            assert lines[name] == go_float(v), name


def series_in_order(text):
    """(family, label values in label-name order) of every sample, in output order."""
    if isinstance(text, bytes):
        text = text.decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            yield fam.name, tuple(v for _, v in sorted(s.labels.items())), s.value


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st(), st.sampled_from([NODE_LABELS, (), ("proto", "remote_port"),
                                      ("local_address",)]))
def test_node_series_sorted_like_client_golang(results, labels):
    many = len(results) > 1
    native, python = both_paths(lambda: NodeRenderer(labels, many).render(results))
    assert native == python
    got = [(f, lv) for f, lv, _ in series_in_order(native) if f.startswith("node_ipvs")]
    fams = [f for f, _ in got]
    assert fams == sorted(fams)
    for f in set(fams):
        keys = [lv for g, lv in got if g == f]
        # Go compares label values as byte strings (UTF-8: code point order)
        assert keys == sorted(keys, key=lambda k: tuple(v.encode() for v in k))
        assert len(keys) == len(set(keys))


@needs_node_exporter
@pytest.mark.parametrize("labels", [(), ("local_mark",), ("local_port", "remote_port")])
def test_node_byte_identical_to_node_exporter_more_labels(tmp_path, labels):
    snap = node_snapshot(sctp=False)
    theirs = only_node(real_node_exporter(snap, tmp_path, labels))
    native, python = both_paths(lambda: NodeRenderer(labels).render([result(snap)]))
    assert "node_ipvs_backend_weight" in theirs
    assert only_node(native) == theirs == only_node(python)


@needs_node_exporter
def test_node_byte_identical_to_node_exporter_large(tmp_path):
    """Many series, values >= 1e6 (printed 1.234567e+06 by Go), weights of every sign."""
    entries = []
    rnd = random.Random(5)
    for i in range(200):
        s = (svc(fwmark=1000 + i) if i % 5 == 0 else
             svc(protocol=TCP if i % 2 else UDP, port=1 + i, addr="10.%d.0.1" % (i % 3)))
        entries.append((s, [dest("10.2.%d.%d" % (j, i % 4), port=80 + j,
                                 active=rnd.choice([0, 5, 999999, 1000000, 123456789]),
                                 inactive=rnd.choice([0, 7, 2 ** 32 - 1]))._replace(
                                     weight=rnd.choice([0, 1, 100, 1000000]))
                            for j in range(5)]))
    snap = with_totals(snapshot(entries), (123456789, 10 ** 12, 5, 0, 999999, 0, 0, 0, 0, 0))
    for labels in (NODE_LABELS, ("remote_address",)):
        theirs = only_node(real_node_exporter(snap, tmp_path, labels))
        assert theirs.count("\n") > 600 or labels != NODE_LABELS
        assert only_node(NodeRenderer(labels).render([result(snap)])) == theirs


def test_node_cache_follows_identity():
    r = NodeRenderer(("remote_address",))
    snap = big_snapshot(50)
    a = r.render([result(snap)])
    merged = r._merged
    # new values, same identity: grouping and blocks reused, values new
    services, dests = snap.decoded()
    d2 = [d._replace(active_conns=(d.active_conns + 1) % 2 ** 32) for d in dests]
    snap2 = dataclasses.replace(snap, dests=b"".join(map(pack_dest, d2)))
    b = r.render([result(snap2)])
    assert r._merged is merged and b != a and b == NodeRenderer(("remote_address",)).render(
        [result(snap2)])
    # a destination moves: rebuilt
    d3 = list(d2)
    d3[0] = d3[0]._replace(addr=ip("10.200.0.1"))
    snap3 = dataclasses.replace(snap, dests=b"".join(map(pack_dest, d3)))
    c = r.render([result(snap3)])
    assert r._merged is not merged and b'remote_address="10.200.0.1"' in c
    assert c == NodeRenderer(("remote_address",)).render([result(snap3)])
    assert r.cache_size() == len({x for x in samples(c) if x[0] == "node_ipvs_backend_weight"})


def test_node_dests_out_of_order():
    """Destinations not in service order in the array (not what the backends
    make, but the records allow it): summed under their own service."""
    snap = node_snapshot()
    services, dests = snap.decoded()
    s = [x._replace(first_dest=len(dests) - x.first_dest - x.ndests) for x in services]
    d = []
    for x in reversed(services):
        d += dests[x.first_dest:x.first_dest + x.ndests]
    odd = dataclasses.replace(snap, services=b"".join(map(pack_service, s)),
                              dests=b"".join(map(pack_dest, d)))
    native, python = both_paths(lambda: NodeRenderer().render([result(odd)]))
    assert native == python == NodeRenderer().render([result(snap)])


# -- ipvs --------------------------------------------------------------------------------

@pytest.mark.parametrize("destinations", [None, "none", ("namespace", "address"),
                                          ("namespace", "destination_address")])
def test_ipvs_native_and_python_identical(destinations):
    res = [result(ipvs_snapshot(), ns="/n", duration=0.25), result(big_snapshot(), ns="/m"),
           result(ns="/down", up=False)]
    native, python = both_paths(lambda: IPVSRenderer(destinations=destinations).render(res))
    assert native == python


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st())
def test_ipvs_native_and_python_identical_any(results):
    native, python = both_paths(lambda: IPVSRenderer().render(results))
    assert native == python


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_text)
def test_node_namespace_label_escaped(ns):
    res = [result(node_snapshot(), ns=ns), result(node_snapshot(), ns=ns + "x")]
    native, python = both_paths(lambda: NodeRenderer(("proto",), True).render(res))
    assert native == python
    assert samples(native) == samples(node_reference(res, ("proto",), True))


def test_node_ipv6_only(formatter):
    snap = with_totals(snapshot([(svc(af=AF6, protocol=TCP, port=443, addr="fd00::1"),
                                  [dest("fd00::2", port=443, active=1000000)])]))
    out = NodeRenderer().render([result(snap)]).decode()
    assert ('node_ipvs_backend_connections_active{local_address="fd00::1",local_mark="",'
            'local_port="443",proto="TCP",remote_address="fd00::2",remote_port="443"} 1e+06'
            in out)
