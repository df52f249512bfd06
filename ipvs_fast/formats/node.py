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

import socket
import threading
from typing import Optional

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from ..backends.records import (D_ACTIVE, D_ADDR, D_AF, D_INACTIVE, D_PORT, D_WEIGHT, DEST_SIZE,
                                 DEST_STRUCT, PROTO_NAMES, S_ADDR, S_AF, S_FIRST_DEST, S_FWMARK,
                                 S_NDESTS, S_PORT, S_PROTOCOL, SVC_SIZE, SVC_STRUCT)
from .exposition import (TEXT, Body, Flavour, as_results, escape_label_value, fmt_value,
                         go_float, label_block, results_from)

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

class NodeRenderer:
    """Text renderer for ``--format node`` (same interface as
    :class:`ipvs_fast.formats.ingress.IngressRenderer`). Label blocks are cached per key;
    the cache holds exactly the keys of the last render."""

    def __init__(self, labels: tuple = NODE_LABELS, namespace_label: bool = False,
                 metric_filter=None):
        self.labels = tuple(labels)
        self.namespace_label = namespace_label
        self._filter = metric_filter or (lambda name: True)
        self._backends_on = any(self._filter(f[0]) for f in BACKEND_FAMILIES)
        names = (("namespace",) if namespace_label else ()) + self.labels
        # label order in the output: sorted names (as client_golang writes them)
        self._order = sorted(range(len(names)), key=lambda i: names[i])
        self._names = [names[i] for i in self._order]
        self._blocks: dict = {}
        self._lock = threading.Lock()

    def cache_size(self) -> int:
        return len(self._blocks)

    def _block(self, key: tuple, cache: dict, old: dict) -> str:
        b = old.get(key)
        if b is None:
            b = "{" + ",".join('%s="%s"' % (n, escape_label_value(key[i]))
                               for n, i in zip(self._names, self._order)) + "}"
        cache[key] = b
        return b

    def render_pieces(self, results, build_info: Optional[dict] = None, extra="",
                      flavour: Flavour = TEXT) -> Body:
        """:meth:`render` as a :class:`Body` (the renderers' interface)."""
        out = self.render(results, build_info, extra, flavour)
        return Body([out], len(out))

    def render(self, results, build_info: Optional[dict] = None, extra="",
               flavour: Flavour = TEXT) -> bytes:
        header = flavour.header
        from .ingress import BUILD_INFO, DURATION, UP
        results = as_results(results)
        with self._lock:
            old, cache = self._blocks, {}
            totals: dict = {}
            backends: dict = {}
            for r in results:
                if not r.up or r.snapshot is None:
                    continue
                pre = (r.namespace,) if self.namespace_label else ()
                t = _totals(r.snapshot)
                if t is not None:
                    _add(totals, pre, t)
                if not self._backends_on:
                    continue
                for key, vals in backend_series(r.snapshot, self.labels).items():
                    _add(backends, pre + key, vals)
            out: list = []
            # client_golang: families sorted by name, series by label values
            # in label-name order.
            fams = sorted((f for f in FAMILIES if self._filter(f[0])), key=lambda f: f[0])
            order = self._order
            brows = sorted(((tuple(k[i] for i in order), k, v) for k, v in backends.items()))
            trows = sorted(totals.items())
            for spec in fams:
                if spec in BACKEND_FAMILIES:
                    if not brows:
                        continue
                    out.append(header(spec))
                    name, j = spec[0], spec[3]
                    for _, k, v in brows:
                        out.append("%s%s %s" % (name, self._block(k, cache, old), go_float(v[j])))
                else:
                    if not trows:
                        continue
                    out.append(header(spec))
                    name, j = spec[0], spec[3]
                    for pre, t in trows:
                        blk = ('{namespace="%s"}' % escape_label_value(pre[0])) if pre else ""
                        out.append("%s%s %s" % (name, blk, go_float(t[j])))
            self._blocks = cache
        for spec, rows in ((UP, [(r.namespace, 1 if r.up else 0) for r in results]),
                           (DURATION, [(r.namespace, float(r.duration)) for r in results])):
            if rows and self._filter(spec[0]):
                out.append(header(spec))
                out += ['%s{namespace="%s"} %s' % (spec[0], escape_label_value(ns), fmt_value(v))
                        for ns, v in rows]
        if build_info is not None and self._filter(BUILD_INFO[0]):
            out.append(header(BUILD_INFO))
            out.append("%s%s1" % (BUILD_INFO[0], label_block(build_info)))
        body = ("\n".join(out) + "\n" if out else "").encode("utf-8")
        if isinstance(extra, str):
            extra = extra.encode("utf-8")
        if extra and not extra.endswith(b"\n"):
            extra += b"\n"
        return body + (extra or b"") + flavour.trailer
