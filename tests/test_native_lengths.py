"""The C parsers' length arithmetic at the top of the 32-bit range.

An nlmsg_len of 0xFFFFFFFD..0xFFFFFFFF rounded up to 4 with NLMSG_ALIGN
(a 32-bit mask) is 0: a walk advancing by that never moves and loops forever.
Reaching it needs a buffer of at least 4 GiB, which is cheap as an untouched
anonymous mapping. Each call runs in a child process with a time limit, so a
regression fails the test instead of hanging the suite.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ipvs_fast.backends import native

pytestmark = pytest.mark.skipif(not native.available(),
                                reason=f"extension not built: {native.import_error()}")

CHILD = textwrap.dedent("""
    import mmap, struct, sys
    from ipvs_fast._ipvs_core import ffi, lib

    kind, nlmsg_len, mtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    buf = mmap.mmap(-1, 1 << 32)       # 4 GiB, only the first page is touched
    payload = struct.pack("<i", 0) if mtype == 2 else b""   # NLMSG_ERROR 0 = an ACK
    buf[:16 + len(payload)] = struct.pack("<IHHII", nlmsg_len, mtype, 0, 1, 1) + payload
    res = lib.ipvs_result_new()
    errbuf = ffi.new("char[]", 256)
    data = ffi.from_buffer("uint8_t[]", buf)
    if kind == "svc":
        rc = lib.ipvs_parse_service_msgs(data, len(buf), 0, res, errbuf, 256)
    else:
        rc = lib.ipvs_parse_dest_msgs(data, len(buf), 0, 0, 2, res, errbuf, 256)
    print(rc, res.nsvcs, res.ndests)
""")


@pytest.mark.parametrize("kind", ["svc", "dest"])
@pytest.mark.parametrize("nlmsg_len", [0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF])
@pytest.mark.parametrize("mtype", [1, 2], ids=["noop", "ack"])
def test_message_length_near_4gib_ends_the_walk(kind, nlmsg_len, mtype):
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, kind, str(nlmsg_len), str(mtype)],
                             capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parser still walking after 20 s: nlmsg_len {nlmsg_len:#x} does not advance")
    assert out.returncode == 0, out.stderr
    # One skipped message filling the buffer, no NLMSG_DONE: "more expected", nothing taken.
    assert out.stdout.split() == ["0", "0", "0"], out.stdout + out.stderr
