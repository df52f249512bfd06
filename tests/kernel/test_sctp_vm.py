"""SCTP services with real associations through IPVS (IPv4 and IPv6).

The lab's backends serve SCTP on :8082 (tests/kernel/traffic.py); the
ip_vs_module fixture loads sctp so they do. Both backends' counters for the
SCTP services must be non-zero and equal ipvsadm's, and the ingress format
must carry them as protocol="sctp" series.
"""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipvs_fast import backends
from ipvs_fast.collection.target import NamespaceTarget
from ipvs_fast.formats.ingress import IngressRenderer
from tests import ipvsadm_text as ipv

from . import topo
from .test_core_vm import BACKENDS, kernel_stats, open_backend

pytestmark = pytest.mark.kernel

SCTP4 = ("SCTP", "10.77.100.1", 9000)
SCTP6 = ("SCTP", "fd77:100::1", 9000)


@pytest.fixture(scope="module")
def sctp_lab(lab):
    lab.ipvs(topo.SCTP_RULES)
    try:
        lab.send_many([("sctp", "10.77.100.1", 9000, 4, 700),
                       ("sctp", "fd77:100::1", 9000, 3, 400)])
        yield lab
    finally:
        topo.ipvsadm("--delete-service --sctp-service 10.77.100.1:9000", lab.director)
        topo.ipvsadm("--delete-service --sctp-service [fd77:100::1]:9000", lab.director)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sctp_counters_equal_ipvsadm(sctp_lab, backend):
    ns = sctp_lab.director
    with open_backend(backend, sctp_lab.netns_path) as b:
        kernel, snap = topo.stable(lambda: (kernel_stats(ns), b.dump(), kernel_stats(ns)))
    ours = ipv.snapshot_view(snap, "stats")
    assert set(ours) == set(kernel)
    for key, entry in kernel.items():
        assert ours[key]["values"] == entry["values"], key
        assert ours[key]["dests"] == entry["dests"], key
    # Real associations: conns, packets both ways and bytes both ways.
    for key, conns in ((SCTP4, 4), (SCTP6, 3)):
        c, inpkts, outpkts, inbytes, outbytes = kernel[key]["values"]
        assert c == conns and inpkts > 0 and outpkts > 0 and inbytes > 0 and outbytes > 0, key
    # rr over two backends: both got associations
    assert all(v[0] > 0 for v in kernel[SCTP4]["dests"].values())


def test_sctp_in_ingress_format(sctp_lab):
    ns = sctp_lab.director
    with NamespaceTarget(sctp_lab.netns_path, backends.opener("native")) as t:
        def read():
            before = kernel_stats(ns)
            r = t.collect()
            assert r.up, r.error
            return before, IngressRenderer().render([r]).decode(), kernel_stats(ns)
        kernel, text = topo.stable(read)
    got = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("protocol") == "sctp":
                got[(s.name, s.labels["service_address"], s.labels.get("address"))] = s.value
    for key in (SCTP4, SCTP6):
        conns, _, _, inbytes, outbytes = kernel[key]["values"]
        assert got[("ipvs_connections_total", key[1], None)] == conns
        assert got[("ipvs_bytes_in_total", key[1], None)] == inbytes
        assert got[("ipvs_bytes_out_total", key[1], None)] == outbytes
        assert got[("ipvs_destination_total", key[1], None)] == len(kernel[key]["dests"])
        for (host, _port), dvals in kernel[key]["dests"].items():
            assert got[("ipvs_destination_connections_total", key[1], host)] == dvals[0]
