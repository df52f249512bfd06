"""Host tests on netlink replies captured from a real kernel (tests/kernel/record.py).

Both parsers must turn the same kernel bytes into the same records, and those
records must say what ipvsadm said at the moment of capture.
"""
import json
import os

import pytest

from ipvs_fast.backends import python as pybackend
from ipvs_fast.backends.records import DEST_STRUCT, S_FIRST_DEST, SVC_STRUCT
from ipvs_fast.backends.snapshot import Snapshot, parse_ip_vs_stats
from tests import ipvsadm_text as ipv

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "kernel")
NAMES = sorted(os.listdir(FIXTURES)) if os.path.isdir(FIXTURES) else []


def parsers():
    out = [pybackend]
    try:
        from ipvs_fast.backends import native
        if native.available():
            out.append(native)
    except ImportError:
        pass
    return out


def load(name):
    d = os.path.join(FIXTURES, name)
    with open(os.path.join(d, "services.bin"), "rb") as f:
        services = f.read()
    with open(os.path.join(d, "dests.bin"), "rb") as f:
        dests = f.read()
    with open(os.path.join(d, "dests.json")) as f:
        index = json.load(f)
    texts = {}
    for fn in os.listdir(d):
        if fn.endswith(".txt"):
            with open(os.path.join(d, fn)) as f:
                texts[fn] = f.read()
    return services, [(e["svc_index"], e["svc_af"], dests[e["offset"]:e["offset"] + e["length"]])
                      for e in index], texts


def assemble(parser, services_reply, dest_replies, totals_text) -> Snapshot:
    """What a backend's dump() does with the replies, done by hand."""
    svcs = [list(t) for t in SVC_STRUCT.iter_unpack(parser.parse_services(services_reply))]
    dests = b""
    for svc_index, svc_af, reply in dest_replies:
        part = parser.parse_dests(reply, svc_index, svc_af)
        svcs[svc_index][S_FIRST_DEST] = len(dests) // DEST_STRUCT.size
        svcs[svc_index][S_FIRST_DEST + 1] = len(part) // DEST_STRUCT.size
        dests += part
    return Snapshot(b"".join(SVC_STRUCT.pack(*s) for s in svcs), dests, parse_ip_vs_stats(totals_text))


def test_fixtures_present():
    # The recorder's output is committed; an empty list would make the rest vacuous.
    assert {"empty", "standard", "many"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parsers_agree_on_kernel_replies(name):
    services, dest_replies, texts = load(name)
    snaps = [assemble(p, services, dest_replies, texts["ip_vs_stats.txt"]) for p in parsers()]
    for s in snaps[1:]:
        assert s == snaps[0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("parser", parsers(), ids=lambda p: p.__name__.rsplit(".", 1)[-1])
def test_kernel_replies_match_ipvsadm(name, parser):
    services, dest_replies, texts = load(name)
    snap = assemble(parser, services, dest_replies, texts["ip_vs_stats.txt"])
    stats = ipv.parse_listing(texts["ipvsadm-stats.txt"], 5)
    rate = ipv.parse_listing(texts["ipvsadm-rate.txt"], 5)
    plain = ipv.parse_plain(texts["ipvsadm-plain.txt"])
    persist = ipv.parse_listing(texts["ipvsadm-persist.txt"], 4)
    assert snap.nservices == len(stats)
    assert ipv.snapshot_view(snap, "stats") == {k: {"values": v["values"], "dests": v["dests"]}
                                                for k, v in stats.items()}
    assert ipv.snapshot_view(snap, "rate") == {k: {"values": v["values"], "dests": v["dests"]}
                                               for k, v in rate.items()}
    ours_plain = ipv.snapshot_view(snap, "plain")
    ours_persist = ipv.snapshot_view(snap, "persistent")
    for key in plain:
        assert ours_plain[key]["dests"] == plain[key]["dests"], key
        assert ours_persist[key]["dests"] == persist[key]["dests"], key
    assert snap.totals is not None


def test_standard_fixture_has_real_traffic():
    if "standard" not in NAMES:
        pytest.fail("standard fixture missing")
    services, dest_replies, texts = load("standard")
    snap = assemble(pybackend, services, dest_replies, texts["ip_vs_stats.txt"])
    svcs, dests = snap.decoded()
    assert all(s.attrs & 0x1 for s in svcs), "6.1 kernels send STATS64"
    assert sum(s.stats[0] for s in svcs) > 0
    assert snap.totals[0] > 0 and snap.totals[3] > 0
    assert any(d.af == 10 for d in dests) and any(d.af == 2 for d in dests)
