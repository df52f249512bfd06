"""Rate estimates and persistence counters against a real kernel, exactly.

Sustained traffic makes the kernel's rate estimator (cps, inpps, outpps,
inbps, outbps; recomputed every 2 s) non-zero, and the persistent service
on :443 gets a persistence template. Both backends must then report exactly
what `ipvsadm -Ln --rate --exact` and `ipvsadm -Ln --persistent-conn` report,
compared between two equal kernel reads (topo.stable).
"""
import pytest

from tests import ipvsadm_text as ipv

from . import topo
from .test_core_vm import BACKENDS, open_backend

pytestmark = pytest.mark.kernel

# A few seconds of load through every kind of service, incl. the -p one.
LOAD = [("tcp", "10.77.100.1", 80, 3, 2000),
        ("udp", "10.77.100.1", 53, 5, 200),
        ("tcp", "10.77.100.2", 30000, 2, 500),
        ("tcp", "fd77:100::1", 80, 2, 800),
        ("tcp", "10.77.100.1", 443, 2, 300)]
LOAD_SECONDS = 10


@pytest.fixture(scope="module")
def loaded_lab(lab):
    """The lab right after LOAD_SECONDS of sustained traffic (stopped)."""
    out = lab.start_traffic(LOAD_SECONDS, LOAD).wait(timeout=LOAD_SECONDS + 120)
    assert "rounds" in out, out
    return lab


def rate_view(ns):
    return ipv.parse_listing(topo.ipvsadm("-Ln --rate --exact", ns), 5)


def persist_view(ns):
    return ipv.parse_listing(topo.ipvsadm("-Ln --persistent-conn", ns), 4)


def assert_same(ours, kernel):
    assert set(ours) == set(kernel)
    for key, entry in kernel.items():
        assert ours[key]["values"] == entry["values"], key
        assert ours[key]["dests"] == entry["dests"], key


@pytest.mark.parametrize("backend", BACKENDS)
def test_rates_equal_ipvsadm(loaded_lab, backend):
    ns = loaded_lab.director
    with open_backend(backend, loaded_lab.netns_path) as b:
        kernel, snap = topo.stable(lambda: (rate_view(ns), b.dump(), rate_view(ns)), settle=0)
    assert_same(ipv.snapshot_view(snap, "rate"), kernel)
    # The estimator really ran: every rate of the busiest service is non-zero.
    cps, inpps, outpps, inbps, outbps = kernel[("TCP", "10.77.100.1", 80)]["values"]
    assert cps > 0 and inpps > 0 and outpps > 0 and inbps > 0 and outbps > 0, kernel
    for key in [("UDP", "10.77.100.1", 53), ("FWM", "inet", 260), ("TCP", "fd77:100::1", 80)]:
        assert kernel[key]["values"][1] > 0, key       # inpps
    assert any(v[4] > 0 for v in kernel[("TCP", "10.77.100.1", 80)]["dests"].values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_persistence_equals_ipvsadm(loaded_lab, backend):
    ns = loaded_lab.director
    with open_backend(backend, loaded_lab.netns_path) as b:
        kernel, snap = topo.stable(lambda: (persist_view(ns), b.dump(), persist_view(ns)), settle=0)
    assert_same(ipv.snapshot_view(snap, "persistent"), kernel)
    # (weight, persistent, active, inactive): the -p service holds a template,
    # and recent TCP connections linger as inactive (TIME_WAIT) entries.
    weight, persistent, active, inactive = kernel[("TCP", "10.77.100.1", 443)]["dests"][("10.77.11.2", 8080)]
    assert persistent > 0 and active + inactive > 0
    assert {d[0] for e in kernel.values() for d in e["dests"].values()} >= {0, 1, 2}  # weights
