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

from ..backends.records import (DEST_SIZE, DEST_STRUCT, FWD_NAMES, PROTO_NAMES, SET_CONN_TAB_SIZE,
                                 SET_TIMEOUT_TCP, SET_TIMEOUT_TCP_FIN, SET_TIMEOUT_UDP,
                                 SET_VERSION, SVC_SIZE, SVC_STRUCT, addr_str, cstr)
from .exposition import (Blocks, Column, FamilyRenderer, escape_label_value, family,
                         finish_families, fmt_value, group_sums, label_block, results_from)
from .policy import group_index

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
# Computed per service from its destinations' weights (not a record field).
ZERO_WEIGHT = ("ipvs_service_destinations_zero_weight", "gauge",
               "Number of destinations of the virtual service with weight 0 (draining or "
               "quiesced: they get no new connections; all of them at 0 = the service "
               "drops new connections)")
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

# Namespace settings (GET_INFO, GET_CONFIG): (spec, attrs bit, Settings field)
CONN_TAB_SIZE = ("ipvs_connection_table_size", "gauge",
                 "Size of the IPVS connection hash table, in buckets (ip_vs module "
                 "parameter conn_tab_bits)")
VERSION_INFO = ("ipvs_version_info", "gauge", "IPVS version of the kernel, value 1")
TIMEOUTS = ("ipvs_timeout_seconds", "gauge",
            "IPVS connection timeouts of the namespace (ipvsadm --set), by protocol "
            "state: tcp = established TCP, tcp_fin = TCP after a FIN, udp")
SETTINGS_FAMILIES = (CONN_TAB_SIZE, VERSION_INFO, TIMEOUTS)
_TIMEOUT_FIELDS = (("tcp", SET_TIMEOUT_TCP, 3), ("tcp_fin", SET_TIMEOUT_TCP_FIN, 4),
                   ("udp", SET_TIMEOUT_UDP, 5))
# What each IPVS sysctl means (Documentation/networking/ipvs-sysctl.rst); a
# sysctl the kernel has and this table lacks gets a generic HELP.
SYSCTL_HELP = {
    "am_droprate": "Drop rate of the drop_packet defense in mode 3 (1/rate packets dropped)",
    "amemthresh": "Available memory threshold (pages) below which the defense strategies engage",
    "backup_only": "1 = director works only as backup server (no forwarding) while the "
                   "backup sync daemon runs",
    "cache_bypass": "1 = forward packets to the original destination when no real server "
                    "is available (cache cluster)",
    "conn_reuse_mode": "Handling of a new connection reusing a connection entry: 0 = reuse "
                       "the old entry (and its destination, even at weight 0), 1/2 = "
                       "reschedule it (kube-proxy sets 0 to avoid 1 s SYN delays)",
    "conntrack": "1 = keep netfilter conntrack entries for IPVS connections",
    "drop_entry": "Defense: randomly drop connection entries (0 off, 1 auto, 2 on, 3 always)",
    "drop_packet": "Defense: drop 1/rate of the packets (0 off, 1 auto, 2 on, 3 always)",
    "expire_nodest_conn": "1 = expire a connection entry (and drop its packet) when its "
                          "destination is deleted; 0 = keep it until it times out",
    "expire_quiescent_template": "1 = expire persistence templates pointing at a destination "
                                 "with weight 0 (new clients of a persistent service leave a "
                                 "draining backend at once)",
    "ignore_tunneled": "1 = do not schedule tunneled packets (IPIP/GRE) that are not for IPVS",
    "nat_icmp_send": "1 = send ICMP errors for packets of masqueraded connections",
    "pmtu_disc": "1 = path MTU discovery for tunnel (IPIP) destinations",
    "run_estimation": "1 = the kernel estimates per service/destination rates "
                      "(the *_per_second metrics); 0 = rates stay 0",
    "schedule_icmp": "1 = schedule ICMP packets with no connection (no-conn ICMP to a VIP)",
    "secure_tcp": "Defense: stricter TCP state timeouts (0 off, 1 auto, 2 on, 3 always)",
    "sloppy_sctp": "1 = create a connection entry from any SCTP packet, not only INIT",
    "sloppy_tcp": "1 = create a connection entry from any TCP packet, not only SYN",
    "snat_reroute": "1 = reroute replies of SNAT connections (policy routing)",
    "sync_persist_mode": "1 = do not synchronize connections of persistent services "
                         "(only their templates)",
    "sync_ports": "Number of sync daemon threads / ports",
    "sync_qlen_max": "Maximum sync messages queued per sync daemon",
    "sync_refresh_period": "Seconds between resyncs of a synchronized connection",
    "sync_retries": "Retries of a sync message for a connection in a state not yet "
                    "confirmed by the backup",
    "sync_sock_size": "Send/receive buffer size of the sync socket (bytes; 0 = default)",
    "sync_version": "Protocol version of the sync daemon (0 or 1)",
    "est_nice": "Nice value of the rate estimation kthreads",
    "lblc_expiration": "lblc scheduler: seconds an unused destination entry is kept",
    "lblcr_expiration": "lblcr scheduler: seconds an unused destination set is kept",
    "debug_level": "IPVS debug log level (CONFIG_IP_VS_DEBUG)",
}
_METRIC_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def sysctl_family(name: str) -> Optional[tuple]:
    """The gauge family of the IPVS sysctl *name* (None for a name that
    cannot be part of a metric name)."""
    if not name or not set(name) <= _METRIC_NAME_OK:
        return None
    what = SYSCTL_HELP.get(name, "IPVS setting")
    return ("ipvs_sysctl_" + name, "gauge",
            "%s (net.ipv4.vs.%s of the namespace)" % (what, name))


