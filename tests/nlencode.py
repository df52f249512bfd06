"""Test encoder: kernel-like IPVS generic-netlink dump replies.

Builds what net/netfilter/ipvs/ip_vs_ctl.c (ip_vs_genl_fill_service /
ip_vs_genl_fill_dest / ip_vs_genl_fill_stats / ip_vs_genl_fill_stats64) puts
on the wire, from records.Service / records.Dest values, plus the variants of
older kernels (STATS-only before 4.1, no ADDR_FAMILY before 3.18, no tunnel
attributes before 5.2) and the packed records a parser must produce for them.

Also hypothesis strategies for services, dests and encoding options.
"""
from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from ipvs_fast.backends import genl as g
from ipvs_fast.backends.records import (REC_DEST_AF, REC_PE_NAME, REC_STATS32, REC_STATS64, REC_TUN,
                                        Dest, Service, pack_dest, pack_service)

FAMILY_ID = 0x23            # a plausible dynamic genl family id
U16, U32, U64 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF
_32BIT_IN_STATS32 = (0, 1, 2, 5, 6, 7, 8, 9)   # stats indexes sent as u32


@dataclass(frozen=True)
class Opts:
    """How the fake kernel encodes a reply."""
    stats: str = "both"          # "both" (>= 4.1), "32" (older), "64", "none"
    stats64_first: bool = False  # put STATS64 before STATS
    pad: bool = False            # IPVS_STATS_ATTR_PAD before each u64
    dest_af: bool = True         # IPVS_DEST_ATTR_ADDR_FAMILY (>= 3.18)
    tun: bool = True             # tunnel attributes (>= 5.2 / 5.3)
    nest_flag: bool = False      # NLA_F_NESTED on the top-level nest
    stats_nest_flag: bool = False  # NLA_F_NESTED on the stats nests
    shuffle: int = -1            # >= 0: shuffle attribute order with this seed
    unknown: bool = False        # add unknown attributes (future kernels)
    family_id: int = FAMILY_ID
    seq: int = 1
    pid: int = 4242


# --------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------

def _stats_nest(attr_type: int, stats, wide: bool, o: Opts) -> bytes:
    out = b""
    for i, v in enumerate(stats):
        t = i + 1
        if not wide and i in _32BIT_IN_STATS32:
            out += g.attr_u32(t, v & U32)
        else:
            if o.pad:
                out += g.encode_attr(g.IPVS_STATS_ATTR_PAD, b"")
            out += g.attr_u64(t, v)
    if o.unknown:
        out += g.attr_u64(31, 0xDEADBEEF)
    flag = g.NLA_F_NESTED if o.stats_nest_flag else 0
    return g.encode_attr(attr_type | flag, out)


def _stats_attrs(s32_type: int, s64_type: int, stats, o: Opts) -> list:
    parts = []
    if o.stats in ("both", "32"):
        parts.append(_stats_nest(s32_type, stats, False, o))
    if o.stats in ("both", "64"):
        n = _stats_nest(s64_type, stats, True, o)
        if o.stats64_first:
            parts.insert(0, n)
        else:
            parts.append(n)
    return parts


def _finish(parts: list, o: Opts, salt: int) -> bytes:
    if o.unknown:
        parts.append(g.encode_attr(30, b"\x01\x02\x03"))
    if o.shuffle >= 0:
        random.Random(o.shuffle * 1000003 + salt).shuffle(parts)
    return b"".join(parts)


