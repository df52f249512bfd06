"""--format node (node_exporter drop-in) and --format ipvs (full set):
exact expected outputs, renderer vs prometheus_client collector, and the
real node_exporter binary on a fake procfs made from the same snapshot."""
import dataclasses
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from ipvs_fast import cli
from ipvs_fast.formats.exposition import go_float
from ipvs_fast.formats.ipvs import IPVSCollector, IPVSRenderer
from ipvs_fast.formats.node import (NODE_LABELS, NodeCollector, NodeRenderer, go_ip,
                                    parse_backend_labels)
from tests import procfs_text
from tests.test_ingress import (AF4, AF6, SCTP, TCP, UDP, dest, ip, result, results_st, samples,
                                small_snapshot, snapshot, svc)

FIXTURES = Path(__file__).parent / "fixtures"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
TOTALS = (6, 65, 49, 2500, 1234567, 1, 2, 3, 4, 5)


def with_totals(snap, totals=TOTALS):
    return dataclasses.replace(snap, totals=totals)


def node_snapshot(sctp=True):
    """Summation cases, fwmark v4+v6 with the same mark, big values, SCTP."""
    entries = [
        (svc(protocol=TCP, port=80, addr="10.77.100.1"), [
            dest("10.77.11.2", port=8080, active=3, inactive=1)._replace(weight=2),
            dest("10.77.12.2", port=8080, active=1234567, inactive=0)._replace(weight=100),
        ]),
        (svc(fwmark=260), [dest("10.77.11.2", port=8080, active=1, inactive=2)]),
        (svc(af=AF6, fwmark=260, addr="::"), [dest("fd77:11::2", port=8080, active=5)]),
        (svc(af=AF6, protocol=UDP, port=53, addr="fd77:100::1"), [
            dest("fd77:11::2", port=5353, inactive=7),
            dest("::ffff:10.1.2.3", port=53, af=AF6),
        ]),
        (svc(protocol=TCP, port=443, addr="10.77.100.1")._replace(flags=1, timeout=300), [
            dest("10.77.11.2", port=8080, active=2)._replace(weight=0),
        ]),
    ]
    if sctp:
        entries.append((svc(protocol=SCTP, port=9, addr="10.77.100.3"), [
            dest("10.77.13.2", port=9, active=4)._replace(weight=3)]))
    return with_totals(snapshot(entries))


def node_reference(results, labels=NODE_LABELS, nslabel=False):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lambda: results, labels, nslabel))
    return generate_latest(reg)


def only_node(text):
    if isinstance(text, bytes):
        text = text.decode()
    return "".join(line + "\n" for line in text.splitlines() if "node_ipvs_" in line)


# -- node: label parsing, value formatting -------------------------------------

def test_parse_backend_labels():
    assert parse_backend_labels(",".join(NODE_LABELS)) == NODE_LABELS
    assert parse_backend_labels("proto,local_port,,") == ("local_port", "proto")
    assert parse_backend_labels("") == ()
    with pytest.raises(ValueError, match="unknown IPVS backend labels: bogus, x"):
        parse_backend_labels("x,proto,bogus")


@pytest.mark.parametrize("v, text", [
    (0, "0"), (1, "1"), (999999, "999999"), (1000000, "1e+06"), (1234567, "1.234567e+06"),
    (0.25, "0.25"), (1e-05, "1e-05"), (0.0001, "0.0001"), (2 ** 64 - 1, "1.8446744073709552e+19"),
    (123456.5, "123456.5"), (-3, "-3"), (float("nan"), "NaN"), (float("inf"), "+Inf")])
def test_go_float(v, text):
    assert go_float(v) == text


@pytest.mark.parametrize("raw, text", [
    ("10.1.2.3", "10.1.2.3"), ("fd77:100::1", "fd77:100::1"), ("::ffff:10.1.2.3", "10.1.2.3"),
    ("::10.1.2.3", "::a01:203"), ("1:0:2:0:0:3:0:4", "1:0:2::3:0:4"), ("::", "::")])
def test_go_ip(raw, text):
    af = AF6 if ":" in raw else AF4
    assert go_ip(af, ip(raw)) == text


# -- node: exact output ------------------------------------------------------------

@pytest.mark.parametrize("labels, fixture", [
    (NODE_LABELS, "node_full.prom"),
    (("local_address", "local_port", "proto"), "node_service.prom"),
    (("remote_address", "local_mark"), "node_backend.prom"),
])
def test_node_fixture_exact(labels, fixture):
    res = [result(node_snapshot(), duration=0.25)]
    out = NodeRenderer(labels).render(res)
    expected = (FIXTURES / fixture).read_text()
    assert out.decode() == expected
    assert samples(out) == samples(node_reference(res, labels))