def settings_samples(snap) -> list:
    """[(spec, extra labels, value)] of a snapshot's settings, in family order."""
    st = snap.decoded_settings()
    if st is None:
        return []
    out = []
    if st.attrs & SET_CONN_TAB_SIZE:
        out.append((CONN_TAB_SIZE, {}, st.conn_tab_size))
    if st.attrs & SET_VERSION:
        out.append((VERSION_INFO, {"version": st.version_text}, 1))
    for proto, bit, pos in _TIMEOUT_FIELDS:
        if st.attrs & bit:
            out.append((TIMEOUTS, {"protocol": proto}, st[pos]))
    return out

FAMILIES = NS_TOTALS + (SERVICES, DESTINATIONS) + SETTINGS_FAMILIES + SVC_FAMILIES \
    + (ZERO_WEIGHT, SVC_INFO) + DEST_FAMILIES + (DEST_INFO,)

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
    sysctl_names: list = []
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
        for spec, labels, value in settings_samples(snap):
            fams[spec[0]].add_sample(spec[0], {**nsl, **labels}, value)
        for name, value in snap.sysctls:
            spec = sysctl_family(name)
            if spec is not None:
                if spec[0] not in fams:
                    fams[spec[0]] = family(spec)
                    sysctl_names.append(spec[0])
                fams[spec[0]].add_sample(spec[0], dict(nsl), value)
        for s in svcs:
            sl = service_labels(r.namespace, s)
            for spec in SVC_FAMILIES:
                fams[spec[0]].add_sample(spec[0], dict(sl), s[_SVC_POS[spec[3]]])
            a, b = _range(len(dests), s[21], s[22])
            fams[ZERO_WEIGHT[0]].add_sample(ZERO_WEIGHT[0], dict(sl),
                                            sum(1 for d in dests[a:b] if d[5] == 0))
            fams[SVC_INFO[0]].add_sample(SVC_INFO[0], {**sl, **service_info_labels(s)}, 1)
            for d in dests[a:b]:
                dl = dest_labels(sl, d)
                for spec in DEST_FAMILIES:
                    fams[spec[0]].add_sample(spec[0], dict(dl), d[_DEST_POS[spec[3]]])
                fams[DEST_INFO[0]].add_sample(DEST_INFO[0], {**dl, **dest_info_labels(d)}, 1)
    out = [fams[spec[0]] for spec in FAMILIES + (UP, DURATION)]
    out += [fams[n] for n in sorted(sysctl_names)]
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
        sysctl_runs: dict = {}      # family spec -> runs
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
            _settings_runs(runs, sysctl_runs, r.namespace, nsb, snap)
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
            runs[ZERO_WEIGHT[0]].append((st.svc_blocks, zero_weight_counts(sb, nsvc, db, nd),
                                         "d"))
            runs[SVC_INFO[0]].append((st.svc_info, Column.constant(1, nsvc), "d"))
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
                    col = group_sums([(col, agg[0])], len(blocks))
                runs[spec[0]].append((blocks, col, _conv(spec[3][0])))
            if agg is None:
                runs[DEST_INFO[0]].append((st.dest_info, Column.constant(1, len(st.dest_info)),
                                           "d"))
        self._ns = new_ns
        families = [(spec, runs[spec[0]]) for spec in FAMILIES + (UP, DURATION)]
        at = FAMILIES.index(SETTINGS_FAMILIES[-1]) + 1
        families[at:at] = sorted(sysctl_runs.items())
        return finish_families(families, BUILD_INFO, build_info, self._filter)

    @staticmethod
    def _identity(sb, nsvc, db, nd) -> bytes:
        """Every record byte a label depends on: service bytes 0..88 and
        168..176, destination bytes 0..28 and 52..60 (as strided columns
        on little-endian hosts: no Python object per record)."""
        if not _LITTLE:
            return b"".join([sb[i * SVC_SIZE:i * SVC_SIZE + 88]
                             + sb[i * SVC_SIZE + 168:(i + 1) * SVC_SIZE] for i in range(nsvc)]
                            + [b"|"] + [db[i * DEST_SIZE:i * DEST_SIZE + 28]
                                        + db[i * DEST_SIZE + 52:i * DEST_SIZE + 58]
                                        for i in range(nd)])
        parts = []
        if nsvc:
            u32 = memoryview(sb).cast("B")[:nsvc * SVC_SIZE].cast("I")
            stride = SVC_SIZE // 4
            parts += [u32[i::stride].tobytes() for i in (*range(22), 42, 43)]
        parts.append(b"|")
        if nd:
            u32 = memoryview(db).cast("B")[:nd * DEST_SIZE].cast("I")
            stride = DEST_SIZE // 4
            parts += [u32[i::stride].tobytes() for i in (0, 1, 2, 3, 4, 5, 6, 13, 14)]
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
                e = (blk.encode(), info.encode(), blk[1:], sl, _dest_info_template(sl))
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
                    da, dp = addr_str(d[1], d[3]), str(d[2])
                    dl = '{destination_address="%s",destination_port="%s",' % (da, dp)
                    info = e[4] % ((da, dp) + _dest_info_values(d))
                    de = ((dl + e[2]).encode(), info.encode())
                st.dests[dkey] = de
                st.dest_blocks.append(de[0])
                st.dest_info.append(de[1])
        st.dest_index = None if order == list(range(nd)) else order
        st.svc_blocks, st.dest_blocks = Blocks(st.svc_blocks), Blocks(st.dest_blocks)
        return st


