"""Render, host: ipvs_fast.formats.ingress.render vs prometheus_client
generate_latest (a registry holding IngressCollector) on the same snapshot,
~100k and ~1M samples (N services x 10 dests = 54 samples per service);
peak RSS of each (subprocess, ru_maxrss delta); gzip of the body, ISA-L
level 1 vs zlib level 1.

    .venv/bin/python -m pytest bench/test_render.py --benchmark-only
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import gen
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ipvs_fast.collection.target import CollectResult
from ipvs_fast.formats.ingress import IngressCollector, IngressRenderer

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {"100k": 1852, "1M": 18519}     # x 54 samples ~= 100k / 1M
NS = "/var/run/docker/netns/ingress_sbox"
RSS_OUT = os.path.join(HERE, "results", "host_rss.json")


@pytest.fixture(scope="module", params=list(SIZES), ids=lambda k: k)
def result(request):
    snap = gen.snapshot(SIZES[request.param], 10)
    return CollectResult(NS, True, 0.01, snap, {})


def _registry(result):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IngressCollector(lambda: [result]))
    return reg


def _samples(body: bytes) -> int:
    return sum(1 for ln in body.split(b"\n") if ln and not ln.startswith(b"#"))


def test_same_samples(result):
    ours = IngressRenderer().render([result])
    theirs = generate_latest(_registry(result))
    assert _samples(ours) == _samples(theirs)


@pytest.mark.benchmark(group="render")
def test_render_ours_cold(benchmark, result):
    """First render: empty label cache (a fresh IngressRenderer each round)."""
    out = benchmark.pedantic(lambda r: r.render([result]), setup=lambda: ((IngressRenderer(),), {}),
                             rounds=5, warmup_rounds=0)
    benchmark.extra_info.update(samples=_samples(out), body_bytes=len(out))


@pytest.mark.benchmark(group="render")
def test_render_ours_warm(benchmark, result):
    """Steady state: same services, new values (label blocks cached)."""
    r = IngressRenderer()
    r.render([result])
    out = benchmark.pedantic(r.render, args=([result],), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(samples=_samples(out), body_bytes=len(out))


@pytest.mark.benchmark(group="render")
def test_render_ours_streamed(benchmark, result):
    """Steady state as the server does it: the body planned (its length
    known) and read piece by piece, never joined into one bytes."""
    r = IngressRenderer()
    r.render([result])

    def stream():
        body = r.render_pieces([result])
        n = sum(map(len, body))
        assert n == len(body)
        return n
    n = benchmark.pedantic(stream, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(body_bytes=n)


@pytest.mark.benchmark(group="render")
def test_render_generate_latest(benchmark, result):
    reg = _registry(result)
    out = benchmark.pedantic(generate_latest, args=(reg,), rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(samples=_samples(out), body_bytes=len(out))


@pytest.fixture(scope="module")
def body(result):
    return IngressRenderer().render([result])


@pytest.mark.benchmark(group="gzip")
def test_gzip_isal_l1(benchmark, body):
    from isal import igzip
    out = benchmark.pedantic(igzip.compress, args=(body,), kwargs={"compresslevel": 1, "mtime": 0},
                             rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(body_bytes=len(body), gz_bytes=len(out))


@pytest.mark.benchmark(group="gzip")
def test_gzip_zlib_l1(benchmark, body):
    def z(data):
        c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    out = benchmark.pedantic(z, args=(body,), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(body_bytes=len(body), gz_bytes=len(out))


@pytest.mark.parametrize("mode", ["ours", "ours_warm", "ours_streamed", "generate_latest"])
@pytest.mark.parametrize("size", list(SIZES))
def test_peak_rss(mode, size):
    """Peak RSS growth of one render, in a fresh process (not timed)."""
    gen.snapshot(SIZES[size], 10)      # make sure the cache exists first
    p = subprocess.run([sys.executable, os.path.join(HERE, "render_rss.py"), mode,
                        str(SIZES[size])], capture_output=True, text=True, check=True)
    rec = json.loads(p.stdout)
    rec["size"] = size
    os.makedirs(os.path.dirname(RSS_OUT), exist_ok=True)
    try:
        with open(RSS_OUT) as f:
            allrec = json.load(f)
    except (OSError, ValueError):
        allrec = {}
    allrec[f"{mode}-{size}"] = rec
    with open(RSS_OUT, "w") as f:
        json.dump(allrec, f, indent=1, sort_keys=True)
    print(rec)


# ---------------------------------------------------------------------------
# Every format (issue 15): the same N services x 10 dests as the VM runs,
# each format's renderer; first render, steady state, streamed as served.

def _renderer(fmt):
    from ipvs_fast.formats.ipvs import IPVSRenderer
    from ipvs_fast.formats.node import NodeRenderer
    return {"ingress": IngressRenderer, "node": NodeRenderer, "ipvs": IPVSRenderer}[fmt]()


FORMAT_SIZES = {"1000x10": 1000, "10000x10": 10000}


@pytest.fixture(scope="module", params=list(FORMAT_SIZES))
def format_result(request):
    snap = gen.snapshot(FORMAT_SIZES[request.param], 10)
    return CollectResult("", True, 0.01, snap, {})


@pytest.mark.benchmark(group="formats")
@pytest.mark.parametrize("fmt", ["ingress", "node", "ipvs"])
def test_format_cold(benchmark, format_result, fmt):
    out = benchmark.pedantic(lambda r: r.render([format_result]),
                             setup=lambda: ((_renderer(fmt),), {}), rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(samples=_samples(out), body_bytes=len(out))


@pytest.mark.benchmark(group="formats")
@pytest.mark.parametrize("fmt", ["ingress", "node", "ipvs"])
def test_format_streamed(benchmark, format_result, fmt):
    """Steady state, as served: planned, read piece by piece."""
    r = _renderer(fmt)
    r.render([format_result])

    def stream():
        body = r.render_pieces([format_result])
        n = sum(map(len, body))
        assert n == len(body)
        return n
    n = benchmark.pedantic(stream, rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(body_bytes=n)


@pytest.mark.benchmark(group="formats")
def test_format_node_generate_latest(benchmark, format_result):
    """prometheus_client's generate_latest over NodeCollector (the reference
    collector of --format node: per-destination Python objects, one bytes),
    for scale."""
    from ipvs_fast.formats.node import NodeCollector
    reg = CollectorRegistry(auto_describe=False)
    reg.register(NodeCollector(lambda: [format_result]))
    out = benchmark.pedantic(generate_latest, args=(reg,), rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(body_bytes=len(out))