def service_nest_body(s: Service, o: Opts = Opts(), salt: int = 0) -> bytes:
    p = [g.attr_u16(g.IPVS_SVC_ATTR_AF, s.af)]
    if s.fwmark:
        p.append(g.attr_u32(g.IPVS_SVC_ATTR_FWMARK, s.fwmark))
    else:
        p += [g.attr_u16(g.IPVS_SVC_ATTR_PROTOCOL, s.protocol),
              g.encode_attr(g.IPVS_SVC_ATTR_ADDR, s.addr),
              g.attr_be16(g.IPVS_SVC_ATTR_PORT, s.port)]
    p.append(g.attr_str(g.IPVS_SVC_ATTR_SCHED_NAME, s.sched_name.rstrip(b"\0")))
    if s.pe_name.rstrip(b"\0"):
        p.append(g.attr_str(g.IPVS_SVC_ATTR_PE_NAME, s.pe_name.rstrip(b"\0")))
    p += [g.encode_attr(g.IPVS_SVC_ATTR_FLAGS,
                        struct.pack("=II", s.flags, U32)),
          g.attr_u32(g.IPVS_SVC_ATTR_TIMEOUT, s.timeout),
          # nla_put_be32(netmask): the raw 4 bytes; the record memcpy's them
          g.encode_attr(g.IPVS_SVC_ATTR_NETMASK, struct.pack("<I", s.netmask))]
    p += _stats_attrs(g.IPVS_SVC_ATTR_STATS, g.IPVS_SVC_ATTR_STATS64,
                      s.stats, o)
    return _finish(p, o, salt)


def dest_nest_body(d: Dest, o: Opts = Opts(), salt: int = 0) -> bytes:
    p = [g.encode_attr(g.IPVS_DEST_ATTR_ADDR, d.addr),
         g.attr_be16(g.IPVS_DEST_ATTR_PORT, d.port),
         g.attr_u32(g.IPVS_DEST_ATTR_FWD_METHOD, d.fwd_method),
         g.attr_u32(g.IPVS_DEST_ATTR_WEIGHT, d.weight & U32)]
    if o.tun:
        p += [g.attr_u8(g.IPVS_DEST_ATTR_TUN_TYPE, d.tun_type),
              g.attr_be16(g.IPVS_DEST_ATTR_TUN_PORT, d.tun_port),
              g.attr_u16(g.IPVS_DEST_ATTR_TUN_FLAGS, d.tun_flags)]
    p += [g.attr_u32(g.IPVS_DEST_ATTR_U_THRESH, d.u_thresh),
          g.attr_u32(g.IPVS_DEST_ATTR_L_THRESH, d.l_thresh),
          g.attr_u32(g.IPVS_DEST_ATTR_ACTIVE_CONNS, d.active_conns),
          g.attr_u32(g.IPVS_DEST_ATTR_INACT_CONNS, d.inact_conns),
          g.attr_u32(g.IPVS_DEST_ATTR_PERSIST_CONNS, d.persist_conns)]
    if o.dest_af:
        p.append(g.attr_u16(g.IPVS_DEST_ATTR_ADDR_FAMILY, d.af))
    p += _stats_attrs(g.IPVS_DEST_ATTR_STATS, g.IPVS_DEST_ATTR_STATS64,
                      d.stats, o)
    return _finish(p, o, salt)


def _genl_msg(cmd: int, nest_type: int, body: bytes, o: Opts) -> bytes:
    flag = g.NLA_F_NESTED if o.nest_flag else 0
    return g.encode_genl(o.family_id, g.NLM_F_MULTI, o.seq, cmd,
                         g.IPVS_GENL_VERSION,
                         g.encode_attr(nest_type | flag, body), pid=o.pid)


def service_msg(s: Service, o: Opts = Opts(), salt: int = 0) -> bytes:
    return _genl_msg(g.IPVS_CMD_NEW_SERVICE, g.IPVS_CMD_ATTR_SERVICE,
                     service_nest_body(s, o, salt), o)


def dest_msg(d: Dest, o: Opts = Opts(), salt: int = 0) -> bytes:
    return _genl_msg(g.IPVS_CMD_NEW_DEST, g.IPVS_CMD_ATTR_DEST,
                     dest_nest_body(d, o, salt), o)


def done(o: Opts = Opts()) -> bytes:
    return g.encode_done(o.seq, o.pid)


