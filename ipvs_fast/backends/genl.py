"""Backend protocol: generic-netlink types for the IPVS family.

Small building blocks, one per concept (in the style of cloudflare/ipvs and
mdlayher/genetlink): the netlink message header, the generic-netlink header,
netlink attributes (TLVs), and the constants of the IPVS and nlctrl families.

Everything that decodes is bounds-checked: malformed input raises
``IPVSError(errno.EBADMSG, ...)``, never ``IndexError`` or ``struct.error``.
Encoders are used for requests (and by the test encoder for fake replies).
"""
from __future__ import annotations

import errno
import struct
from typing import Iterator, NamedTuple, Tuple

from .errors import IPVSError

# --------------------------------------------------------------------------
# netlink (linux/netlink.h)
# --------------------------------------------------------------------------
NETLINK_GENERIC = 16

NLMSG_NOOP = 0x1
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLMSG_OVERRUN = 0x4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH

NLMSG_ALIGNTO = 4
NLMSG_HDRLEN = 16

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
NLA_ALIGNTO = 4
NLA_HDRLEN = 4

SOL_NETLINK = 270
SO_RCVBUFFORCE = 33

# --------------------------------------------------------------------------
# generic netlink (linux/genetlink.h)
# --------------------------------------------------------------------------
GENL_HDRLEN = 4
GENL_ID_CTRL = 0x10

CTRL_CMD_UNSPEC = 0
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_DELFAMILY = 2
CTRL_CMD_GETFAMILY = 3
CTRL_VERSION = 2

CTRL_ATTR_UNSPEC = 0
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5

# --------------------------------------------------------------------------
# IPVS (linux/ip_vs.h)
# --------------------------------------------------------------------------
IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 1

IPVS_CMD_UNSPEC = 0
IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_SET_SERVICE = 2
IPVS_CMD_DEL_SERVICE = 3
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_SET_DEST = 6
IPVS_CMD_DEL_DEST = 7
IPVS_CMD_GET_DEST = 8
IPVS_CMD_NEW_DAEMON = 9
IPVS_CMD_DEL_DAEMON = 10
IPVS_CMD_GET_DAEMON = 11
IPVS_CMD_SET_CONFIG = 12
IPVS_CMD_GET_CONFIG = 13
IPVS_CMD_SET_INFO = 14
IPVS_CMD_GET_INFO = 15
IPVS_CMD_ZERO = 16
IPVS_CMD_FLUSH = 17

IPVS_CMD_ATTR_UNSPEC = 0
IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2
IPVS_CMD_ATTR_DAEMON = 3
IPVS_CMD_ATTR_TIMEOUT_TCP = 4
IPVS_CMD_ATTR_TIMEOUT_TCP_FIN = 5
IPVS_CMD_ATTR_TIMEOUT_UDP = 6

# GET_INFO reply: top-level attributes
IPVS_INFO_ATTR_UNSPEC = 0
IPVS_INFO_ATTR_VERSION = 1         # u32, IP_VS_VERSION_CODE
IPVS_INFO_ATTR_CONN_TAB_SIZE = 2   # u32

IPVS_SVC_ATTR_UNSPEC = 0
IPVS_SVC_ATTR_AF = 1           # u16
IPVS_SVC_ATTR_PROTOCOL = 2     # u16
IPVS_SVC_ATTR_ADDR = 3         # binary, sizeof(union nf_inet_addr) = 16
IPVS_SVC_ATTR_PORT = 4         # be16
IPVS_SVC_ATTR_FWMARK = 5       # u32
IPVS_SVC_ATTR_SCHED_NAME = 6   # NUL string, <= 16 incl. NUL
IPVS_SVC_ATTR_FLAGS = 7        # struct ip_vs_flags {u32 flags; u32 mask}
IPVS_SVC_ATTR_TIMEOUT = 8      # u32 seconds
IPVS_SVC_ATTR_NETMASK = 9      # be32 (IPv4 mask) / prefix length (IPv6)
IPVS_SVC_ATTR_STATS = 10       # nested, 32-bit counters
IPVS_SVC_ATTR_PE_NAME = 11     # NUL string, <= 32 incl. NUL
IPVS_SVC_ATTR_STATS64 = 12     # nested, 64-bit counters

