"""Format `--format node`: a drop-in for node_exporter's ipvs collector.

Same metric names, HELP texts, types, labels and label values as
node_exporter (collector/ipvs_linux.go, which reads /proc/net/ip_vs and
/proc/net/ip_vs_stats through prometheus/procfs):

* ``node_ipvs_connections_total``, ``node_ipvs_{incoming,outgoing}_packets_total``,
  ``node_ipvs_{incoming,outgoing}_bytes_total``: counters without labels, from
  ip_vs_stats (``Snapshot.totals``);
* ``node_ipvs_backend_connections_active``, ``..._inactive``,
  ``node_ipvs_backend_weight``: gauges per (service, destination) with
  labels ``local_address, local_port, remote_address, remote_port, proto,
  local_mark`` -- or the subset chosen with ``--node.backend-labels``
  (node_exporter's ``--collector.ipvs.backend-labels``); series whose kept
  label values are equal are summed, weight included, as node_exporter does.

Label values as /proc/net/ip_vs + procfs produce them: fwmark services have
``local_address=""``, ``local_port="0"``, ``proto="FWM"`` and ``local_mark`` =
the mark as 8 upper-case hex digits (``%08X``); other services
``local_mark=""`` and ``proto`` = ``TCP``/``UDP``/``SCTP``; addresses as Go's
``net.IP.String()`` prints them (IPv6 compressed, IPv4-mapped as dotted quad).

One deliberate difference: procfs does not know SCTP service lines, so
node_exporter attributes the destinations of an SCTP service to the service
listed before it (or drops them if it is first). We report them under their
own service with ``proto="SCTP"``.

Output is sorted as client_golang sorts it (families by name, series by label
values) and values are printed like Go (``1.234567e+06``), so for one
namespace the node_ipvs lines are byte-identical to node_exporter's.
With several namespaces every node_ipvs series gets a ``namespace`` label.
"""
from __future__ import annotations

import operator
import socket
import struct
import sys
import threading
from array import array
from typing import Optional

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from ..backends.records import (D_ACTIVE, D_ADDR, D_AF, D_INACTIVE, D_PORT, D_WEIGHT, DEST_SIZE,
                                 DEST_STRUCT, PROTO_NAMES, S_ADDR, S_AF, S_FIRST_DEST, S_FWMARK,
                                 S_NDESTS, S_PORT, S_PROTOCOL, SVC_SIZE, SVC_STRUCT)
from .exposition import (Blocks, Column, FamilyRenderer, escape_label_value, finish_families,
                         fmt_value, group_sums, results_from)
from .ingress import identity_columns

__all__ = ["NODE_LABELS", "parse_backend_labels", "NodeCollector", "NodeRenderer",
           "backend_series", "go_ip"]

NODE_LABELS = ("local_address", "local_port", "remote_address", "remote_port",
               "proto", "local_mark")

# (name, type, HELP, index into Snapshot.totals) -- HELP verbatim from ipvs_linux.go
TOTAL_FAMILIES = (
    ("node_ipvs_connections_total", "counter", "The total number of connections made.", 0),
    ("node_ipvs_incoming_packets_total", "counter", "The total number of incoming packets.", 1),
    ("node_ipvs_outgoing_packets_total", "counter", "The total number of outgoing packets.", 2),
    ("node_ipvs_incoming_bytes_total", "counter", "The total amount of incoming data.", 3),
    ("node_ipvs_outgoing_bytes_total", "counter", "The total amount of outgoing data.", 4),
)
# (name, type, HELP, index into the summed (active, inactive, weight))
BACKEND_FAMILIES = (
    ("node_ipvs_backend_connections_active", "gauge",
     "The current active connections by local and remote address.", 0),
    ("node_ipvs_backend_connections_inactive", "gauge",
     "The current inactive connections by local and remote address.", 1),
    ("node_ipvs_backend_weight", "gauge",
     "The current backend weight by local and remote address.", 2),
)
FAMILIES = TOTAL_FAMILIES + BACKEND_FAMILIES


