"""Format `--format ingress` (default): ingress_ipvs_exporter-compatible metrics, two ways.

* :class:`IngressCollector` -- a plain prometheus_client collector (the
  reference implementation; usable in any registry).
* :func:`render` -- a hand-rolled renderer of the same text exposition format
  0.0.4, ~20-30x faster than ``generate_latest`` on a first (cold-cache)
  render and ~50x on later ones (200x and more streamed, as served). Both
  produce the same sample set (names, labels, values); tests hold them to
  that.

Label rules (spelled out in :func:`service_labels` / :func:`dest_labels`
for the collector and, without per-series dicts, in the renderer's
``_svc_block`` / ``_dest_blocks``; the tests hold the two to each other):

* every series carries ``namespace`` = the ``--namespace-path`` string as given;
* ``fwmark`` is decimal, ``"0"`` for non-fwmark services;
* fwmark services: ``port`` = the published port from the iptables port map
  (``""`` when the mark is not mapped); IPv6 ones also carry
  ``family="inet6"`` so a v4 and a v6 service with the same mark stay apart;
* non-fwmark services: ``port`` = the virtual port, plus ``protocol``
  (``tcp``/``udp``/``sctp``) and ``service_address``;
* destinations add ``address`` (dotted quad / RFC 5952) and, when their port
  is non-zero, ``destination_port``.

Labels are written in sorted name order (the same order prometheus_client
uses), so for integral values both outputs differ only in number formatting.
"""
from __future__ import annotations

import itertools
import socket
import sys
import threading
from typing import Optional

from ..backends.records import (D_ACTIVE, D_ADDR, D_AF, D_INACTIVE, D_PORT, D_STATS, DEST_SIZE,
                                 DEST_STRUCT, PROTO_NAMES, S_ADDR, S_AF, S_FIRST_DEST, S_FWMARK,
                                 S_NDESTS, S_PORT, S_PROTOCOL, S_STATS, SVC_SIZE, SVC_STRUCT,
                                 addr_str)
from .exposition import (CONTENT_TYPE, Blocks, Column, FamilyRenderer, escape_label_value,
                         finish_families, group_sums)
from .exposition import family as _family
from .exposition import fmt_value as _fmt_value
from .exposition import results_from as _results_from
from .policy import group_index

__all__ = ["IngressCollector", "IngressRenderer", "render", "service_labels",
           "dest_labels", "FAMILIES", "CONTENT_TYPE"]

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_PROTO_LOWER = {k: v.lower() for k, v in PROTO_NAMES.items()}

# stats[] positions (records.STAT_NAMES)
_CONNS, _INBYTES, _OUTBYTES = 0, 3, 4

# ---------------------------------------------------------------------------
# Metric families: (name, type, HELP). HELP strings are verbatim from
# ingress_ipvs_exporter, typos included.
SERVICES_TOTAL = ("ipvs_services_total", "gauge",
                  "The total number of services registered in ipvs")
# + tuple position in the unpacked service record
SVC_FAMILIES = (
    ("ipvs_connections_total", "counter",
     "The total number of connections made to a virtual server", S_STATS + _CONNS),
    ("ipvs_bytes_in_total", "counter",
     "The total number of incoming bytes a virtual server", S_STATS + _INBYTES),
    ("ipvs_bytes_out_total", "counter",
     "The total number of outgoing bytes from a virtual server", S_STATS + _OUTBYTES),
    ("ipvs_destination_total", "gauge",
     "The total number of real servers that are destinations to the service", S_NDESTS),
)
# + tuple position in the unpacked dest record
DEST_FAMILIES = (
    ("ipvs_destination_active_connections_total", "gauge",
     "The total number of connections established to a destination server", D_ACTIVE),
    ("ipvs_destination_inactive_connections_total", "gauge",
     "The total number of connections inactive but established to a destination server",
     D_INACTIVE),
    ("ipvs_destination_bytes_in_total", "counter",
     "The total number of incoming bytes to a real server", D_STATS + _INBYTES),
    ("ipvs_destination_bytes_out_total", "counter",
     "The total number of outgoing bytes to a real server", D_STATS + _OUTBYTES),
    ("ipvs_destination_connections_total", "counter",
     "The total number connections ever established to a destination", D_STATS + _CONNS),
)
UP = ("ipvs_up", "gauge",
      "1 if the last scrape of IPVS in this namespace succeeded, 0 otherwise")
