"""Series every format carries, whatever its own families: the exporter's
own per-namespace scrape error counters and the opt-in Docker Swarm names.
:class:`SharedSeries` is a prometheus_client collector that the
:class:`~ipvs_fast.exporter.Exporter` exports with the process metrics
(after the format's body, in the scrape's flavour, filtered by
``--metrics.*``), so drop-in formats keep their own series exactly as they are.
"""
from __future__ import annotations

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

SCRAPE_ERRORS = ("ipvs_scrape_errors_total", "counter",
                 "Collections of IPVS in this namespace that failed or missed the scrape "
                 "deadline, since the exporter started (or the namespace appeared)")
SWARM_SERVICE_INFO = ("ipvs_swarm_service_info", "gauge",
                      "Docker Swarm service owning an fwmark service of the namespace, "
                      "value 1 (join on namespace, fwmark)")
SWARM_LABELS = ("namespace", "fwmark", "port", "service_id", "service_name", "stack")

FAMILIES = (SCRAPE_ERRORS, SWARM_SERVICE_INFO)


class SharedSeries:
    """prometheus_client collector of the last scrape's shared series:
    ``update(results, swarm_rows)`` then ``collect()`` (the Exporter calls
    both under its lock)."""

    def __init__(self):
        self._results: list = []
        self._swarm: list = []

    def update(self, results, swarm_rows=()) -> None:
        self._results, self._swarm = list(results), list(swarm_rows)

    def describe(self):
        return []

    def collect(self):
        if self._results:
            errors = CounterMetricFamily(SCRAPE_ERRORS[0], SCRAPE_ERRORS[2],
                                         labels=["namespace"])
            for r in self._results:
                errors.add_metric([r.namespace], r.scrape_errors)
            yield errors
        if self._swarm:
            info = GaugeMetricFamily(SWARM_SERVICE_INFO[0], SWARM_SERVICE_INFO[2],
                                     labels=list(SWARM_LABELS))
            for row in self._swarm:
                info.add_metric([row[k] for k in SWARM_LABELS], 1)
            yield info
