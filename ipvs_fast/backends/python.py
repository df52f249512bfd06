"""Backend, pure Python: generic netlink over a plain socket (the baseline).

Produces the same packed records as the C core (``csrc/ipvs_core.c``) for the
same kernel replies; ``parse_services`` / ``parse_dests`` mirror
``ipvs_parse_service_msgs`` / ``ipvs_parse_dest_msgs`` rule for rule, and the
tests compare both byte for byte.

Parsing rules (shared with the C core):
  * ``data`` is one dump reply: netlink messages back to back (one or more
    datagrams concatenated); nlmsg_len must fit, messages NLMSG_ALIGN'ed.
  * The reply ends at NLMSG_DONE, which is required (else EBADMSG); whatever
    follows it is ignored.
  * NLMSG_ERROR with -4095 <= error < 0 -> IPVSError(-error); error 0 (an
    ACK) is skipped; other errors and payloads under 4 bytes -> EBADMSG.
    NLMSG_DONE carrying -4095 <= error < 0 (dump aborted) -> IPVSError(-error),
    error < -4095 -> EBADMSG. NLMSG_NOOP is skipped, other control types
    (< NLMSG_MIN_TYPE) -> EBADMSG.
  * family_id != 0: data messages must have nlmsg_type == family_id.
  * Data messages need a genlmsghdr (cmd not checked) and the top-level nest
    IPVS_CMD_ATTR_SERVICE / IPVS_CMD_ATTR_DEST (the last one wins).
  * A service needs IPVS_SVC_ATTR_AF; everything else is optional (0/empty).
    Integers must have exactly their width; ADDR 4..16 bytes (zero padded);
    strings cut at the first NUL and to field size - 1; unknown attributes
    ignored; of duplicates the last wins.
  * Stats: STATS64 if present else STATS (32-bit nest: conns/inpkts/outpkts/
    rates u32, bytes u64); every stats nest present is validated; counters
    outside 1..10 (PAD) ignored.
  * Anything malformed -> IPVSError(EBADMSG).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import stat
import struct
import threading
import time
from typing import List, Optional, Tuple

from . import genl as g
from .errors import IPVSError
from .records import (DEST_SIZE, DEST_STRUCT, REC_DEST_AF, REC_PE_NAME, REC_STATS32, REC_STATS64,
                      REC_TUN, SET_CONN_TAB_SIZE, SET_TIMEOUT_TCP, SET_TIMEOUT_TCP_FIN,
                      SET_TIMEOUT_UDP, SET_VERSION, SETTINGS_STRUCT, SVC_SIZE, SVC_STRUCT)
from .snapshot import Snapshot, parse_ip_vs_stats, sysctl_values
from .table import merge_table, parse_table

__all__ = ["parse_services", "parse_dests", "parse_settings", "PythonBackend"]

SYSCTL_DIR = "/proc/sys/net/ipv4/vs"
SYSCTL_READ = 256           # one /proc/sys value; longer ones are not numbers
TABLE_READ = 1 << 16        # /proc/net/ip_vs; a seq_file returns about a page per read
SYSCTL_MAX_FILES = 256

CLONE_NEWNET = 0x40000000
RCVBUF_BYTES = 1 << 20
RECV_BUFSIZE = 1 << 17          # kernel dump skbs are at most 32 KiB

_ZERO16 = bytes(16)
_ZERO_STATS = (0,) * 10
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_U64 = struct.Struct("=Q")
_FIRST_DEST_OFF = SVC_SIZE - 8  # offset of first_dest, ndests in a svc record
_FD_ND = struct.Struct("=II")

# nest widths, by stats attribute type (1..10) -> (index, width)
_S32 = {t: (t - 1, w) for t, w in g.STATS32_WIDTHS.items()}
_S64 = {t: (t - 1, w) for t, w in g.STATS64_WIDTHS.items()}


# --------------------------------------------------------------------------
# pure parsers
# --------------------------------------------------------------------------

def _stats(buf, a: int, b: int, widths: dict) -> list:
    st = [0] * 10
    for t, x, y in g.iter_attrs(buf, a, b):
        iw = widths.get(t)
        if iw is None:
            continue            # IPVS_STATS_ATTR_PAD and future counters
        i, w = iw
        if y - x != w:
            raise g.bad(f"stats attribute {t}: {y - x} bytes, expected {w}")
        st[i] = (_U32 if w == 4 else _U64).unpack_from(buf, x)[0]
    return st


def _pick_stats(s32, s64) -> Tuple[list, int]:
    """STATS64 preferred over STATS (both already validated)."""
    if s64 is not None:
        return s64, REC_STATS64
    if s32 is not None:
        return s32, REC_STATS32
    return _ZERO_STATS, 0


def _addr(buf, a: int, b: int) -> bytes:
    if not 4 <= b - a <= 16:
        raise g.bad(f"address attribute of {b - a} bytes, expected 4..16")
    return bytes(buf[a:b]).ljust(16, b"\0")


def _cstr(buf, a: int, b: int, size: int) -> bytes:
    return g.get_str(buf, a, b)[:size - 1]


def _service_record(buf, a: int, b: int) -> bytes:
    af = None
    protocol = port = fwmark = flags = timeout = netmask = attrs = 0
    addr = _ZERO16
    sched = pe = b""
    s32 = s64 = None
    for t, x, y in g.iter_attrs(buf, a, b):
        if t == g.IPVS_SVC_ATTR_AF:
            af = g.get_u16(buf, x, y, "IPVS_SVC_ATTR_AF")
        elif t == g.IPVS_SVC_ATTR_PROTOCOL:
            protocol = g.get_u16(buf, x, y, "IPVS_SVC_ATTR_PROTOCOL")
        elif t == g.IPVS_SVC_ATTR_ADDR:
            addr = _addr(buf, x, y)
        elif t == g.IPVS_SVC_ATTR_PORT:
            port = g.get_be16(buf, x, y, "IPVS_SVC_ATTR_PORT")
        elif t == g.IPVS_SVC_ATTR_FWMARK:
            fwmark = g.get_u32(buf, x, y, "IPVS_SVC_ATTR_FWMARK")
        elif t == g.IPVS_SVC_ATTR_SCHED_NAME:
            sched = _cstr(buf, x, y, g.IP_VS_SCHEDNAME_MAXLEN)
        elif t == g.IPVS_SVC_ATTR_FLAGS:
            if y - x != 8:
                raise g.bad(f"IPVS_SVC_ATTR_FLAGS: {y - x} bytes, expected 8")
            flags = _U32.unpack_from(buf, x)[0]   # ip_vs_flags.flags
        elif t == g.IPVS_SVC_ATTR_TIMEOUT:
            timeout = g.get_u32(buf, x, y, "IPVS_SVC_ATTR_TIMEOUT")
        elif t == g.IPVS_SVC_ATTR_NETMASK:
            # the raw 4 bytes memcpy'd into a u32 (a host-order read)
            netmask = g.get_u32(buf, x, y, "IPVS_SVC_ATTR_NETMASK")
        elif t == g.IPVS_SVC_ATTR_STATS:
            s32 = _stats(buf, x, y, _S32)
        elif t == g.IPVS_SVC_ATTR_PE_NAME:
            pe = _cstr(buf, x, y, g.IP_VS_PENAME_MAXLEN)
            attrs |= REC_PE_NAME
        elif t == g.IPVS_SVC_ATTR_STATS64:
            s64 = _stats(buf, x, y, _S64)
    if af is None:
        raise g.bad("service without IPVS_SVC_ATTR_AF")
    stats, sbit = _pick_stats(s32, s64)
    return SVC_STRUCT.pack(af, protocol, port, attrs | sbit, fwmark, flags,
                           timeout, netmask, addr, sched, pe, *stats, 0, 0)


def _dest_record(buf, a: int, b: int, svc_index: int, svc_af: int) -> bytes:
    af = svc_af         # kernels < 3.18 have no IPVS_DEST_ATTR_ADDR_FAMILY
    port = fwd = weight = uth = lth = active = inact = persist = 0
    tun_port = tun_flags = tun_type = attrs = 0
    addr = _ZERO16
    s32 = s64 = None
    for t, x, y in g.iter_attrs(buf, a, b):
        if t == g.IPVS_DEST_ATTR_ADDR:
            addr = _addr(buf, x, y)
        elif t == g.IPVS_DEST_ATTR_PORT:
            port = g.get_be16(buf, x, y, "IPVS_DEST_ATTR_PORT")
        elif t == g.IPVS_DEST_ATTR_FWD_METHOD:
            fwd = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_FWD_METHOD")
        elif t == g.IPVS_DEST_ATTR_WEIGHT:
            weight = g.get_i32(buf, x, y, "IPVS_DEST_ATTR_WEIGHT")
        elif t == g.IPVS_DEST_ATTR_U_THRESH:
            uth = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_U_THRESH")
        elif t == g.IPVS_DEST_ATTR_L_THRESH:
            lth = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_L_THRESH")
        elif t == g.IPVS_DEST_ATTR_ACTIVE_CONNS:
            active = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_ACTIVE_CONNS")
        elif t == g.IPVS_DEST_ATTR_INACT_CONNS:
            inact = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_INACT_CONNS")
        elif t == g.IPVS_DEST_ATTR_PERSIST_CONNS:
            persist = g.get_u32(buf, x, y, "IPVS_DEST_ATTR_PERSIST_CONNS")
        elif t == g.IPVS_DEST_ATTR_STATS:
            s32 = _stats(buf, x, y, _S32)
        elif t == g.IPVS_DEST_ATTR_ADDR_FAMILY:
            af = g.get_u16(buf, x, y, "IPVS_DEST_ATTR_ADDR_FAMILY")
            attrs |= REC_DEST_AF
        elif t == g.IPVS_DEST_ATTR_STATS64:
            s64 = _stats(buf, x, y, _S64)
        elif t == g.IPVS_DEST_ATTR_TUN_TYPE:
            tun_type = g.get_u8(buf, x, y, "IPVS_DEST_ATTR_TUN_TYPE")
            attrs |= REC_TUN
        elif t == g.IPVS_DEST_ATTR_TUN_PORT:
            tun_port = g.get_be16(buf, x, y, "IPVS_DEST_ATTR_TUN_PORT")
            attrs |= REC_TUN
        elif t == g.IPVS_DEST_ATTR_TUN_FLAGS:
            tun_flags = g.get_u16(buf, x, y, "IPVS_DEST_ATTR_TUN_FLAGS")
            attrs |= REC_TUN
    stats, sbit = _pick_stats(s32, s64)
    return DEST_STRUCT.pack(svc_index, af, port, addr, fwd, weight, uth, lth,
                            active, inact, persist, tun_port, tun_flags,
                            tun_type, attrs | sbit, *stats)


def _walk(data, family_id: int, nest_type: int, what: str, record) -> bytes:
    """Shared message loop: the concatenated records of one dump reply."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if not 0 <= family_id <= 0xFFFF:
        raise ValueError(f"family_id {family_id} out of range")
    out = []
    for m in g.iter_messages(data):
        t = m.hdr.type
        if t == g.NLMSG_ERROR:
            err = g.get_error(data, m)
            if err == 0:
                continue                    # ACK (not requested for dumps)
            if not -4095 <= err < 0:
                raise g.bad(f"{what} reply: NLMSG_ERROR with invalid error "
                            f"{err}")
            raise IPVSError(-err, f"kernel rejected {what}: "
                            f"{os.strerror(-err)}")
        if t == g.NLMSG_DONE:
            if m.end - m.start >= 4:
                err = _I32.unpack_from(data, m.start)[0]
                if err < -4095:
                    raise g.bad(f"{what} reply: NLMSG_DONE with invalid "
                                f"error {err}")
                if err < 0:
                    raise IPVSError(-err, f"kernel aborted {what} dump: "
                                    f"{os.strerror(-err)}")
            return b"".join(out)
        if t == g.NLMSG_NOOP:
            continue
        if t < g.NLMSG_MIN_TYPE:
            raise g.bad(f"{what} reply: unexpected control message type {t}")
        if family_id and t != family_id:
            raise g.bad(f"{what} reply: message type {t}, IPVS family is "
                        f"{family_id}")
        if m.end - m.start < g.GENL_HDRLEN:
            raise g.bad(f"{what} reply: message too short for a genl header")
        # genlmsghdr.cmd is not checked: the nest type says what it carries
        nest = None
        for at, x, y in g.iter_attrs(data, m.start + g.GENL_HDRLEN, m.end):
            if at == nest_type:
                nest = (x, y)
        if nest is None:
            raise g.bad(f"{what} reply: message without its top-level nest")
        out.append(record(data, nest[0], nest[1]))
    raise g.bad(f"{what} reply ended without NLMSG_DONE")