def test_node_summing_and_values():
    res = [result(node_snapshot())]
    d = {(n, lab): v for n, lab, v in samples(NodeRenderer(("proto",)).render(res))}
    assert d[("node_ipvs_backend_weight", (("proto", "TCP"),))] == 2 + 100 + 0
    assert d[("node_ipvs_backend_connections_active", (("proto", "FWM"),))] == 6
    assert d[("node_ipvs_backend_connections_active", (("proto", "SCTP"),))] == 4
    d = {(n, lab): v for n, lab, v in samples(NodeRenderer(()).render(res))}
    assert d[("node_ipvs_backend_connections_active", ())] == 3 + 1234567 + 1 + 5 + 2 + 4


def test_node_fwmark_and_sctp_labels():
    res = [result(node_snapshot())]
    labs = [dict(lab) for n, lab, _ in samples(NodeRenderer().render(res))
            if n == "node_ipvs_backend_weight"]
    fwm = [x for x in labs if x["proto"] == "FWM"]
    assert {(x["local_address"], x["local_port"], x["local_mark"]) for x in fwm} == {
        ("", "0", "00000104")}
    sctp = [x for x in labs if x["proto"] == "SCTP"]
    assert sctp == [{"local_address": "10.77.100.3", "local_port": "9", "local_mark": "",
                     "proto": "SCTP", "remote_address": "10.77.13.2", "remote_port": "9"}]
    assert all(x["local_mark"] == "" for x in labs if x["proto"] != "FWM")


def test_node_down_and_multi_namespace():
    down = result(ns="/gone", up=False)
    out = NodeRenderer().render([down]).decode()
    assert "node_ipvs" not in out and 'ipvs_up{namespace="/gone"} 0' in out
    res = [result(node_snapshot(), ns="/a"), result(node_snapshot(), ns="/b"), down]
    r = NodeRenderer(("proto",), namespace_label=True)
    got = samples(r.render(res))
    assert got == samples(node_reference(res, ("proto",), True))
    nss = {dict(lab).get("namespace") for n, lab, _ in got if n.startswith("node_ipvs")}
    assert nss == {"/a", "/b"}
    # the label cache holds exactly the last render's keys
    r.render([res[0]])
    assert r.cache_size() == 4


def test_node_no_totals_no_dests():
    res = [result(snapshot([(svc(fwmark=1), [])]))]
    out = NodeRenderer().render(res).decode()
    assert "node_ipvs" not in out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st(), st.sampled_from([NODE_LABELS, (), ("proto", "remote_port")]))
def test_node_renderer_matches_collector(results, labels):
    many = len(results) > 1
    assert samples(NodeRenderer(labels, many).render(results)) == \
        samples(node_reference(results, labels, many))


# -- node: against the real node_exporter -------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_node_exporter(snap, tmp_path, labels=None) -> str:
    """node_exporter's ipvs output for a fake procfs made from *snap*."""
    (tmp_path / "net").mkdir(exist_ok=True)
    (tmp_path / "net" / "ip_vs").write_text(procfs_text.ip_vs(snap))
    (tmp_path / "net" / "ip_vs_stats").write_text(procfs_text.ip_vs_stats(snap.totals))
    port = _free_port()
    args = [NODE_EXPORTER, f"--path.procfs={tmp_path}", "--collector.disable-defaults",
            "--collector.ipvs", f"--web.listen-address=127.0.0.1:{port}"]
    if labels is not None:
        args.append("--collector.ipvs.backend-labels=" + ",".join(labels))
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    return r.read().decode()
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        p.terminate()
        p.wait(10)


needs_node_exporter = pytest.mark.skipif(NODE_EXPORTER is None,
                                         reason="prometheus-node-exporter not installed")


@needs_node_exporter
@pytest.mark.parametrize("labels", [None, ("local_address", "local_port", "proto"),
                                    ("remote_address", "local_mark"), ("remote_port",)])
def test_node_byte_identical_to_node_exporter(tmp_path, labels):
    snap = node_snapshot(sctp=False)
    theirs = only_node(real_node_exporter(snap, tmp_path, labels))
    ours = only_node(NodeRenderer(labels if labels is not None else NODE_LABELS)
                     .render([result(snap)]))
    assert "node_ipvs_backend_weight" in theirs
    assert ours == theirs


