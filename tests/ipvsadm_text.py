"""Parse ipvsadm's own listings, the kernel's view we compare against.

Keys are built the same way from our snapshots (see key_of_service/key_of_dest)
so that a test can compare both dicts with ==.
"""
from __future__ import annotations

import re
import socket

from ipvs_fast.backends.records import PROTO_NAMES, addr_str

_SVC_RE = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)(.*)$")
_DEST_RE = re.compile(r"^\s+->\s+(\S+)(.*)$")


def _split_hostport(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, port = text[1:].rpartition("]:")
        return host, int(port)
    host, _, port = text.rpartition(":")
    return host, int(port)


def _svc_key(prot: str, where: str, rest: str) -> tuple:
    if prot == "FWM":
        # "FWM  5 IPv6 ..." marks the family; plain "FWM  5" is IPv4.
        family = "inet6" if "IPv6" in rest.split() else "inet"
        return ("FWM", family, int(where))
    host, port = _split_hostport(where)
    return (prot, host, port)


def parse_listing(text: str, ncols: int) -> dict:
    """Parse a listing whose rows end with ncols integer columns.

    Returns {service_key: {"values": (..), "dests": {dest_key: (..)}}}.
    Works for --stats, --rate (ncols=5) and --persistent-conn (ncols=4, dest rows only).
    """
    out: dict = {}
    cur = None
    for line in text.splitlines():
        m = _DEST_RE.match(line)
        if m and cur is not None:
            host, port = _split_hostport(m.group(1))
            nums = m.group(2).split()
            ints = [int(x) for x in nums if re.fullmatch(r"-?\d+", x)]
            out[cur]["dests"][(host, port)] = tuple(ints[-ncols:])
            continue
        m = _SVC_RE.match(line)
        if m:
            cur = _svc_key(m.group(1), m.group(2), m.group(3))
            toks = m.group(3).split()
            ints = [int(x) for x in toks if re.fullmatch(r"-?\d+", x)]
            out[cur] = {"values": tuple(ints[-ncols:]) if len(ints) >= ncols else (),
                        "extra": toks, "dests": {}}
    return out


def parse_plain(text: str) -> dict:
    """`ipvsadm -Ln`: scheduler/flags per service; forward, weight, active, inactive per dest."""
    out: dict = {}
    cur = None
    for line in text.splitlines():
        m = _DEST_RE.match(line)
        if m and cur is not None:
            host, port = _split_hostport(m.group(1))
            fwd, weight, active, inactive = m.group(2).split()[:4]
            out[cur]["dests"][(host, port)] = (fwd, int(weight), int(active), int(inactive))
            continue
        m = _SVC_RE.match(line)
        if m:
            cur = _svc_key(m.group(1), m.group(2), m.group(3))
            out[cur] = {"extra": m.group(3).split(), "dests": {}}
    return out


def key_of_service(svc) -> tuple:
    """The key parse_* uses, from a records.Service."""
    if svc.fwmark:
        return ("FWM", "inet6" if svc.af == socket.AF_INET6 else "inet", svc.fwmark)
    return (PROTO_NAMES.get(svc.protocol, str(svc.protocol)), addr_str(svc.af, svc.addr), svc.port)


def key_of_dest(dest) -> tuple:
    return (addr_str(dest.af, dest.addr), dest.port)


def snapshot_view(snapshot, fields: str = "stats") -> dict:
    """Render a Snapshot in the same shape as parse_listing/parse_plain output."""
    from ipvs_fast.backends.records import FWD_NAMES
    services, dests = snapshot.decoded()
    out = {}
    for i, s in enumerate(services):
        if fields == "stats":
            vals = s.stats[:5]
        elif fields == "rate":
            vals = s.stats[5:10]
        else:
            vals = ()
        entry = {"values": tuple(vals), "dests": {}}
        for d in dests[s.first_dest:s.first_dest + s.ndests]:
            assert d.svc_index == i
            if fields == "stats":
                dv = tuple(d.stats[:5])
            elif fields == "rate":
                dv = tuple(d.stats[5:10])
            elif fields == "persistent":
                dv = (d.weight, d.persist_conns, d.active_conns, d.inact_conns)
            else:  # plain
                fwd = {"masq": "Masq", "local": "Local", "tunnel": "Tunnel", "route": "Route"}
                dv = (fwd.get(FWD_NAMES.get(d.fwd_method, "?"), "?"), d.weight,
                      d.active_conns, d.inact_conns)
            entry["dests"][key_of_dest(d)] = dv
        out[key_of_service(s)] = entry
    return out


def ingress_series(stats: dict, plain: dict, namespace: str, service_labels) -> dict:
    """The ingress format's series computed from ipvsadm's listings (parse_listing
    with 5 columns, and parse_plain of the same table): {(name, labels): value}.
    service_labels(key) gives a service's labels apart from `namespace` (the
    callers know which port each fwmark was published on)."""
    out = {("ipvs_services_total", (("namespace", namespace),)): float(len(stats))}
    for key, entry in stats.items():
        labels = dict(service_labels(key), namespace=namespace)
        svc = tuple(sorted(labels.items()))
        conns, _, _, inbytes, outbytes = entry["values"]
        out[("ipvs_connections_total", svc)] = float(conns)
        out[("ipvs_bytes_in_total", svc)] = float(inbytes)
        out[("ipvs_bytes_out_total", svc)] = float(outbytes)
        out[("ipvs_destination_total", svc)] = float(len(entry["dests"]))
        for (host, port), dvals in entry["dests"].items():
            dl = dict(labels, address=host)
            if port:
                dl["destination_port"] = str(port)
            dl = tuple(sorted(dl.items()))
            _, _, active, inactive = plain[key]["dests"][(host, port)]
            out[("ipvs_destination_active_connections_total", dl)] = float(active)
            out[("ipvs_destination_inactive_connections_total", dl)] = float(inactive)
            out[("ipvs_destination_connections_total", dl)] = float(dvals[0])
            out[("ipvs_destination_bytes_in_total", dl)] = float(dvals[3])
            out[("ipvs_destination_bytes_out_total", dl)] = float(dvals[4])
    return out
