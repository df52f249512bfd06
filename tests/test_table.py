"""/proc/net/ip_vs as a data source (what --format node reads, like node_exporter).

Both parsers (C ``ipvs_parse_table``, Python ``backends.table.parse_table``)
must make the same records from the same text, accept exactly the same
texts, and agree with the netlink records of real kernel dumps on every field
the table carries; the node format must print the same bytes from either.
"""
import errno
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvs_fast.backends import table
from ipvs_fast.backends.errors import IPVSError
from ipvs_fast.backends.records import (DEST_STRUCT, SVC_STRUCT, decode_dests,
                                        decode_services)
from ipvs_fast.backends.snapshot import Snapshot
from ipvs_fast.collection.target import CollectResult
from ipvs_fast.formats.node import NodeRenderer
from tests import procfs_text
from tests.test_kernel_fixtures import NAMES, assemble, load, parsers

native = pytest.importorskip("ipvs_fast.backends.native")
if not native.available():
    pytest.skip("compiled core not built", allow_module_level=True)

PARSERS = {"c": native.parse_table, "python": table.parse_table}
HEAD = ("IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n")


def outcome(parse, text: bytes):
    try:
        return parse(text)
    except IPVSError as e:
        return ("error", e.errno)


@pytest.mark.parametrize("name", NAMES)
def test_table_of_real_kernel_dumps_agrees_with_netlink(name):
    services, dest_replies, texts = load(name)
    for parser in parsers():
        snap = assemble(parser, services, dest_replies, texts["ip_vs_stats.txt"])
        text = procfs_text.ip_vs(snap).encode()
        c, py = native.parse_table(text), table.parse_table(text)
        assert c == py
        assert procfs_text.table_view(*c) == procfs_text.table_view(snap.services, snap.dests)
        # nothing the table lacks is invented
        assert all(s.stats == (0,) * 10 and s.attrs == 0 and s.pe_name == bytes(32)
                   for s in decode_services(c[0]))
        assert all(d.stats == (0,) * 10 and d.attrs == 0 and d.persist_conns == 0
                   for d in decode_dests(c[1]))
        # fwmark services: the table does not say the family
        assert all(s.af == socket.AF_INET for s in decode_services(c[0]) if s.fwmark)


@pytest.mark.parametrize("name", NAMES)
def test_node_format_same_bytes_from_table_and_netlink(name):
    services, dest_replies, texts = load(name)
    snap = assemble(parsers()[-1], services, dest_replies, texts["ip_vs_stats.txt"])
    svcs, dests = native.parse_table(procfs_text.ip_vs(snap).encode())
    from_table = Snapshot(svcs, dests, snap.totals)
    for labels in (("local_address", "local_port", "remote_address", "remote_port", "proto",
                    "local_mark"), ("remote_address", "proto"), ()):
        bodies = [NodeRenderer(labels).render([CollectResult("", True, 0.01, s, {})])
                  for s in (snap, from_table)]
        assert bodies[0] == bodies[1]
        assert (b"\nnode_ipvs_backend_weight" in bodies[0]) == (snap.ndests > 0)


def test_kernel_line_formats():
    text = (HEAD
            + "TCP  0A000001:0050 wlc \n"
            + "  -> AC100001:1F90      Masq    1      0          0         \n"
            + "  -> AC100002:1F90      Route   -3     12         4294967   \n"
            + "UDP  0A000002:0035 rr ops persistent 300 FFFFFF00\n"
            + "FWM  00000100 sh persistent 60 FFFFFFFF\n"
            + "  -> [2001:0db8:0000:0000:0000:0000:0000:0001]:0050      Tunnel  0      0          7         \n"
            + "SCTP  [fe80:0000:0000:0000:0000:0000:0000:00ff]:0B59 mh \n"
            + "  -> 7F000001:0000      Local   2147483647 -1         0         \n"
            + "IP_99  0A000003:0000 dh \n").encode()
    for parse in PARSERS.values():
        s, d = parse(text)
        svcs, dests = decode_services(s), decode_dests(d)
        assert [(x.af, x.protocol, x.port, x.fwmark, x.flags, x.timeout, x.first_dest, x.ndests)
                for x in svcs] == [
            (2, 6, 80, 0, 0, 0, 0, 2), (2, 17, 53, 0, 5, 300, 2, 0), (2, 0, 0, 256, 1, 60, 2, 1),
            (10, 132, 2905, 0, 0, 0, 3, 1), (2, 99, 0, 0, 0, 0, 4, 0)]
        assert svcs[0].addr == bytes([10, 0, 0, 1]) + bytes(12)
        assert svcs[1].netmask.to_bytes(4, "little") == b"\xff\xff\xff\x00"   # raw, as netlink
        assert svcs[3].addr == socket.inet_pton(socket.AF_INET6, "fe80::ff")
        assert [x.sched_name.rstrip(b"\0") for x in svcs] == [b"wlc", b"rr", b"sh", b"mh", b"dh"]
        assert [(x.svc_index, x.af, x.port, x.fwd_method, x.weight, x.active_conns,
                 x.inact_conns) for x in dests] == [
            (0, 2, 8080, 0, 1, 0, 0), (0, 2, 8080, 3, -3, 12, 4294967),
            (2, 10, 80, 2, 0, 0, 7), (3, 2, 0, 1, 2147483647, 0xFFFFFFFF, 0)]


