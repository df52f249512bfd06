"""Host tests for the compiled core (ipvs_fast._ipvs_core): no IPVS needed.

Opening handles on a kernel without ip_vs, and the pure parsers on hand-built
kernel replies (bytes built with struct right here, independent of any other
encoder in the tree), including truncated/garbage input and a fuzz loop.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading

import pytest

from ipvs_fast.backends import native
from ipvs_fast.backends.errors import IPVSError
from ipvs_fast.backends.records import (DEST_SIZE, REC_DEST_AF, REC_PE_NAME, REC_STATS32,
                                        REC_STATS64, REC_TUN, SVC_SIZE, decode_dests,
                                        decode_services)

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"extension not built: {native.import_error()}")

# ---------------------------------------------------------------------------
# a tiny netlink encoder (kernel side)

FAMILY = 0x24
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_MULTI = 2
NLA_F_NESTED = 0x8000
CMD_NEW_SERVICE, CMD_NEW_DEST = 1, 5
CMD_ATTR_SERVICE, CMD_ATTR_DEST = 1, 2
(SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK, SVC_SCHED, SVC_FLAGS, SVC_TIMEOUT,
 SVC_NETMASK, SVC_STATS, SVC_PE, SVC_STATS64) = range(1, 13)
(D_ADDR, D_PORT, D_FWD, D_WEIGHT, D_UTH, D_LTH, D_ACT, D_INACT, D_PERSIST, D_STATS,
 D_AF, D_STATS64, D_TUN_TYPE, D_TUN_PORT, D_TUN_FLAGS) = range(1, 16)
STATS_PAD = 11


def nla(t: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("<HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)


def u8(t, v): return nla(t, struct.pack("<B", v))
def u16(t, v): return nla(t, struct.pack("<H", v))
def be16(t, v): return nla(t, struct.pack(">H", v))
def u32(t, v): return nla(t, struct.pack("<I", v))
def u64(t, v): return nla(t, struct.pack("<Q", v))
def string(t, s): return nla(t, s.encode() + b"\0")


def nlmsg(mtype: int, payload: bytes, seq: int = 1, pid: int = 1234,
          flags: int = NLM_F_MULTI) -> bytes:
    n = 16 + len(payload)
    return struct.pack("<IHHII", n, mtype, flags, seq, pid) + payload + b"\0" * ((4 - n % 4) % 4)


def genl(cmd: int, attrs: bytes, family: int = FAMILY) -> bytes:
    return nlmsg(family, struct.pack("<BBH", cmd, 1, 0) + attrs)


def done(err: int = 0) -> bytes:
    return nlmsg(NLMSG_DONE, struct.pack("<i", err))


def nlerror(err: int) -> bytes:
    return nlmsg(NLMSG_ERROR, struct.pack("<i", err) + struct.pack("<IHHII", 20, FAMILY, 0x301, 1, 0),
                 flags=0)


def stats32(vals) -> bytes:
    out = b""
    for i, v in enumerate(vals, start=1):
        out += u64(i, v) if i in (4, 5) else u32(i, v)
    return out


def stats64(vals, pad: bool = True) -> bytes:
    out = b""
    for i, v in enumerate(vals, start=1):
        if pad:
            out += nla(STATS_PAD, b"")
        out += u64(i, v)
    return out


S64 = (1 << 40) + 1, 2, 3, (1 << 50) + 4, 5, 6, 7, 8, 9, (1 << 63) + 10
S32 = tuple(v & 0xFFFFFFFF for v in S64[:3]) + S64[3:5] + tuple(v & 0xFFFFFFFF for v in S64[5:])


def svc_tcp_v4(stats="both", nested_flag=True, extra=b"") -> bytes:
    body = (u16(SVC_AF, socket.AF_INET) + u16(SVC_PROTOCOL, socket.IPPROTO_TCP)
            + nla(SVC_ADDR, socket.inet_aton("10.1.2.3") + b"\0" * 12) + be16(SVC_PORT, 8080)
            + string(SVC_SCHED, "wrr") + string(SVC_PE, "sip")
            + nla(SVC_FLAGS, struct.pack("<II", 0x13, 0xFFFFFFFF)) + u32(SVC_TIMEOUT, 360)
            + nla(SVC_NETMASK, socket.inet_aton("255.255.255.0")) + extra)
    if stats in ("both", "32"):
        body += nla(SVC_STATS | (NLA_F_NESTED if nested_flag else 0), stats32(S32))
    if stats in ("both", "64"):
        body += nla(SVC_STATS64 | (NLA_F_NESTED if nested_flag else 0), stats64(S64))
    return genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE | (NLA_F_NESTED if nested_flag else 0), body))


def svc_fwm_v6() -> bytes:
    body = (u16(SVC_AF, socket.AF_INET6) + u32(SVC_FWMARK, 77) + string(SVC_SCHED, "sh")
            + nla(SVC_FLAGS, struct.pack("<II", 0, 0xFFFFFFFF)) + u32(SVC_TIMEOUT, 0)
            + nla(SVC_NETMASK, struct.pack(">I", 128))
            + nla(SVC_STATS, stats32([0] * 10)) + nla(SVC_STATS64, stats64([11] * 10)))
    return genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, body))


def dest_msg(af_attr=True, tun=False, addr="fd00::2", af=socket.AF_INET6, stats="both") -> bytes:
    raw = socket.inet_pton(af, addr)
    body = (nla(D_ADDR, raw + b"\0" * (16 - len(raw))) + be16(D_PORT, 53) + u32(D_FWD, 2)
            + u32(D_WEIGHT, 0xFFFFFFFF) + u32(D_UTH, 100) + u32(D_LTH, 10) + u32(D_ACT, 5)
            + u32(D_INACT, 6) + u32(D_PERSIST, 7))
    if af_attr:
        body += u16(D_AF, af)
    if stats in ("both", "32"):
        body += nla(D_STATS, stats32(S32))
    if stats in ("both", "64"):
        body += nla(D_STATS64, stats64(S64, pad=False))
    if tun:
        body += u8(D_TUN_TYPE, 1) + be16(D_TUN_PORT, 6081) + u16(D_TUN_FLAGS, 3)
    return genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, body))


VALID_SVC_REPLY = svc_tcp_v4() + svc_fwm_v6() + done()
VALID_DEST_REPLY = dest_msg(tun=True) + dest_msg(af_attr=False) + done()


# ---------------------------------------------------------------------------
# ipvs_open on a host without IPVS

def _nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _netns_ino() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_open_missing_path_enoent_no_fd_leak(tmp_path):
    path = str(tmp_path / "no" / "such-netns")
    with pytest.raises(IPVSError) as ei:
        native.NativeBackend(path)
    assert ei.value.errno == errno.ENOENT
    assert path in ei.value.strerror
    before = _nfds()
    for _ in range(200):
        with pytest.raises(IPVSError):
            native.NativeBackend(path)
    assert _nfds() == before


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this host has ip_vs loaded")
def test_open_current_namespace_without_ip_vs():
    ino = _netns_ino()
    before = _nfds()
    for _ in range(50):
        with pytest.raises(IPVSError) as ei:
            native.NativeBackend("")
        assert ei.value.errno == errno.EPROTONOSUPPORT
        assert "ip_vs not loaded" in ei.value.strerror
    assert _netns_ino() == ino
    assert _nfds() == before
    # and the module was not auto-loaded as a side effect
    assert not os.path.exists("/proc/net/ip_vs")


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this host has ip_vs loaded")
def test_open_own_namespace_by_path_without_ip_vs():
    ino = _netns_ino()
    with pytest.raises(IPVSError) as ei:
        native.NativeBackend("/proc/thread-self/ns/net")
    assert ei.value.errno == errno.EPROTONOSUPPORT
    assert "/proc/thread-self/ns/net" in ei.value.strerror
    assert _netns_ino() == ino


def test_open_regular_file_is_a_clear_error(tmp_path):
    f = tmp_path / "not-a-netns"
    f.write_text("hello")
    ino = _netns_ino()
    before = _nfds()
    with pytest.raises(IPVSError) as ei:
        native.NativeBackend(str(f))
    assert ei.value.errno == errno.EINVAL
    assert f"namespace path {f}: not a network namespace (a regular file)" in ei.value.strerror
    assert _netns_ino() == ino
    assert _nfds() == before


def test_open_errors_from_threads_leave_every_thread_in_place(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    bad = []

    def worker():
        ino = _netns_ino()
        for p in (str(f), str(tmp_path / "missing"), ""):
            for _ in range(20):
                try:
                    native.NativeBackend(p).close()
                except IPVSError:
                    pass
                if _netns_ino() != ino:
                    bad.append(p)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert bad == []


def _unshared_netns():
    """A sleeping process in a fresh network namespace (root only)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1)")
    p = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    path = f"/proc/{p.pid}/ns/net"
    for _ in range(200):
        try:
            if os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino:
                return p, path
        except OSError:
            pass
        import time
        time.sleep(0.01)
    p.kill()
    p.wait()
    pytest.skip("could not create a network namespace")