IPVS_DEST_ATTR_UNSPEC = 0
IPVS_DEST_ATTR_ADDR = 1        # binary 16
IPVS_DEST_ATTR_PORT = 2        # be16
IPVS_DEST_ATTR_FWD_METHOD = 3  # u32
IPVS_DEST_ATTR_WEIGHT = 4      # u32 (int in the kernel)
IPVS_DEST_ATTR_U_THRESH = 5    # u32
IPVS_DEST_ATTR_L_THRESH = 6    # u32
IPVS_DEST_ATTR_ACTIVE_CONNS = 7    # u32
IPVS_DEST_ATTR_INACT_CONNS = 8     # u32
IPVS_DEST_ATTR_PERSIST_CONNS = 9   # u32
IPVS_DEST_ATTR_STATS = 10      # nested, 32-bit counters
IPVS_DEST_ATTR_ADDR_FAMILY = 11    # u16 (kernel >= 3.18)
IPVS_DEST_ATTR_STATS64 = 12    # nested, 64-bit counters
IPVS_DEST_ATTR_TUN_TYPE = 13   # u8
IPVS_DEST_ATTR_TUN_PORT = 14   # be16
IPVS_DEST_ATTR_TUN_FLAGS = 15  # u16

IPVS_STATS_ATTR_UNSPEC = 0
IPVS_STATS_ATTR_CONNS = 1
IPVS_STATS_ATTR_INPKTS = 2
IPVS_STATS_ATTR_OUTPKTS = 3
IPVS_STATS_ATTR_INBYTES = 4
IPVS_STATS_ATTR_OUTBYTES = 5
IPVS_STATS_ATTR_CPS = 6
IPVS_STATS_ATTR_INPPS = 7
IPVS_STATS_ATTR_OUTPPS = 8
IPVS_STATS_ATTR_INBPS = 9
IPVS_STATS_ATTR_OUTBPS = 10
IPVS_STATS_ATTR_PAD = 11

#: payload width of each counter inside IPVS_*_ATTR_STATS (the 32-bit nest):
#: conns/inpkts/outpkts and the rates are u32, the byte counters u64.
STATS32_WIDTHS = {
    IPVS_STATS_ATTR_CONNS: 4, IPVS_STATS_ATTR_INPKTS: 4,
    IPVS_STATS_ATTR_OUTPKTS: 4, IPVS_STATS_ATTR_INBYTES: 8,
    IPVS_STATS_ATTR_OUTBYTES: 8, IPVS_STATS_ATTR_CPS: 4,
    IPVS_STATS_ATTR_INPPS: 4, IPVS_STATS_ATTR_OUTPPS: 4,
    IPVS_STATS_ATTR_INBPS: 4, IPVS_STATS_ATTR_OUTBPS: 4,
}
#: in IPVS_*_ATTR_STATS64 every counter is u64.
STATS64_WIDTHS = {t: 8 for t in STATS32_WIDTHS}

IP_VS_SCHEDNAME_MAXLEN = 16
IP_VS_PENAME_MAXLEN = 32

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
_U8 = struct.Struct("=B")
_U16 = struct.Struct("=H")
_BE16 = struct.Struct(">H")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U64 = struct.Struct("=Q")
_NLA = struct.Struct("=HH")


def align4(n: int) -> int:
    return (n + 3) & ~3


def bad(msg: str) -> IPVSError:
    """The one error for malformed input."""
    return IPVSError(errno.EBADMSG, "malformed netlink reply: " + msg)


class NlMsgHdr(NamedTuple):
    """struct nlmsghdr: 16 bytes, host byte order."""
    len: int
    type: int
    flags: int
    seq: int
    pid: int

    STRUCT = struct.Struct("=IHHII")

    def pack(self) -> bytes:
        return self.STRUCT.pack(*self)

    @classmethod
    def unpack_from(cls, buf, off: int = 0) -> "NlMsgHdr":
        if off < 0 or len(buf) - off < NLMSG_HDRLEN:
            raise bad(f"truncated nlmsghdr at offset {off}")
        return cls(*cls.STRUCT.unpack_from(buf, off))


class GenlMsgHdr(NamedTuple):
    """struct genlmsghdr: cmd u8, version u8, reserved u16."""
    cmd: int
    version: int
    reserved: int = 0

    STRUCT = struct.Struct("=BBH")

    def pack(self) -> bytes:
        return self.STRUCT.pack(*self)

    @classmethod
    def unpack_from(cls, buf, off: int = 0, end: int = -1) -> "GenlMsgHdr":
        if end < 0:
            end = len(buf)
        if off < 0 or end - off < GENL_HDRLEN or end > len(buf):
            raise bad(f"truncated genlmsghdr at offset {off}")
        return cls(*cls.STRUCT.unpack_from(buf, off))


