"""Orchestration: one scrape = namespaces collected -> services filtered ->
a format's renderer plans the exposition.

:class:`Exporter` is what the HTTP layer serves (an exposition source:
``content_type`` and ``collect(deadline) -> Body``); it knows no HTTP.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from .formats.exposition import CONTENT_TYPE, Body

log = logging.getLogger(__name__)


class Exporter:
    """Synchronous collection: a TargetSet -> CollectResults -> a Body.

    *targets*: a :class:`ipvs_fast.collection.namespaces.TargetSet`
    (namespaces are collected in parallel under the deadline). *renderer*:
    the format (``render_pieces(results, build_info, extra) -> Body``).
    *metric_filter*: ``name -> bool`` applied to the process metrics (the
    renderer filters its own families). *service_filter*: a
    :class:`ipvs_fast.formats.policy.ServiceFilter` applied to every
    snapshot before rendering.

    ``collect(deadline)`` runs in a worker thread. Process metrics
    (``process_*``, the same names the Go original's default registry
    exports) come from prometheus_client's ProcessCollector in a private
    registry. The platform (``python_info``) and GC (``python_gc_*``)
    collectors are left out: they are the Python analogue of the Go
    runtime's ``go_*`` series, which no dashboard for this exporter would use.
    """

    content_type = CONTENT_TYPE

    def __init__(self, targets, renderer, build_info: Optional[dict] = None,
                 process_metrics: bool = True,
                 metric_filter: Optional[Callable[[str], bool]] = None,
                 service_filter=None):
        self.targets = targets
        self.build_info = build_info
        self.renderer = renderer
        self.metric_filter = metric_filter
        self.service_filter = service_filter
        self._lock = threading.Lock()
        self._extra = None
        if process_metrics:
            self._extra = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._extra)

    def collect(self, deadline: Optional[float] = None) -> Body:
        """The exposition for one scrape, as a :class:`Body`: the collection
        happens now (namespaces get *deadline* seconds), the text is made as
        the body is iterated."""
        # outside the lock: concurrent scrapes each wait under their own
        # deadline (the TargetSet shares running namespace collections)
        results = self.targets.collect(deadline)
        with self._lock:
            if self.service_filter is not None:
                results = self.service_filter.apply_results(results)
            extra = ""
            if self._extra is not None:
                extra = generate_latest(self._extra).decode("utf-8")
                if self.metric_filter is not None:
                    extra = filter_exposition(extra, self.metric_filter)
            return self.renderer.render_pieces(results, self.build_info, extra)

    def close(self) -> None:
        try:
            self.targets.close()
        except Exception as e:
            log.debug("closing targets failed: %r", e)


def filter_exposition(text: str, keep: Callable[[str], bool]) -> str:
    """Text format 0.0.4 with only the families whose name passes *keep*
    (a family = its HELP/TYPE lines and the samples that follow them)."""
    out = []
    name = None
    keep_it = True
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            n = line.split(" ", 3)[2].rstrip("\n")
            if n != name:
                name, keep_it = n, keep(n)
        elif name is None and line and not line.startswith("#"):
            keep_it = keep(line.split("{", 1)[0].split(" ", 1)[0])
        if keep_it:
            out.append(line)
    return "".join(out)