def test_open_other_namespace_without_ip_vs_restores_thread():
    if os.path.exists("/proc/net/ip_vs"):
        pytest.skip("this host has ip_vs loaded")
    proc, path = _unshared_netns()
    try:
        ino = _netns_ino()
        before = _nfds()
        for _ in range(20):
            with pytest.raises(IPVSError) as ei:
                native.NativeBackend(path)
            assert ei.value.errno == errno.EPROTONOSUPPORT
            assert path in ei.value.strerror
        assert _netns_ino() == ino
        assert _nfds() == before
    finally:
        proc.kill()
        proc.wait()


def test_open_without_cap_sys_admin_says_so():
    if not shutil.which("capsh"):
        pytest.skip("needs capsh(1)")
    proc, path = _unshared_netns()
    try:
        code = ("import errno\nfrom ipvs_fast.backends.native import NativeBackend\n"
                "from ipvs_fast.backends.errors import IPVSError\n"
                f"try:\n    NativeBackend({path!r})\nexcept IPVSError as e:\n"
                "    print(e.errno, e.strerror)\n")
        out = subprocess.run(["capsh", "--drop=cap_sys_admin", "--", "-c",
                              f"{sys.executable} -c \"$0\"", code],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0 and not out.stdout:
            pytest.skip(f"capsh failed: {out.stderr.strip()}")
        assert out.stdout.startswith(f"{errno.EPERM} "), out.stdout + out.stderr
        assert f"setns({path})" in out.stdout
        assert "need CAP_SYS_ADMIN" in out.stdout
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------
# pure parsers

def test_parse_valid_service_reply_every_field():
    recs = decode_services(native.parse_services(VALID_SVC_REPLY, FAMILY))
    assert len(recs) == 2
    s = recs[0]
    assert s.af == socket.AF_INET
    assert s.protocol == socket.IPPROTO_TCP
    assert s.port == 8080
    assert s.attrs == REC_STATS64 | REC_PE_NAME
    assert s.fwmark == 0
    assert s.flags == 0x13
    assert s.timeout == 360
    assert s.netmask == struct.unpack("=I", socket.inet_aton("255.255.255.0"))[0]
    assert s.addr == socket.inet_aton("10.1.2.3") + b"\0" * 12
    assert s.sched_name == b"wrr".ljust(16, b"\0")
    assert s.pe_name == b"sip".ljust(32, b"\0")
    assert s.stats == S64
    assert (s.first_dest, s.ndests) == (0, 0)

    f = recs[1]
    assert f.af == socket.AF_INET6
    assert (f.protocol, f.port, f.fwmark) == (0, 0, 77)
    assert f.addr == b"\0" * 16
    assert f.netmask == struct.unpack("=I", struct.pack(">I", 128))[0]
    assert f.sched_name.rstrip(b"\0") == b"sh"
    assert f.pe_name == b"\0" * 32
    assert f.attrs == REC_STATS64
    assert f.stats == (11,) * 10


def test_parse_service_family_id_zero_skips_type_check():
    assert native.parse_services(VALID_SVC_REPLY) == native.parse_services(VALID_SVC_REPLY, FAMILY)


def test_parse_service_wrong_family_id():
    with pytest.raises(IPVSError) as ei:
        native.parse_services(VALID_SVC_REPLY, FAMILY + 1)
    assert ei.value.errno == errno.EBADMSG


def test_parse_service_only_32bit_stats():
    (s,) = decode_services(native.parse_services(svc_tcp_v4(stats="32") + done()))
    assert s.attrs == REC_STATS32 | REC_PE_NAME
    assert s.stats == S32


def test_parse_service_prefers_stats64_whatever_the_order():
    body_first = svc_tcp_v4(stats="64", extra=nla(SVC_STATS, stats32([9] * 10)))  # 32 after 64
    (s,) = decode_services(native.parse_services(body_first + done()))
    assert s.attrs & REC_STATS64 and not s.attrs & REC_STATS32
    assert s.stats == S64


def test_parse_service_no_stats_and_no_nested_flag():
    (s,) = decode_services(native.parse_services(svc_tcp_v4(stats="none", nested_flag=False) + done()))
    assert s.attrs == REC_PE_NAME
    assert s.stats == (0,) * 10


def test_parse_service_addr_is_copied_raw_and_short_addr_accepted():
    body = (u16(SVC_AF, socket.AF_INET) + u16(SVC_PROTOCOL, 17)
            + nla(SVC_ADDR, socket.inet_aton("1.2.3.4") + b"\xee" * 12) + be16(SVC_PORT, 53))
    short = (u16(SVC_AF, socket.AF_INET) + u16(SVC_PROTOCOL, 17)
             + nla(SVC_ADDR, socket.inet_aton("1.2.3.4")) + be16(SVC_PORT, 53))
    data = (genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, body))
            + genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, short)) + done())
    a, b = decode_services(native.parse_services(data))
    # the kernel always sends 16 bytes, zero after an IPv4 address; the
    # parser copies what it gets (at most 16 bytes) and zero-pads
    assert a.addr == socket.inet_aton("1.2.3.4") + b"\xee" * 12
    assert b.addr == socket.inet_aton("1.2.3.4") + b"\0" * 12
    assert a.attrs == b.attrs == 0