def parse_backend_labels(text: str) -> tuple:
    """node_exporter's parseIpvsLabels: comma separated, empty items ignored,
    result in the canonical order; unknown names raise ValueError."""
    wanted = {x for x in text.split(",") if x != ""}
    unknown = sorted(wanted - set(NODE_LABELS))
    if unknown:
        raise ValueError("unknown IPVS backend labels: %s (known: %s)"
                         % (", ".join(unknown), ",".join(NODE_LABELS)))
    return tuple(x for x in NODE_LABELS if x in wanted)


_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_V4MAPPED = bytes(10) + b"\xff\xff"


def go_ip(af: int, raw: bytes) -> str:
    """An address as Go's net.IP.String() prints it."""
    if af != _AF_INET6:
        return socket.inet_ntop(_AF_INET, raw[:4])
    raw = raw[:16]
    if raw[:12] == _V4MAPPED:
        return socket.inet_ntop(_AF_INET, raw[12:])
    s = socket.inet_ntop(_AF_INET6, raw)
    if "." not in s:            # glibc and Go agree (RFC 5952) except ::a.b.c.d
        return s
    groups = [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]
    best, best_len, i = -1, 1, 0
    while i < 8:
        j = i
        while j < 8 and groups[j] == 0:
            j += 1
        if j - i > best_len:
            best, best_len = i, j - i
        i = j + 1
    if best < 0:
        return ":".join("%x" % g for g in groups)
    return (":".join("%x" % g for g in groups[:best]) + "::"
            + ":".join("%x" % g for g in groups[best + best_len:]))


def _proto(p: int) -> str:
    return PROTO_NAMES.get(p) or ("IP" if p == 0 else "IP_%d" % p)