DURATION = ("ipvs_scrape_duration_seconds", "gauge",
            "Time it took to collect IPVS metrics in this namespace, in seconds")
BUILD_INFO = ("ipvs_exporter_build_info", "gauge",
              "A metric with a constant '1' value labeled by version, backend and "
              "python_version from which ipvs_fast was built")

FAMILIES = ((SERVICES_TOTAL,) + tuple(f[:3] for f in SVC_FAMILIES)
            + tuple(f[:3] for f in DEST_FAMILIES) + (UP, DURATION, BUILD_INFO))


def default_build_info(backend: str) -> dict:
    from .. import __version__
    return {"version": __version__, "backend": backend,
            "python_version": "%d.%d.%d" % sys.version_info[:3]}


# ---------------------------------------------------------------------------
# Label rules, as the collector spells them

def service_labels(namespace: str, svc: tuple, ports: dict) -> dict:
    """Labels of one service; *svc* is an unpacked SVC_STRUCT tuple."""
    fwmark = svc[S_FWMARK]
    if fwmark:
        labels = {"fwmark": str(fwmark), "port": ports.get(fwmark, "")}
        if svc[S_AF] == _AF_INET6:
            labels["family"] = "inet6"
    else:
        proto = svc[S_PROTOCOL]
        labels = {"fwmark": "0", "port": str(svc[S_PORT]),
                  "protocol": _PROTO_LOWER.get(proto, str(proto)),
                  "service_address": addr_str(svc[S_AF], svc[S_ADDR])}
    labels["namespace"] = namespace
    return labels


def dest_labels(svc_labels: dict, af: int, port: int, addr: bytes) -> dict:
    """Labels of one destination of the service labelled *svc_labels*."""
    labels = dict(svc_labels)
    labels["address"] = addr_str(af, addr)
    if port:
        labels["destination_port"] = str(port)
    return labels


def _dest_ranges(nsvcs_dests: int, first: int, n: int) -> tuple[int, int]:
    """Clamp a service's [first, first+n) dest range to the dest array."""
    start = min(max(first, 0), nsvcs_dests)
    return start, min(start + max(n, 0), nsvcs_dests)


# ---------------------------------------------------------------------------
# (a) prometheus_client collector

class IngressCollector:
    """prometheus_client collector for the ingress_ipvs_exporter metrics.

    *source* is either a callable returning a list of CollectResults or an
    iterable of targets with a ``collect() -> CollectResult`` method. Every
    ``collect()`` of this collector performs one collection.
    *build_info*: labels of ``ipvs_exporter_build_info`` (omitted if None).
    """

    def __init__(self, source, build_info: Optional[dict] = None):
        self._source = source
        self._build_info = build_info

    def describe(self):  # keep registration from calling collect()
        return []

    def collect(self):
        return collect_families(_results_from(self._source), self._build_info)