def test_parse_service_only_af_is_required():
    (s,) = decode_services(native.parse_services(
        genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 10))) + done()))
    assert s == s._replace(af=10, protocol=0, port=0, attrs=0, fwmark=0, flags=0, timeout=0,
                           netmask=0, addr=bytes(16), sched_name=bytes(16), pe_name=bytes(32),
                           stats=(0,) * 10, first_dest=0, ndests=0)


def test_parse_dest_needs_no_attribute():
    (d,) = decode_dests(native.parse_dests(
        genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, b"")) + done(), 4, 10))
    assert (d.svc_index, d.af, d.addr, d.port, d.attrs) == (4, 10, bytes(16), 0, 0)


def test_parse_service_unknown_attributes_and_noop_ignored():
    unknown = nla(200, b"whatever")
    body = (unknown + u16(SVC_AF, 2) + u32(SVC_FWMARK, 1) + nla(SVC_STATS64, nla(99, b"x" * 8)
            + stats64(S64)))
    data = (nlmsg(NLMSG_NOOP, b"") + genl(CMD_NEW_SERVICE, unknown + nla(CMD_ATTR_SERVICE, body))
            + done())
    (s,) = decode_services(native.parse_services(data))
    assert s.fwmark == 1 and s.stats == S64


def test_parse_dest_reply_with_and_without_addr_family():
    recs = decode_dests(native.parse_dests(VALID_DEST_REPLY, 7, socket.AF_INET6, FAMILY))
    assert len(recs) == 2
    d, old = recs
    assert d.svc_index == old.svc_index == 7
    assert d.af == socket.AF_INET6
    assert d.addr == socket.inet_pton(socket.AF_INET6, "fd00::2")
    assert d.port == 53
    assert d.fwd_method == 2
    assert d.weight == -1              # u32 on the wire, int32 in the record
    assert (d.u_thresh, d.l_thresh) == (100, 10)
    assert (d.active_conns, d.inact_conns, d.persist_conns) == (5, 6, 7)
    assert (d.tun_type, d.tun_port, d.tun_flags) == (1, 6081, 3)
    assert d.attrs == REC_STATS64 | REC_DEST_AF | REC_TUN
    assert d.stats == S64
    # kernel < 3.18: no ADDR_FAMILY -> the service's af, flag clear
    assert old.af == socket.AF_INET6
    assert old.attrs == REC_STATS64
    assert (old.tun_type, old.tun_port, old.tun_flags) == (0, 0, 0)


