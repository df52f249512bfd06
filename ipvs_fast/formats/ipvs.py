"""Format `--format ipvs`: the full IPVS metric set, Prometheus conventions.

Every metric is documented in docs/metrics.md. Labels:

* service series: ``namespace``, ``family`` (``inet``/``inet6``), ``protocol``
  (``tcp``/``udp``/``sctp``; ``""`` for fwmark services), ``address`` and
  ``port`` (``""`` for fwmark services), ``fwmark`` (decimal; ``""`` for
  address/port services);
* destination series add ``destination_address`` and ``destination_port``.

Two implementations of the same sample set, held to each other by tests:
:class:`IPVSCollector` (prometheus_client, the reference) and
:class:`IPVSRenderer` (label blocks cached per namespace, values read as
strided columns from the packed records, output through
:func:`ipvs_fast.formats.exposition.plan_exposition`).
"""
from __future__ import annotations

import socket
import struct
import sys
import threading
from typing import Optional

from ..backends.records import (DEST_SIZE, DEST_STRUCT, FWD_NAMES, PROTO_NAMES, SVC_SIZE,
                                 SVC_STRUCT, addr_str, cstr)
from .exposition import (Blocks, Column, FamilyRenderer, escape_label_value, family,
                         finish_families, fmt_value, label_block, results_from)
from .policy import group_index, sum_groups

__all__ = ["IPVSCollector", "IPVSRenderer", "FAMILIES", "service_labels",
           "service_info_labels", "dest_info_labels"]

_AF_INET6 = socket.AF_INET6
_PROTO_LOWER = {k: v.lower() for k, v in PROTO_NAMES.items()}
_LITTLE = sys.byteorder == "little"

_EWMA = " (the kernel's rate estimate: an exponentially weighted moving average " \
        "updated every 2 seconds)"
# stats[] kinds: (suffix, what, unit word)
_STATS = (("connections", "connections", "connections"),
          ("incoming_packets", "incoming packets", "packets"),
          ("outgoing_packets", "outgoing packets", "packets"),
          ("incoming_bytes", "incoming bytes", "bytes"),
          ("outgoing_bytes", "outgoing bytes", "bytes"))

# Column specs: (struct code, byte offset in the record).
_SVC_STATS_OFF, _DEST_STATS_OFF = 88, 64


def _stat_families(prefix: str, scope: str, stats_off: int) -> tuple:
    fams = []
    for k, (suffix, what, _) in enumerate(_STATS):
        fams.append(("%s_%s_total" % (prefix, suffix), "counter",
                     "Total %s %s" % (what, scope), ("Q", stats_off + 8 * k)))
    for k, (suffix, what, _) in enumerate(_STATS):
        fams.append(("%s_%s_per_second" % (prefix, suffix), "gauge",
                     "Rate of %s %s, per second%s" % (what, scope, _EWMA),
                     ("Q", stats_off + 8 * (5 + k))))
    return tuple(fams)


# (name, type, HELP, (code, offset)) per service / destination
SVC_FAMILIES = _stat_families("ipvs_service", "of the virtual service", _SVC_STATS_OFF) + (
    ("ipvs_service_destinations", "gauge",
     "Number of destinations (real servers) of the virtual service", ("I", 172)),
)
DEST_FAMILIES = _stat_families("ipvs_destination", "of the destination (real server) "
                               "within its virtual service", _DEST_STATS_OFF) + (
    ("ipvs_destination_active_connections", "gauge",
     "Active (established) connections to the destination", ("I", 40)),
    ("ipvs_destination_inactive_connections", "gauge",
     "Inactive connections to the destination (not established, e.g. TIME_WAIT, or UDP)",
     ("I", 44)),
    ("ipvs_destination_persistent_connections", "gauge",
     "Persistence templates pointing at the destination", ("I", 48)),
    ("ipvs_destination_weight", "gauge", "Scheduling weight of the destination", ("i", 28)),
    ("ipvs_destination_connection_upper_threshold", "gauge",
     "Upper connection threshold of the destination (0 = none)", ("I", 32)),
    ("ipvs_destination_connection_lower_threshold", "gauge",
     "Lower connection threshold of the destination (0 = none)", ("I", 36)),
)
SVC_INFO = ("ipvs_service_info", "gauge",
            "Virtual service configuration, value 1: scheduler, flags, persistence "
            "timeout (seconds), netmask, persistence engine")