@pytest.mark.parametrize("text", [
    "",                                                     # no header
    HEAD[:60],                                              # header cut
    HEAD.replace("Prot", "Proto"),
    HEAD + "TCP  0A000001:0050 wlc ",                       # last line has no end
    HEAD + "  -> AC100001:1F90      Masq    1      0          0\n",   # dest first
    HEAD + "TCP  0A000001:0050 averyveryverylongname\n",    # scheduler > 15
    HEAD + "TCP  0A000001:0050\n",                          # no scheduler
    HEAD + "TCP  0A000001:0050 \0rr\n",                     # not a scheduler's name
    HEAD + "TCP  0A000001:0050 w\x80\n",
    HEAD + "TCP  0A000001 wlc\n",                           # no port
    HEAD + "TCP 0A000001:0050wlc\n",
    HEAD + "TCP0A000001:0050 wlc\n",
    HEAD + "FWM  0A000001:0050 wlc\n",
    HEAD + "XTP  0A000001:0050 wlc\n",
    HEAD + "IP_256  0A000001:0050 wlc\n",
    HEAD + "TCP  [2001:db8::1]:0050 wlc\n",                 # compressed IPv6 (not %pI6)
    HEAD + "TCP  0A000001:0050 wlc persistent 300\n",
    HEAD + "TCP  0A000001:0050 wlc persistent -1 FFFFFFFF\n",
    HEAD + "TCP  0A000001:0050 wlc sometoken\n",
    HEAD + "TCP  0A000001:0050 wlc\n  -> AC100001:1F90      Bypass  1      0          0\n",
    HEAD + "TCP  0A000001:0050 wlc\n  -> AC100001:1F90      Masq    1      0\n",
    HEAD + "TCP  0A000001:0050 wlc\n  -> AC100001:1F90      Masq    1      0          0   x\n",
    HEAD + "TCP  0A000001:0050 wlc\n  -> AC100001:1F90      Masq    2147483648 0          0\n",
    HEAD + "TCP  0A000001:0050 wlc\n\n",                    # empty line
])
def test_malformed_tables_refused_by_both(text):
    for parse in PARSERS.values():
        with pytest.raises(IPVSError) as e:
            parse(text.encode())
        assert e.value.errno == errno.EBADMSG and "ip_vs table" in str(e.value)


def test_empty_table():
    for parse in PARSERS.values():
        assert parse(HEAD.encode()) == (b"", b"")


def _sample_text(seed: int) -> bytes:
    rnd = random.Random(seed)
    lines = [HEAD]
    for _ in range(rnd.randint(0, 4)):
        kind = rnd.choice(["tcp", "fwm", "v6"])
        if kind == "fwm":
            lines.append("FWM  %08X rr %s\n" % (rnd.getrandbits(32), rnd.choice(["", "ops "])))
        elif kind == "v6":
            lines.append("UDP  [%s]:%04X sh \n" % (":".join("%04x" % rnd.getrandbits(16)
                                                             for _ in range(8)),
                                                    rnd.getrandbits(16)))
        else:
            lines.append("TCP  %08X:%04X wlc persistent %d %08X\n" % (
                rnd.getrandbits(32), rnd.getrandbits(16), rnd.randint(0, 9999),
                rnd.getrandbits(32)))
        for _ in range(rnd.randint(0, 3)):
            lines.append("  -> %08X:%04X      %-7s %-6d %-10d %-10d\n" % (
                rnd.getrandbits(32), rnd.getrandbits(16), rnd.choice(["Masq", "Route", "Local"]),
                rnd.randint(-5, 70000), rnd.getrandbits(31), rnd.getrandbits(31)))
    return "".join(lines).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2 ** 32), edits=st.lists(
    st.tuples(st.integers(0, 10 ** 6), st.sampled_from(["flip", "del", "ins", "dup"]),
              st.sampled_from(list(b" \n-:[]0AFfx9\tWM\0"))), max_size=4))