def parse_services(data: bytes, family_id: int = 0) -> bytes:
    """Packed ipvs_svc_rec records (first_dest = ndests = 0) from one
    GET_SERVICE dump reply."""
    return _walk(data, family_id, g.IPVS_CMD_ATTR_SERVICE, "GET_SERVICE",
                 _service_record)


def parse_dests(data: bytes, svc_index: int, svc_af: int,
                family_id: int = 0) -> bytes:
    """Packed ipvs_dest_rec records from one GET_DEST dump reply."""
    if not 0 <= svc_index <= 0xFFFFFFFF or not 0 <= svc_af <= 0xFFFF:
        raise ValueError("svc_index/svc_af out of range")
    return _walk(data, family_id, g.IPVS_CMD_ATTR_DEST, "GET_DEST",
                 lambda buf, a, b: _dest_record(buf, a, b, svc_index, svc_af))


# GET_INFO / GET_CONFIG replies: attribute -> (settings field, attrs bit)
_INFO_FIELDS = {g.IPVS_INFO_ATTR_VERSION: (1, SET_VERSION),
                g.IPVS_INFO_ATTR_CONN_TAB_SIZE: (2, SET_CONN_TAB_SIZE)}
_CONFIG_FIELDS = {g.IPVS_CMD_ATTR_TIMEOUT_TCP: (3, SET_TIMEOUT_TCP),
                  g.IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: (4, SET_TIMEOUT_TCP_FIN),
                  g.IPVS_CMD_ATTR_TIMEOUT_UDP: (5, SET_TIMEOUT_UDP)}