class Message(NamedTuple):
    """One netlink message inside a buffer: header and payload bounds."""
    hdr: NlMsgHdr
    start: int        # payload start (after the 16-byte header)
    end: int          # payload end (start + hdr.len - 16)


def iter_messages(buf) -> Iterator[Message]:
    """Walk the netlink messages of a buffer (one or more datagrams).

    Each nlmsg_len must be >= 16 and fit in the buffer; messages are
    NLMSG_ALIGN'ed (the last one may omit its padding). Trailing bytes that
    cannot hold a header are malformed.
    """
    n = len(buf)
    off = 0
    unpack = NlMsgHdr.STRUCT.unpack_from
    while off < n:
        if n - off < NLMSG_HDRLEN:
            raise bad(f"{n - off} trailing bytes at offset {off}")
        h = NlMsgHdr(*unpack(buf, off))
        if h.len < NLMSG_HDRLEN or h.len > n - off:
            raise bad(f"nlmsg_len {h.len} at offset {off} (buffer {n})")
        yield Message(h, off + NLMSG_HDRLEN, off + h.len)
        off += align4(h.len)


def encode_msg(msg_type: int, flags: int, seq: int, payload: bytes,
               pid: int = 0) -> bytes:
    """A netlink message with header; payload padded to 4 bytes."""
    ln = NLMSG_HDRLEN + len(payload)
    pad = b"\0" * (align4(ln) - ln)
    return NlMsgHdr(ln, msg_type, flags, seq, pid).pack() + payload + pad


def encode_genl(family: int, flags: int, seq: int, cmd: int, version: int,
                attrs: bytes = b"", pid: int = 0) -> bytes:
    """A generic-netlink message: nlmsghdr + genlmsghdr + attributes."""
    return encode_msg(family, flags, seq,
                      GenlMsgHdr(cmd, version).pack() + attrs, pid)


def encode_error(err: int, seq: int = 0, pid: int = 0,
                 request: bytes = b"") -> bytes:
    """NLMSG_ERROR carrying ``err`` (negative errno, 0 = ACK)."""
    orig = request[:NLMSG_HDRLEN].ljust(NLMSG_HDRLEN, b"\0")
    return encode_msg(NLMSG_ERROR, 0, seq, _I32.pack(err) + orig, pid)


def encode_done(seq: int = 0, pid: int = 0, err: int = 0) -> bytes:
    return encode_msg(NLMSG_DONE, NLM_F_MULTI, seq, _I32.pack(err), pid)


# ---- attributes -----------------------------------------------------------

class Attr(NamedTuple):
    """One nlattr inside a buffer: type (flags masked) and payload bounds."""
    type: int
    start: int
    end: int
    nested: bool = False