def test_parsers_agree_on_mutated_tables(seed, edits):
    text = bytearray(_sample_text(seed))
    for pos, op, ch in edits:
        if not text:
            break
        i = pos % len(text)
        if op == "flip":
            text[i] = ch
        elif op == "del":
            del text[i]
        elif op == "ins":
            text.insert(i, ch)
        else:
            text[i:i] = text[i:i + 8]
    text = bytes(text)
    c, py = outcome(native.parse_table, text), outcome(table.parse_table, text)
    assert c == py
    if c[0] != "error":
        assert len(c[0]) % SVC_STRUCT.size == 0 and len(c[1]) % DEST_STRUCT.size == 0


@pytest.mark.parametrize("backend", ["native", "python"])
def test_dump_table_on_closed_handle(backend, monkeypatch):
    from ipvs_fast.backends import python as pybackend
    cls = native.NativeBackend if backend == "native" else pybackend.PythonBackend
    b = cls.__new__(cls)
    if backend == "native":
        import threading
        b._lock, b._h, b.ns_path = threading.Lock(), None, ""
    else:
        import threading
        b._lock, b._table_fd = threading.Lock(), -1
    with pytest.raises(IPVSError) as e:
        b.dump_table()
    assert e.value.errno == errno.EBADF


def _svc(key, ndests=0, first=0, stats=0):
    fwmark = key if isinstance(key, int) else 0
    af, proto, port, addr = (socket.AF_INET, 0, 0, bytes(16)) if fwmark else key
    return SVC_STRUCT.pack(af, proto, port, 0, fwmark, 0, 0, 0, addr, b"rr", b"",
                           *(stats,) * 10, first, ndests)


def _dest(svc_index, port):
    return DEST_STRUCT.pack(svc_index, socket.AF_INET, port, bytes([10, 0, 0, 1]) + bytes(12),
                            0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, *(0,) * 10)


def test_merge_table_takes_dests_from_the_table_and_fetches_what_it_lacks():
    a = (socket.AF_INET, 6, 80, bytes([10, 0, 0, 1]) + bytes(12))
    b = (socket.AF_INET6, 17, 53, bytes(15) + b"\x01")
    c, gone, extra = 260, 261, (socket.AF_INET, 6, 81, bytes(16))
    # netlink: a, b, gone, c (with counters; c is an IPv6 fwmark service there)
    services = (_svc(a, stats=7) + _svc(b, stats=7) + _svc(gone)
                + SVC_STRUCT.pack(socket.AF_INET6, 0, 0, 0, c, 0, 0, 0, bytes(16), b"rr", b"",
                                  *(7,) * 10, 0, 0))
    # the table skipped b and gone, and lists a service added meanwhile
    tsvcs = _svc(a, 2, 0) + _svc(extra, 1, 2) + _svc(c, 1, 3)
    tdests = _dest(0, 1) + _dest(0, 2) + _dest(1, 3) + _dest(2, 4)
    fetched = []

    def dests_of(rec, w):
        fetched.append((rec[4] or rec[2], w))
        return None if rec[4] == gone else _dest(w, 99)
    s, d = table.merge_table(services, tsvcs, tdests, dests_of)
    svcs, dests = decode_services(s), decode_dests(d)
    assert fetched == [(53, 1), (gone, 2)]
    assert [(x.port or x.fwmark, x.af, x.first_dest, x.ndests, x.stats[0]) for x in svcs] == [
        (80, 2, 0, 2, 7), (53, 10, 2, 1, 7), (c, 10, 3, 1, 7)]
    assert [(x.svc_index, x.port) for x in dests] == [(0, 1), (0, 2), (1, 99), (2, 4)]


def test_merge_table_gives_up_beyond_the_lookahead():
    keys = [(socket.AF_INET, 6, 1000 + i, bytes(16)) for i in range(table.LOOKAHEAD + 2)]
    services = _svc(keys[-1])
    tsvcs = b"".join(_svc(k, 1, i) for i, k in enumerate(keys))
    tdests = b"".join(_dest(i, i) for i in range(len(keys)))
    s, d = table.merge_table(services, tsvcs, tdests, lambda rec, w: _dest(w, 4242))
    assert [x.port for x in decode_dests(d)] == [4242]