def test_parse_dest_without_addr_family_uses_svc_af():
    data = dest_msg(af_attr=False, addr="10.9.8.7", af=socket.AF_INET, stats="32") + done()
    (d,) = decode_dests(native.parse_dests(data, 3, socket.AF_INET))
    assert d.af == socket.AF_INET
    assert d.addr == socket.inet_aton("10.9.8.7") + b"\0" * 12
    assert d.attrs == REC_STATS32
    assert d.stats == S32
    assert d.svc_index == 3


def test_parse_empty_dump():
    assert native.parse_services(done()) == b""
    assert native.parse_dests(done(), 0, 2) == b""


@pytest.mark.parametrize("err", [-errno.EPERM, -errno.ENOENT, -errno.EINVAL])
def test_parse_nlmsg_error(err):
    with pytest.raises(IPVSError) as ei:
        native.parse_services(nlerror(err))
    assert ei.value.errno == -err
    with pytest.raises(IPVSError) as ei:
        native.parse_dests(nlerror(err), 0, 2)
    assert ei.value.errno == -err


def test_parse_ack_is_skipped():
    assert native.parse_services(nlerror(0) + svc_fwm_v6() + done()) == \
        native.parse_services(svc_fwm_v6() + done())
    with pytest.raises(IPVSError) as ei:
        native.parse_services(nlerror(0))       # still needs NLMSG_DONE
    assert ei.value.errno == errno.EBADMSG


