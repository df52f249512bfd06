"""Orchestration: one scrape = namespaces collected -> services filtered ->
a format's renderer plans the exposition.

:class:`Exporter` is what the HTTP layer serves (an exposition source:
``content_types`` and ``collect(deadline, content_type) -> Body``); it knows
no HTTP.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from .formats.exposition import CONTENT_TYPE, FLAVOURS, OPENMETRICS, TEXT, Body
from .formats.shared import SharedSeries

log = logging.getLogger(__name__)


class Exporter:
    """Synchronous collection: a TargetSet -> CollectResults -> a Body.

    *targets*: a :class:`ipvs_fast.collection.namespaces.TargetSet`
    (namespaces are collected in parallel under the deadline). *renderer*:
    the format (``render_pieces(results, build_info, extra) -> Body``).
    *metric_filter*: ``name -> bool`` applied to the process metrics (the
    renderer filters its own families). *service_filter*: a
    :class:`ipvs_fast.formats.policy.ServiceFilter` applied to every
    snapshot before rendering. *swarm*: a
    :class:`ipvs_fast.collection.swarm.SwarmNames` (``--docker.host``), whose
    cached answer adds ``ipvs_swarm_service_info``.

    ``collect(deadline)`` runs in a worker thread. After the format's own
    families come, in every format, the series of
    :mod:`ipvs_fast.formats.shared` (``ipvs_scrape_errors_total``, the Swarm
    names) and the process metrics. Process metrics
    (``process_*``, the same names the Go original's default registry
    exports) come from prometheus_client's ProcessCollector in a private
    registry. The platform (``python_info``) and GC (``python_gc_*``)
    collectors are left out: they are the Python analogue of the Go
    runtime's ``go_*`` series, which no dashboard for this exporter would use.
    """

    #: what collect() can write, preferred first: text 0.0.4, OpenMetrics 1.0.0
    content_types = (TEXT.content_type, OPENMETRICS.content_type)

    def __init__(self, targets, renderer, build_info: Optional[dict] = None,
                 process_metrics: bool = True,
                 metric_filter: Optional[Callable[[str], bool]] = None,
                 service_filter=None, swarm=None):
        self.targets = targets
        self.build_info = build_info
        self.renderer = renderer
        self.metric_filter = metric_filter
        self.service_filter = service_filter
        self._lock = threading.Lock()
        self.swarm = swarm
        self._extra = CollectorRegistry(auto_describe=False)
        if process_metrics:
            ProcessCollector(registry=self._extra)
        self._shared = SharedSeries()
        self._extra.register(self._shared)

    def add_collector(self, collector) -> None:
        """Export *collector* (prometheus_client's ``collect()`` protocol)
        with the process metrics, e.g. the web config's reload status."""
        if self._extra is None:
            self._extra = CollectorRegistry(auto_describe=False)
        self._extra.register(collector)

    def collect(self, deadline: Optional[float] = None,
                content_type: str = CONTENT_TYPE) -> Body:
        """The exposition for one scrape, as a :class:`Body` in
        *content_type* (one of ``content_types``): the collection happens
        now (namespaces get *deadline* seconds), the text is made as the
        body is iterated."""
        flavour = FLAVOURS[content_type]
        # outside the lock: concurrent scrapes each wait under their own
        # deadline (the TargetSet shares running namespace collections)
        results = self.targets.collect(deadline)
        with self._lock:
            if self.service_filter is not None:
                results = self.service_filter.apply_results(results)
            self._shared.update(results, self.swarm.labels(results)
                                if self.swarm is not None else ())
            extra = self._extra_exposition(flavour)
            return self.renderer.render_pieces(results, self.build_info, extra, flavour)

    def _extra_exposition(self, flavour) -> bytes:
        """The process metrics (and added collectors) in *flavour*, without
        a trailer (the renderer writes it after everything)."""
        source = self._extra
        if self.metric_filter is not None:
            source = FilteredCollectors(source, self.metric_filter)
        if flavour is OPENMETRICS:
            out = generate_openmetrics(source)
            return out[:-len(b"# EOF\n")] if out.endswith(b"# EOF\n") else out
        return generate_latest(source)

    def close(self) -> None:
        if self.swarm is not None:
            self.swarm.close()
        try:
            self.targets.close()
        except Exception as e:
            log.debug("closing targets failed: %r", e)


class FilteredCollectors:
    """The families of *registry* whose text-format name (a counter's with
    ``_total``) passes *keep*: a registry as prometheus_client's exposition
    functions read one, so both formats filter on the same names."""

    def __init__(self, registry, keep: Callable[[str], bool]):
        self.registry, self.keep = registry, keep

    def collect(self):
        for family in self.registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            if self.keep(name):
                yield family