def _settings_reply(data, family_id: int, what: str, fields: dict, rec: list) -> None:
    """One GET_INFO / GET_CONFIG reply (not a dump: its first data message)
    into *rec* (the fields of SETTINGS_STRUCT), as ``ipvs_parse_info_msgs``
    / ``ipvs_parse_config_msgs`` do: ACKs and NOOPs skipped, other control
    messages malformed, known attributes u32, unknown ones ignored."""
    if not isinstance(data, bytes):
        data = bytes(data)
    if not 0 <= family_id <= 0xFFFF:
        raise ValueError(f"family_id {family_id} out of range")
    for m in g.iter_messages(data):
        t = m.hdr.type
        if t == g.NLMSG_ERROR:
            err = g.get_error(data, m)
            if err == 0:
                continue                    # ACK
            if not -4095 <= err < 0:
                raise g.bad(f"{what} reply: NLMSG_ERROR with invalid error {err}")
            raise IPVSError(-err, f"kernel rejected {what}: {os.strerror(-err)}")
        if t == g.NLMSG_NOOP:
            continue
        if t < g.NLMSG_MIN_TYPE:
            raise g.bad(f"{what} reply: unexpected control message type {t}")
        if family_id and t != family_id:
            raise g.bad(f"{what} reply: message type {t}, IPVS family is {family_id}")
        if m.end - m.start < g.GENL_HDRLEN:
            raise g.bad(f"{what} reply: message too short for a genl header")
        for at, x, y in g.iter_attrs(data, m.start + g.GENL_HDRLEN, m.end):
            f = fields.get(at)
            if f is not None:
                rec[f[0]] = g.get_u32(data, x, y, f"{what} attribute {at}")
                rec[0] |= f[1]
        return
    raise g.bad(f"{what} reply ended without a message")


