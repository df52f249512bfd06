"""Synthetic, kernel-like IPVS dump replies for host benchmarks (cached).

N services x D destinations, encoded by tests/nlencode.py exactly as a >= 5.3
kernel's ip_vs_ctl.c does (STATS + STATS64 nests, ADDR_FAMILY, tunnel attrs).
Cached under bench/.cache/ per size: generation of 50k x 10 takes a while.
"""
from __future__ import annotations

import os
import pickle
import random
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from ipvs_fast.backends.records import Dest, Service  # noqa: E402
from tests import nlencode as nle  # noqa: E402

CACHE = os.path.join(HERE, ".cache")
_V = 3  # bump to invalidate caches


def _service(i: int, rnd: random.Random) -> Service:
    stats = tuple(rnd.randrange(1 << 40) for _ in range(10))
    if i % 4 == 0:      # a quarter fwmark services (Docker-ingress style)
        return Service(af=socket.AF_INET, protocol=0, port=0, attrs=0, fwmark=256 + i,
                       flags=0, timeout=0, netmask=0xFFFFFFFF, addr=bytes(16),
                       sched_name=b"rr", pe_name=b"", stats=stats, first_dest=0, ndests=0)
    addr = socket.inet_aton("10.%d.%d.%d" % (100 + (i >> 16) % 100, (i >> 8) & 255, i & 255))
    return Service(af=socket.AF_INET, protocol=socket.IPPROTO_TCP, port=80 + i % 1000, attrs=0,
                   fwmark=0, flags=0, timeout=0, netmask=0xFFFFFFFF, addr=addr + bytes(12),
                   sched_name=b"wlc", pe_name=b"", stats=stats, first_dest=0, ndests=0)


def _dest(i: int, j: int, rnd: random.Random) -> Dest:
    addr = socket.inet_aton("172.%d.%d.%d" % (16 + (i >> 16) % 16, (i >> 8) & 255, (i + j) & 255))
    return Dest(svc_index=0, af=socket.AF_INET, port=8080 + j, addr=addr + bytes(12),
                fwd_method=0, weight=1, u_thresh=0, l_thresh=0,
                active_conns=rnd.randrange(1000), inact_conns=rnd.randrange(1000),
                persist_conns=0, tun_port=0, tun_flags=0, tun_type=0, attrs=0,
                stats=tuple(rnd.randrange(1 << 40) for _ in range(10)))


def generate(nsvc: int, ndest: int):
    """(service_reply, [(svc_index, svc_af, dest_reply), ...])"""
    rnd = random.Random(nsvc * 1000 + ndest)
    svcs = [_service(i, rnd) for i in range(nsvc)]
    svc_reply = nle.services_reply(svcs)
    dests = []
    for i, s in enumerate(svcs):
        dests.append((i, s.af, nle.dests_reply([_dest(i, j, rnd) for j in range(ndest)])))
    return svc_reply, dests


def replies(nsvc: int, ndest: int = 10):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"replies-v{_V}-{nsvc}x{ndest}.pkl")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    data = generate(nsvc, ndest)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return data


def snapshot(nsvc: int, ndest: int = 10):
    """A Snapshot (packed records) of the synthetic state, via the Python parser."""
    import struct

    from ipvs_fast.backends.python import parse_dests, parse_services
    from ipvs_fast.backends.records import DEST_SIZE, SVC_SIZE
    from ipvs_fast.backends.snapshot import Snapshot
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"snapshot-v{_V}-{nsvc}x{ndest}.pkl")
    try:
        with open(path, "rb") as f:
            s, d = pickle.load(f)
            return Snapshot(s, d, None, {"backend": "synthetic"})
    except (OSError, EOFError, pickle.UnpicklingError):
        pass
    svc_reply, dest_replies = replies(nsvc, ndest)
    svcs = parse_services(svc_reply)
    out_s, out_d, total = [], [], 0
    for i, af, reply in dest_replies:
        d = parse_dests(reply, i, af)
        nd = len(d) // DEST_SIZE
        rec = bytearray(svcs[i * SVC_SIZE:(i + 1) * SVC_SIZE])
        struct.pack_into("<II", rec, SVC_SIZE - 8, total, nd)
        out_s.append(bytes(rec))
        out_d.append(d)
        total += nd
    s, d = b"".join(out_s), b"".join(out_d)
    with open(path + ".tmp", "wb") as f:
        pickle.dump((s, d), f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)
    return Snapshot(s, d, None, {"backend": "synthetic"})


if __name__ == "__main__":
    import time
    for n in map(int, sys.argv[1:] or ["1000"]):
        t = time.time()
        r = replies(n)
        print(n, "services:", len(r[0]) + sum(len(x[2]) for x in r[1]), "bytes",
              "%.1fs" % (time.time() - t))
