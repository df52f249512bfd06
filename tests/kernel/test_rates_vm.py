"""Rate estimates and persistence counters against a real kernel, exactly.

Sustained traffic makes the kernel's rate estimator (cps, inpps, outpps,
inbps, outbps; recomputed every 2 s) non-zero, and the persistent service
on :443 gets a persistence template. Both backends must then report exactly
what `ipvsadm -Ln --rate --exact` and `ipvsadm -Ln --persistent-conn` report,
compared between two equal kernel reads (topo.stable).

The rates are compared while the traffic runs: once it stops they decay
towards 0 every 2 s, and on a busy emulated machine the test can start late
enough to see all zeros. They still change only at the estimator's ticks,
so bracketing reads within one tick are found.
"""
import time

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


@pytest.fixture
def traffic_running(lab):
    """LOAD repeated in the background for the test's duration, from the
    moment the busiest service's kernel rates are all non-zero."""
    bg = lab.start_traffic(600, LOAD)
    try:
        deadline = time.monotonic() + 180
        while True:
            busiest = rate_view(lab.director).get(("TCP", "10.77.100.1", 80))
            if busiest and all(v > 0 for v in busiest["values"]):
                break
            assert bg.proc.poll() is None, bg.wait(0)
            assert time.monotonic() < deadline, f"rates still not all non-zero: {busiest}"
            time.sleep(2)
        yield lab
    finally:
        bg.proc.kill()
        bg.proc.wait()


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
def test_rates_equal_ipvsadm(traffic_running, backend):
    ns = traffic_running.director
    with open_backend(backend, traffic_running.netns_path) as b:
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
