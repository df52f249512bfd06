"""Seed corpora for the fuzz harnesses, from the captured kernel replies in
tests/fixtures/kernel/ (see tests/kernel/record.py for their framing:
services.bin is one GET_SERVICE dump reply; dests.bin is every GET_DEST
reply back to back, sliced by dests.json).

Each seed is the harness's 8-byte header (see parse_fuzz.c) + one reply.
Replies longer than MAX_REPLY are cut to their first messages plus the
closing NLMSG_DONE, to keep the fuzzer's inputs short (and so fast).

The parse_table seeds are the same captures as /proc/net/ip_vs prints
them (tests/procfs_text.py, from the records the Python backend parses),
behind its 1-byte header, cut after a line to stay short.

    python3 fuzz/make_seeds.py OUTDIR   -> OUTDIR/{parse_services,parse_dests,parse_table}/
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "kernel")
MAX_REPLY = 4096
ERRLENS = (255, 1, 0, 40)        # error buffer sizes, the first one is the usual


def messages(reply: bytes) -> list:
    out, off = [], 0
    while off + 16 <= len(reply):
        n = struct.unpack_from("<I", reply, off)[0]
        step = (n + 3) & ~3
        out.append(reply[off:off + step])
        off += step
    return out


def shortened(reply: bytes) -> bytes:
    msgs = messages(reply)
    if len(reply) <= MAX_REPLY or len(msgs) < 2:
        return reply
    body, done = msgs[:-1], msgs[-1]
    keep = b""
    for m in body:
        if len(keep) + len(m) + len(done) > MAX_REPLY:
            break
        keep += m
    return keep + done


def family_of(reply: bytes) -> int:
    for m in messages(reply):
        t = struct.unpack_from("<H", m, 4)[0]
        if t >= 16:
            return t
    return 0


def header(errlen: int, family: int, svc_af: int = 0, svc_index: int = 0) -> bytes:
    return struct.pack("<BBHHH", errlen, 1 if family else 0, family, svc_af, svc_index)


def table_text(svc_reply: bytes, dests: bytes, index: list) -> bytes:
    sys.path.insert(0, ROOT)
    from ipvs_fast.backends import python as pybackend
    from ipvs_fast.backends.records import DEST_SIZE, SVC_STRUCT
    from ipvs_fast.backends.snapshot import Snapshot
    from tests import procfs_text
    svcs = [list(t) for t in SVC_STRUCT.iter_unpack(pybackend.parse_services(svc_reply))]
    out = b""
    for e in index:
        part = pybackend.parse_dests(dests[e["offset"]:e["offset"] + e["length"]],
                                     e["svc_index"], e["svc_af"])
        svcs[e["svc_index"]][-2:] = [len(out) // DEST_SIZE, len(part) // DEST_SIZE]
        out += part
    text = procfs_text.ip_vs(Snapshot(b"".join(SVC_STRUCT.pack(*s) for s in svcs), out))
    return text.encode()[:MAX_REPLY].rpartition(b"\n")[0] + b"\n"


def main(outdir: str) -> None:
    seeds = {"parse_services": set(), "parse_dests": set(), "parse_table": set()}
    for name in sorted(os.listdir(FIXTURES)):
        d = os.path.join(FIXTURES, name)
        with open(os.path.join(d, "services.bin"), "rb") as f:
            svc = shortened(f.read())
        with open(os.path.join(d, "dests.bin"), "rb") as f:
            dests = f.read()
        with open(os.path.join(d, "dests.json")) as f:
            index = json.load(f)
        fam = family_of(svc)
        with open(os.path.join(d, "services.bin"), "rb") as f:
            text = table_text(f.read(), dests, index)
        for errlen in ERRLENS:
            seeds["parse_table"].add(bytes([errlen]) + text)
        for i, errlen in enumerate(ERRLENS):
            seeds["parse_services"].add(header(errlen, fam if i % 2 == 0 else 0) + svc)
        kinds = set()
        for e in index:
            reply = shortened(dests[e["offset"]:e["offset"] + e["length"]])
            kind = (e["svc_af"], len(reply))
            if kind in kinds:
                continue
            kinds.add(kind)
            errlen = ERRLENS[len(kinds) % len(ERRLENS)]
            seeds["parse_dests"].add(header(errlen, family_of(reply), e["svc_af"], e["svc_index"])
                               + reply)
    for kind, items in seeds.items():
        d = os.path.join(outdir, kind)
        os.makedirs(d, exist_ok=True)
        for i, s in enumerate(sorted(items)):
            with open(os.path.join(d, f"seed-{i:03d}"), "wb") as f:
                f.write(s)
        print(f"{kind}: {len(items)} seeds")


if __name__ == "__main__":
    main(sys.argv[1])
