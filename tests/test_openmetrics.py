"""OpenMetrics 1.0.0 when the scraper asks for it (Accept), text 0.0.4
otherwise: the same planned exposition, other headers and trailer, the very
same sample lines; checked with prometheus_client's strict OpenMetrics
parser and with promtool."""
import gzip
import re
import shutil
import subprocess
import threading

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from ipvs_fast.collection.target import CollectResult
from ipvs_fast.exporter import Exporter
from ipvs_fast.formats.exposition import (CONTENT_TYPE, OPENMETRICS, OPENMETRICS_CONTENT_TYPE,
                                          TEXT, render_exposition)
from ipvs_fast.formats.ingress import IngressRenderer, default_build_info
from ipvs_fast.formats.ipvs import IPVSRenderer
from ipvs_fast.formats.node import NodeRenderer
from ipvs_fast.http.negotiate import negotiate
from tests.test_server import exporter_server, make_snapshot, world  # noqa: F401 (fixtures)

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
OFFERS = (CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)


@pytest.mark.parametrize("accept,want", [
    (PROMETHEUS_ACCEPT, OPENMETRICS_CONTENT_TYPE),
    (None, CONTENT_TYPE),
    ("*/*", CONTENT_TYPE),
    ("text/plain;version=0.0.4", CONTENT_TYPE),
    ("application/openmetrics-text", OPENMETRICS_CONTENT_TYPE),
    ("application/openmetrics-text; version=1.0.0; charset=utf-8", OPENMETRICS_CONTENT_TYPE),
    ("application/openmetrics-text;version=0.0.1", CONTENT_TYPE),     # a version we do not write
    ("application/openmetrics-text;q=0,*/*", CONTENT_TYPE),
    ("text/plain;q=0.2,application/*;q=0.5", OPENMETRICS_CONTENT_TYPE),
    ("application/json", CONTENT_TYPE),                                # never 406
    ("application/openmetrics-text;q=nonsense,text/plain;q=0.1", CONTENT_TYPE),
    ("," * 10000, CONTENT_TYPE),
])
def test_negotiate(accept, want):
    assert negotiate(accept, OFFERS) == want


def results():
    return [CollectResult("/ns", True, 0.01, make_snapshot(n_svc=3, n_dest=4), {260: "30000"}),
            CollectResult("/down", False, 0.002)]


RENDERERS = [IngressRenderer, lambda: NodeRenderer(namespace_label=True), IPVSRenderer,
             lambda: IPVSRenderer(destinations=("address",))]


@pytest.mark.parametrize("make", RENDERERS)
def test_same_samples_either_flavour(make):
    bi = default_build_info("native")
    extra = "# HELP p_total x\n# TYPE p_total counter\np_total 3.0\n"
    om_extra = "# HELP p x\n# TYPE p counter\np_total 3.0\n"
    # (the results must outlive their bodies: the C formatter reads the
    # snapshots' buffers as the bodies are iterated)
    res_text, res_om = results(), results()
    text_body = make().render_pieces(res_text, bi, extra, TEXT)
    om_body = make().render_pieces(res_om, bi, om_extra, OPENMETRICS)
    text, om = b"".join(text_body), b"".join(om_body)
    assert (len(text), len(om)) == (len(text_body), len(om_body))     # planned lengths hold
    samples = lambda b: [ln for ln in b.split(b"\n") if ln and not ln.startswith(b"#")]
    assert samples(text) == samples(om) and len(samples(om)) > 10     # byte for byte
    assert om.endswith(b"\n# EOF\n") and not text.endswith(b"# EOF\n")
    # strict OpenMetrics parser: every family, its type, its samples
    fams = {f.name: f for f in parse_om(om.decode())}
    for m in re.finditer(rb"^# TYPE (\S+) (\S+)$", text, re.M):
        name, typ = m.group(1).decode(), m.group(2).decode()
        if typ == "counter":
            assert name.endswith("_total") and fams[name[:-6]].type == "counter"
            assert b"# TYPE " + name[:-6].encode() + b" counter\n" in om
        else:
            assert fams[name].type == typ
    # units where the name says
    for name, f in fams.items():
        unit = next((u for u in ("seconds", "bytes") if name.endswith("_" + u)), "")
        assert f.unit == unit, name