@needs_node_exporter
def test_node_exporter_misattributes_sctp(tmp_path):
    """Documented difference: procfs skips SCTP service lines, so node_exporter
    counts an SCTP service's backends under the service listed before it."""
    snap = node_snapshot(sctp=True)
    theirs = samples(only_node(real_node_exporter(snap, tmp_path)))
    ours = samples(only_node(NodeRenderer().render([result(snap)])))
    assert theirs != ours
    wrong = [dict(lab) for n, lab, _ in theirs
             if n == "node_ipvs_backend_weight" and dict(lab)["remote_address"] == "10.77.13.2"]
    assert wrong and wrong[0]["proto"] == "TCP" and wrong[0]["local_port"] == "443"
    # the totals agree
    assert [s for s in theirs if "backend" not in s[0]] == \
        [s for s in ours if "backend" not in s[0]]


# -- ipvs format -----------------------------------------------------------------------

def ipvs_snapshot():
    snap = small_snapshot()
    services, dests = snap.decoded()
    # richer config: persistence + one-packet, a pe, tunnel and route destinations
    s = list(services)
    s[3] = s[3]._replace(flags=0x1 | 0x2 | 0x4, timeout=300, netmask=socket.htonl(0xFFFFFF00),
                         sched_name=b"sh".ljust(16, b"\0"), pe_name=b"sip".ljust(32, b"\0"))
    s[1] = s[1]._replace(flags=0x3, timeout=60, netmask=128)
    d = list(dests)
    d[0] = d[0]._replace(fwd_method=2, tun_type=1, tun_port=6080, tun_flags=1,
                         weight=5, u_thresh=100, l_thresh=10, persist_conns=4)
    d[1] = d[1]._replace(fwd_method=3, weight=0)
    from ipvs_fast.backends.records import pack_dest, pack_service
    return dataclasses.replace(snap, services=b"".join(map(pack_service, s)),
                               dests=b"".join(map(pack_dest, d)), totals=TOTALS)


def ipvs_reference(results, build_info=None):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IPVSCollector(lambda: results, build_info))
    return generate_latest(reg)


def test_ipvs_fixture_exact():
    res = [result(ipvs_snapshot(), duration=0.25), result(ns="/down", up=False)]
    out = IPVSRenderer().render(res)
    assert out.decode() == (FIXTURES / "ipvs_small.prom").read_text()
    assert samples(out) == samples(ipvs_reference(res))


def test_ipvs_labels_and_info():
    res = [result(ipvs_snapshot(), ns="/n")]
    got = {(n, lab): v for n, lab, v in samples(IPVSRenderer().render(res))}
    info = {dict(lab)["port"] or dict(lab)["fwmark"]: dict(lab)
            for (n, lab) in got if n == "ipvs_service_info"}
    assert info["80"]["flags"] == "persistent,hashed,one-packet"
    assert (info["80"]["scheduler"], info["80"]["timeout"], info["80"]["netmask"],
            info["80"]["pe_name"]) == ("sh", "300", "255.255.255.0", "sip")
    dinfo = [dict(lab) for (n, lab) in got if n == "ipvs_destination_info"]
    tun = [x for x in dinfo if x["forwarding_method"] == "tunnel"]
    assert tun and (tun[0]["tunnel_type"], tun[0]["tunnel_port"], tun[0]["tunnel_flags"]) == (
        "gue", "6080", "csum")
    assert {x["forwarding_method"] for x in dinfo} == {"tunnel", "route", "masq"}
    fw = [dict(lab) for (n, lab) in got if n == "ipvs_service_connections_total"
          and dict(lab)["fwmark"]]
    assert all(x["address"] == "" and x["port"] == "" and x["protocol"] == "" for x in fw)
    assert {x["family"] for x in fw} == {"inet", "inet6"}
    nsl = (("namespace", "/n"),)
    assert got[("ipvs_services", nsl)] == 5 and got[("ipvs_destinations", nsl)] == 6
    assert got[("ipvs_outgoing_bytes_total", nsl)] == 1234567
    assert got[("ipvs_outgoing_bytes_per_second", nsl)] == 5


