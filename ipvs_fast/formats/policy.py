"""Format policy: cardinality controls, applied to snapshots before rendering.

* :class:`ServiceFilter` (``--service.include`` / ``--service.exclude``):
  which virtual services are exported at all, by protocol, address/CIDR,
  port (range) or fwmark (range). Applied at the record level: a filtered
  :class:`~ipvs_fast.backends.snapshot.Snapshot` (kept services and their
  destinations, re-indexed) replaces the original, so every format sees
  only the kept services. Namespace totals (``/proc/net/ip_vs_stats``) are
  the kernel's and stay unfiltered.
* :class:`FamilyFilter` (``--metrics.include`` / ``--metrics.exclude``):
  which metric families are written, by shell-style glob on the family
  name (the name in ``# TYPE``).
* :func:`parse_destination_labels` (``--destination.labels``): per
  destination series as they are (``all``), none at all (``none``), or
  summed over the destinations equal in a chosen label subset -- the
  renderers implement it with :func:`group_index` and
  :func:`ipvs_fast.formats.exposition.group_sums`.

Selector syntax (one or more per flag value, comma separated)::

    PROTO:ADDRESS:PORT     PROTO   = tcp | udp | sctp | *
                           ADDRESS = * | 10.0.0.1 | 10.0.0.0/8 | [fd00::1] | [fd00::/8]
                           PORT    = * | 80 | 30000-32767
    fwmark:MARK            MARK    = * | 260 | 0x104 | 256-511

A service is exported when no include selector is given or it matches one,
and it matches no exclude selector. ``PROTO:ADDRESS:PORT`` selectors match
only address/port services, ``fwmark:`` selectors only fwmark services.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import socket
import struct
import sys
from array import array
from dataclasses import dataclass, replace
from typing import Iterable, Optional

from ..backends.records import DEST_SIZE, SVC_SIZE
from .exposition import label_block

_PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": 132}
_LITTLE = sys.byteorder == "little"
_U32 = struct.Struct("=I")
_SVC_HEAD = struct.Struct("=HHHHI")      # af, protocol, port, attrs, fwmark

SELECTOR_SYNTAX = ("PROTO:ADDRESS:PORT (PROTO tcp|udp|sctp|*, ADDRESS */IP/CIDR, "
                   "IPv6 in brackets, PORT */N/N-M) or fwmark:MARK (MARK */N/N-M)")


def split_list(values: Optional[Iterable[str]]) -> list:
    """Repeated flag values, each possibly comma separated -> the items
    (surrounding blanks stripped, empty items ignored)."""
    out = []
    for v in values or ():
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


# ---------------------------------------------------------------------------
# services

def _range(text: str, what: str, hi: int) -> Optional[tuple]:
    if text == "*":
        return None
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s, 0)
        up = int(hi_s, 0) if sep else lo
    except ValueError:
        raise ValueError(f"{what} {text!r} is not *, a number or a range N-M") from None
    if not (0 <= lo <= up <= hi):
        raise ValueError(f"{what} {text!r} out of range (0-{hi}, N <= M)")
    return lo, up


@dataclass(frozen=True)
class ServiceSelector:
    text: str
    fwmark: bool                       # a fwmark: selector
    marks: Optional[tuple] = None      # (lo, hi) or None = any
    proto: Optional[int] = None        # IPPROTO_* or None = any
    net: Optional[object] = None       # ip_network or None = any
    ports: Optional[tuple] = None      # (lo, hi) or None = any

    def matches(self, af: int, proto: int, port: int, fwmark: int, addr: bytes) -> bool:
        if fwmark:
            return self.fwmark and (self.marks is None or
                                    self.marks[0] <= fwmark <= self.marks[1])
        if self.fwmark:
            return False
        if self.proto is not None and proto != self.proto:
            return False
        if self.ports is not None and not (self.ports[0] <= port <= self.ports[1]):
            return False
        if self.net is not None:
            if af == socket.AF_INET6:
                if self.net.version != 6:
                    return False
                a = ipaddress.IPv6Address(addr[:16])
            else:
                if self.net.version != 4:
                    return False
                a = ipaddress.IPv4Address(addr[:4])
            return a in self.net
        return True


def parse_selector(text: str) -> ServiceSelector:
    """One selector (see the module doc); ValueError with the reason."""
    t = text.strip()
    kind, sep, rest = t.partition(":")
    kind = kind.lower()
    if not sep:
        raise ValueError(f"{text!r}: expected {SELECTOR_SYNTAX}")
    if kind == "fwmark":
        return ServiceSelector(t, True, marks=_range(rest, "fwmark", 0xFFFFFFFF))
    if kind != "*" and kind not in _PROTOS:
        raise ValueError(f"{text!r}: unknown protocol {kind!r} (tcp, udp, sctp, * or fwmark:MARK)")
    addr_s, sep, port_s = rest.rpartition(":")
    if not sep or not addr_s:
        raise ValueError(f"{text!r}: expected {SELECTOR_SYNTAX}")
    try:
        ports = _range(port_s, "port", 65535)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    net = None
    if addr_s != "*":
        a = addr_s
        if a.startswith("["):
            end = a.find("]")
            if end < 0:
                raise ValueError(f"{text!r}: missing ']' in {addr_s!r}")
            a = a[1:end] + a[end + 1:]          # [fd00::/8] or [fd00::]/8
        try:
            net = ipaddress.ip_network(a, strict=False)
        except ValueError:
            raise ValueError(f"{text!r}: {addr_s!r} is not *, an IP address or a CIDR") from None
    return ServiceSelector(t, False, proto=None if kind == "*" else _PROTOS[kind],
                           net=net, ports=ports)


def parse_selectors(values: Optional[Iterable[str]]) -> tuple:
    return tuple(parse_selector(x) for x in split_list(values))


class ServiceFilter:
    """Keeps the services matching an include selector (all when there are
    none) and no exclude selector."""

    def __init__(self, include: Iterable = (), exclude: Iterable = ()):
        self.include = tuple(parse_selector(x) if isinstance(x, str) else x for x in include)
        self.exclude = tuple(parse_selector(x) if isinstance(x, str) else x for x in exclude)
        self._cache: dict = {}

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def keep(self, af: int, proto: int, port: int, fwmark: int, addr: bytes) -> bool:
        args = (af, proto, port, fwmark, addr)
        if self.include and not any(s.matches(*args) for s in self.include):
            return False
        return not any(s.matches(*args) for s in self.exclude)

    def apply(self, snap):
        """*snap* with only the kept services and their destinations
        (``first_dest``/``svc_index`` renumbered); *snap* itself when every
        service is kept. Decisions are cached per service identity for the
        services of the last snapshot."""
        if snap is None or not self:
            return snap
        sb, db = snap.services, snap.dests
        n, nd = len(sb) // SVC_SIZE, len(db) // DEST_SIZE
        old, cache = self._cache, {}
        kept = []
        for i in range(n):
            off = i * SVC_SIZE
            key = sb[off:off + 12] + sb[off + 24:off + 40]
            k = cache.get(key)
            if k is None:
                k = old.get(key)
                if k is None:
                    af, proto, port, _, fw = _SVC_HEAD.unpack_from(sb, off)
                    k = self.keep(af, proto, port, fw, sb[off + 24:off + 40])
                cache[key] = k
            if k:
                kept.append(i)
        self._cache = cache
        if len(kept) == n:
            return snap
        svcs, dests = [], []
        ndone = 0
        for new_i, i in enumerate(kept):
            off = i * SVC_SIZE
            rec = bytearray(sb[off:off + SVC_SIZE])
            first, cnt = _U32.unpack_from(rec, 168)[0], _U32.unpack_from(rec, 172)[0]
            a = min(first, nd)
            b = min(a + cnt, nd)
            _U32.pack_into(rec, 168, ndone)
            _U32.pack_into(rec, 172, b - a)
            svcs.append(bytes(rec))
            if b > a:
                chunk = bytearray(db[a * DEST_SIZE:b * DEST_SIZE])
                if _LITTLE:
                    memoryview(chunk).cast("I")[0::DEST_SIZE // 4] = array("I", [new_i] * (b - a))
                else:
                    for j in range(b - a):
                        _U32.pack_into(chunk, j * DEST_SIZE, new_i)
                dests.append(bytes(chunk))
                ndone += b - a
        return replace(snap, services=b"".join(svcs), dests=b"".join(dests))

    def apply_results(self, results: list) -> list:
        if not self:
            return results
        out = []
        for r in results:
            if r.snapshot is not None:
                snap = self.apply(r.snapshot)
                if snap is not r.snapshot:
                    r = replace(r, snapshot=snap)
            out.append(r)
        return out


# ---------------------------------------------------------------------------
# metric families

def _check_glob(g: str) -> str:
    if not g or any(c.isspace() for c in g):
        raise ValueError(f"{g!r} is not a metric name glob")
    if g.count("[") != g.count("]"):
        raise ValueError(f"{g!r}: unbalanced '[' / ']'")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:*?[]!-")
    bad = sorted(set(g) - allowed)
    if bad:
        raise ValueError(f"{g!r}: characters {''.join(bad)!r} cannot occur in metric names "
                         f"or globs (*, ?, [...])")
    return g


class FamilyFilter:
    """``name -> bool``: the family is written when no include glob is given
    or its name matches one, and it matches no exclude glob (shell-style
    globs, matched against the whole name, case-sensitive)."""

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()):
        self.include = tuple(_check_glob(g) for g in include)
        self.exclude = tuple(_check_glob(g) for g in exclude)
        self._memo: dict = {}

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    def __call__(self, name: str) -> bool:
        v = self._memo.get(name)
        if v is None:
            v = ((not self.include or any(fnmatch.fnmatchcase(name, g) for g in self.include))
                 and not any(fnmatch.fnmatchcase(name, g) for g in self.exclude))
            if len(self._memo) < 4096:
                self._memo[name] = v
        return v


# ---------------------------------------------------------------------------
# destination series

#: Labels of destination series per format (``--destination.labels`` choices).
DEST_LABELS = {
    "ingress": ("namespace", "fwmark", "port", "family", "protocol", "service_address",
                "address", "destination_port"),
    "ipvs": ("namespace", "family", "protocol", "address", "port", "fwmark",
             "destination_address", "destination_port"),
}


def parse_destination_labels(text: str, fmt: str):
    """``all`` -> None (one series per destination), ``none`` -> "none" (no
    destination series), else the tuple of labels to keep (``namespace``
    always included) -- ValueError for names the format does not have."""
    t = text.strip()
    if t.lower() == "all":
        return None
    if t.lower() == "none":
        return "none"
    if fmt not in DEST_LABELS:
        raise ValueError(f"aggregation applies to --format ingress and ipvs, not {fmt!r} "
                         "(use --node.backend-labels)")
    names = [x.strip() for x in t.split(",") if x.strip()]
    known = DEST_LABELS[fmt]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown destination label(s) for --format {fmt}: "
                         f"{', '.join(unknown)} (known: {','.join(known)}; or all, none)")
    keep = ["namespace"] + [x for x in known if x in names and x != "namespace"]
    return tuple(sorted(keep))


def group_index(label_dicts: Iterable[dict], keep: tuple) -> tuple:
    """(index, blocks): for each series its group number (an ``array("I")``,
    as :func:`~ipvs_fast.formats.exposition.group_sums` takes it), and each
    group's encoded label block (labels in *keep* that the series has)."""
    groups: dict = {}
    index = array("I")
    blocks = []
    for d in label_dicts:
        key = tuple(d.get(k) for k in keep)
        g = groups.get(key)
        if g is None:
            g = groups[key] = len(blocks)
            blocks.append(label_block({k: v for k, v in zip(keep, key)
                                       if v is not None}).encode())
        index.append(g)
    return index, blocks
