"""/proc/net/ip_vs and /proc/net/ip_vs_stats text for a snapshot, exactly as
the kernel prints them (net/netfilter/ipvs/ip_vs_ctl.c: ip_vs_info_seq_show,
ip_vs_stats_show). Lets host tests run the real node_exporter on a fake
procfs (--path.procfs)."""
from __future__ import annotations

import socket

from ipvs_fast.backends.records import cstr, decode_dests, decode_services

_PROTO = {6: "TCP", 17: "UDP", 132: "SCTP", 0: "IP"}
_FWD = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route", 4: "Bypass"}


def _pi6(raw: bytes) -> str:
    """%pI6: 8 groups of 4 hex digits, no compression."""
    return ":".join(raw[i:i + 2].hex() for i in range(0, 16, 2))


def _v4hex(raw: bytes) -> str:
    return raw[:4].hex().upper()


def ip_vs(snapshot) -> str:
    svcs, dests = decode_services(snapshot.services), decode_dests(snapshot.dests)
    out = ["IP Virtual Server version 1.2.1 (size=4096)\n",
           "Prot LocalAddress:Port Scheduler Flags\n",
           "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"]
    for s in svcs:
        sched = cstr(s.sched_name)
        ops = "ops " if s.flags & 4 else ""
        if s.fwmark:
            line = "FWM  %08X %s %s" % (s.fwmark, sched, ops)
        elif s.af == socket.AF_INET6:
            line = "%s  [%s]:%04X %s " % (_PROTO.get(s.protocol, "IP_%d" % s.protocol),
                                         _pi6(s.addr), s.port, sched)
        else:
            line = "%s  %s:%04X %s %s " % (_PROTO.get(s.protocol, "IP_%d" % s.protocol),
                                          _v4hex(s.addr), s.port, sched, ops)
        if s.flags & 1:
            line += "persistent %d %08X\n" % (s.timeout, socket.ntohl(s.netmask))
        else:
            line += "\n"
        out.append(line)
        for d in dests[s.first_dest:s.first_dest + s.ndests]:
            where = ("[%s]" % _pi6(d.addr)) if d.af == socket.AF_INET6 else _v4hex(d.addr)
            out.append("  -> %s:%04X      %-7s %-6d %-10d %-10d\n" % (
                where, d.port, _FWD.get(d.fwd_method & 7, "Masq"), d.weight,
                d.active_conns, d.inact_conns))
    return "".join(out)


def ip_vs_stats(totals) -> str:
    t = totals
    return ("   Total Incoming Outgoing         Incoming         Outgoing\n"
            "   Conns  Packets  Packets            Bytes            Bytes\n"
            "%8X %8X %8X %16X %16X\n\n"
            " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
            "%8X %8X %8X %16X %16X\n" % tuple(t[:10]))


def table_view(services: bytes, dests: bytes):
    """The fields the table carries, per record (fwmark services: af unknown)."""
    svcs = [(0 if s.fwmark else s.af, s.protocol, s.port, s.fwmark, s.flags & 0x5,
             s.timeout if s.flags & 1 else 0, s.netmask if s.flags & 1 else 0, s.addr,
             s.sched_name, s.first_dest, s.ndests) for s in decode_services(services)]
    ds = [(d.svc_index, d.af, d.port, d.addr, d.fwd_method, d.weight, d.active_conns,
           d.inact_conns) for d in decode_dests(dests)]
    return svcs, ds