def test_ipvs_zero_weight_destinations_per_service():
    from ipvs_fast.formats.policy import ServiceFilter, parse_selectors
    entries = [
        (svc(fwmark=260), [dest("10.0.0.5")._replace(weight=0),
                           dest("10.0.0.6")._replace(weight=0)]),
        (svc(protocol=TCP, port=80, addr="10.0.0.1"), [
            dest("10.0.0.7")._replace(weight=3), dest("10.0.0.8")._replace(weight=0),
            dest("10.0.0.9")._replace(weight=-1)]),
        (svc(protocol=UDP, port=53, addr="10.0.0.1"), []),
    ]
    res = [result(snapshot(entries), ns="/n")]

    def counts(results, renderer=None):
        out = {}
        for n, lab, v in samples((renderer or IPVSRenderer()).render(results)):
            if n in ("ipvs_service_destinations_zero_weight", "ipvs_service_destinations"):
                lab = dict(lab)
                out.setdefault(lab["fwmark"] or lab["port"], {})[n.rsplit("_", 1)[-1]] = v
        return out
    want = {"260": {"weight": 2, "destinations": 2}, "80": {"weight": 1, "destinations": 3},
            "53": {"weight": 0, "destinations": 0}}
    assert counts(res) == want
    assert samples(IPVSRenderer().render(res)) == samples(ipvs_reference(res))
    # per service whatever --destination.labels says
    assert counts(res, IPVSRenderer(destinations="none")) == want
    assert counts(res, IPVSRenderer(destinations=("address",))) == want
    # the service filter removes the service, and only it
    only_fw = ServiceFilter(parse_selectors(["fwmark:*"]), []).apply_results(res)
    assert counts(only_fw) == {"260": want["260"]}


def test_ipvs_every_family_documented():
    from ipvs_fast.formats.ipvs import FAMILIES
    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    for spec in FAMILIES:
        assert f"`{spec[0]}`" in doc, spec[0]
        assert f"\n{spec[0]}{{" in doc, f"no example line for {spec[0]}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results_st())
def test_ipvs_renderer_matches_collector(results):
    assert samples(IPVSRenderer().render(results)) == samples(ipvs_reference(results))


_shared = IPVSRenderer()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(results_st(), min_size=1, max_size=3))
def test_ipvs_cached_renderer_matches_fresh(sequence):
    for results in sequence:
        assert _shared.render(results) == IPVSRenderer().render(results)


def test_ipvs_cache_follows_changes():
    r = IPVSRenderer()
    snap = ipvs_snapshot()
    a = r.render([result(snap)])
    assert r.render([result(snap)]) == a
    services, dests = snap.decoded()
    from ipvs_fast.backends.records import pack_dest
    d = list(dests)
    d[2] = d[2]._replace(fwd_method=3)        # only an info label changes
    snap2 = dataclasses.replace(snap, dests=b"".join(map(pack_dest, d)))
    b = r.render([result(snap2)])
    assert b == IPVSRenderer().render([result(snap2)]) and b != a
    assert r.cache_size() == (5, 6)


# -- CLI -----------------------------------------------------------------------------

def test_cli_format_and_env(monkeypatch):
    a = cli.parse_args([])
    assert a.format == "ingress" and a.node_backend_labels == NODE_LABELS
    monkeypatch.setenv("IPVS_FAST_FORMAT", "node")
    monkeypatch.setenv("IPVS_FAST_NODE_BACKEND_LABELS", "proto,local_port")
    monkeypatch.setenv("IPVS_FAST_LISTEN_ADDRESS", "127.0.0.1:9")
    a = cli.parse_args([])
    assert (a.format, a.node_backend_labels, a.listen_address) == (
        "node", ("local_port", "proto"), ["127.0.0.1:9"])
    assert cli.parse_args(["--format", "ipvs"]).format == "ipvs"     # flag wins
    assert type(cli.make_renderer(a)).__name__ == "NodeRenderer"


@pytest.mark.parametrize("env, flagtext", [
    ({"IPVS_FAST_FORMAT": "xml"}, "--format"),
    ({"IPVS_FAST_TIMEOUT": "-1"}, "--timeout"),
    ({"IPVS_FAST_NODE_BACKEND_LABELS": "proto,nope"}, "--node.backend-labels"),
    ({"IPVS_FAST_LISTEN_ADDRESS": "nonsense"}, "--listen-address"),
    ({"IPVS_FAST_LOG_LEVEL": "loud"}, "--log-level"),
])
def test_cli_bad_env_names_flag_and_variable(monkeypatch, capsys, env, flagtext):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        cli.parse_args([])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flagtext in err and list(env)[0] in err


def test_cli_bad_backend_labels_flag(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--node.backend-labels", "proto,bogus"])
    err = capsys.readouterr().err
    assert "--node.backend-labels" in err and "bogus" in err