def test_openmetrics_help_escaping_and_unknown_counter():
    spec = ("weird_counter", "counter", 'a "quoted" \\ help\nline')
    out = render_exposition([(spec, [([b'{a="1"} '], [5], "d")])], b"", OPENMETRICS).decode()
    assert out == ('# HELP weird_counter a \\"quoted\\" \\\\ help\\nline\n'
                   '# TYPE weird_counter unknown\nweird_counter{a="1"} 5\n# EOF\n')
    assert [f.type for f in parse_om(out)] == ["unknown"]


def _get(server, accept=None, gz=False):
    headers = {}
    if accept:
        headers["Accept"] = accept
    if gz:
        headers["Accept-Encoding"] = "gzip"
    status, h, body = server.request(headers=headers)
    assert status == 200
    if gz:
        assert h["content-encoding"] == "gzip"
        body = gzip.decompress(body)
    return h, body


def test_http_negotiation(exporter_server):   # noqa: F811
    h, om = _get(exporter_server, PROMETHEUS_ACCEPT)
    assert h["content-type"] == OPENMETRICS_CONTENT_TYPE and "Accept" in h["vary"]
    assert om.endswith(b"# EOF\n") and b"# TYPE ipvs_connections counter\n" in om
    assert b"# TYPE process_cpu_seconds counter\n" in om      # process metrics follow suit
    assert om.count(b"# EOF") == 1
    list(parse_om(om.decode()))
    h, text = _get(exporter_server)
    assert h["content-type"] == CONTENT_TYPE and b"# EOF" not in text
    h, om_gz = _get(exporter_server, PROMETHEUS_ACCEPT, gz=True)
    assert h["content-type"] == OPENMETRICS_CONTENT_TYPE and om_gz.endswith(b"# EOF\n")


def test_concurrent_scrapes_each_get_their_flavour(exporter_server, world):  # noqa: F811
    world.dump_delay = 0.3            # collections overlap
    out = {}

    def get(i, accept):
        out[i] = _get(exporter_server, accept)
    threads = [threading.Thread(target=get, args=(i, PROMETHEUS_ACCEPT if i % 2 else None))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (h, body) in out.items():
        assert h["content-type"] == (OPENMETRICS_CONTENT_TYPE if i % 2 else CONTENT_TYPE)
        assert body.endswith(b"# EOF\n") == bool(i % 2)


# -- promtool ---------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")

#: names the ingress format keeps from ingress_ipvs_exporter (gauges ending
#: in _total): promtool's lint flags them in either format
LEGACY_GAUGES = {"ipvs_destination_active_connections_total",
                 "ipvs_destination_inactive_connections_total", "ipvs_destination_total",
                 "ipvs_services_total"}


def promtool(body: bytes):
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    lines = [ln for ln in (p.stdout + p.stderr).decode().splitlines() if ln.strip()]
    return p.returncode, lines


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
@pytest.mark.parametrize("fmt", ["ingress", "node", "ipvs"])
def test_promtool_check_metrics(world, fmt):  # noqa: F811
    make = {"ingress": IngressRenderer, "node": lambda: NodeRenderer(namespace_label=True),
            "ipvs": IPVSRenderer}[fmt]
    res = results()

    class Targets:
        multi = True

        def collect(self, deadline):
            return res

        def close(self):
            pass
    exp = Exporter(Targets(), make(), build_info=default_build_info("native"))
    text = b"".join(exp.collect(5.0, CONTENT_TYPE))
    om = b"".join(exp.collect(5.0, OPENMETRICS_CONTENT_TYPE))
    rc, lines = promtool(text)
    legacy = {f"{n} non-counter metrics should not have \"_total\" suffix"
              for n in LEGACY_GAUGES if f"# TYPE {n} gauge".encode() in text}
    assert set(lines) == legacy and rc == (3 if legacy else 0), lines
    # promtool (2.42) reads OpenMetrics with the 0.0.4 parser: it parses (no
    # error), and takes each counter's _total samples for a family of their
    # own without HELP -- exactly those, nothing else
    rc, lines = promtool(om)
    counters = {m.decode() + "_total" for m in re.findall(rb"^# TYPE (\S+) counter$", om, re.M)}
    assert counters and rc == 3
    assert set(lines) == legacy | {f"{c} no help text" for c in counters}, lines