DEST_INFO = ("ipvs_destination_info", "gauge",
             "Destination configuration, value 1: forwarding method and tunnel settings")
NS_TOTALS = tuple(
    ("ipvs_%s_total" % suffix, "counter", "Total %s of all virtual services of the "
     "namespace (/proc/net/ip_vs_stats)" % what, k)
    for k, (suffix, what, _) in enumerate(_STATS)) + tuple(
    ("ipvs_%s_per_second" % suffix, "gauge", "Rate of %s of all virtual services of the "
     "namespace, per second%s" % (what, _EWMA), 5 + k)
    for k, (suffix, what, _) in enumerate(_STATS))
SERVICES = ("ipvs_services", "gauge", "Number of virtual services in the namespace")
DESTINATIONS = ("ipvs_destinations", "gauge", "Number of destinations in the namespace")

FAMILIES = NS_TOTALS + (SERVICES, DESTINATIONS) + SVC_FAMILIES + (SVC_INFO,) \
    + DEST_FAMILIES + (DEST_INFO,)

# IP_VS_SVC_F_* (include/uapi/linux/ip_vs.h)
SVC_FLAG_NAMES = ((0x1, "persistent"), (0x2, "hashed"), (0x4, "one-packet"),
                  (0x8, "sched1"), (0x10, "sched2"), (0x20, "sched3"))
TUN_TYPES = {0: "ipip", 1: "gue", 2: "gre"}
# IP_VS_TUNNEL_ENCAP_FLAG_*
TUN_FLAG_NAMES = ((0x1, "csum"), (0x2, "remcsum"))
_FWD_MASK = 0x7


def _flag_list(value: int, names) -> str:
    return ",".join(n for bit, n in names if value & bit)


# ---------------------------------------------------------------------------
# Label rules (the collector's spelling; the renderer builds the same blocks)

def service_labels(namespace: str, s: tuple) -> dict:
    """Labels of a service; *s* is an unpacked SVC_STRUCT tuple."""
    af, proto, port, _, fw = s[0], s[1], s[2], s[3], s[4]
    if fw:
        return {"namespace": namespace, "family": "inet6" if af == _AF_INET6 else "inet",
                "protocol": "", "address": "", "port": "", "fwmark": str(fw)}
    return {"namespace": namespace, "family": "inet6" if af == _AF_INET6 else "inet",
            "protocol": _PROTO_LOWER.get(proto) or str(proto),
            "address": addr_str(af, s[8]), "port": str(port), "fwmark": ""}


def _netmask(af: int, raw: int) -> str:
    if af == _AF_INET6:
        return str(raw)                                     # prefix length
    return socket.inet_ntop(socket.AF_INET, struct.pack("<I", raw))


def service_info_labels(s: tuple) -> dict:
    return {"scheduler": cstr(s[9]), "flags": _flag_list(s[5], SVC_FLAG_NAMES),
            "timeout": str(s[6]), "netmask": _netmask(s[0], s[7]), "pe_name": cstr(s[10])}


def dest_labels(svc_labels: dict, d: tuple) -> dict:
    labels = dict(svc_labels)
    labels["destination_address"] = addr_str(d[1], d[3])
    labels["destination_port"] = str(d[2])
    return labels


def dest_info_labels(d: tuple) -> dict:
    fwd = d[4] & _FWD_MASK
    tun = fwd == 2
    return {"forwarding_method": FWD_NAMES.get(fwd, str(fwd)),
            "tunnel_type": TUN_TYPES.get(d[13], str(d[13])) if tun else "",
            "tunnel_port": str(d[11]) if tun else "",
            "tunnel_flags": _flag_list(d[12], TUN_FLAG_NAMES) if tun else ""}