def test_parse_done_carrying_an_error():
    with pytest.raises(IPVSError) as ei:
        native.parse_services(svc_tcp_v4() + done(-errno.EMSGSIZE))
    assert ei.value.errno == errno.EMSGSIZE


def test_parse_without_done_is_ebadmsg():
    with pytest.raises(IPVSError) as ei:
        native.parse_services(svc_tcp_v4())
    assert ei.value.errno == errno.EBADMSG


def test_parse_stops_at_done():
    data = svc_tcp_v4() + done() + b"garbage after done is never looked at"
    assert len(native.parse_services(data)) == SVC_SIZE


@pytest.mark.parametrize("bad", [
    # wrong fixed-size lengths
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, nla(SVC_AF, b"\x02\x00\x00\x00") + u32(SVC_FWMARK, 1))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u16(SVC_FWMARK, 1))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u32(SVC_FWMARK, 1)
                              + u32(SVC_FLAGS, 1))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u32(SVC_FWMARK, 1)
                              + nla(SVC_STATS64, u32(1, 5)))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u32(SVC_FWMARK, 1)
                              + nla(SVC_STATS, u64(1, 5)))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u16(SVC_PROTOCOL, 6)
                              + nla(SVC_ADDR, b"\1\2\3") + be16(SVC_PORT, 1))),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u16(SVC_PROTOCOL, 6)
                              + nla(SVC_ADDR, b"\1" * 17) + be16(SVC_PORT, 1))),
    # a malformed STATS nest is an error even when STATS64 is there too
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u32(SVC_FWMARK, 1)
                              + nla(SVC_STATS64, stats64(S64)) + nla(SVC_STATS, u32(4, 5)))),
    # missing AF, missing nest
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, u32(SVC_FWMARK, 1))),
    genl(CMD_NEW_SERVICE, b""),
    # too short for genl header, bad nla_len, bad nlmsg_len, odd control types
    nlmsg(FAMILY, b"\x01\x01"),
    nlmsg(4, b""),
    genl(CMD_NEW_SERVICE, struct.pack("<HH", 200, CMD_ATTR_SERVICE) + b"\0" * 8),
    genl(CMD_NEW_SERVICE, struct.pack("<HH", 2, CMD_ATTR_SERVICE) + b"\0" * 8),
    genl(CMD_NEW_SERVICE, nla(CMD_ATTR_SERVICE, struct.pack("<HH", 3, SVC_AF))),
    struct.pack("<IHHII", 15, FAMILY, 0, 1, 0),
    struct.pack("<IHHII", 4096, FAMILY, 0, 1, 0) + b"\0" * 16,
    b"\0" * 7,
    nlmsg(NLMSG_ERROR, b"\0\0"),
    nlmsg(NLMSG_ERROR, struct.pack("<i", 5)),
])
def test_parse_service_rejects_malformed(bad):
    with pytest.raises(IPVSError) as ei:
        native.parse_services(bad + done())
    assert ei.value.errno == errno.EBADMSG
    assert str(ei.value)


@pytest.mark.parametrize("bad", [
    genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, nla(D_ADDR, b"\0" * 2))),
    genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, be16(D_PORT, 1) + nla(D_STATS, stats64(S64)))),
    genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, nla(D_ADDR, b"\0" * 16) + be16(D_PORT, 1)
                           + u16(D_WEIGHT, 1))),
    genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, nla(D_ADDR, b"\0" * 16) + be16(D_PORT, 1)
                           + u16(D_TUN_TYPE, 1))),
    genl(CMD_NEW_DEST, nla(CMD_ATTR_SERVICE, u16(SVC_AF, 2) + u32(SVC_FWMARK, 1))),
])
def test_parse_dest_rejects_malformed(bad):
    with pytest.raises(IPVSError) as ei:
        native.parse_dests(bad + done(), 0, 2)
    assert ei.value.errno == errno.EBADMSG


