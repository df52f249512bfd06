"""Core exporter against a real kernel: both backends and the served
ingress_ipvs_exporter format equal what ipvsadm reports."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import ipvsadm_text as ipv

from . import topo
from .conftest import INGRESS_SBOX

pytestmark = pytest.mark.kernel

BACKENDS = ["native", "python"]


def open_backend(name: str, path: str):
    if name == "native":
        from ipvs_fast.backends.native import NativeBackend
        return NativeBackend(path)
    from ipvs_fast.backends.python import PythonBackend
    return PythonBackend(path)


def kernel_stats(ns):
    return ipv.parse_listing(topo.ipvsadm("-Ln --stats --exact", ns), 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dump_equals_ipvsadm_stats(lab, backend):
    with open_backend(backend, lab.netns_path) as b:
        kernel, snap = topo.stable(lambda: (kernel_stats(lab.director), b.dump(),
                                            kernel_stats(lab.director)))
    ours = ipv.snapshot_view(snap, "stats")
    assert set(ours) == set(kernel)
    for key, entry in kernel.items():
        assert ours[key]["values"] == entry["values"], key
        assert ours[key]["dests"] == entry["dests"], key
    # The traffic really went through IPVS: every kind of service counted something.
    for key in [("TCP", "10.77.100.1", 80), ("UDP", "10.77.100.1", 53), ("FWM", "inet", 260),
                ("FWM", "inet6", 261), ("TCP", "fd77:100::1", 80)]:
        assert kernel[key]["values"][0] > 0, key
        assert kernel[key]["values"][3] > 0, key


@pytest.mark.parametrize("backend", BACKENDS)
def test_dump_equals_ipvsadm_config(lab, backend):
    def plain():
        return ipv.parse_plain(topo.ipvsadm("-Ln", lab.director))
    with open_backend(backend, lab.netns_path) as b:
        kernel, snap = topo.stable(lambda: (plain(), b.dump(), plain()), settle=0)
    ours = ipv.snapshot_view(snap, "plain")
    assert set(ours) == set(kernel)
    for key, entry in kernel.items():
        assert ours[key]["dests"] == entry["dests"], key
    services, _ = snap.decoded()
    by_key = {ipv.key_of_service(s): s for s in services}
    for key, entry in kernel.items():
        sched = [t for t in entry["extra"] if t != "IPv6"][0]  # "FWM  261 IPv6 rr"
        assert by_key[key].sched_name.rstrip(b"\0").decode() == sched, key
    persistent = by_key[("TCP", "10.77.100.1", 443)]
    assert persistent.flags & 0x1 and persistent.timeout == 300


def test_backends_identical_snapshots(lab):
    with open_backend("native", lab.netns_path) as n, open_backend("python", lab.netns_path) as p:
        def read():
            a = n.dump()
            b = p.dump()
            return a, b, n.dump()
        first, second = topo.stable(read)
    assert first.services == second.services
    assert first.dests == second.dests
    assert first.totals == second.totals
    assert first.nservices == 7


def test_default_namespace_is_ingress_sbox(lab):
    """The original's default path reaches the same namespace (bind mount like Docker's)."""
    with open_backend("native", INGRESS_SBOX) as b:
        assert b.dump().nservices == 7


def expected_ingress(lab) -> dict:
    """The table of issue 2 computed from ipvsadm's listings: {(name, labels): value}."""
    ports = {260: "30000", 261: "30001"}

    def service_labels(key):
        if key[0] == "FWM":
            labels = {"fwmark": str(key[2]), "port": ports.get(key[2], "")}
            if key[1] == "inet6":
                labels["family"] = "inet6"
            return labels
        return {"fwmark": "0", "port": str(key[2]), "protocol": key[0].lower(),
                "service_address": key[1]}

    return ipv.ingress_series(kernel_stats(lab.director),
                              ipv.parse_plain(topo.ipvsadm("-Ln", lab.director)),
                              INGRESS_SBOX, service_labels)


def ingress_samples(text: str) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("ipvs_") and s.name not in (
                    "ipvs_up", "ipvs_scrape_duration_seconds", "ipvs_scrape_errors_total") \
                    and not s.name.startswith("ipvs_exporter"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_exporter_serves_ingress_table(lab, exporter, backend):
    # The original's flags only (its default --namespace-path), plus our backend choice.
    e = exporter("--telemetry-path", "/metrics", "--backend", backend)
    body = {}

    def read():
        before = expected_ingress(lab)
        body["text"] = e.get("/metrics")
        return before, ingress_samples(body["text"]), expected_ingress(lab)

    expected, served = topo.stable(read)
    assert served == expected
    up = [s for f in text_string_to_metric_families(body["text"]) for s in f.samples
          if s.name == "ipvs_up"]
    assert [(s.labels, s.value) for s in up] == [({"namespace": INGRESS_SBOX}, 1.0)]
    assert "_created" not in body["text"]
    # HELP texts verbatim, typos included.
    assert "# HELP ipvs_bytes_in_total The total number of incoming bytes a virtual server\n" in body["text"]
    assert ("# HELP ipvs_destination_connections_total The total number connections ever "
            "established to a destination\n") in body["text"]