def _settings_runs(runs: dict, sysctl_runs: dict, ns: str, nsb: bytes, snap) -> None:
    """The namespace's settings and sysctl samples (a handful: built per render)."""
    for spec, labels, value in settings_samples(snap):
        blk = nsb if not labels else label_block({"namespace": ns, **labels}).encode()
        runs[spec[0]].append(([blk], [value], "d"))
    for name, value in snap.sysctls:
        spec = sysctl_family(name)
        if spec is not None:
            sysctl_runs.setdefault(spec, []).append(([nsb], [value], "d"))


_WEIGHT_OFF = 28       # ipvs_dest_rec.weight (i32)
_FIRST_DEST_OFF = 168  # ipvs_svc_rec.first_dest, ndests (u32, u32)


def zero_weight_counts(sb, nsvc: int, db, nd: int) -> list:
    """Per service, how many of its destinations have weight 0."""
    if not nd:
        return [0] * nsvc
    weights = Column(db, _WEIGHT_OFF, DEST_SIZE, "i", nd) if _LITTLE else \
        [struct.unpack_from("<i", db, i * DEST_SIZE + _WEIGHT_OFF)[0] for i in range(nd)]
    weights = weights[0:nd]
    if 0 not in weights:           # the common case, at C speed
        return [0] * nsvc
    zero = [0] * (nd + 1)          # zero[j] = destinations with weight 0 among the first j
    acc = 0
    for j, w in enumerate(weights):
        acc += w == 0
        zero[j + 1] = acc
    out = []
    for i in range(nsvc):
        first, n = struct.unpack_from("<II", sb, i * SVC_SIZE + _FIRST_DEST_OFF)
        a, b = _range(nd, first, n)
        out.append(zero[b] - zero[a])
    return out


# A destination's own labels in ipvs_destination_info, in name order (each
# sorts the same way among any service's labels, see _dest_info_template)
_DEST_INFO_SLOTS = ("destination_address", "destination_port", "forwarding_method",
                    "tunnel_flags", "tunnel_port", "tunnel_type")


def _dest_info_template(svc_labels: dict) -> str:
    """label_block of a destination's info labels with the service's
    labels filled in and ``%s`` for each of _DEST_INFO_SLOTS (values that
    are made here and never need escaping)."""
    names = sorted(list(svc_labels) + list(_DEST_INFO_SLOTS))
    return "{" + ",".join(
        '%s="%s"' % (n, "%s" if n in _DEST_INFO_SLOTS
                     else escape_label_value(svc_labels[n]).replace("%", "%%"))
        for n in names) + "} "


def _dest_info_values(d: tuple) -> tuple:
    """dest_info_labels(d) values in _DEST_INFO_SLOTS order (after the address and port)."""
    fwd = d[4] & _FWD_MASK
    if fwd == 2:
        return (FWD_NAMES[2], _flag_list(d[12], TUN_FLAG_NAMES), str(d[11]),
                TUN_TYPES.get(d[13], str(d[13])))
    return FWD_NAMES.get(fwd, str(fwd)), "", "", ""


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