def parse_settings(info: bytes, config: bytes, family_id: int = 0) -> bytes:
    """A packed ipvs_settings_rec from one GET_INFO and one GET_CONFIG reply."""
    rec = [0] * 6
    _settings_reply(info, family_id, "GET_INFO", _INFO_FIELDS, rec)
    _settings_reply(config, family_id, "GET_CONFIG", _CONFIG_FIELDS, rec)
    return SETTINGS_STRUCT.pack(*rec)


def _open_sysctls() -> list:
    """[(name, fd)] of the files of SYSCTL_DIR as the calling thread's
    namespace shows them (sorted by name; unopenable files left out)."""
    try:
        names = sorted(os.listdir(SYSCTL_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    try:
        for name in names:
            if len(out) >= SYSCTL_MAX_FILES:
                break
            if name.startswith(".") or len(name.encode()) >= 64:
                continue
            try:
                fd = os.open(os.path.join(SYSCTL_DIR, name),
                             os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError:
                continue            # e.g. write-only: nothing to export
            out.append((name, fd))
    except BaseException:
        for _, fd in out:
            os.close(fd)
        raise
    return out


# --------------------------------------------------------------------------
# namespace handling
# --------------------------------------------------------------------------

_libc = None


def _load_libc():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.setns.restype = ctypes.c_int
        libc.fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)
        libc.fstatfs.restype = ctypes.c_int
        _libc = libc
    return _libc


def _setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _load_libc().setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


NSFS_MAGIC = 0x6e736673
NS_GET_NSTYPE = 0xB703          # _IO(0xb7, 0x3), Linux 4.11
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
_NS_TYPES = {0x00020000: "a mount namespace", 0x02000000: "a cgroup namespace",
             0x04000000: "a UTS namespace", 0x08000000: "an IPC namespace",
             0x10000000: "a user namespace", 0x20000000: "a PID namespace",
             0x00000080: "a time namespace"}


def _fs_type(fd: int) -> int:
    """statfs.f_type of an open file (os.fstatvfs does not report it)."""
    libc = _load_libc()
    buf = ctypes.create_string_buffer(256)      # struct statfs is 120 bytes
    if libc.fstatfs(fd, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ctypes.c_ulong.from_buffer(buf).value


def _open_netns(ns_path: str) -> int:
    """Open *ns_path* for setns() without ever blocking and without opening
    anything but a namespace (as ipvs_core.c's open_netns): an O_PATH fd
    first (no FIFO or device is opened), checked to be on nsfs, then the same
    inode reopened through /proc/self/fd and, where the kernel can say,
    checked to be a network namespace."""
    def fail(e: OSError, what: str = "") -> IPVSError:
        return IPVSError(e.errno, f"namespace path {ns_path}: {what}{os.strerror(e.errno)}")

    try:
        pfd = os.open(ns_path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise fail(e) from None
    try:
        try:
            fs_type = _fs_type(pfd)
            mode = os.fstat(pfd).st_mode
        except OSError as e:
            raise fail(e) from None
        if fs_type != NSFS_MAGIC:
            kind = next((k for test, k in _FILE_KINDS if test(mode)), "not a namespace file")
            raise IPVSError(errno.EINVAL, f"namespace path {ns_path}: not a network "
                            f"namespace ({kind})")
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise fail(e, "reopen: ") from None
    finally:
        os.close(pfd)
    try:
        ns_type = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return fd               # kernel < 4.11: setns() will say EINVAL
    if ns_type != CLONE_NEWNET:
        os.close(fd)
        raise IPVSError(errno.EINVAL, f"namespace path {ns_path}: not a network namespace "
                        f"({_NS_TYPES.get(ns_type, 'another kind of namespace')})")
    return fd


def _svc_request_attrs(rec: tuple) -> bytes:
    """Nested IPVS_CMD_ATTR_SERVICE identifying one service record."""
    af, protocol, port, _attrs, fwmark = rec[0], rec[1], rec[2], rec[3], rec[4]
    inner = g.attr_u16(g.IPVS_SVC_ATTR_AF, af)
    if fwmark:
        inner += g.attr_u32(g.IPVS_SVC_ATTR_FWMARK, fwmark)
    else:
        inner += (g.attr_u16(g.IPVS_SVC_ATTR_PROTOCOL, protocol)
                  + g.encode_attr(g.IPVS_SVC_ATTR_ADDR, rec[8])
                  + g.attr_be16(g.IPVS_SVC_ATTR_PORT, port))
    return g.encode_nested(g.IPVS_CMD_ATTR_SERVICE, inner)


class PythonBackend:
    """One IPVS handle bound to one network namespace.

    ``ns_path`` "" = the calling thread's own namespace; otherwise a netns
    file such as /run/netns/x or /proc/<pid>/ns/net. The socket and the
    ip_vs_stats fd are created inside the target namespace and stay bound to
    it; the calling thread's namespace is restored before __init__ returns.
    """

    NAME = "python"

    backend_name = "python"

    def __init__(self, ns_path: str = "", timeout: Optional[float] = 5.0):
        self.ns_path = os.fsdecode(ns_path) if ns_path else ""
        # None or <= 0: wait for the kernel without a time limit
        self.timeout = timeout if timeout is not None and timeout > 0 else None
        self._lock = threading.Lock()
        self._ns_fd = -1
        self._stats_fd = -1
        self._table_fd = -1
        self._sysctl_fds: list = []
        self._sock: Optional[socket.socket] = None
        self._seq = int(time.time()) & 0x7FFFFFFF
        self.family_id = 0
        self._buf = bytearray(RECV_BUFSIZE)
        self._open()

    # ---- opening ---------------------------------------------------------
    def _open(self) -> None:
        ns_path = self.ns_path
        where = f"namespace {ns_path!r}" if ns_path else "own namespace"
        saved = -1
        entered = False
        ok = False
        try:
            if ns_path:
                self._ns_fd = _open_netns(ns_path)
                saved = os.open("/proc/thread-self/ns/net",
                                os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(self._ns_fd)
                except OSError as e:
                    if e.errno == errno.EPERM:
                        raise IPVSError(errno.EPERM, f"setns({ns_path}): "
                                        "Operation not permitted (entering a "
                                        "network namespace needs CAP_SYS_ADMIN)"
                                        ) from None
                    if e.errno == errno.EINVAL:
                        raise IPVSError(errno.EINVAL, f"setns({ns_path}): not "
                                        "a network namespace file") from None
                    raise IPVSError(e.errno, f"setns({ns_path}): "
                                    f"{os.strerror(e.errno)}") from None
                entered = True
            else:
                self._ns_fd = os.open("/proc/thread-self/ns/net",
                                      os.O_RDONLY | os.O_CLOEXEC)
            # Resolving the genl family would auto-load ip_vs: check first.
            if not os.path.exists("/proc/thread-self/net/ip_vs"):
                raise IPVSError(errno.EPROTONOSUPPORT,
                                f"ip_vs not loaded in {where} "
                                "(/proc/net/ip_vs missing)")
            self._sock = self._make_socket()
            self.family_id = self._resolve_family()
            for attr, name in (("_table_fd", "ip_vs"), ("_stats_fd", "ip_vs_stats")):
                try:
                    setattr(self, attr, os.open(f"/proc/thread-self/net/{name}",
                                                os.O_RDONLY | os.O_CLOEXEC))
                except OSError as e:
                    raise IPVSError(e.errno, f"open /proc/net/{name}: "
                                    f"{os.strerror(e.errno)}") from None
            # /proc/sys/net shows the opener's namespace: open them here
            self._sysctl_fds = _open_sysctls()
            ok = True
        except IPVSError:
            raise
        except OSError as e:        # e.g. /proc not mounted
            raise IPVSError(e.errno or errno.EIO, f"opening IPVS handle in "
                            f"{where}: {e}") from None
        finally:
            restore_err = None
            if entered:
                try:
                    _setns(saved)
                except OSError as e:   # the thread is in the wrong netns
                    restore_err = e
            if saved >= 0:
                os.close(saved)
            if not ok or restore_err is not None:
                self._close_fds()
            if restore_err is not None:
                raise IPVSError(restore_err.errno,
                                "setns back to the original namespace failed: "
                                f"{os.strerror(restore_err.errno)}")

    def _make_socket(self) -> socket.socket:
        try:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW,
                              g.NETLINK_GENERIC)
        except OSError as e:
            raise IPVSError(e.errno, "netlink socket: "
                            f"{os.strerror(e.errno)}") from None
        try:
            try:
                s.setsockopt(socket.SOL_SOCKET, g.SO_RCVBUFFORCE, RCVBUF_BYTES)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            s.bind((0, 0))
            s.settimeout(self.timeout)
        except OSError as e:
            s.close()
            raise IPVSError(e.errno, "netlink socket setup: "
                            f"{os.strerror(e.errno)}") from None
        except BaseException:
            s.close()
            raise
        return s

    def _resolve_family(self) -> int:
        seq = self._next_seq()
        reply = self._transact(g.encode_getfamily(g.IPVS_GENL_NAME, seq), seq,
                               dump=False)
        try:
            return g.parse_family_id(reply)
        except IPVSError as e:
            if e.errno == errno.ENOENT:
                raise IPVSError(errno.EPROTONOSUPPORT, "generic netlink "
                                "family IPVS not registered") from None
            raise

    # ---- transport -------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _transact(self, request: bytes, seq: int, dump: bool = True) -> bytes:
        """Send one request, return the concatenated datagrams of its reply
        (messages with other sequence numbers, i.e. late replies to earlier
        timed-out requests, are dropped)."""
        sock = self._sock
        if sock is None:
            raise IPVSError(errno.EBADF, "IPVS handle is closed")
        try:
            sock.settimeout(self.timeout)
            sock.sendto(request, (0, 0))
        except socket.timeout:
            raise IPVSError(errno.ETIMEDOUT, "netlink send timed out") from None
        except OSError as e:
            raise IPVSError(e.errno, f"netlink send: {os.strerror(e.errno)}"
                            ) from None
        buf = self._buf
        view = memoryview(buf)
        parts: List[bytes] = []
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IPVSError(errno.ETIMEDOUT, "no complete reply from "
                                    f"the kernel within {timeout:g}s")
                sock.settimeout(remaining)
            try:
                n = sock.recv_into(view, 0, socket.MSG_TRUNC)
            except socket.timeout:
                raise IPVSError(errno.ETIMEDOUT, "no reply from the kernel "
                                f"within {timeout:g}s") from None
            except OSError as e:
                raise IPVSError(e.errno, "netlink recv: "
                                f"{os.strerror(e.errno)}") from None
            if n > len(buf):
                raise IPVSError(errno.EMSGSIZE, f"netlink datagram of {n} "
                                f"bytes truncated to {len(buf)}")
            dgram = bytes(view[:n])
            end, ours = self._scan(dgram, seq, dump)
            if not ours:
                continue            # stale reply to an earlier request
            parts.append(dgram)
            if end:
                return b"".join(parts)

    @staticmethod
    def _scan(dgram: bytes, seq: int, dump: bool) -> Tuple[bool, bool]:
        """(reply complete?, datagram belongs to seq?)"""
        end = False
        ours = None
        for m in g.iter_messages(dgram):
            mine = m.hdr.seq == seq
            if ours is None:
                ours = mine
            elif ours != mine:
                raise g.bad("datagram mixes sequence numbers")
            t = m.hdr.type
            if t == g.NLMSG_DONE or t == g.NLMSG_ERROR:
                end = True
            elif not dump and t >= g.NLMSG_MIN_TYPE:
                end = True
        return end, bool(ours)

    def _dump_request(self, cmd: int, attrs: bytes = b"") -> bytes:
        seq = self._next_seq()
        msg = g.encode_genl(self.family_id, g.NLM_F_REQUEST | g.NLM_F_DUMP,
                            seq, cmd, g.IPVS_GENL_VERSION, attrs)
        return self._transact(msg, seq)

    # ---- dumps -----------------------------------------------------------
    def _services_locked(self) -> Tuple[bytes, bytes]:
        """(the GET_SERVICE dump reply, its service records)."""
        svc_reply = self._dump_request(g.IPVS_CMD_GET_SERVICE)
        try:
            return svc_reply, parse_services(svc_reply, self.family_id)
        except IPVSError as e:
            if e.errno == errno.EPERM:
                raise IPVSError(errno.EPERM, "IPVS service dump: Operation "
                                "not permitted (needs CAP_NET_ADMIN in the "
                                "namespace's user namespace)") from None
            raise

    def _dests_of(self, rec: tuple, svc_index: int) -> Optional[bytes]:
        """One service's GET_DEST dump as records; None if it was deleted."""
        reply = self._dump_request(g.IPVS_CMD_GET_DEST, _svc_request_attrs(rec))
        try:
            return parse_dests(reply, svc_index, rec[0], self.family_id)
        except IPVSError as e:
            if e.errno in (errno.ENOENT, errno.ESRCH):
                return None
            raise

    def _dump_raw_locked(self):
        svc_reply, svcs = self._services_locked()
        out = []
        for i, rec in enumerate(SVC_STRUCT.iter_unpack(svcs)):
            reply = self._dump_request(g.IPVS_CMD_GET_DEST,
                                       _svc_request_attrs(rec))
            out.append((i, rec[0], reply))
        return svc_reply, svcs, out

    def dump_raw(self):
        """(service_reply, [(svc_index, svc_af, dest_reply), ...]): the raw
        concatenated datagrams of each dump, for fixtures. svc_index is the
        service's position in service_reply."""
        with self._lock:
            svc_reply, _svcs, dests = self._dump_raw_locked()
        return svc_reply, dests

    def read_totals(self) -> Optional[tuple]:
        if self._stats_fd < 0:
            return None
        try:
            raw = os.pread(self._stats_fd, 65536, 0)
        except OSError:
            return None
        return parse_ip_vs_stats(raw.decode("ascii", "replace"))

    def _request(self, cmd: int) -> bytes:
        seq = self._next_seq()
        msg = g.encode_genl(self.family_id, g.NLM_F_REQUEST, seq, cmd, g.IPVS_GENL_VERSION)
        return self._transact(msg, seq, dump=False)

    def settings_raw(self) -> Tuple[bytes, bytes]:
        """(GET_INFO reply, GET_CONFIG reply), raw: for fixtures."""
        with self._lock:
            return self._request(g.IPVS_CMD_GET_INFO), self._request(g.IPVS_CMD_GET_CONFIG)

    def _read_sysctls(self):
        for name, fd in self._sysctl_fds:
            try:
                yield name, os.pread(fd, SYSCTL_READ, 0)
            except OSError:
                yield name, None

    def dump_table(self) -> Snapshot:
        """Services and destinations without counters, from the namespace's
        /proc/net/ip_vs, and the totals (what node_exporter reads)."""
        t0 = time.monotonic()
        with self._lock:
            if self._table_fd < 0:
                raise IPVSError(errno.EBADF, "IPVS handle is closed")
            parts = []
            off = 0
            try:
                while True:
                    chunk = os.pread(self._table_fd, TABLE_READ, off)
                    if not chunk:
                        break
                    parts.append(chunk)
                    off += len(chunk)
            except OSError as e:
                raise IPVSError(e.errno, "read /proc/net/ip_vs: "
                                f"{os.strerror(e.errno)}") from None
            tsvcs, tdests = parse_table(b"".join(parts))
            _reply, svcs = self._services_locked()
            services, dests = merge_table(svcs, tsvcs, tdests, self._dests_of)
            totals = self.read_totals()
        return Snapshot(services, dests, totals,
                        {"backend": self.backend_name,
                         "ns_path": self.ns_path,
                         "duration": time.monotonic() - t0})

    def dump(self) -> Snapshot:
        t0 = time.monotonic()
        with self._lock:
            _svc_reply, svcs, raw = self._dump_raw_locked()
            fam = self.family_id
            svc_out = []
            dest_out = []
            ndest_total = 0
            for i, af, reply in raw:
                kept = len(svc_out)
                try:
                    d = parse_dests(reply, kept, af, fam)
                except IPVSError as e:
                    if e.errno in (errno.ENOENT, errno.ESRCH):
                        continue    # service deleted between the two dumps
                    raise
                nd = len(d) // DEST_SIZE
                rec = bytearray(svcs[i * SVC_SIZE:(i + 1) * SVC_SIZE])
                _FD_ND.pack_into(rec, _FIRST_DEST_OFF, ndest_total, nd)
                svc_out.append(bytes(rec))
                dest_out.append(d)
                ndest_total += nd
            totals = self.read_totals()
            settings = parse_settings(self._request(g.IPVS_CMD_GET_INFO),
                                      self._request(g.IPVS_CMD_GET_CONFIG), fam)
            sysctls = sysctl_values(self._read_sysctls())
        return Snapshot(b"".join(svc_out), b"".join(dest_out), totals,
                        {"backend": self.backend_name,
                         "ns_path": self.ns_path,
                         "duration": time.monotonic() - t0},
                        settings, sysctls)

    # ---- identity / lifetime ---------------------------------------------
    def ns_ident(self) -> Tuple[int, int]:
        with self._lock:
            if self._ns_fd < 0:
                raise IPVSError(errno.EBADF, "IPVS handle is closed")
            st = os.fstat(self._ns_fd)
        return st.st_dev, st.st_ino

    def _close_fds(self) -> None:
        fds, self._sysctl_fds = getattr(self, "_sysctl_fds", []), []
        for _, fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        for name in ("_stats_fd", "_table_fd", "_ns_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._close_fds()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> "PythonBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._close_fds()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"<PythonBackend ns={self.ns_path!r} family={self.family_id}"
                f"{' closed' if self.closed else ''}>")
