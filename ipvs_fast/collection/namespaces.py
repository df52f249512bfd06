"""Collection, many namespaces: path patterns -> NamespaceTargets, collected in parallel.

``--namespace-path`` may be given several times; each value is

* ``""`` -- the exporter's own network namespace;
* a path with glob characters (``*``, ``?``, ``[``), e.g. ``/run/netns/*`` or
  ``/var/run/docker/netns/*`` -- expanded again on every scrape (directories
  are skipped; a pattern matching nothing contributes no namespace);
* any other path -- used as it is, reported with ``ipvs_up 0`` while missing.

Targets are keyed by the expanded path (the string that becomes the
``namespace`` label; no symlink resolution, so ``/var/run/...`` stays
``/var/run/...``). A path seen for the first time gets a new
:class:`~ipvs_fast.collection.target.NamespaceTarget`; a path no longer in the expansion
has its target closed (its sockets would pin the namespace), after its
collection finishes if one is still running.

Collection: every namespace in a thread pool (the C core releases the GIL),
under one deadline for the scrape. A namespace has at most one collection
running: a scrape finding one running (started by a concurrent scrape, or
left over from an earlier one) waits for it, under its own deadline, and
takes its result. A namespace not finished by the deadline is reported
``up=0`` with the time waited as its duration and an error; its collection
keeps running in the background, so later scrapes wait for it in turn (and
report ``up=0``, "previous collection still running", with the age of the
running collection as duration, if it is still not done by their
deadline). Collections queued behind busy workers and not started by the
deadline of every scrape waiting for them are cancelled. Several scrapes
may collect at once (each with its own deadline): none shortens another's.

Every scrape in which a namespace is reported ``up=0`` (its collection failed,
missed the deadline, was not started, or an earlier one is still running)
counts as one scrape error of that namespace (``CollectResult.scrape_errors``,
since the namespace appeared; a namespace gone from the expansion loses its
count with its target).
"""
from __future__ import annotations

import glob
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as _wait
from typing import Callable, Iterable, Optional

from .target import CollectResult, NamespaceTarget

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")

#: Collections running at the same time (namespaces are collected in a pool).
DEFAULT_WORKERS = 16

#: A namespace's deadline warnings are logged at most once per this many
#: seconds (a client choosing a tiny scrape timeout must not flood the log).
LATE_LOG_INTERVAL = 60.0


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def can_be_several(patterns: list) -> bool:
    """Whether *patterns* can yield more than one namespace."""
    return len(patterns) > 1 or any(is_glob(p) for p in patterns)


def expand(patterns: Iterable[str], empty: Optional[list] = None) -> list:
    """The namespace paths *patterns* stand for now: literal paths (and
    ``""``) as they are, globs expanded (sorted, directories skipped);
    duplicates removed, first occurrence wins the position. Globs matching
    nothing are appended to *empty* if given."""
    out: list = []
    seen: set = set()
    for p in patterns:
        if is_glob(p):
            paths = sorted(x for x in glob.glob(p) if not os.path.isdir(x))
            if not paths and empty is not None:
                empty.append(p)
        else:
            paths = [p]
        for x in paths:
            if x not in seen:
                seen.add(x)
                out.append(x)
    return out


def namespace_targets(open_backend: Callable[[str, float], object], timeout: float, *,
                      port_map: bool = True,
                      counters: bool = True) -> Callable[[str], NamespaceTarget]:
    """``make_target(path)`` for :class:`TargetSet`: a NamespaceTarget
    opening *open_backend* with *timeout*, reading the port map if *port_map*
    (only the ingress format uses it), and the counters (the netlink dump)
    if *counters*, else only the table (/proc/net/ip_vs: the node format)."""
    return lambda path: NamespaceTarget(path, open_backend, timeout, port_map=port_map,
                                        counters=counters)


class _Slot:
    __slots__ = ("target", "future", "started", "waiters", "late", "late_logged", "errors")

    def __init__(self, target):
        self.target = target
        self.future: Optional[Future] = None
        self.started = 0.0
        self.waiters = 0            # scrapes waiting for future
        self.late = False           # a deadline was missed and logged; log recovery once
        self.late_logged = float("-inf")
        self.errors = 0             # scrapes that got no good collection of it


