"""Collection, one namespace: backend handle lifecycle + port map -> CollectResult.

:class:`NamespaceTarget` owns one backend handle and turns every scrape into
a :class:`CollectResult`; ``collect()`` never raises. Before each dump the
namespace path is stat()ed and compared with the namespace the handle holds:
Docker recreates ``ingress_sbox``, and a handle bound to the old namespace
would keep reporting a dead copy. When the path is gone the handle is closed
(its sockets would pin the old namespace) and the scrape reports ``up=0``.
Opening is lazy and retried on every scrape after a failure.

Logging: one line per state change (first result, up->down with the reason,
a different failure reason while down, down->up) -- never one per scrape.
"""
from __future__ import annotations

import errno as _errno
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..backends.errors import IPVSError
from ..backends.records import SVC_SIZE
from ..backends.snapshot import Snapshot
from .portmap import read_port_map

log = logging.getLogger(__name__)

#: Re-read the port map at least this often even if the fwmark set is stable
#: (a service can change its published port and keep its mark).
PORTMAP_MAX_AGE = 300.0

#: Without counters (--format node) a namespace can be read two ways: the
#: table (dump_table: /proc/net/ip_vs, whose cost grows with the square of the
#: services) or the netlink dump (linear, one request per service). Each is
#: timed; the cheaper is used, and the other is timed again this often.
METHOD_PROBE_INTERVAL = 600.0


@dataclass
class CollectResult:
    namespace: str
    up: bool
    duration: float
    snapshot: Optional[Snapshot] = None
    ports: dict = field(default_factory=dict)
    error: Optional[str] = None
    #: collections of this namespace that failed or missed the deadline since
    #: the namespace appeared (counted by TargetSet, this one included)
    scrape_errors: int = 0


def _reason(exc: BaseException) -> tuple[object, str]:
    """(key, text): key identifies the *kind* of failure for log de-duplication."""
    if isinstance(exc, IPVSError):
        return ("ipvs", exc.errno), str(exc)
    if isinstance(exc, OSError) and exc.errno:
        name = _errno.errorcode.get(exc.errno, str(exc.errno))
        return ("os", exc.errno), f"{exc.strerror or exc} ({name})"
    return ("exc", type(exc).__name__), f"{type(exc).__name__}: {exc}"