def error_reply(err: int, o: Opts = Opts()) -> bytes:
    """NLMSG_ERROR as the kernel answers a failed dump request (err > 0)."""
    req = g.NlMsgHdr(20, o.family_id, g.NLM_F_REQUEST | g.NLM_F_DUMP,
                     o.seq, 0).pack()
    return g.encode_error(-abs(err), o.seq, o.pid, req)


def services_reply(svcs, o: Opts = Opts(), with_done: bool = True) -> bytes:
    return (b"".join(service_msg(s, o, i) for i, s in enumerate(svcs))
            + (done(o) if with_done else b""))


def dests_reply(dests, o: Opts = Opts(), with_done: bool = True) -> bytes:
    return (b"".join(dest_msg(d, o, i) for i, d in enumerate(dests))
            + (done(o) if with_done else b""))


def info_reply(version: int = 0x010201, conn_tab_size: int = 4096, o: Opts = Opts()) -> bytes:
    """GET_INFO reply as ip_vs_genl_get_cmd sends it (cmd SET_INFO, no nest)."""
    attrs = (g.attr_u32(g.IPVS_INFO_ATTR_VERSION, version)
             + g.attr_u32(g.IPVS_INFO_ATTR_CONN_TAB_SIZE, conn_tab_size))
    return g.encode_genl(o.family_id, 0, o.seq, g.IPVS_CMD_SET_INFO, g.IPVS_GENL_VERSION,
                         attrs, pid=o.pid)


def config_reply(tcp: int = 900, tcp_fin: int = 120, udp: int = 300, o: Opts = Opts()) -> bytes:
    """GET_CONFIG reply (cmd SET_CONFIG, the three timeouts in seconds)."""
    attrs = (g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_TCP, tcp)
             + g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, tcp_fin)
             + g.attr_u32(g.IPVS_CMD_ATTR_TIMEOUT_UDP, udp))
    return g.encode_genl(o.family_id, 0, o.seq, g.IPVS_CMD_SET_CONFIG, g.IPVS_GENL_VERSION,
                         attrs, pid=o.pid)


def datagrams(reply: bytes, max_msgs: int = 3) -> list:
    """Split a reply at message boundaries into datagram-sized chunks."""
    out, cur, n, off = [], b"", 0, 0
    for m in g.iter_messages(reply):
        ln = g.align4(m.hdr.len)
        cur += reply[off:off + ln]
        off += ln
        n += 1
        if n == max_msgs:
            out.append(cur)
            cur, n = b"", 0
    if cur:
        out.append(cur)
    return out


# --------------------------------------------------------------------------
# expected records
# --------------------------------------------------------------------------

def _expected_stats(stats, o: Opts):
    if o.stats in ("both", "64"):
        return tuple(stats), REC_STATS64
    if o.stats == "32":
        return tuple(v & U32 if i in _32BIT_IN_STATS32 else v
                     for i, v in enumerate(stats)), REC_STATS32
    return (0,) * 10, 0


def expected_service(s: Service, o: Opts = Opts(), first_dest: int = 0,
                     ndests: int = 0) -> Service:
    stats, sbit = _expected_stats(s.stats, o)
    attrs = sbit | (REC_PE_NAME if s.pe_name.rstrip(b"\0") else 0)
    if s.fwmark:
        s = s._replace(protocol=0, port=0, addr=bytes(16))
    return s._replace(attrs=attrs, stats=stats, first_dest=first_dest,
                      ndests=ndests)


def expected_dest(d: Dest, svc_index: int, svc_af: int,
                  o: Opts = Opts()) -> Dest:
    stats, sbit = _expected_stats(d.stats, o)
    attrs = sbit | (REC_DEST_AF if o.dest_af else 0) | (REC_TUN if o.tun else 0)
    d = d._replace(svc_index=svc_index, attrs=attrs, stats=stats,
                   af=d.af if o.dest_af else svc_af)
    if not o.tun:
        d = d._replace(tun_type=0, tun_port=0, tun_flags=0)
    return d


