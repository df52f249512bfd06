"""Parse-only, host: native (C) vs pure-Python decoding of the same
synthesised GET_SERVICE + per-service GET_DEST dump replies.

Both sides do what their backend's dump() does after the socket reads:
services reply -> service records, then one dest reply per service -> dest
records (and first_dest/ndests), ending with the packed bytes.

    .venv/bin/python -m pytest bench/test_parse.py --benchmark-only
"""
from __future__ import annotations

import struct

import gen
import pytest

from ipvs_fast.backends import native
from ipvs_fast.backends import python as pybackend
from ipvs_fast.backends.records import DEST_SIZE, SVC_SIZE

SIZES = [1000, 10000, 50000]
_FD = struct.Struct("<II")


def parse_python(svc_reply, dest_replies):
    svcs = pybackend.parse_services(svc_reply)
    out_s, out_d, total = [], [], 0
    for i, af, reply in dest_replies:
        d = pybackend.parse_dests(reply, i, af)
        nd = len(d) // DEST_SIZE
        rec = bytearray(svcs[i * SVC_SIZE:(i + 1) * SVC_SIZE])
        _FD.pack_into(rec, SVC_SIZE - 8, total, nd)
        out_s.append(bytes(rec))
        out_d.append(d)
        total += nd
    return b"".join(out_s), b"".join(out_d)


def parse_native(svc_reply, dest_replies):
    """The C parsers driven the way ipvs_dump() drives them: one reused
    result, one call per reply (the Python loop here is the only overhead
    ipvs_dump does not have)."""
    ffi, lib = native.ffi, native.lib
    res = lib.ipvs_result_new()
    errbuf = ffi.new("char[]", 256)
    try:
        rc = lib.ipvs_parse_service_msgs(svc_reply, len(svc_reply), 0, res, errbuf, 256)
        assert rc == 1, ffi.string(errbuf)
        n = res.nsvcs
        svcs = res.svcs
        pdest = lib.ipvs_parse_dest_msgs
        for i, af, reply in dest_replies:
            first = res.ndests
            if pdest(reply, len(reply), 0, i, af, res, errbuf, 256) != 1:
                raise RuntimeError(ffi.string(errbuf))
            s = svcs[i]
            s.first_dest = first
            s.ndests = res.ndests - first
            svcs = res.svcs                   # may have moved? (svcs never grow here)
        return (bytes(ffi.buffer(res.svcs, n * SVC_SIZE)),
                bytes(ffi.buffer(res.dests, res.ndests * DEST_SIZE)))
    finally:
        lib.ipvs_result_free(res)


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}x10")
def data(request):
    return gen.replies(request.param, 10)


def test_identical(data):
    assert parse_native(*data) == parse_python(*data)


@pytest.mark.benchmark(group="parse")
def test_parse_native(benchmark, data):
    benchmark.extra_info["services"] = len(data[1])
    benchmark.pedantic(parse_native, args=data, rounds=10 if len(data[1]) <= 10000 else 4,
                       warmup_rounds=1)


@pytest.mark.benchmark(group="parse")
def test_parse_python(benchmark, data):
    benchmark.extra_info["services"] = len(data[1])
    benchmark.pedantic(parse_python, args=data, rounds=3 if len(data[1]) <= 10000 else 1,
                       warmup_rounds=0)
