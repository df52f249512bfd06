"""/proc/net/ip_vs, the service table as text: what node_exporter reads.

``parse_table`` turns the kernel's text (``ip_vs_info_seq_show``) into the
same packed records as the netlink dump, without counters, byte for byte
what the C core's ``ipvs_parse_table`` makes (see ``csrc/ipvs_core.h`` for
which fields the text carries). ``merge_table`` gives the services of the
GET_SERVICE dump their destinations from the table, or from a GET_DEST dump
for those the table skipped (its seq_file loses services when other
namespaces have some: ``ipvs_dump_table`` in ``csrc/ipvs_core.h``). The node
format needs nothing else, and a namespace's table is a few hundred reads of
a file where the netlink dump is one request per service.
"""
from __future__ import annotations

import errno
import re
import socket
import struct

from .errors import IPVSError
from .records import (DEST_SIZE, DEST_STRUCT, S_ADDR, S_AF, S_FIRST_DEST, S_FWMARK, S_NDESTS,
                      S_PORT, S_PROTOCOL, SVC_STRUCT)

HEAD = (b"IP Virtual Server version ",
        b"Prot LocalAddress:Port Scheduler Flags",
        b"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn")

_SVC_F_PERSISTENT = 0x0001
_SVC_F_ONEPACKET = 0x0004
_PROTOS = {b"TCP": socket.IPPROTO_TCP, b"UDP": socket.IPPROTO_UDP, b"SCTP": 132,
           b"ICMP": socket.IPPROTO_ICMP, b"ICMPv6": socket.IPPROTO_ICMPV6, b"IP": 0}
_FWD = {b"Masq": 0, b"Local": 1, b"Tunnel": 2, b"Route": 3}
# Tokens are separated by blanks (only ' ': the C parser's rule); the
# kernel pads columns with several.
_HEX = rb"[0-9A-Fa-f]"
_ADDR = rb"(?:(%s{8})|\[(%s{4}(?::%s{4}){7})\]):(%s{4})" % (_HEX, _HEX, _HEX, _HEX)
_DEST_RE = re.compile(rb"  -> " + _ADDR + rb" +([^ ]+) +([^ ]+) +([^ ]+) +([^ ]+) *", re.S)
_SVC_RE = re.compile(rb" *([^ ]+) +(?:(%s{8})|" % _HEX + _ADDR + rb") +([^ ]+)(.*)", re.S)
_HEX8_RE = re.compile(_HEX + rb"{8}")
_SCHED_RE = re.compile(rb"[!-~]{1,15}")
_INT_RE = re.compile(rb"-?[0-9]{1,10}")


def _bad(line: int) -> IPVSError:
    return IPVSError(errno.EBADMSG, f"ip_vs table: line {line} is not in the kernel's format")


def _int32(tok: bytes, line: int) -> int:
    if not _INT_RE.fullmatch(tok):
        raise _bad(line)
    v = int(tok)
    if not -2 ** 31 <= v < 2 ** 31:
        raise _bad(line)
    return v


def _addr(v4: bytes, v6: bytes) -> tuple:
    if v4 is not None:
        return socket.AF_INET, int(v4, 16).to_bytes(4, "big") + bytes(12)
    return socket.AF_INET6, bytes.fromhex(v6.replace(b":", b"").decode())


def _service(line_no: int, line: bytes) -> list:
    m = _SVC_RE.fullmatch(line)
    if m is None:
        raise _bad(line_no)
    word, mark, v4, v6, port, sched, rest = m.groups()
    if word == b"FWM":
        if mark is None:
            raise _bad(line_no)
        af, proto, addr, port_n, fwmark = socket.AF_INET, 0, bytes(16), 0, int(mark, 16)
    else:
        if mark is not None:
            raise _bad(line_no)
        proto = _PROTOS.get(word)
        if proto is None:
            if not (re.fullmatch(rb"IP_[0-9]{1,3}", word, re.S) and int(word[3:]) <= 255):
                raise _bad(line_no)
            proto = int(word[3:])
        af, addr = _addr(v4, v6)
        port_n, fwmark = int(port, 16), 0
    if not _SCHED_RE.fullmatch(sched):      # a registered name, printable ASCII
        raise _bad(line_no)
    flags = timeout = netmask = 0
    toks = [t for t in rest.split(b" ") if t]
    i = 0
    while i < len(toks):
        if toks[i] == b"ops":
            flags |= _SVC_F_ONEPACKET
            i += 1
        elif toks[i] == b"persistent" and i + 2 < len(toks) and _HEX8_RE.fullmatch(toks[i + 2]):
            timeout = _int32(toks[i + 1], line_no)
            if timeout < 0:
                raise _bad(line_no)
            netmask = int.from_bytes(int(toks[i + 2], 16).to_bytes(4, "big"), "little")
            flags |= _SVC_F_PERSISTENT
            i += 3
        else:
            raise _bad(line_no)
    return [af, proto, port_n, 0, fwmark, flags, timeout, netmask, addr, sched, b"",
            *(0,) * 10, 0, 0]