def collect_families(results: list, build_info: Optional[dict] = None) -> list:
    """The metric families for *results* (non-empty families only)."""
    services_total = _family(SERVICES_TOTAL)
    svc_fams = [_family(f) for f in SVC_FAMILIES]
    dest_fams = [_family(f) for f in DEST_FAMILIES]
    up = _family(UP)
    duration = _family(DURATION)

    for r in results:
        ns = r.namespace
        nsl = {"namespace": ns}
        up.add_sample(UP[0], dict(nsl), 1 if r.up else 0)
        duration.add_sample(DURATION[0], dict(nsl), float(r.duration))
        if not r.up or r.snapshot is None:
            continue
        snap = r.snapshot
        ports = r.ports or {}
        sbuf, dbuf = snap.services, snap.dests
        svcs = list(SVC_STRUCT.iter_unpack(sbuf[:len(sbuf) // SVC_SIZE * SVC_SIZE]))
        dests = list(DEST_STRUCT.iter_unpack(dbuf[:len(dbuf) // DEST_SIZE * DEST_SIZE]))
        services_total.add_sample(SERVICES_TOTAL[0], dict(nsl), len(svcs))
        for s in svcs:
            sl = service_labels(ns, s, ports)
            for fam, spec in zip(svc_fams, SVC_FAMILIES):
                fam.add_sample(spec[0], dict(sl), s[spec[3]])
            start, end = _dest_ranges(len(dests), s[S_FIRST_DEST], s[S_NDESTS])
            for d in dests[start:end]:
                dl = dest_labels(sl, d[D_AF], d[D_PORT], d[D_ADDR])
                for fam, spec in zip(dest_fams, DEST_FAMILIES):
                    fam.add_sample(spec[0], dict(dl), d[spec[3]])

    fams = [services_total, *svc_fams, *dest_fams, up, duration]
    if build_info is not None:
        bi = _family(BUILD_INFO)
        bi.add_sample(BUILD_INFO[0], dict(build_info), 1)
        fams.append(bi)
    return [f for f in fams if f.samples]


# ---------------------------------------------------------------------------
# (b) hand-rolled renderer

# Destination label blocks are built from the service's block: "address" and
# "destination_port" sort before every service label name, so a dest block is
# '{address="A",[destination_port="P",]' + <service block without "{">.
assert "address" < "destination_port" < min(
    "family", "fwmark", "namespace", "port", "protocol", "service_address")

_LITTLE = sys.byteorder == "little"
# struct ipvs_svc_rec / ipvs_dest_rec byte offsets and strides (see
# records.py; tests check them against struct.unpack).
_S_U32_STRIDE = SVC_SIZE // 4            # 44
_S_STATS = 88                            # stats[] (u64)
_S_NDESTS = 172                          # ndests (u32)
_S_IDENT_U32 = (0, 1, 2, 6, 7, 8, 9, 42, 43)   # af|proto, port|attrs, fwmark, addr, first, n
_D_U32_STRIDE = DEST_SIZE // 4           # 36
_D_ACTIVE = 40                           # active_conns (u32)
_D_INACTIVE = 44                         # inact_conns (u32)
_D_STATS = 64                            # stats[] (u64)
_D_IDENT_U32 = (0, 1, 2, 3, 4, 5)        # svc_index, af|port, addr
_DEST_KEY_OFF = 4                        # af(2) port(2) addr(16): a dest's identity
_DEST_KEY_LEN = 20


# A dest key is the record's bytes 4..24: af (u16 LE), port (u16 LE), addr[16].
def _dest_block(k: bytes, tail: str, _ntop=socket.inet_ntop) -> bytes:
    if k[0] == _AF_INET6 and not k[1]:
        a = _ntop(_AF_INET6, k[4:20])
    else:
        a = _ntop(_AF_INET, k[4:8])
    port = k[2] | (k[3] << 8)
    if port:
        return ('{address="%s",destination_port="%d",%s' % (a, port, tail)).encode()
    return ('{address="%s",%s' % (a, tail)).encode()


def _dest_blocks(keys: list, tails: list, _ntop=socket.inet_ntop) -> list:
    """[_dest_block(k, t) for k, t in zip(keys, tails)], inlined (the
    cold-cache hot loop)."""
    v4, v6 = _AF_INET, _AF_INET6
    return list(map(str.encode, [
        ('{address="%s",destination_port="%d",%s'
         % (_ntop(v6, k[4:20]) if k[0] == v6 and not k[1] else _ntop(v4, k[4:8]),
            k[2] | (k[3] << 8), t))
        if k[2] or k[3] else
        ('{address="%s",%s'
         % (_ntop(v6, k[4:20]) if k[0] == v6 and not k[1] else _ntop(v4, k[4:8]), t))
        for k, t in zip(keys, tails)]))


def _views(buf, n: int, size: int):
    mv = memoryview(buf).cast("B")[:n * size]
    return mv.cast("I"), mv.cast("Q")


def svc_columns(services) -> dict:
    """Value columns of the service array, keyed by SVC_FAMILIES tuple
    position: strided memoryviews over the records on little-endian hosts
    (records are host order: :class:`~ipvs_fast.formats.exposition.Column`), else lists."""
    n = len(services) // SVC_SIZE
    if n and _LITTLE:
        return {
            S_STATS + _CONNS: Column(services, _S_STATS + 8 * _CONNS, SVC_SIZE, "Q", n),
            S_STATS + _INBYTES: Column(services, _S_STATS + 8 * _INBYTES, SVC_SIZE, "Q", n),
            S_STATS + _OUTBYTES: Column(services, _S_STATS + 8 * _OUTBYTES, SVC_SIZE, "Q", n),
            S_NDESTS: Column(services, _S_NDESTS, SVC_SIZE, "I", n),
        }
    rows = list(SVC_STRUCT.iter_unpack(services[:n * SVC_SIZE]))
    return {spec[3]: [r[spec[3]] for r in rows] for spec in SVC_FAMILIES}


def dest_columns(dests) -> dict:
    """Value columns of the dest array, keyed by DEST_FAMILIES tuple position.

    On little-endian hosts (records are host order) these are
    :class:`~ipvs_fast.formats.exposition.Column` views of the records: formatted
    straight from the records by the C formatter, or turned into ints one
    segment at a time, so no column of Python ints is ever held whole.
    """
    n = len(dests) // DEST_SIZE
    if n and _LITTLE:
        return {
            D_ACTIVE: Column(dests, _D_ACTIVE, DEST_SIZE, "I", n),
            D_INACTIVE: Column(dests, _D_INACTIVE, DEST_SIZE, "I", n),
            D_STATS + _CONNS: Column(dests, _D_STATS + 8 * _CONNS, DEST_SIZE, "Q", n),
            D_STATS + _INBYTES: Column(dests, _D_STATS + 8 * _INBYTES, DEST_SIZE, "Q", n),
            D_STATS + _OUTBYTES: Column(dests, _D_STATS + 8 * _OUTBYTES, DEST_SIZE, "Q", n),
        }
    rows = list(DEST_STRUCT.iter_unpack(dests[:n * DEST_SIZE]))
    return {spec[3]: [r[spec[3]] for r in rows] for spec in DEST_FAMILIES}


def identity_columns(services, nsvc: int, dests, ndest: int) -> Optional[bytes]:
    """The identity columns of a snapshot (everything label blocks depend on
    except namespace and port map), or None where not computable cheaply."""
    if not _LITTLE:
        return None
    parts = []
    if nsvc:
        u32, _ = _views(services, nsvc, SVC_SIZE)
        parts += [u32[i::_S_U32_STRIDE].tobytes() for i in _S_IDENT_U32]
    parts.append(b"|")
    if ndest:
        u32, _ = _views(dests, ndest, DEST_SIZE)
        parts += [u32[i::_D_U32_STRIDE].tobytes() for i in _D_IDENT_U32]
    return b"".join(parts)


def _svc_block(ns_esc: str, s: tuple, port_str: Optional[str]) -> str:
    """label_block(service_labels(...)) without the dict: the renderer's own
    spelling of the label rules (the tests hold it to the collector's)."""
    fw = s[S_FWMARK]
    if fw:
        return '{%sfwmark="%d",namespace="%s",port="%s"} ' % (
            'family="inet6",' if s[S_AF] == _AF_INET6 else "", fw, ns_esc,
            escape_label_value(port_str))
    proto = s[S_PROTOCOL]
    return '{fwmark="0",namespace="%s",port="%d",protocol="%s",service_address="%s"} ' % (
        ns_esc, s[S_PORT], escape_label_value(_PROTO_LOWER.get(proto) or str(proto)),
        addr_str(s[S_AF], s[S_ADDR]))


_entry_ids = itertools.count(1)


class _SvcEntry:
    """A service's label block, and a unique id prefixing its dests' keys."""
    __slots__ = ("block", "tail", "kid")

    def __init__(self, block: str):
        self.block = block.encode()
        self.tail = block[1:]               # 'fwmark="..",...} ' (str, for dest blocks)
        self.kid = next(_entry_ids).to_bytes(8, "little")


class _NsState:
    """Per-namespace render cache: the label blocks of the last snapshot."""
    __slots__ = ("svcs", "dests", "ident", "ports", "svc_blocks", "dest_blocks",
                 "dest_index", "agg")

    def __init__(self):
        self.svcs: dict = {}                # service key -> _SvcEntry
        self.dests: dict = {}               # entry kid + dest identity bytes -> block
        self.ident: Optional[bytes] = None
        self.ports: dict = {}
        self.svc_blocks: list = []          # bytes, one per service
        self.dest_blocks: list = []         # bytes, one per rendered dest
        self.dest_index: Optional[list] = None   # None: dests in array order
        self.agg: Optional[tuple] = None    # (group index, group blocks) when aggregating


class IngressRenderer(FamilyRenderer):
    """Text-format renderer with a label-block cache.

    Output goes through :func:`ipvs_fast.formats.exposition.plan_exposition`: the
    families are runs of cached label blocks (:class:`Blocks`) and value
    columns read straight from the packed records (:class:`Column`), which
    the C formatter writes segment by segment (no per-sample Python object
    at all); without the compiled core each segment is ONE ``bytes %
    tuple``. (Most of the cost of making ~100 MB of text at once is page
    faults on fresh memory, so the served path never makes it at once:
    ``render_pieces``.)

    Label cache: per namespace, keyed by identity, every service's label
    block (key: af, protocol, addr, port, fwmark and mapped published port)
    and every destination's block (key: its service entry's id + the
    record's af/port/addr bytes). Each render builds a fresh map from the current
    snapshot, reusing old entries, and drops the old one: the cache holds
    exactly the last snapshot's services/destinations, so churn cannot grow
    it. When the snapshot's identity columns and port map are unchanged since
    the last render (the steady state), the previous block lists are reused
    wholesale and only the values are formatted.
    Thread-safe (renders are serialized per IngressRenderer).

    *metric_filter*: ``name -> bool``, the families to write (all if None).
    *destinations*: None = one series per destination; ``"none"`` = no
    destination series; a tuple of label names = destination series summed
    over the destinations equal in those labels (see ipvs_fast.formats.policy).
    """

    uses_port_map = True

    def __init__(self, metric_filter=None, destinations=None):
        self._lock = threading.Lock()
        self._ns: dict = {}        # namespace -> _NsState
        self._filter = metric_filter
        self._destinations = destinations
        self._dest_on = destinations != "none" and (
            metric_filter is None or any(metric_filter(f[0]) for f in DEST_FAMILIES))

    def cache_size(self) -> tuple[int, int]:
        """(services, destinations) currently cached (for tests/debugging)."""
        with self._lock:
            states = list(self._ns.values())
            return (sum(len(st.svcs) for st in states),
                    sum(len(st.dests) for st in states))

    # -- internals ---------------------------------------------------------
    def _families(self, results, build_info) -> list:
        # runs per family: (blocks: list[bytes], values: list, conversion "d"|"s")
        fam_services_total: list = []
        fam_svc: list = [[] for _ in SVC_FAMILIES]
        fam_dest: list = [[] for _ in DEST_FAMILIES]
        fam_up: list = []
        fam_dur: list = []
        old_ns = self._ns
        new_ns: dict = {}

        for r in results:
            ns = r.namespace
            nsb = ('{namespace="%s"} ' % escape_label_value(ns)).encode()
            fam_up.append(([nsb], [1 if r.up else 0], "d"))
            fam_dur.append(([nsb], [_fmt_value(float(r.duration)).encode()], "s"))
            snap = r.snapshot
            if not r.up or snap is None:
                continue
            ports = r.ports or {}
            sbuf, dbuf = snap.services, snap.dests
            nsvc, ndest = len(sbuf) // SVC_SIZE, len(dbuf) // DEST_SIZE
            fam_services_total.append(([nsb], [nsvc], "d"))
            if not nsvc:
                continue
            st = new_ns.get(ns)
            if st is None:                  # (a repeated namespace string re-renders)
                st = old_ns.get(ns)
            ident = identity_columns(sbuf, nsvc, dbuf, ndest)
            if st is None or ident is None or st.ident != ident or st.ports != ports:
                st = self._rebuild(ns, st, sbuf, dbuf, ndest, ports)
                st.ident = ident
            new_ns[ns] = st

            scols = svc_columns(sbuf)
            for runs, spec in zip(fam_svc, SVC_FAMILIES):
                runs.append((st.svc_blocks, scols[spec[3]], "u"))
            if not st.dest_blocks or not self._dest_on:
                continue
            dcols = dest_columns(dbuf)
            idx = st.dest_index
            blocks = st.dest_blocks
            agg = None
            if isinstance(self._destinations, tuple):
                if st.agg is None:
                    st.agg = _groups(ns, sbuf, dbuf, ndest, ports, self._destinations)
                agg = st.agg
                blocks = agg[1]
            for runs, spec in zip(fam_dest, DEST_FAMILIES):
                col = dcols[spec[3]]
                if idx is not None:
                    col = [col[i] for i in idx]
                if agg is not None:
                    col = group_sums([(col, agg[0])], len(blocks))
                runs.append((blocks, col, "u"))
            del dcols

        self._ns = new_ns

        families = [(SERVICES_TOTAL, fam_services_total), *zip(SVC_FAMILIES, fam_svc),
                    *zip(DEST_FAMILIES, fam_dest), (UP, fam_up), (DURATION, fam_dur)]
        return finish_families(families, BUILD_INFO, build_info, self._filter)

    @staticmethod
    def _rebuild(ns: str, old: Optional[_NsState], sbuf, dbuf, ndest: int,
                 ports: dict) -> _NsState:
        """Label blocks for a changed snapshot, reusing *old*'s entries."""
        old_svcs = old.svcs if old is not None else {}
        old_dests = old.dests if old is not None else {}
        ns_esc = escape_label_value(ns)
        st = _NsState()
        st.ports = dict(ports)
        cache = st.svcs
        svc_blocks = st.svc_blocks
        kids: list = []            # per rendered dest: its service entry's kid
        tails: list = []           # per rendered dest: that service's tail
        ranges: list = []
        in_order = True
        expect = 0
        for s in SVC_STRUCT.iter_unpack(sbuf[:len(sbuf) // SVC_SIZE * SVC_SIZE]):
            fw = s[S_FWMARK]
            key = (s[S_AF], s[S_PROTOCOL], s[S_PORT], fw, s[S_ADDR],
                   ports.get(fw, "") if fw else None)
            e = cache.get(key)
            if e is None:
                e = old_svcs.get(key)
                if e is None:
                    e = _SvcEntry(_svc_block(ns_esc, s, key[5]))
                cache[key] = e
            svc_blocks.append(e.block)
            start, end = _dest_ranges(ndest, s[S_FIRST_DEST], s[S_NDESTS])
            if start < end:
                if start != expect:
                    in_order = False
                expect = end
                ranges.append((start, end))
                kids += [e.kid] * (end - start)
                tails += [e.tail] * (end - start)
        st.svc_blocks = Blocks(svc_blocks)
        if not kids:
            return st
        if in_order and expect == ndest:
            offsets = range(_DEST_KEY_OFF, ndest * DEST_SIZE, DEST_SIZE)
        else:
            st.dest_index = [i for a, b in ranges for i in range(a, b)]
            offsets = [i * DEST_SIZE + _DEST_KEY_OFF for i in st.dest_index]
        keys = [dbuf[o:o + _DEST_KEY_LEN] for o in offsets]
        ckeys = list(map(bytes.__add__, kids, keys))
        if old_dests:
            blocks = list(map(old_dests.get, ckeys))
            if None in blocks:
                blocks = [b if b is not None else _dest_block(k, t)
                          for b, k, t in zip(blocks, keys, tails)]
        else:
            blocks = _dest_blocks(keys, tails)
        st.dests = dict(zip(ckeys, blocks))
        st.dest_blocks = Blocks(blocks)
        return st


def _groups(ns: str, sbuf, dbuf, ndest: int, ports: dict, keep: tuple) -> tuple:
    """group_index over the rendered destinations' labels (collector rules),
    in render order: services in array order, each one's destination range."""
    dests = list(DEST_STRUCT.iter_unpack(dbuf[:ndest * DEST_SIZE]))

    def labels():
        for s in SVC_STRUCT.iter_unpack(sbuf[:len(sbuf) // SVC_SIZE * SVC_SIZE]):
            start, end = _dest_ranges(ndest, s[S_FIRST_DEST], s[S_NDESTS])
            if start < end:
                sl = service_labels(ns, s, ports)
                for d in dests[start:end]:
                    yield dest_labels(sl, d[D_AF], d[D_PORT], d[D_ADDR])
    return group_index(labels(), keep)


_default = IngressRenderer()


def render(results: list, build_info: Optional[dict] = None, extra="") -> bytes:
    """Render *results* (CollectResults) as text format 0.0.4 bytes using a
    process-wide :class:`IngressRenderer` (its cache persists across calls)."""
    return _default.render(results, build_info, extra)