def iter_attrs(buf, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """Yield (type, payload_start, payload_end) for the nlattrs in [start, end).

    Type has NLA_F_NESTED / NLA_F_NET_BYTEORDER masked off. Each nla_len
    must be >= 4 and fit; attributes are NLA_ALIGN'ed (the last one may omit
    its padding); 1-3 trailing bytes are malformed.
    """
    if start < 0 or end > len(buf) or start > end:
        raise bad(f"attribute range [{start}, {end}) outside buffer")
    off = start
    unpack = _NLA.unpack_from
    while off < end:
        if end - off < NLA_HDRLEN:
            raise bad(f"{end - off} trailing bytes in attributes at {off}")
        ln, ty = unpack(buf, off)
        if ln < NLA_HDRLEN or ln > end - off:
            raise bad(f"nla_len {ln} at offset {off} (room {end - off})")
        yield ty & NLA_TYPE_MASK, off + NLA_HDRLEN, off + ln
        off += (ln + 3) & ~3


def parse_attrs(buf, start: int, end: int) -> dict:
    """{type: (payload_start, payload_end)}; the last of duplicates wins."""
    return {t: (a, b) for t, a, b in iter_attrs(buf, start, end)}


def encode_attr(attr_type: int, payload: bytes) -> bytes:
    ln = NLA_HDRLEN + len(payload)
    return _NLA.pack(ln, attr_type) + payload + b"\0" * (align4(ln) - ln)


def encode_nested(attr_type: int, inner: bytes, flag: bool = True) -> bytes:
    return encode_attr(attr_type | (NLA_F_NESTED if flag else 0), inner)


def attr_u8(t: int, v: int) -> bytes:
    return encode_attr(t, _U8.pack(v))


def attr_u16(t: int, v: int) -> bytes:
    return encode_attr(t, _U16.pack(v))


def attr_be16(t: int, v: int) -> bytes:
    return encode_attr(t, _BE16.pack(v))


def attr_u32(t: int, v: int) -> bytes:
    return encode_attr(t, _U32.pack(v))


def attr_u64(t: int, v: int) -> bytes:
    return encode_attr(t, _U64.pack(v))


def attr_str(t: int, s) -> bytes:
    """NUL-terminated string attribute (nla_put_string)."""
    if isinstance(s, str):
        s = s.encode()
    return encode_attr(t, bytes(s) + b"\0")


# ---- bounds-checked payload getters ---------------------------------------
# Fixed-width integers must have exactly their width (libmnl semantics).

def _width(buf, a: int, b: int, w: int, what: str) -> None:
    if b - a != w:
        raise bad(f"{what}: payload {b - a} bytes, expected {w}")


def get_u8(buf, a: int, b: int, what: str = "u8") -> int:
    _width(buf, a, b, 1, what)
    return buf[a]


def get_u16(buf, a: int, b: int, what: str = "u16") -> int:
    _width(buf, a, b, 2, what)
    return _U16.unpack_from(buf, a)[0]


def get_be16(buf, a: int, b: int, what: str = "be16") -> int:
    _width(buf, a, b, 2, what)
    return _BE16.unpack_from(buf, a)[0]


def get_u32(buf, a: int, b: int, what: str = "u32") -> int:
    _width(buf, a, b, 4, what)
    return _U32.unpack_from(buf, a)[0]


def get_i32(buf, a: int, b: int, what: str = "i32") -> int:
    _width(buf, a, b, 4, what)
    return _I32.unpack_from(buf, a)[0]


def get_u64(buf, a: int, b: int, what: str = "u64") -> int:
    _width(buf, a, b, 8, what)
    return _U64.unpack_from(buf, a)[0]


def get_uint(buf, a: int, b: int, width: int, what: str = "uint") -> int:
    _width(buf, a, b, width, what)
    return int.from_bytes(buf[a:b], "little")


def get_str(buf, a: int, b: int) -> bytes:
    """String payload up to (not including) the first NUL."""
    raw = bytes(buf[a:b])
    i = raw.find(b"\0")
    return raw if i < 0 else raw[:i]


def get_error(buf, msg: Message) -> int:
    """The int error of an NLMSG_ERROR/NLMSG_DONE payload."""
    if msg.end - msg.start < 4:
        raise bad("NLMSG_ERROR/NLMSG_DONE payload shorter than 4 bytes")
    return _I32.unpack_from(buf, msg.start)[0]


# ---- nlctrl ----------------------------------------------------------------

def encode_getfamily(name: str, seq: int) -> bytes:
    return encode_genl(GENL_ID_CTRL, NLM_F_REQUEST, seq, CTRL_CMD_GETFAMILY,
                       CTRL_VERSION, attr_str(CTRL_ATTR_FAMILY_NAME, name))


def parse_family_id(buf) -> int:
    """The family id from a CTRL_CMD_NEWFAMILY reply (negative errno on
    NLMSG_ERROR raises IPVSError with that errno)."""
    for m in iter_messages(buf):
        t = m.hdr.type
        if t == NLMSG_ERROR:
            err = get_error(buf, m)
            if err < 0:
                raise IPVSError(-err, "CTRL_CMD_GETFAMILY failed")
            continue
        if t == NLMSG_NOOP or t == NLMSG_DONE:
            continue
        if t != GENL_ID_CTRL:
            raise bad(f"unexpected message type {t} in nlctrl reply")
        GenlMsgHdr.unpack_from(buf, m.start, m.end)
        attrs = parse_attrs(buf, m.start + GENL_HDRLEN, m.end)
        if CTRL_ATTR_FAMILY_ID in attrs:
            a, b = attrs[CTRL_ATTR_FAMILY_ID]
            return get_u16(buf, a, b, "CTRL_ATTR_FAMILY_ID")
    raise bad("nlctrl reply without CTRL_ATTR_FAMILY_ID")
