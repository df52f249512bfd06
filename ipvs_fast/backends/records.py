"""Backend contract: the packed record layouts both backends produce.

These mirror ``struct ipvs_svc_rec`` and ``struct ipvs_dest_rec`` in
``csrc/ipvs_core.h`` byte for byte. Both backends produce these exact bytes,
so "identical snapshots" is plain ``bytes ==``. Python code reads them with
``struct.iter_unpack`` (no per-field cffi access in the hot loop).
"""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

SVC_FMT = "<HHHHIIII16s16s32s10QII"
DEST_FMT = "<IHH16sIiIIIIIHHBxHxxxx10Q"
SVC_STRUCT = struct.Struct(SVC_FMT)
DEST_STRUCT = struct.Struct(DEST_FMT)
SVC_SIZE = SVC_STRUCT.size    # 176
DEST_SIZE = DEST_STRUCT.size  # 144
assert SVC_SIZE == 176 and DEST_SIZE == 144

NSTATS = 10
STAT_NAMES = ("conns", "inpkts", "outpkts", "inbytes", "outbytes",
              "cps", "inpps", "outpps", "inbps", "outbps")

# attrs bits (IPVS_REC_* in ipvs_core.h)
REC_STATS64 = 0x0001
REC_STATS32 = 0x0002
REC_PE_NAME = 0x0004
REC_DEST_AF = 0x0008
REC_TUN = 0x0010

# Tuple positions after SVC_STRUCT.unpack
S_AF, S_PROTOCOL, S_PORT, S_ATTRS, S_FWMARK, S_FLAGS, S_TIMEOUT, S_NETMASK, \
    S_ADDR, S_SCHED, S_PE = range(11)
S_STATS = 11                 # stats occupy [11, 21)
S_FIRST_DEST = 21
S_NDESTS = 22

# Tuple positions after DEST_STRUCT.unpack
D_SVC_INDEX, D_AF, D_PORT, D_ADDR, D_FWD, D_WEIGHT, D_UTHRESH, D_LTHRESH, \
    D_ACTIVE, D_INACTIVE, D_PERSIST, D_TUN_PORT, D_TUN_FLAGS, D_TUN_TYPE, \
    D_ATTRS = range(15)
D_STATS = 15                 # stats occupy [15, 25)

# struct ipvs_settings_rec (GET_INFO + GET_CONFIG of a namespace)
SETTINGS_FMT = "<IIIIII"
SETTINGS_STRUCT = struct.Struct(SETTINGS_FMT)
SETTINGS_SIZE = SETTINGS_STRUCT.size  # 24
# attrs bits (IPVS_SET_* in ipvs_core.h)
SET_VERSION = 0x0001
SET_CONN_TAB_SIZE = 0x0002
SET_TIMEOUT_TCP = 0x0004
SET_TIMEOUT_TCP_FIN = 0x0008
SET_TIMEOUT_UDP = 0x0010


class Settings(NamedTuple):
    """Decoded struct ipvs_settings_rec."""
    attrs: int
    version: int            # IP_VS_VERSION_CODE, 0x010201 = 1.2.1
    conn_tab_size: int
    timeout_tcp: int        # seconds
    timeout_tcp_fin: int
    timeout_udp: int

    @classmethod
    def unpack(cls, buf: bytes) -> "Settings":
        return cls(*SETTINGS_STRUCT.unpack(buf))

    def pack(self) -> bytes:
        return SETTINGS_STRUCT.pack(*self)

    @property
    def version_text(self) -> str:
        v = self.version
        return "%d.%d.%d" % ((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF)


PROTO_NAMES = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 132: "SCTP"}
FWD_NAMES = {0: "masq", 1: "local", 2: "tunnel", 3: "route", 4: "bypass"}


def addr_str(af: int, raw: bytes) -> str:
    """Dotted quad for IPv4, RFC 5952 compressed text for IPv6."""
    if af == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class Service(NamedTuple):
    """Decoded view of one service record (for tests and tooling, not the hot path)."""
    af: int
    protocol: int
    port: int
    attrs: int
    fwmark: int
    flags: int
    timeout: int
    netmask: int
    addr: bytes
    sched_name: bytes
    pe_name: bytes
    stats: tuple
    first_dest: int
    ndests: int


class Dest(NamedTuple):
    svc_index: int
    af: int
    port: int
    addr: bytes
    fwd_method: int
    weight: int
    u_thresh: int
    l_thresh: int
    active_conns: int
    inact_conns: int
    persist_conns: int
    tun_port: int
    tun_flags: int
    tun_type: int
    attrs: int
    stats: tuple


def decode_services(buf: bytes) -> list[Service]:
    out = []
    for t in SVC_STRUCT.iter_unpack(buf):
        out.append(Service(*t[:11], t[11:21], t[21], t[22]))
    return out


def decode_dests(buf: bytes) -> list[Dest]:
    return [Dest(*t[:15], t[15:25]) for t in DEST_STRUCT.iter_unpack(buf)]


def pack_service(s: Service) -> bytes:
    return SVC_STRUCT.pack(*s[:11], *s.stats, s.first_dest, s.ndests)


def pack_dest(d: Dest) -> bytes:
    return DEST_STRUCT.pack(*d[:15], *d.stats)