class TargetSet:
    """The namespaces *patterns* currently expand to, one target each.

    *make_target(path)* builds a target (``collect() -> CollectResult``,
    ``close()``): a NamespaceTarget (see :func:`namespace_targets`).
    ``collect(deadline)`` never raises and never blocks much longer than
    *deadline* seconds.
    """

    def __init__(self, patterns: Iterable[str], make_target: Callable[[str], object], *,
                 workers: int = DEFAULT_WORKERS,
                 clock: Callable[[], float] = time.monotonic):
        self.patterns = list(patterns)
        self._make = make_target
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict = {}          # path -> _Slot
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix="ipvs-ns")
        self._glob_empty_logged: set = set()

    def paths(self) -> list:
        with self._lock:
            return list(self._slots)

    # -- membership ------------------------------------------------------------
    def _refresh(self) -> list:
        """Expand the patterns; create/close targets; the current slots, in order."""
        empty: list = []
        paths = expand(self.patterns, empty)
        slots = []
        with self._lock:
            for p in empty:
                if p not in self._glob_empty_logged:
                    log.info("namespace pattern %r matches nothing (yet)", p)
            self._glob_empty_logged = set(empty)
            current = set(paths)
            for path in [x for x in self._slots if x not in current]:
                self._retire(self._slots.pop(path))
            for path in paths:
                slot = self._slots.get(path)
                if slot is None:
                    slot = self._slots[path] = _Slot(self._make(path))
                    log.debug("namespace %r: new target", path)
                slots.append((path, slot))
        return slots

    def _retire(self, slot: _Slot) -> None:
        log.info("namespace %r is gone from the expansion; closing its handle",
                 getattr(slot.target, "path", "?"))
        fut = slot.future
        if fut is not None and not fut.done():
            fut.add_done_callback(lambda _f, t=slot.target: _close(t))
        else:
            _close(slot.target)

    # -- collection ------------------------------------------------------------
    def collect(self, deadline: Optional[float] = None) -> list:
        """One CollectResult per current namespace (expansion order).
        *deadline*: seconds from now; None = wait for every namespace.
        Thread-safe: concurrent calls share running collections."""
        t0 = self._clock()
        slots = self._refresh()
        waits: dict = {}                # path -> (slot, future, started, started by us)
        with self._lock:
            for path, slot in slots:
                fut = slot.future
                ours = fut is None or fut.done()
                if ours:
                    slot.started = self._clock()
                    slot.future = fut = self._pool.submit(slot.target.collect)
                slot.waiters += 1
                waits[path] = (slot, fut, slot.started, ours)
        try:
            if waits:
                timeout = None if deadline is None else max(0.0, deadline - (self._clock() - t0))
                _wait([w[1] for w in waits.values()], timeout=timeout)
        finally:
            with self._lock:
                cancelled = set()
                for path, (slot, fut, _, _) in waits.items():
                    slot.waiters -= 1
                    # not started, and no other scrape waits for it
                    if slot.waiters == 0 and fut.cancel():
                        cancelled.add(path)
        now = self._clock()
        results: dict = {}
        for path, (slot, fut, started, ours) in waits.items():
            if fut.done() and not fut.cancelled():
                try:
                    results[path] = fut.result()
                except Exception as e:      # targets never raise; be safe
                    results[path] = CollectResult(path, False, now - t0, error=repr(e))
                if slot.late:
                    log.info("namespace %r: collected within the deadline again", path)
                    slot.late = False
                continue
            if path in cancelled or fut.cancelled():
                err = "not started before the scrape deadline (all workers busy)"
            elif ours:
                err = ("scrape deadline exceeded (%.3gs); the collection continues in "
                       "the background" % (deadline or 0))
            else:
                results[path] = CollectResult(path, False, now - started,
                                              error="previous collection still running")
                log.debug("namespace %r: previous collection still running (%.1fs)",
                          path, now - started)
                continue
            if now - slot.late_logged >= LATE_LOG_INTERVAL:
                log.warning("namespace %r: %s, ipvs_up=0", path, err)
                slot.late_logged = now
                slot.late = True
            results[path] = CollectResult(path, False, now - t0, error=err)
        out = [results[path] for path, _ in slots]
        with self._lock:
            for (path, slot), r in zip(slots, out):
                if not r.up:
                    slot.errors += 1
                r.scrape_errors = slot.errors
        return out

    def close(self) -> None:
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for s in slots:
            fut = s.future
            if fut is not None and not fut.done():
                fut.add_done_callback(lambda _f, t=s.target: _close(t))
            else:
                _close(s.target)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close(target) -> None:
    try:
        target.close()
    except Exception as e:
        log.debug("closing target %r failed: %r", getattr(target, "path", "?"), e)