def backend_series(snapshot, labels: tuple = NODE_LABELS) -> dict:
    """{kept label values (tuple, in *labels* order): [active, inactive, weight]}
    for one snapshot, summed over equal keys."""
    sbuf, dbuf = snapshot.services, snapshot.dests
    nd = len(dbuf) // DEST_SIZE
    dests = list(DEST_STRUCT.iter_unpack(dbuf[:nd * DEST_SIZE]))
    pos = [NODE_LABELS.index(x) for x in labels]
    ipcache: dict = {}
    out: dict = {}
    for s in SVC_STRUCT.iter_unpack(sbuf[:len(sbuf) // SVC_SIZE * SVC_SIZE]):
        fw = s[S_FWMARK]
        if fw:
            local = ("", "0", "FWM", "%08X" % fw)
        else:
            local = (go_ip(s[S_AF], s[S_ADDR]), str(s[S_PORT]), _proto(s[S_PROTOCOL]), "")
        start = min(max(s[S_FIRST_DEST], 0), nd)
        end = min(start + max(s[S_NDESTS], 0), nd)
        for d in dests[start:end]:
            ak = (d[D_AF], d[D_ADDR])
            ra = ipcache.get(ak)
            if ra is None:
                ra = ipcache[ak] = go_ip(*ak)
            full = (local[0], local[1], ra, str(d[D_PORT]), local[2], local[3])
            key = tuple(full[i] for i in pos)
            acc = out.get(key)
            if acc is None:
                out[key] = [d[D_ACTIVE], d[D_INACTIVE], d[D_WEIGHT]]
            else:
                acc[0] += d[D_ACTIVE]
                acc[1] += d[D_INACTIVE]
                acc[2] += d[D_WEIGHT]
    return out


def _totals(snapshot) -> Optional[tuple]:
    t = snapshot.totals
    return tuple(t[:5]) if t is not None and len(t) >= 5 else None


def _add(acc: dict, key, vals) -> None:
    old = acc.get(key)
    acc[key] = list(vals) if old is None else [a + b for a, b in zip(old, vals)]


# ---------------------------------------------------------------------------
# (a) prometheus_client collector (the reference)

class NodeCollector:
    """prometheus_client collector for the node_exporter ipvs metrics.

    *source*: as for :class:`ipvs_fast.formats.ingress.IngressCollector`.
    *labels*: the backend labels kept (``parse_backend_labels``).
    *namespace_label*: add ``namespace`` to every node_ipvs series.
    Our own ``ipvs_up``/``ipvs_scrape_duration_seconds``/build info come
    from :func:`ipvs_fast.formats.ingress.collect_families`-compatible families.
    """

    def __init__(self, source, labels: tuple = NODE_LABELS, namespace_label: bool = False,
                 build_info: Optional[dict] = None):
        self._source = source
        self._labels = tuple(labels)
        self._nslabel = namespace_label
        self._build_info = build_info

    def describe(self):
        return []

    def collect(self):
        from .ingress import BUILD_INFO, DURATION, UP
        results = results_from(self._source)
        extra = ("namespace",) if self._nslabel else ()
        tot = [CounterMetricFamily(f[0], f[2], labels=extra) for f in TOTAL_FAMILIES]
        back = [GaugeMetricFamily(f[0], f[2], labels=extra + self._labels)
                for f in BACKEND_FAMILIES]
        up = GaugeMetricFamily(UP[0], UP[2], labels=["namespace"])
        dur = GaugeMetricFamily(DURATION[0], DURATION[2], labels=["namespace"])
        # the same label set twice (e.g. a namespace path given twice) is summed
        totals: dict = {}
        backends: dict = {}
        for r in results:
            up.add_metric([r.namespace], 1 if r.up else 0)
            dur.add_metric([r.namespace], float(r.duration))
            if not r.up or r.snapshot is None:
                continue
            nsv = (r.namespace,) if self._nslabel else ()
            t = _totals(r.snapshot)
            if t is not None:
                _add(totals, nsv, t)
            for key, vals in backend_series(r.snapshot, self._labels).items():
                _add(backends, nsv + key, vals)
        for nsv, t in totals.items():
            for fam, spec in zip(tot, TOTAL_FAMILIES):
                fam.add_metric(list(nsv), t[spec[3]])
        for key, vals in backends.items():
            for fam, spec in zip(back, BACKEND_FAMILIES):
                fam.add_metric(list(key), vals[spec[3]])
        fams = sorted(back + tot, key=lambda f: f.name) + [up, dur]
        if self._build_info is not None:
            bi = GaugeMetricFamily(BUILD_INFO[0], BUILD_INFO[2], labels=sorted(self._build_info))
            bi.add_metric([self._build_info[k] for k in sorted(self._build_info)], 1)
            fams.append(bi)
        return [f for f in fams if f.samples]


# ---------------------------------------------------------------------------
# (b) renderer

_LITTLE = sys.byteorder == "little"
# (struct code, byte offset) of active_conns, inact_conns and weight in a
# dest record (records.DEST_FMT), in BACKEND_FAMILIES order
_BACKEND_COLUMNS = (("I", 40), ("I", 44), ("i", 28))


def _dest_column(dbuf, nd: int, code: str, off: int):
    if _LITTLE:
        return Column(dbuf, off, DEST_SIZE, code, nd)
    return [struct.unpack_from("<" + code, dbuf, i * DEST_SIZE + off)[0] for i in range(nd)]


class _NodeNs:
    """One namespace's backend series for the last snapshot identity:
    *keys*, the distinct label-value tuples (kept labels in name order)
    sorted as client_golang sorts series; *group*, for each rendered
    destination the index of its key; *order*, None when the rendered
    destinations are the dest array in order, else their indices."""
    __slots__ = ("ident", "keys", "group", "order")


class NodeRenderer(FamilyRenderer):
    """Text renderer for ``--format node`` (interface of
    :class:`ipvs_fast.formats.ingress.IngressRenderer`), on the planned
    exposition (:func:`ipvs_fast.formats.exposition.plan_exposition`).

    The grouping of destinations into series (which kept label values each
    one has, the series sorted as client_golang sorts them, their label
    blocks) depends only on the snapshot's identity columns, so it is kept
    per namespace and rebuilt only when they change; each render then sums
    the active/inactive/weight columns of the packed records into the
    series (``group_sums``: in C, no Python object per destination) and the
    C formatter prints the sums as Go prints a float64. The label-block
    cache holds exactly the keys of the last render.

    Its data is what node_exporter reads: the namespace's /proc/net/ip_vs
    (``dump_table``) and ip_vs_stats, not the netlink dump, which costs one
    request per service for counters this format does not show."""

    uses_counters = False

    def __init__(self, labels: tuple = NODE_LABELS, namespace_label: bool = False,
                 metric_filter=None):
        self.labels = tuple(labels)
        self.namespace_label = namespace_label
        self._filter = metric_filter
        self._backends_on = metric_filter is None or any(
            metric_filter(f[0]) for f in BACKEND_FAMILIES)
        names = (("namespace",) if namespace_label else ()) + self.labels
        # label order in the output and the sort order of series: sorted
        # names (client_golang); _pick: each one's place in (namespace, *NODE_LABELS)
        self._names = sorted(names)
        pick = [0 if n == "namespace" else 1 + NODE_LABELS.index(n) for n in self._names]
        # (namespace, *NODE_LABELS values) -> the kept values in name order
        if len(pick) > 1:
            self._key = operator.itemgetter(*pick)
        elif pick:
            self._key = lambda full, _i=pick[0]: (full[_i],)
        else:
            self._key = lambda full: ()
        # '{a="%s",b="%s"} ': every value but the namespace is made here
        # (addresses, digits, hex, protocol names) and needs no escaping
        self._block_format = ("{" + ",".join('%s="%%s"' % n for n in self._names) + "} "
                              if self._names else " ")
        self._ns_at = self._names.index("namespace") if namespace_label else None
        self._ns: dict = {}              # namespace -> _NodeNs
        self._merged = None              # (states, keys, blocks, groups) of the last render
        self._blocks: dict = {}          # key -> label block, the last render's keys
        self._lock = threading.Lock()

    def cache_size(self) -> int:
        return len(self._blocks)

    def _families(self, results, build_info) -> list:
        from .ingress import BUILD_INFO, DURATION, UP
        totals: dict = {}
        states: list = []                # (_NodeNs, dest buffer) per namespace with backends
        new_ns: dict = {}
        fam_up, fam_dur = [], []
        for r in results:
            nsb = ('{namespace="%s"} ' % escape_label_value(r.namespace)).encode()
            fam_up.append(([nsb], [1 if r.up else 0], "d"))
            fam_dur.append(([nsb], [fmt_value(float(r.duration)).encode()], "s"))
            snap = r.snapshot
            if not r.up or snap is None:
                continue
            t = _totals(snap)
            if t is not None:
                _add(totals, (r.namespace,) if self.namespace_label else (), t)
            if not self._backends_on:
                continue
            sbuf, dbuf = snap.services, snap.dests
            nsvc, nd = len(sbuf) // SVC_SIZE, len(dbuf) // DEST_SIZE
            ident = identity_columns(sbuf, nsvc, dbuf, nd)
            st = new_ns.get(r.namespace) or self._ns.get(r.namespace)
            if st is None or ident is None or st.ident != ident:
                st = self._rebuild(r.namespace, sbuf, nsvc, dbuf, nd)
                st.ident = ident
            new_ns[r.namespace] = st
            if st.keys:
                states.append((st, dbuf, nd))
        self._ns = new_ns

        runs = {spec[0]: [] for spec in FAMILIES}
        if totals:
            trows = sorted(totals.items())
            blocks = [('{namespace="%s"} ' % escape_label_value(k[0])).encode() if k else b" "
                      for k, _ in trows]
            for spec in TOTAL_FAMILIES:
                runs[spec[0]].append((blocks, [v[spec[3]] for _, v in trows], "g"))
        if states:
            blocks, groups = self._merge([st for st, _, _ in states])
            for spec, (code, off) in zip(BACKEND_FAMILIES, _BACKEND_COLUMNS):
                parts = []
                for (st, dbuf, nd), group in zip(states, groups):
                    col = _dest_column(dbuf, nd, code, off)
                    if st.order is not None:
                        col = [col[i] for i in st.order]
                    parts.append((col, group))
                runs[spec[0]].append((blocks, group_sums(parts, len(blocks)), "g"))
        else:
            self._merged, self._blocks = None, {}
        # client_golang: families sorted by name (ours after them)
        families = [(spec, runs[spec[0]]) for spec in sorted(FAMILIES, key=lambda f: f[0])]
        families += [(UP, fam_up), (DURATION, fam_dur)]
        return finish_families(families, BUILD_INFO, build_info, self._filter)

    def _merge(self, states: list) -> tuple:
        """(label blocks of every series, sorted; per state its destinations'
        series indices) for the namespaces' *states*; reused while they are
        the same objects."""
        m = self._merged
        if m is not None and len(m[0]) == len(states) and all(
                a is b for a, b in zip(m[0], states)):
            return m[2], m[3]
        if len(states) == 1:
            keys, groups = states[0].keys, [states[0].group]
        else:                 # series of several namespaces interleave (or are summed)
            keys = sorted(set().union(*(st.keys for st in states)))
            rank = {k: i for i, k in enumerate(keys)}
            groups = []
            for st in states:
                gmap = [rank[k] for k in st.keys]
                groups.append(array("I", map(gmap.__getitem__, st.group)))
        old = self._blocks
        blocks = list(map(old.get, keys))
        if None in blocks:
            fmt = self._block_format
            ns_at = self._ns_at
            esc: dict = {}
            for i, b in enumerate(blocks):
                if b is None:
                    k = keys[i]
                    if ns_at is not None:      # the only value that may need escaping
                        ns = k[ns_at]
                        e = esc.get(ns)
                        if e is None:
                            e = esc[ns] = escape_label_value(ns)
                        k = k[:ns_at] + (e,) + k[ns_at + 1:]
                    blocks[i] = (fmt % k).encode()
        cache = dict(zip(keys, blocks))
        blocks = Blocks(blocks)
        self._blocks = cache
        self._merged = (tuple(states), keys, blocks, groups)
        return blocks, groups

    def _rebuild(self, ns: str, sbuf, nsvc: int, dbuf, nd: int) -> _NodeNs:
        """The series of one namespace's snapshot: each rendered
        destination's kept label values (node_exporter's rules), sorted."""
        key = self._key
        dests = list(DEST_STRUCT.iter_unpack(dbuf[:nd * DEST_SIZE]))
        ipcache: dict = {}
        dkeys: list = []
        order: list = []
        for s in SVC_STRUCT.iter_unpack(sbuf[:nsvc * SVC_SIZE]):
            start = min(max(s[S_FIRST_DEST], 0), nd)
            end = min(start + max(s[S_NDESTS], 0), nd)
            if start >= end:
                continue
            fw = s[S_FWMARK]
            if fw:
                la, lp, proto, mark = "", "0", "FWM", "%08X" % fw
            else:
                la, lp, proto, mark = (go_ip(s[S_AF], s[S_ADDR]), str(s[S_PORT]),
                                       _proto(s[S_PROTOCOL]), "")
            order += range(start, end)
            for d in dests[start:end]:
                ak = (d[D_AF], d[D_ADDR])
                ra = ipcache.get(ak)
                if ra is None:
                    ra = ipcache[ak] = go_ip(*ak)
                dkeys.append(key((ns, la, lp, ra, str(d[D_PORT]), proto, mark)))
        st = _NodeNs()
        st.keys = sorted(set(dkeys))
        rank = {k: i for i, k in enumerate(st.keys)}
        st.group = array("I", map(rank.__getitem__, dkeys))
        st.order = None if order == list(range(nd)) else order
        return st