def expected_services_bytes(svcs, o: Opts = Opts()) -> bytes:
    return b"".join(pack_service(expected_service(s, o)) for s in svcs)


def expected_dests_bytes(dests, svc_index: int, svc_af: int,
                         o: Opts = Opts()) -> bytes:
    return b"".join(pack_dest(expected_dest(d, svc_index, svc_af, o))
                    for d in dests)


# --------------------------------------------------------------------------
# hypothesis strategies
# --------------------------------------------------------------------------

def uint(bits: int):
    top = (1 << bits) - 1
    return st.one_of(st.integers(0, top), st.sampled_from(
        sorted({0, 1, top, top >> 1, min(top, 1 << 31), min(top, U32)})))


stats_values = st.tuples(*[uint(64)] * 10)
_name_chars = "abcdefghijklmnopqrstuvwxyz0123456789_"


def _addr(af: int):
    if af == socket.AF_INET6:
        return st.binary(min_size=16, max_size=16)
    return st.binary(min_size=4, max_size=4).map(lambda b: b + bytes(12))


@st.composite
def services(draw) -> Service:
    af = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    kind = draw(st.sampled_from(["tcp", "udp", "sctp", "fwmark"]))
    if kind == "fwmark":
        protocol, port, fwmark, addr = 0, 0, draw(st.integers(1, U32)), bytes(16)
    else:
        protocol = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP,
                    "sctp": 132}[kind]
        port, fwmark, addr = draw(uint(16)), 0, draw(_addr(af))
    sched = draw(st.text(_name_chars, min_size=1, max_size=15)).encode()
    pe = draw(st.one_of(st.just(b""),
                        st.text(_name_chars, min_size=1, max_size=31)
                        .map(str.encode)))
    return Service(af=af, protocol=protocol, port=port, attrs=0,
                   fwmark=fwmark, flags=draw(uint(32)),
                   timeout=draw(uint(32)), netmask=draw(uint(32)), addr=addr,
                   sched_name=sched, pe_name=pe, stats=draw(stats_values),
                   first_dest=0, ndests=0)


@st.composite
def dests(draw) -> Dest:
    af = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    return Dest(svc_index=0, af=af, port=draw(uint(16)), addr=draw(_addr(af)),
                fwd_method=draw(st.one_of(st.integers(0, 4), uint(32))),
                weight=draw(st.integers(-(1 << 31), (1 << 31) - 1)),
                u_thresh=draw(uint(32)), l_thresh=draw(uint(32)),
                active_conns=draw(uint(32)), inact_conns=draw(uint(32)),
                persist_conns=draw(uint(32)), tun_port=draw(uint(16)),
                tun_flags=draw(uint(16)), tun_type=draw(uint(8)), attrs=0,
                stats=draw(stats_values))


opts = st.builds(
    Opts,
    stats=st.sampled_from(["both", "32", "64", "none"]),
    stats64_first=st.booleans(), pad=st.booleans(), dest_af=st.booleans(),
    tun=st.booleans(), nest_flag=st.booleans(), stats_nest_flag=st.booleans(),
    shuffle=st.one_of(st.just(-1), st.integers(0, 1 << 20)),
    unknown=st.booleans(), family_id=st.integers(g.NLMSG_MIN_TYPE, 0xFFFF),
    seq=uint(32), pid=uint(32))

#: options of a current (>= 5.3) kernel, as ip_vs_ctl.c encodes
kernel_opts = st.builds(Opts, seq=uint(32), pid=uint(32),
                        family_id=st.integers(g.NLMSG_MIN_TYPE, 0xFFFF))

__all__ = ["Opts", "FAMILY_ID", "service_msg", "dest_msg", "done",
           "error_reply", "services_reply", "dests_reply", "datagrams",
           "expected_service", "expected_dest", "expected_services_bytes",
           "expected_dests_bytes", "services", "dests", "opts", "kernel_opts",
           "stats_values", "replace"]