def _range(nd: int, first: int, n: int) -> tuple:
    start = min(max(first, 0), nd)
    return start, min(start + max(n, 0), nd)


# ---------------------------------------------------------------------------
# (a) prometheus_client collector

_SVC_POS = {("Q", _SVC_STATS_OFF + 8 * k): 11 + k for k in range(10)}
_SVC_POS[("I", 172)] = 22
_DEST_POS = {("Q", _DEST_STATS_OFF + 8 * k): 15 + k for k in range(10)}
_DEST_POS.update({("I", 40): 8, ("I", 44): 9, ("I", 48): 10, ("i", 28): 5,
                  ("I", 32): 6, ("I", 36): 7})


class IPVSCollector:
    """prometheus_client collector for ``--format ipvs``. *source* as for
    :class:`ipvs_fast.formats.ingress.IngressCollector`."""

    def __init__(self, source, build_info: Optional[dict] = None):
        self._source = source
        self._build_info = build_info

    def describe(self):
        return []

    def collect(self):
        return collect_families(results_from(self._source), self._build_info)


def collect_families(results, build_info: Optional[dict] = None) -> list:
    from .ingress import BUILD_INFO, DURATION, UP
    fams = {spec[0]: family(spec) for spec in FAMILIES + (UP, DURATION)}
    for r in results:
        nsl = {"namespace": r.namespace}
        fams[UP[0]].add_sample(UP[0], dict(nsl), 1 if r.up else 0)
        fams[DURATION[0]].add_sample(DURATION[0], dict(nsl), float(r.duration))
        snap = r.snapshot
        if not r.up or snap is None:
            continue
        sb, db = snap.services, snap.dests
        svcs = list(SVC_STRUCT.iter_unpack(sb[:len(sb) // SVC_SIZE * SVC_SIZE]))
        dests = list(DEST_STRUCT.iter_unpack(db[:len(db) // DEST_SIZE * DEST_SIZE]))
        if snap.totals is not None:
            for spec in NS_TOTALS:
                fams[spec[0]].add_sample(spec[0], dict(nsl), snap.totals[spec[3]])
        fams[SERVICES[0]].add_sample(SERVICES[0], dict(nsl), len(svcs))
        fams[DESTINATIONS[0]].add_sample(DESTINATIONS[0], dict(nsl), len(dests))
        for s in svcs:
            sl = service_labels(r.namespace, s)
            for spec in SVC_FAMILIES:
                fams[spec[0]].add_sample(spec[0], dict(sl), s[_SVC_POS[spec[3]]])
            fams[SVC_INFO[0]].add_sample(SVC_INFO[0], {**sl, **service_info_labels(s)}, 1)
            a, b = _range(len(dests), s[21], s[22])
            for d in dests[a:b]:
                dl = dest_labels(sl, d)
                for spec in DEST_FAMILIES:
                    fams[spec[0]].add_sample(spec[0], dict(dl), d[_DEST_POS[spec[3]]])
                fams[DEST_INFO[0]].add_sample(DEST_INFO[0], {**dl, **dest_info_labels(d)}, 1)
    out = [fams[spec[0]] for spec in FAMILIES + (UP, DURATION)]
    if build_info is not None:
        bi = family(BUILD_INFO)
        bi.add_sample(BUILD_INFO[0], dict(build_info), 1)
        out.append(bi)
    return [f for f in out if f.samples]


# ---------------------------------------------------------------------------
# (b) renderer

def _conv(code: str) -> str:
    """The exposition conversion for a struct *code*: unsigned -> "u"."""
    return "u" if code.isupper() else "d"


def _columns(buf, n: int, size: int, specs) -> list:
    """One column per spec (code, offset): the field of every record, as a
    strided memoryview over the records (little-endian hosts) or a list."""
    if not n:
        return [[] for _ in specs]
    if _LITTLE:
        return [Column(buf, off, size, code, n) for code, off in specs]
    return [[struct.unpack_from("<" + code, buf, i * size + off)[0] for i in range(n)]
            for code, off in specs]


_SVC_SPECS = [f[3] for f in SVC_FAMILIES]
_DEST_SPECS = [f[3] for f in DEST_FAMILIES]
# The bytes label blocks depend on: service bytes 0..88 (identity + config),
# destination bytes 0..28 (svc index, af, port, addr, fwd) and 52..58 (tunnel).
_SVC_KEY = slice(0, 88)


class _Ns:
    __slots__ = ("ident", "svc_blocks", "svc_info", "dest_blocks", "dest_info",
                 "dest_index", "svcs", "dests", "agg")


class IPVSRenderer(FamilyRenderer):
    """Fast renderer for ``--format ipvs`` (interface of
    :class:`ipvs_fast.formats.ingress.IngressRenderer`). Per namespace, the label blocks of
    the last snapshot are kept; when the snapshot's identity bytes (every
    record byte a label depends on) are unchanged, they are reused as they
    are, else rebuilt reusing per-service / per-destination entries.

    *metric_filter* and *destinations*: as for
    :class:`ipvs_fast.formats.ingress.IngressRenderer` (aggregated destination series have
    no ``ipvs_destination_info``)."""

    def __init__(self, metric_filter=None, destinations=None):
        self._lock = threading.Lock()
        self._ns: dict = {}
        self._filter = metric_filter
        self._destinations = destinations
        self._dest_on = destinations != "none" and (
            metric_filter is None
            or any(metric_filter(f[0]) for f in DEST_FAMILIES + (DEST_INFO,)))

    def cache_size(self) -> tuple:
        with self._lock:
            return (sum(len(s.svcs) for s in self._ns.values()),
                    sum(len(s.dests) for s in self._ns.values()))

    def _families(self, results, build_info) -> list:
        from .ingress import BUILD_INFO, DURATION, UP
        runs = {spec[0]: [] for spec in FAMILIES + (UP, DURATION)}
        new_ns: dict = {}
        for r in results:
            nsb = ('{namespace="%s"} ' % escape_label_value(r.namespace)).encode()
            runs[UP[0]].append(([nsb], [1 if r.up else 0], "d"))
            runs[DURATION[0]].append(([nsb], [fmt_value(float(r.duration)).encode()], "s"))
            snap = r.snapshot
            if not r.up or snap is None:
                continue
            sb, db = snap.services, snap.dests
            nsvc, nd = len(sb) // SVC_SIZE, len(db) // DEST_SIZE
            if snap.totals is not None:
                for spec in NS_TOTALS:
                    runs[spec[0]].append(([nsb], [snap.totals[spec[3]]], "d"))
            runs[SERVICES[0]].append(([nsb], [nsvc], "d"))
            runs[DESTINATIONS[0]].append(([nsb], [nd], "d"))
            if not nsvc:
                continue
            ident = self._identity(sb, nsvc, db, nd)
            st = new_ns.get(r.namespace) or self._ns.get(r.namespace)
            if st is None or st.ident != ident:
                st = self._rebuild(r.namespace, st, sb, nsvc, db, nd)
                st.ident = ident
            new_ns[r.namespace] = st
            for spec, col in zip(SVC_FAMILIES, _columns(sb, nsvc, SVC_SIZE, _SVC_SPECS)):
                runs[spec[0]].append((st.svc_blocks, col, _conv(spec[3][0])))
            runs[SVC_INFO[0]].append((st.svc_info, [1] * nsvc, "d"))
            if not st.dest_blocks or not self._dest_on:
                continue
            idx = st.dest_index
            blocks, agg = st.dest_blocks, None
            if isinstance(self._destinations, tuple):
                if st.agg is None:
                    st.agg = _groups(r.namespace, sb, nsvc, db, nd, self._destinations)
                agg = st.agg
                blocks = agg[1]
            for spec, col in zip(DEST_FAMILIES, _columns(db, nd, DEST_SIZE, _DEST_SPECS)):
                if idx is not None:
                    col = [col[i] for i in idx]
                if agg is not None:
                    col = sum_groups(agg[0], len(blocks), col)
                runs[spec[0]].append((blocks, col, _conv(spec[3][0])))
            if agg is None:
                runs[DEST_INFO[0]].append((st.dest_info, [1] * len(st.dest_info), "d"))
        self._ns = new_ns
        families = [(spec, runs[spec[0]]) for spec in FAMILIES + (UP, DURATION)]
        return finish_families(families, BUILD_INFO, build_info, self._filter)

    @staticmethod
    def _identity(sb, nsvc, db, nd) -> bytes:
        parts = [sb[i * SVC_SIZE:i * SVC_SIZE + 88] + sb[i * SVC_SIZE + 168:(i + 1) * SVC_SIZE]
                 for i in range(nsvc)]
        parts.append(b"|")
        if nd:
            if _LITTLE:
                u32 = memoryview(db).cast("B")[:nd * DEST_SIZE].cast("I")
                stride = DEST_SIZE // 4
                parts += [u32[i::stride].tobytes() for i in (0, 1, 2, 3, 4, 5, 6, 13, 14)]
            else:
                parts += [db[i * DEST_SIZE:i * DEST_SIZE + 28] + db[i * DEST_SIZE + 52:
                                                                   i * DEST_SIZE + 58]
                          for i in range(nd)]
        return b"".join(parts)

    @staticmethod
    def _rebuild(ns: str, old: Optional[_Ns], sb, nsvc, db, nd) -> _Ns:
        old_svcs = old.svcs if old is not None else {}
        old_dests = old.dests if old is not None else {}
        st = _Ns()
        st.agg = None
        st.svcs, st.dests = {}, {}
        st.svc_blocks, st.svc_info, st.dest_blocks, st.dest_info = [], [], [], []
        order: list = []
        for i, s in enumerate(SVC_STRUCT.iter_unpack(sb[:nsvc * SVC_SIZE])):
            key = sb[i * SVC_SIZE:i * SVC_SIZE + 88]
            e = st.svcs.get(key) or old_svcs.get(key)
            if e is None:
                sl = service_labels(ns, s)
                blk = label_block(sl)
                info = label_block({**sl, **service_info_labels(s)})
                e = (blk.encode(), info.encode(), blk[1:], sl)
            st.svcs[key] = e
            st.svc_blocks.append(e[0])
            st.svc_info.append(e[1])
            a, b = _range(nd, s[21], s[22])
            for j in range(a, b):
                order.append(j)
                off = j * DEST_SIZE
                dkey = key + db[off + 4:off + 28] + db[off + 52:off + 58]
                de = st.dests.get(dkey) or old_dests.get(dkey)
                if de is None:
                    d = DEST_STRUCT.unpack_from(db, off)
                    dl = '{destination_address="%s",destination_port="%d",' % (
                        addr_str(d[1], d[3]), d[2])
                    info = label_block({**e[3], **dest_labels(e[3], d), **dest_info_labels(d)})
                    de = ((dl + e[2]).encode(), info.encode())
                st.dests[dkey] = de
                st.dest_blocks.append(de[0])
                st.dest_info.append(de[1])
        st.dest_index = None if order == list(range(nd)) else order
        st.svc_blocks, st.dest_blocks = Blocks(st.svc_blocks), Blocks(st.dest_blocks)
        return st


def _groups(ns: str, sb, nsvc: int, db, nd: int, keep: tuple) -> tuple:
    """group_index over the rendered destinations' labels, in render order."""
    dests = list(DEST_STRUCT.iter_unpack(db[:nd * DEST_SIZE]))

    def labels():
        for s in SVC_STRUCT.iter_unpack(sb[:nsvc * SVC_SIZE]):
            a, b = _range(nd, s[21], s[22])
            if a < b:
                sl = service_labels(ns, s)
                for d in dests[a:b]:
                    yield dest_labels(sl, d)
    return group_index(labels(), keep)