def _fwmarks(snapshot: Snapshot) -> frozenset:
    """The non-zero fwmarks of the snapshot's services."""
    buf = snapshot.services
    n = len(buf) // SVC_SIZE
    if not n:
        return frozenset()
    # fwmark is the u32 at byte 8 of each record, host byte order (= native)
    col = memoryview(buf).cast("B")[:n * SVC_SIZE].cast("I")[8 // 4::SVC_SIZE // 4]
    return frozenset(col.tolist()) - {0}


class NamespaceTarget:
    """IPVS in the network namespace at *path* ("" = our own namespace).

    *open_backend* is ``(path, timeout) -> handle`` (see
    :func:`ipvs_fast.backends.opener`). *port_reader* replaces the iptables
    port-map reader (tests).
    """

    def __init__(self, path: str, open_backend: Callable[[str, float], object],
                 timeout: float = 5.0, *, port_map: bool = True, counters: bool = True,
                 port_reader: Optional[Callable[[str], dict]] = None,
                 portmap_max_age: float = PORTMAP_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.timeout = float(timeout)
        self._factory = open_backend
        self._use_port_map = port_map
        self._counters = counters
        self._method_cost: dict = {}            # "table"/"dump" -> last duration
        self._method_probed = clock()
        self._port_reader = port_reader if port_reader is not None else (
            lambda p: read_port_map(p, timeout=max(self.timeout, 1.0)))
        self._portmap_max_age = portmap_max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._handle = None
        self._state: Optional[bool] = None     # None = nothing reported yet
        self._reason_key: object = None
        self._ports: dict = {}
        self._ports_marks: Optional[frozenset] = None
        self._ports_time = 0.0

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._close_handle()

    def _close_handle(self) -> None:
        h, self._handle = self._handle, None
        if h is not None:
            try:
                h.close()
            except Exception as e:
                log.debug("namespace %r: closing backend handle failed: %r", self.path, e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- scraping -------------------------------------------------------------
    def collect(self) -> CollectResult:
        """Dump IPVS once. Never raises; failures give ``up=False``."""
        with self._lock:
            t0 = self._clock()
            try:
                snap, reopened = self._dump()
                ports = self._port_map(snap, reopened) if self._use_port_map else {}
            except Exception as exc:  # IPVSError, OSError, a backend bug...
                self._close_handle()
                key, text = _reason(exc)
                self._transition(False, key, text)
                return CollectResult(self.path, False, self._clock() - t0, None, {}, text)
            self._transition(True, None, None, snap)
            return CollectResult(self.path, True, self._clock() - t0, snap, ports, None)

    def _dump(self) -> tuple[Snapshot, bool]:
        if self.path:
            try:
                st = os.stat(self.path)
            except OSError as e:
                # The namespace is gone: do not keep sockets pinning the old one.
                raise OSError(e.errno, f"namespace path {self.path}: {e.strerror}") from None
            ident = (st.st_dev, st.st_ino)
            if self._handle is not None:
                try:
                    held = tuple(self._handle.ns_ident())
                except Exception as e:
                    log.debug("namespace %r: ns_ident failed: %r", self.path, e)
                    held = None
                if held != ident:
                    log.info("namespace %r was recreated (%s -> %s:%s); reopening",
                             self.path, "?" if held is None else "%s:%s" % held, *ident)
                    self._close_handle()
        reopened = False
        if self._handle is None:
            self._handle = self._factory(self.path, self.timeout)
            reopened = True
        if self._counters:
            return self._handle.dump(), reopened
        return self._cheaper_dump(), reopened

    def _cheaper_dump(self) -> Snapshot:
        """The table or the netlink dump, whichever was cheaper last time
        (both give the node format the same values); each is timed once first."""
        cost, now = self._method_cost, self._clock()
        if "table" not in cost:
            method = "table"
        elif "dump" not in cost:
            method = "dump"
        else:
            method = min(cost, key=cost.get)
            if now - self._method_probed >= METHOD_PROBE_INTERVAL:
                method = "dump" if method == "table" else "table"
                self._method_probed = now
        snap = self._handle.dump_table() if method == "table" else self._handle.dump()
        cost[method] = self._clock() - now
        return snap

    def _port_map(self, snap: Snapshot, reopened: bool) -> dict:
        marks = _fwmarks(snap)
        if not marks:
            self._ports, self._ports_marks = {}, marks
            return {}
        now = self._clock()
        if (reopened or marks != self._ports_marks
                or now - self._ports_time >= self._portmap_max_age):
            try:
                ports = dict(self._port_reader(self.path) or {})
            except Exception as e:  # readers are not supposed to raise; be safe
                log.debug("namespace %r: port map failed: %r", self.path, e)
                ports = {}
            unmapped = sorted(marks - ports.keys())
            if unmapped:
                log.debug("namespace %r: no published port found for fwmark(s) %s",
                          self.path, ", ".join(map(str, unmapped)))
            self._ports, self._ports_marks, self._ports_time = ports, marks, now
        return self._ports

    def _transition(self, up: bool, key, text: Optional[str],
                    snap: Optional[Snapshot] = None) -> None:
        if up:
            if self._state is not True:
                log.info("namespace %r: IPVS reachable (%s backend), ipvs_up=1, "
                         "%d services, %d destinations",
                         self.path, self._handle.NAME, snap.nservices, snap.ndests)
            self._state, self._reason_key = True, None
            return
        if self._state is not False or key != self._reason_key:
            log.warning("namespace %r: IPVS unavailable, ipvs_up=0: %s "
                        "(will retry on every scrape)", self.path, text)
        self._state, self._reason_key = False, key

    @property
    def is_open(self) -> bool:
        return self._handle is not None