def test_every_truncation_of_a_valid_reply_is_rejected():
    for data, fn in ((VALID_SVC_REPLY, native.parse_services),
                     (VALID_DEST_REPLY, lambda b: native.parse_dests(b, 0, 10))):
        fn(data)
        for cut in range(len(data)):
            with pytest.raises(IPVSError) as ei:
                fn(data[:cut])
            assert ei.value.errno == errno.EBADMSG


def _check_result(out: bytes, size: int):
    assert isinstance(out, bytes) and len(out) % size == 0


def test_fuzz_never_crashes():
    rng = random.Random(0x1f5)
    seeds = [VALID_SVC_REPLY, VALID_DEST_REPLY, svc_tcp_v4(stats="32") + done(),
             dest_msg(af_attr=False) + done()]
    outcomes = {"ok": 0, "err": 0}
    for i in range(6000):
        mode = i % 4
        base = bytearray(rng.choice(seeds))
        if mode == 0:       # pure random bytes
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        elif mode == 1:     # random truncation
            data = bytes(base[:rng.randrange(0, len(base) + 1)])
        elif mode == 2:     # byte flips (length fields included)
            for _ in range(rng.randrange(1, 6)):
                base[rng.randrange(len(base))] = rng.getrandbits(8)
            data = bytes(base)
        else:               # splice a random chunk somewhere
            pos = rng.randrange(len(base))
            chunk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 24)))
            data = bytes(base[:pos]) + chunk + bytes(base[pos:])
        for fn, size in ((native.parse_services, SVC_SIZE),
                         (lambda b: native.parse_dests(b, 1, 2), DEST_SIZE)):
            try:
                _check_result(fn(data), size)
                outcomes["ok"] += 1
            except IPVSError as e:
                assert e.errno > 0 and e.strerror
                outcomes["err"] += 1
    assert outcomes["ok"] > 0 and outcomes["err"] > 0


def test_parse_accepts_bytearray_and_memoryview():
    a = native.parse_services(bytearray(VALID_SVC_REPLY))
    b = native.parse_services(memoryview(VALID_SVC_REPLY))
    assert a == b == native.parse_services(VALID_SVC_REPLY)


def test_large_reply_grows_arrays():
    msgs = b"".join(genl(CMD_NEW_DEST, nla(CMD_ATTR_DEST, nla(D_ADDR, struct.pack(">I", i) + b"\0" * 12)
                                                   + be16(D_PORT, i & 0xFFFF)))
                    for i in range(5000))
    recs = decode_dests(native.parse_dests(msgs + done(), 9, socket.AF_INET))
    assert len(recs) == 5000
    assert [r.port for r in recs[:3]] == [0, 1, 2]
    assert recs[-1].addr[:4] == struct.pack(">I", 4999)


def test_cffi_declarations_are_the_headers():
    """The cdef is generated from csrc/*.h (no twin to drift): every
    function and integer constant a header declares is in the built module,
    with the header's value, and the record structs have the sizes
    records.py assumes."""
    import importlib.util
    import re
    root = os.path.join(os.path.dirname(__file__), "..", "csrc")
    spec = importlib.util.spec_from_file_location("build_ipvs_core",
                                                  os.path.join(root, "build_ipvs_core.py"))
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    ffi, lib = native.ffi, native.lib
    headers = "".join(open(os.path.join(root, h)).read() for h in build.HEADERS)
    protos = set(re.findall(r"^[\w ]+?\**\b(ipvs_\w+)\(", headers, flags=re.M))
    assert {"ipvs_open", "ipvs_dump", "ipvs_format_samples", "ipvs_format_length"} <= protos
    for name in protos:
        assert name in build.CDEF and callable(getattr(lib, name)), name
    defines = dict(re.findall(r"^#define (IPVS_\w+)\s+(0x[0-9a-fA-F]+|\d+)\s*$", headers, flags=re.M))
    assert defines
    for name, value in defines.items():
        assert getattr(lib, name) == int(value, 0), name
    assert ffi.sizeof("struct ipvs_svc_rec") == SVC_SIZE
    assert ffi.sizeof("struct ipvs_dest_rec") == DEST_SIZE