def _dest(line_no: int, line: bytes, svc_index: int) -> bytes:
    m = _DEST_RE.fullmatch(line)
    if m is None:
        raise _bad(line_no)
    v4, v6, port, fwd, weight, active, inactive = m.groups()
    if fwd not in _FWD:
        raise _bad(line_no)
    af, addr = _addr(v4, v6)
    return DEST_STRUCT.pack(svc_index, af, int(port, 16), addr, _FWD[fwd],
                            _int32(weight, line_no), 0, 0,
                            _int32(active, line_no) & 0xFFFFFFFF,
                            _int32(inactive, line_no) & 0xFFFFFFFF, 0, 0, 0, 0, 0,
                            *(0,) * 10)


def parse_table(text: bytes) -> tuple:
    """(services, dests): packed records from /proc/net/ip_vs text.
    IPVSError(EBADMSG) when the text is not in the kernel's format."""
    lines = text.split(b"\n")
    if lines[-1] != b"":
        raise IPVSError(errno.EBADMSG, f"ip_vs table: line {len(lines)} has no end (truncated)")
    lines.pop()
    if len(lines) < 3:
        raise IPVSError(errno.EBADMSG, f"ip_vs table: {len(lines)} of its 3 header lines")
    for i, (line, head) in enumerate(zip(lines, HEAD)):
        if not line.startswith(head):
            raise _bad(i + 1)
    services: list = []
    dests: list = []
    for i in range(3, len(lines)):
        line = lines[i]
        if line.startswith(b"  -> "):
            if not services:
                raise _bad(i + 1)
            dests.append(_dest(i + 1, line, len(services) - 1))
            services[-1][-1] += 1
        else:
            svc = _service(i + 1, line)
            svc[-2] = len(dests)
            services.append(svc)
    return b"".join(SVC_STRUCT.pack(*s) for s in services), b"".join(dests)


#: how far ahead in the table a service is looked for (services added to the
#: table between the two reads are skipped over); beyond it, it is missing
LOOKAHEAD = 8
_DEST_INDEX = struct.Struct("<I")        # ipvs_dest_rec.svc_index, at offset 0


def _key(rec: tuple):
    """What identifies a service in both the table and the netlink dump (the
    table does not print a fwmark service's family)."""
    if rec[S_FWMARK]:
        return rec[S_FWMARK]
    return (rec[S_AF], rec[S_PROTOCOL], rec[S_PORT], rec[S_ADDR])


def merge_table(services: bytes, tsvcs: bytes, tdests: bytes, dests_of) -> tuple:
    """(services, dests): the GET_SERVICE dump's *services*, each with its
    destinations from the table (*tsvcs*/*tdests*, same kernel order) or, when
    the table lacks it, from ``dests_of(record, svc_index)`` (a GET_DEST dump;
    None = the service is gone). The C core's merge_table, record for record."""
    table = list(SVC_STRUCT.iter_unpack(tsvcs))
    tkeys = [_key(t) for t in table]
    out_s, out_d = [], []
    nd = j = 0
    for s in SVC_STRUCT.iter_unpack(services):
        key = _key(s)
        end = min(len(table), j + LOOKAHEAD)
        k = j
        while k < end and tkeys[k] != key:
            k += 1
        w = len(out_s)
        if k < end:
            t = table[k]
            part = bytearray(tdests[t[S_FIRST_DEST] * DEST_SIZE:
                                    (t[S_FIRST_DEST] + t[S_NDESTS]) * DEST_SIZE])
            for off in range(0, len(part), DEST_SIZE):
                _DEST_INDEX.pack_into(part, off, w)
            j = k + 1
        else:
            part = dests_of(s, w)
            if part is None:
                continue
        rec = list(s)
        rec[S_FIRST_DEST], rec[S_NDESTS] = nd, len(part) // DEST_SIZE
        out_s.append(SVC_STRUCT.pack(*rec))
        out_d.append(bytes(part))
        nd += rec[S_NDESTS]
    return b"".join(out_s), b"".join(out_d)
